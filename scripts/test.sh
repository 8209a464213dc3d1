#!/usr/bin/env bash
# The whole test suite, as README.md gives it ("The two commands") and CI runs it:
#
#   1. cargo test --workspace                    the default build, builtin engine (no Redis)
#   2. AFTERWARD_ENGINE=tiny-http cargo test --workspace --all-features
#                                                every feature, every test on tiny_http
#                                                (the Redis tests included)
#   3. cargo test --workspace --all-features --test 'redis_*'
#                                                the Redis tests on the builtin engine
#                                                (same build as 2: nothing is rebuilt)
#
# Every part runs even when one before it fails, and every test binary of a
# part even when one fails (--no-fail-fast), so one failure hides nothing;
# the summary at the end names each part's result, and the exit status is 1 if
# any failed. The Redis tests start their own `redis-server` (Debian package
# redis-server): without it, parts 2 and 3 are not run, one message says why,
# and the exit status is 1.
#
# Extra arguments go to every `cargo test` (e.g. `scripts/test.sh --release`).
set -uo pipefail
cd "$(dirname "$0")/.."

results=()
failed=0

part() {
    local name=$1
    shift
    echo "== $name: $*"
    if "$@"; then
        results+=("ok      $name")
    else
        results+=("FAILED  $name")
        failed=1
    fi
}

if ! command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null 2>&1; then
    echo "chromium not found: tests/dashboard_browser.rs drives a headless Chromium and will" \
        "fail. Install it (Debian: apt-get install chromium), or set CHROMIUM to its path." >&2
fi

part "default build, builtin engine" cargo test --workspace --no-fail-fast "$@"

if command -v redis-server >/dev/null 2>&1; then
    part "all features, tiny_http engine" \
        env AFTERWARD_ENGINE=tiny-http cargo test --workspace --all-features --no-fail-fast "$@"
    part "Redis tests, builtin engine" \
        cargo test --workspace --all-features --no-fail-fast --test 'redis_*' "$@"
else
    echo "redis-server not found: the Redis tests (tests/redis_*.rs, cli/tests/redis_cli.rs)" \
        "start their own and cannot run. Install it (Debian: apt-get install redis-server)" \
        "and run scripts/test.sh again." >&2
    results+=("NOT RUN all features, tiny_http engine (no redis-server)")
    results+=("NOT RUN Redis tests, builtin engine (no redis-server)")
    failed=1
fi

echo "== summary"
printf '   %s\n' "${results[@]}"
exit $failed
