#!/usr/bin/env bash
# afterward side by side with its peers (issue #9), on this machine, in one run:
#   scripts/peers.sh [SECS] [ROUNDS]      (defaults: 5 s, 3 rounds)
#
# Servers (each started once, on loopback, and killed by pid at the end):
#   afterward          target/release/afterward, the repo's binary (built here),
#                      with its access lines (RUST_LOG=info, as the binary runs)
#   afterward-nolog    the same binary with RUST_LOG=warn: no access line, as
#                      the peers and nginx run here (they log nothing per request)
#   NAME               each of AFTERWARD_VS="name1=/path/to/bin name2=/path/..."
#                      (other afterward binaries, same flags: before/after runs)
#   actix, axum        benches/peers/, the background append on the blocking
#                      pool (spawn_blocking)
#   actix-inline, axum-inline
#                      the same append as a task on the runtime itself
#                      (actix_rt::spawn, tokio::spawn): how most users write it
#   nginx-return200    nginx answering the same bodies with `return 200`: the
#                      ceiling, no application and no background work
# Workloads: bg-write (POST /send-notification/{email}, a counter in the email,
# answered at once, then a line appended to a file in the background) and
# health (GET /health), each at c32 and c256, wrk -t1 (the client on one
# thread). A warm-up, then ROUNDS interleaved rounds: in each round every
# workload and concurrency runs SECS on every server back to back, the server
# order rotated from round to round, so that a peer and afterward meet the
# machine in the same state.
#
# Reported per server, workload and c (medians over the rounds): requests/s,
# p99, CPU µs per request (the server's utime + stime from /proc/PID/stat, all
# its threads; nginx: master and workers), context switches per request
# (`perf stat -e context-switches`; "n/a" without perf), afterward's
# requests/s over the server's (the median of the per-round ratios), and the
# errors wrk saw (non-2xx answers and socket errors, summed over the rounds),
# and the same ratio for afterward-nolog.
# Markdown to target/bench-peers.md, printed at the end.
#
# Environment:
#   PEERS_ONLY="afterward actix-inline ..."   servers to run (default: all)
#   PEERS_WORKLOADS="bg-write health"         workloads (default: both)
#   PEERS_CONNECTIONS="32 256"                wrk connections (default: both)
#   PEERS_WARMUP=2                            seconds of warm-up per server and workload
#   PEERS_IDLE=1                              also: 10,000 idle keep-alive
#                                             connections held while 200 fresh clients
#                                             make one request each (each server fresh)
#   PEERS_SYSCALLS=1                          also: system calls per request, all of
#                                             them and the ones that wait or hand work
#                                             over (futex, sched_yield, epoll_wait,
#                                             epoll_ctl), from perf's tracepoints (needs
#                                             perf with access to them, as root), in a
#                                             second table
#   PEERS_RUST_LOG=info                       RUST_LOG of the afterward servers but
#                                             afterward-nolog (the
#                                             binary's default, access lines included,
#                                             written to /dev/null)
# Needs wrk, python3, nginx (installed with apt-get when missing and run as
# root), and, for PEERS_IDLE, descriptors for 10,000 connections (raised here).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
warmup=${PEERS_WARMUP:-2}
read -r -a workloads <<< "${PEERS_WORKLOADS:-bg-write health}"
read -r -a connections <<< "${PEERS_CONNECTIONS:-32 256}"
for n in "$secs" "$rounds" "$warmup" "${connections[@]}"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "not a positive whole number: $n" >&2; exit 2; }
done
for w in "${workloads[@]}"; do
    case $w in bg-write|health) ;; *) echo "unknown workload $w (bg-write, health)" >&2; exit 2 ;; esac
done

# The servers: afterward, the AFTERWARD_VS binaries, then the peers.
declare -A vs_bin=()
all=(afterward afterward-nolog)
for pair in ${AFTERWARD_VS:-}; do
    name=${pair%%=*} bin=${pair#*=}
    [[ $pair == *=* && -n $name && $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "AFTERWARD_VS: expected name=/path, not $pair" >&2; exit 2; }
    [ -x "$bin" ] || { echo "AFTERWARD_VS: $bin is not an executable" >&2; exit 2; }
    case " ${all[*]} actix actix-inline axum axum-inline nginx-return200 " in
        *" $name "*) echo "AFTERWARD_VS: the name $name is taken" >&2; exit 2 ;;
    esac
    vs_bin[$name]=$(realpath "$bin")
    all+=("$name")
done
all+=(actix actix-inline axum axum-inline nginx-return200)
only=" ${PEERS_ONLY:-${all[*]}} "
for name in $only; do
    [[ " ${all[*]} " == *" $name "* ]] || { echo "PEERS_ONLY: unknown server $name (known: ${all[*]})" >&2; exit 2; }
done
servers=()  # in the order of `all`, whatever PEERS_ONLY's
for name in "${all[@]}"; do [[ $only == *" $name "* ]] && servers+=("$name"); done
[ ${#servers[@]} -gt 0 ] || { echo "PEERS_ONLY names no server" >&2; exit 2; }
has() { [[ " ${servers[*]} " == *" $1 "* ]]; }

command -v wrk >/dev/null || { echo "needs wrk (Debian package wrk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
if has nginx-return200 && ! command -v nginx >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing nginx-light" >&2
        apt-get install -y -q nginx-light >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q nginx-light >/dev/null; }
    else
        echo "needs nginx (Debian package nginx-light), or leave nginx-return200 out of PEERS_ONLY" >&2; exit 1
    fi
fi
if has afterward || has afterward-nolog; then cargo build --release --quiet -p afterward-cli; fi
if has actix || has actix-inline || has axum || has axum-inline; then
    (cd benches/peers && cargo build --release --quiet)
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# 10,000 connections on each side, and nginx's workers inherit it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cat > "$work/post.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/send-notification/user" .. counter .. "@example.com")
end
LUA

# free_port: a loopback port nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# nginx_conf PORT DIR: nginx's configuration, every path inside DIR.
nginx_conf() {
    local port=$1 dir=$2
    mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 20000;
}
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    default_type application/json;
    server {
        listen 127.0.0.1:$port;
        location = /health { return 200 '{"status":"ok"}'; }
        location / { return 200 '{"message":"Message sent"}'; }
    }
}
CONF
}

# start NAME PORT TAG: starts a server in the background (its log file
# $work/TAG.log, its output $work/TAG.out) and waits for its port; sets
# started_pid and records the pid for the cleanup.
start() {
    local name=$1 port=$2 tag=$3
    local log="$work/$tag.log" out="$work/$tag.out"
    case $name in
        afterward)
            RUST_LOG=${PEERS_RUST_LOG:-info} target/release/afterward --port "$port" --log-file "$log" >"$out" 2>/dev/null & ;;
        afterward-nolog)
            RUST_LOG=warn target/release/afterward --port "$port" --log-file "$log" >"$out" 2>/dev/null & ;;
        actix) benches/peers/target/release/actix "$port" "$log" spawn-blocking >"$out" 2>&1 & ;;
        actix-inline) benches/peers/target/release/actix "$port" "$log" inline >"$out" 2>&1 & ;;
        axum) benches/peers/target/release/axum "$port" "$log" spawn-blocking >"$out" 2>&1 & ;;
        axum-inline) benches/peers/target/release/axum "$port" "$log" inline >"$out" 2>&1 & ;;
        nginx-return200)
            nginx_conf "$port" "$work/$tag-nginx"
            nginx -p "$work/$tag-nginx" -c "$work/$tag-nginx/nginx.conf" -e "$work/$tag-nginx/error.log" >"$out" 2>&1 & ;;
        *)
            RUST_LOG=${PEERS_RUST_LOG:-info} "${vs_bin[$name]}" --port "$port" --log-file "$log" >"$out" 2>/dev/null & ;;
    esac
    started_pid=$!
    pids+=("$started_pid")
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        kill -0 "$started_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "$name did not start on port $port:" >&2
    cat "$out" "$work/$tag-nginx/error.log" 2>/dev/null >&2 || true
    exit 1
}

# stop PID: ends a server we started, and forgets it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=() pid
    for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    pids=("${kept[@]}")
}

# procs PID: the process and its children (nginx's workers), comma-separated.
procs() {
    local list=$1 child
    for child in $(pgrep -P "$1" || true); do list+=",$child"; done
    echo "$list"
}

# cpu_ticks PIDS: utime + stime of the comma-separated processes (all their
# threads), in clock ticks. The fields are counted after the command name.
cpu_ticks() {
    local total=0 pid t
    for pid in ${1//,/ }; do
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

# wrk_args WORKLOAD PORT: the target of a workload.
wrk_args() {
    case $1 in
        bg-write) echo "-s $work/post.lua http://127.0.0.1:$2/" ;;
        health) echo "http://127.0.0.1:$2/health" ;;
    esac
}

hz=$(getconf CLK_TCK)
# perf counts the servers' context switches for exactly the length of a wrk
# run (`perf stat -p PIDS -- wrk ...`), where perf may attach to a process.
use_perf=0
if command -v perf >/dev/null && perf stat -e context-switches -p $$ -o /dev/null -- true >/dev/null 2>&1; then
    use_perf=1
fi
# The system calls counted with PEERS_SYSCALLS=1: every one, then the ones a
# server makes to wait or to hand work to another thread.
syscall_events=(raw_syscalls:sys_enter syscalls:sys_enter_futex syscalls:sys_enter_sched_yield
    syscalls:sys_enter_epoll_wait syscalls:sys_enter_epoll_ctl)
use_syscalls=0
if [ "${PEERS_SYSCALLS:-0}" = 1 ]; then
    events=$(IFS=,; echo "${syscall_events[*]}")
    if [ "$use_perf" = 1 ] && perf stat -e "$events" -p $$ -o /dev/null -- true >/dev/null 2>&1; then
        use_syscalls=1
    else
        echo "PEERS_SYSCALLS=1: perf cannot count system calls here (run as root, with perf installed)" >&2; exit 1
    fi
fi
# measure PID PORT WORKLOAD CONNECTIONS: one wrk run of SECS; prints
# "rps p99_ms cpu_us_per_request cs_per_request errors", then, with
# PEERS_SYSCALLS=1, the system calls per request of `syscall_events`.
measure() {
    local pid=$1 port=$2 workload=$3 c=$4
    local all_pids before after out n rps p99 errors cs="n/a" perf=() events=context-switches calls=""
    all_pids=$(procs "$pid")
    if [ "$use_syscalls" = 1 ]; then
        events+=$(printf ',%s' "${syscall_events[@]}")
    fi
    if [ "$use_perf" = 1 ]; then
        perf=(perf stat -e "$events" -p "$all_pids" -o "$work/perf.txt" --)
    fi
    before=$(cpu_ticks "$all_pids")
    # shellcheck disable=SC2046
    out=$("${perf[@]}" wrk -t1 -c"$c" -d"${secs}s" --latency $(wrk_args "$workload" "$port"))
    kill -0 "$pid" 2>/dev/null || { echo "the server (pid $pid) died during the run" >&2; exit 1; }
    after=$(cpu_ticks "$all_pids")
    if [ "$use_perf" = 1 ]; then
        cs=$(awk '/context-switches/ {gsub(",", "", $1); print $1}' "$work/perf.txt")
        [ -n "$cs" ] || cs="n/a"
    fi
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    if [ "$use_syscalls" = 1 ]; then
        local event count
        for event in "${syscall_events[@]}"; do
            count=$(awk -v e="$event" '$2 == e {gsub(",", "", $1); print $1}' "$work/perf.txt")
            calls+=$(awk -v k="$count" -v n="$n" 'BEGIN {printf " %s", (k == "" || n + 0 == 0) ? "n/a" : sprintf("%.3f", k / n)}')
        done
    fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v = v / 1000} else if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /s$/) {sub(/s/, "", v); v = v * 1000}; print v}')
    errors=$(echo "$out" | awk '/Non-2xx/ {e += $NF} /Socket errors/ {gsub(",", ""); e += $4 + $6 + $8 + $10} END {print e + 0}')
    awk -v r="$rps" -v p="$p99" -v t=$((after - before)) -v n="$n" -v hz="$hz" -v cs="$cs" -v e="$errors" -v calls="$calls" \
        'BEGIN {
            if (n + 0 == 0) { printf "0 0 0 n/a %d%s\n", e + 1, calls; exit }
            printf "%.0f %.2f %.1f %s %d%s\n", r, p, t * 1e6 / hz / n, (cs == "n/a" ? "n/a" : sprintf("%.2f", cs / n)), e, calls
        }'
}

# median FORMAT: of the numbers read, one a line (of an even count, the mean
# of the two middle ones), printed with the printf FORMAT.
median() {
    sort -g | awk -v f="$1" '{v[NR] = $1} END {
        if (!NR) print "n/a"
        else printf f "\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)
    }'
}

# Every server at once, on ports of its own; a warm-up each.
declare -A pid_of port_of
for name in "${servers[@]}"; do
    port=$(free_port)
    start "$name" "$port" "$name"
    pid_of[$name]=$started_pid
    port_of[$name]=$port
    echo "started $name (pid $started_pid, port $port)" >&2
done
for name in "${servers[@]}"; do
    for w in "${workloads[@]}"; do
        # shellcheck disable=SC2046
        wrk -t1 -c32 -d"${warmup}s" $(wrk_args "$w" "${port_of[$name]}") >/dev/null
    done
    if [[ " ${workloads[*]} " == *" bg-write "* && $name != nginx-return200 && ! -s "$work/$name.log" ]]; then
        echo "warning: $name wrote no line in the warm-up's bg-write" >&2
    fi
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A results rps_in
for round in $(seq 1 "$rounds"); do
    shift_by=$(( (round - 1) % ${#servers[@]} ))
    order=("${servers[@]:shift_by}" "${servers[@]:0:shift_by}")
    for w in "${workloads[@]}"; do
        for c in "${connections[@]}"; do
            for name in "${order[@]}"; do
                line=$(measure "${pid_of[$name]}" "${port_of[$name]}" "$w" "$c")
                echo "round $round $w c$c $name: $line" >&2
                results["$name $w $c"]+="$line"$'\n'
                rps_in["$round $w $c $name"]=${line%% *}
                # The appended lines are not needed; keep the page cache small.
                : > "$work/$name.log"
            done
        done
    done
done
for name in "${servers[@]}"; do stop "${pid_of[$name]}"; done

# ratio BASE NAME: BASE's requests/s over NAME's, the median of the per-round
# ratios, for the workload $w at $c connections ("n/a" without BASE).
ratio() {
    local base=$1 name=$2 round
    if ! has "$base"; then echo "n/a"; return; fi
    if [ "$name" = "$base" ]; then echo "1.00"; return; fi
    for round in $(seq 1 "$rounds"); do
        awk -v a="${rps_in["$round $w $c $base"]}" -v b="${rps_in["$round $w $c $name"]}" \
            'BEGIN {if (b > 0) printf "%.2f\n", a / b}'
    done | median %.2f
}

# column_median ROWS I FORMAT: the median of column I of ROWS (lines of
# `measure`), its "n/a" left out, printed with FORMAT.
column_median() {
    echo -n "$1" | awk -v i="$2" 'NF && $i != "n/a" {print $i}' | median "$3"
}

md="target/bench-peers.md"
mkdir -p target
{
    echo "scripts/peers.sh $secs $rounds at $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $load at the start; wrk -t1, ${warmup} s warm-up, medians of $rounds rounds of $secs s."
    echo
    echo "| workload | c | server | requests/s | p99 ms | CPU µs/request | context switches/request | afterward ÷ server (requests/s) | afterward-nolog ÷ server | errors |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for w in "${workloads[@]}"; do
        for c in "${connections[@]}"; do
            for name in "${servers[@]}"; do
                rows=${results["$name $w $c"]}
                cols=()
                formats=(%.0f %.2f %.1f %.2f)
                for i in 1 2 3 4; do
                    cols+=("$(column_median "$rows" "$i" "${formats[i - 1]}")")
                done
                errors=$(echo -n "$rows" | awk 'NF {e += $5} END {print e + 0}')
                echo "| $w | $c | $name | ${cols[0]} | ${cols[1]} | ${cols[2]} | ${cols[3]} | $(ratio afterward "$name") | $(ratio afterward-nolog "$name") | $errors |"
            done
        done
    done
    if [ "$use_syscalls" = 1 ]; then
        echo
        echo "System calls per request (perf's tracepoints, over the same wrk runs; medians):"
        echo
        # Named after the events: `raw_syscalls:sys_enter` is every call.
        header="| workload | c | server |" rule="|---|---:|---|"
        for event in "${syscall_events[@]}"; do
            case $event in
                raw_syscalls:sys_enter) header+=" all |" ;;
                *) header+=" ${event#*sys_enter_} |" ;;
            esac
            rule+="---:|"
        done
        echo "$header"
        echo "$rule"
        for w in "${workloads[@]}"; do
            for c in "${connections[@]}"; do
                for name in "${servers[@]}"; do
                    rows=${results["$name $w $c"]}
                    line="| $w | $c | $name |"
                    # measure's columns 6 on: one per event, in their order.
                    for i in $(seq 6 $((5 + ${#syscall_events[@]}))); do
                        line+=" $(column_median "$rows" "$i" %.2f) |"
                    done
                    echo "$line"
                done
            done
        done
    fi
} > "$md.tmp"

if [ "${PEERS_IDLE:-0}" = 1 ]; then
    {
        echo
        echo "10,000 idle keep-alive connections (GET /health each, then held), while 200 fresh clients make one request each; each server started fresh:"
        echo
        echo "| server | fresh clients answered (of 200) | fresh p99 ms | RSS MiB | threads | idle connections held (of 10,000) |"
        echo "|---|---:|---:|---:|---:|---:|"
    } >> "$md.tmp"
    for name in "${servers[@]}"; do
        port=$(free_port)
        start "$name" "$port" "$name-idle"
        pid=$started_pid
        read -r ok p99 rss threads held < <(python3 - "$port" "$(procs "$pid")" <<'PY'
import socket, sys, time
port, pids = int(sys.argv[1]), sys.argv[2].split(",")
held = []
for _ in range(10000):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.settimeout(2)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: peers\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk: break
            data += chunk
        if data.startswith(b"HTTP/1.1 200"): held.append(s)
        else: s.close()
    except OSError:
        pass
rss = threads = 0
for pid in pids:  # nginx: the master and its workers
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): rss += int(line.split()[1])
        if line.startswith("Threads:"): threads += int(line.split()[1])
ok, lat = 0, []
for _ in range(200):
    t = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.settimeout(2)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: peers\r\nConnection: close\r\n\r\n")
        if s.recv(4096).startswith(b"HTTP/1.1 200"): ok += 1
        s.close()
    except OSError:
        pass
    lat.append(time.time() - t)
lat.sort()
print(ok, "%.2f" % (lat[197] * 1e3), "%.1f" % (rss / 1024), threads, len(held))
PY
)
        echo "idle $name: $ok $p99 $rss $threads $held" >&2
        echo "| $name | $ok | $p99 | $rss | $threads | $held |" >> "$md.tmp"
        stop "$pid"
    done
fi
mv "$md.tmp" "$md"
cat "$md"
