#!/usr/bin/env bash
# afterward's Redis worker against Celery 5 and Dramatiq 2: one worker
# draining N queued no-op jobs that each append a line to a file, on the same
# local Redis, side by side in one run:
#   scripts/jobs-peers.sh [N] [ROUNDS]      (defaults: 30000 jobs, 3 rounds)
#
# For each system and round: Redis emptied, N jobs queued with no worker
# running (not timed), then the worker started and timed until the file has
# N lines; the worker then stopped with SIGTERM. The order of the systems is
# rotated from round to round.
#   afterward  `afterward worker --redis-url URL --log-file F` (the binary
#              built with --features redis; default concurrency: cores, at
#              least 2; prefetch 100). Queued by its web server (`POST /flaky`,
#              the demo's job that appends `flaky ID done`), which is stopped
#              before the worker starts.
#   celery     `celery worker`: prefork, one process per core, acks_late off,
#              no result backend (Celery's defaults). Queued with apply_async.
#   dramatiq   `dramatiq`: one process per core, 8 threads each (its
#              defaults). Queued with send().
# The job is the same everywhere: open the file, append one line, close.
# Reported (medians over the rounds): seconds from the worker's start to the
# Nth line, jobs/s over that time, seconds to the first line (the start-up),
# jobs/s from the first line to the last, and afterward's total time over the
# system's (afterward's jobs/s ÷ theirs; the median of per-round ratios).
# Markdown to target/bench-jobs-peers.md, printed at the end.
#
# Environment: JOBS_PEERS_ONLY="afterward celery dramatiq" to restrict the
# systems. Celery and Dramatiq are installed from PyPI into a venv,
# target/jobs-peers-venv (made once). redis-server is started here on a free
# loopback port and killed by pid at the end. Needs python3 and redis-server
# (Debian package redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30000}
rounds=${2:-3}
for v in "$n" "$rounds"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "not a positive whole number: $v" >&2; exit 2; }
done
all=(afterward celery dramatiq)
systems=()
for name in ${JOBS_PEERS_ONLY:-${all[*]}}; do
    [[ " ${all[*]} " == *" $name "* ]] || { echo "JOBS_PEERS_ONLY: unknown system $name (known: ${all[*]})" >&2; exit 2; }
    [[ " ${systems[*]} " == *" $name "* ]] || systems+=("$name")
done
[ ${#systems[@]} -gt 0 ] || { echo "JOBS_PEERS_ONLY names no system" >&2; exit 2; }
has() { [[ " ${systems[*]} " == *" $1 "* ]]; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "needs redis-server (Debian package redis-server)" >&2; exit 1; }

helpers=$PWD/benches/peers/jobs
venv=$PWD/target/jobs-peers-venv
mkdir -p target
# The venv, made once: Celery 5 and Dramatiq 2 with their Redis clients.
if [ ! -x "$venv/bin/dramatiq" ] || [ ! -x "$venv/bin/celery" ]; then
    echo "installing Celery and Dramatiq into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "celery[redis]>=5,<6" "dramatiq[redis]>=2,<3" redis
fi
py=$venv/bin/python

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binary with the redis feature, copied out of target/release (a plain
# `cargo build` links its own there again).
bin=$work/afterward-redis
if has afterward; then
    cargo build --release --quiet -p afterward-cli --features redis
    cp target/release/afterward "$bin"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID WHAT: waits until PORT accepts connections.
wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "$3 did not start on port $1" >&2
    exit 1
}

# forget PID: a process of ours that has ended: not one to clean up.
forget() {
    local kept=() pid
    for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    pids=("${kept[@]}")
}

# stop PID: ends a process we started, and forgets it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" --daemonize no --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$redis_port" "$redis_pid" redis-server
redis_url="redis://127.0.0.1:$redis_port"
redis() { redis-cli -p "$redis_port" "$@"; }
export JOBS_PEERS_REDIS_URL=$redis_url PYTHONPATH=$helpers

# queued SYSTEM: the jobs waiting in Redis, as each system keeps them.
queued() {
    case $1 in
        afterward) redis XLEN '{afterward:default}:jobs' ;;
        celery) redis LLEN celery ;;
        dramatiq) redis LLEN dramatiq:default ;;
    esac
}

# enqueue SYSTEM LOG: queues N jobs for SYSTEM, its worker not running.
enqueue() {
    local system=$1 log=$2
    case $system in
        afterward)
            local port pid
            port=$(free_port)
            "$bin" --port "$port" --redis-url "$redis_url" --log-file "$work/web.log" >"$work/web.out" 2>&1 &
            pid=$!
            pids+=("$pid")
            wait_port "$port" "$pid" "afterward (web)"
            "$py" "$helpers/jobs_peers.py" enqueue afterward "$n" "$port"
            # SIGTERM: a graceful stop, which sends every job still buffered.
            stop "$pid"
            ;;
        *) JOBS_PEERS_LOG=$log "$py" "$helpers/jobs_peers.py" enqueue "$system" "$n" ;;
    esac
}

# worker SYSTEM LOG: the command that runs SYSTEM's worker (the Python
# modules are found through PYTHONPATH).
worker() {
    case $1 in
        afterward) echo "$bin worker --redis-url $redis_url --log-file $2" ;;
        celery) echo "$venv/bin/celery -A celery_app worker --loglevel=WARNING" ;;
        dramatiq) echo "$venv/bin/dramatiq dramatiq_app" ;;
    esac
}

timeout=$((60 + n / 100))
declare -A results total_in
for round in $(seq 1 "$rounds"); do
    shift_by=$(( (round - 1) % ${#systems[@]} ))
    order=("${systems[@]:shift_by}" "${systems[@]:0:shift_by}")
    for system in "${order[@]}"; do
        log="$work/$system.lines"
        rm -f "$log"
        redis FLUSHALL >/dev/null
        enqueue "$system" "$log"
        waiting=$(queued "$system")
        [ "$waiting" = "$n" ] || echo "warning: $system has $waiting jobs queued, not $n" >&2
        # shellcheck disable=SC2046
        JOBS_PEERS_LOG=$log "$py" "$helpers/jobs_peers.py" drain "$n" "$log" "$timeout" -- \
            $(worker "$system" "$log") >"$work/drain.out" 2>"$work/$system.worker.err" &
        drain_pid=$!
        pids+=("$drain_pid")
        if ! wait "$drain_pid"; then
            echo "$system did not finish:" >&2
            tail -20 "$work/$system.worker.err" >&2
            exit 1
        fi
        forget "$drain_pid"
        read -r secs first lines < "$work/drain.out"
        line=$(awk -v n="$n" -v s="$secs" -v f="$first" \
            'BEGIN {printf "%.3f %.0f %.3f %.0f\n", s, n / s, f, (s > f ? (n - 1) / (s - f) : 0)}')
        echo "round $round $system: $line (seconds, jobs/s, first line s, jobs/s after it)" >&2
        results[$system]+="$line"$'\n'
        total_in["$round $system"]=$secs
    done
done
stop "$redis_pid"

# median FORMAT: of the numbers read, one a line (of an even count, the mean
# of the two middle ones), printed with the printf FORMAT.
median() {
    sort -g | awk -v f="$1" '{v[NR] = $1} END {
        if (!NR) print "n/a"
        else printf f "\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)
    }'
}
versions=$("$py" -c 'import celery, dramatiq, redis; print(f"Celery {celery.__version__}, Dramatiq {dramatiq.__version__}, redis-py {redis.__version__}")')
md=target/bench-jobs-peers.md
{
    echo "scripts/jobs-peers.sh $n $rounds at $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(redis-server --version | awk '{print "Redis", substr($3, 3)}'), $versions; medians of $rounds rounds."
    echo
    echo "| system | jobs | seconds, worker start to last line | jobs/s | seconds to the first line | jobs/s after the first line | afterward ÷ system (jobs/s) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for system in "${systems[@]}"; do
        rows=${results[$system]}
        cols=()
        formats=(%.3f %.0f %.3f %.0f)
        for i in 1 2 3 4; do cols+=("$(echo -n "$rows" | awk -v i=$i 'NF {print $i}' | median "${formats[i - 1]}")"); done
        ratio="n/a"
        if [ "$system" = afterward ]; then
            ratio="1.00"
        elif has afterward; then
            ratio=$(for round in $(seq 1 "$rounds"); do
                awk -v a="${total_in["$round afterward"]}" -v b="${total_in["$round $system"]}" 'BEGIN {printf "%.2f\n", b / a}'
            done | median %.2f)
        fi
        echo "| $system | $n | ${cols[0]} | ${cols[1]} | ${cols[2]} | ${cols[3]} | $ratio |"
    done
} > "$md.tmp"
mv "$md.tmp" "$md"
cat "$md"
