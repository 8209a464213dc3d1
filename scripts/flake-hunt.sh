#!/usr/bin/env bash
# Runs the whole test suite (scripts/test.sh: both engines, and Redis) N times
# while two CPU hogs keep both cores busy, and lists every test that failed
# even once, with how often:
#
#   scripts/flake-hunt.sh N [HOGS]        (defaults: N = 20, HOGS = 2)
#
# A test that fails here fails on a busy CI machine some day: fix it at its
# cause (wait on the server's own condition), never with a sleep or a longer
# timeout. Each failing run's output is kept in target/flake-hunt/run-K.log;
# the summary goes to target/flake-hunt/summary.md (RELIABILITY.md keeps the
# last one, "Flake hunt").
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
hogs=${2:-2}
out=target/flake-hunt
rm -rf "$out"
mkdir -p "$out"

# Build everything first, unloaded and once, so that the runs only run.
cargo test --workspace --no-run -q >/dev/null 2>&1 \
    && cargo test --workspace --all-features --no-run -q >/dev/null 2>&1 \
    || { echo "the suite does not build" >&2; exit 2; }

pids=()
stop_hogs() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null; }
trap stop_hogs EXIT
for _ in $(seq "$hogs"); do
    yes >/dev/null &
    pids+=($!)
done

started=$(date +%s)
failed_runs=0
for k in $(seq "$runs"); do
    log="$out/run-$k.log"
    t0=$(date +%s)
    if scripts/test.sh >"$log" 2>&1; then
        rm -f "$log"
        echo "run $k/$runs: ok ($(( $(date +%s) - t0 )) s)"
    else
        failed_runs=$((failed_runs + 1))
        # A failed test prints "test NAME ... FAILED"; a binary that could
        # not run at all shows in the summary lines of scripts/test.sh.
        grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' \
            >>"$out/failures.txt"
        grep -E '^   (FAILED|NOT RUN)' "$log" | sed 's/^ *//' >>"$out/parts.txt"
        echo "run $k/$runs: FAILED ($(( $(date +%s) - t0 )) s), see $log"
    fi
done
stop_hogs
trap - EXIT

{
    echo "Flake hunt of $(git rev-parse --short HEAD) on $(date -u +%Y-%m-%d):" \
        "$runs runs of scripts/test.sh under $hogs CPU hogs" \
        "($(( ($(date +%s) - started) / 60 )) min), $failed_runs failed."
    if [ -s "$out/failures.txt" ]; then
        echo
        echo "| test | failed runs |"
        echo "|---|---|"
        sort "$out/failures.txt" | uniq -c | sort -rn | while read -r n name; do
            echo "| \`$name\` | $n |"
        done
    fi
    if [ -s "$out/parts.txt" ]; then
        echo
        echo "Parts that failed: $(sort "$out/parts.txt" | uniq -c | tr -s ' ' | paste -sd ';')"
    fi
} >"$out/summary.md"
cat "$out/summary.md"
[ "$failed_runs" -eq 0 ]
