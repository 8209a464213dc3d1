#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each).
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes nightly-only
# flags to rustc; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Findings land in fuzz/artifacts/<target>/; corpora in fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || { echo "install cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
status=0
for target in request_head routing query json; do
    echo "== $target for ${seconds}s"
    mkdir -p "fuzz/corpus/$target"
    if ! cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 3; then
        status=1
    fi
    echo "   corpus: $(ls "fuzz/corpus/$target" | wc -l) inputs"
done
exit $status
