#!/usr/bin/env bash
# afterward against actix-web and axum (issue #9), the same bg-write request
# (POST /send-notification/{email}: answer, then append a line in the
# background), side by side in one run, on this machine:
#   scripts/peers.sh [SECONDS] [ROUNDS]      (defaults: 5 s, 3 rounds)
# For each server and each of c32 and c256 (wrk -t2): requests/s, p99, CPU per
# request (the server's utime + stime from /proc over the run) and context
# switches per request (`perf stat -e context-switches`, all its threads;
# "n/a" without perf). Then 10,000 idle keep-alive connections held while
# 200 fresh clients make one request each: answered, p99, the server's RSS
# and threads. Medians of the rounds; markdown to target/bench-peers.md.
# Needs wrk, python3, and descriptors for 10,000 connections (ulimit -n).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (Debian package wrk)" >&2; exit 1; }
cargo build --release -p afterward-cli >/dev/null 2>&1
(cd benches/peers && cargo build --release >/dev/null 2>&1)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/post.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/send-notification/user" .. counter .. "@example.com")
end
LUA

# start NAME PORT: starts a server, waits for its port, prints its pid.
start() {
    local name=$1 port=$2
    case $name in
        afterward) target/release/afterward --port "$port" --log-file "$work/$name.log" >/dev/null 2>&1 & ;;
        actix) benches/peers/target/release/actix "$port" "$work/$name.log" >/dev/null 2>&1 & ;;
        axum) benches/peers/target/release/axum "$port" "$work/$name.log" >/dev/null 2>&1 & ;;
    esac
    local pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$pid"; return; fi
        sleep 0.05
    done
    echo "$name did not start" >&2; exit 1
}

# cpu_ticks PID: the process's utime + stime, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME PID PORT CONNECTIONS: one measured wrk run; prints
# "rps p99_ms cpu_us_per_request cs_per_request".
run() {
    local pid=$2 port=$3 c=$4
    local before after out n rps p99 cs="n/a"
    before=$(cpu_ticks "$pid")
    if command -v perf >/dev/null; then
        perf stat -e context-switches -p "$pid" -o "$work/perf.txt" -- sleep $((secs + 1)) >/dev/null 2>&1 &
        local perf_pid=$!
        sleep 0.3
    fi
    out=$(wrk -t2 -c"$c" -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/")
    after=$(cpu_ticks "$pid")
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
    if [ -n "${perf_pid:-}" ]; then
        wait "$perf_pid" 2>/dev/null || true
        cs=$(awk -v n="$n" '/context-switches/ {gsub(",","",$1); printf "%.2f", $1 / n}' "$work/perf.txt")
    fi
    local ticks_per_s
    ticks_per_s=$(getconf CLK_TCK)
    awk -v r="$rps" -v p="$p99" -v t=$((after - before)) -v n="$n" -v hz="$ticks_per_s" -v cs="$cs" \
        'BEGIN {printf "%.0f %.2f %.1f %s\n", r, p, t * 1e6 / hz / n, cs}'
}

# idle NAME PORT PID: 10,000 idle keep-alive connections, then 200 fresh
# clients; prints "fresh_ok p99_ms rss_mib threads held".
idle() {
    python3 - "$2" "$3" <<'PY'
import socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
held = []
for _ in range(10000):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
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
status = open(f"/proc/{pid}/status").read().splitlines()
field = lambda name: next(l.split()[1] for l in status if l.startswith(name))
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
print(ok, "%.2f" % (lat[197] * 1e3), "%.1f" % (int(field("VmRSS:")) / 1024), field("Threads:"), len(held))
PY
}

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

md="target/bench-peers.md"
mkdir -p target
{
echo "| server | c | requests/s | p99 ms | CPU µs/request | context switches/request |"
echo "|---|---:|---:|---:|---:|---:|"
} > "$md.tmp"
port=18600
declare -A results
for round in $(seq 1 "$rounds"); do
    for name in afterward actix axum; do
        port=$((port + 1))
        pid=$(start "$name" "$port")
        wrk -t2 -c32 -d1s -s "$work/post.lua" "http://127.0.0.1:$port/" >/dev/null
        for c in 32 256; do
            line=$(run "$name" "$pid" "$port" "$c")
            echo "round $round $name c$c: $line" >&2
            results["$name $c"]+="$line"$'\n'
        done
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done
for name in afterward actix axum; do
    for c in 32 256; do
        rows=${results["$name $c"]}
        cols=()
        for i in 1 2 3 4; do
            cols+=("$(echo -n "$rows" | awk -v i=$i 'NF {print $i}' | median)")
        done
        echo "| $name | $c | ${cols[0]} | ${cols[1]} | ${cols[2]} | ${cols[3]} |" >> "$md.tmp"
    done
done
{
echo
echo "| server | fresh clients answered (of 200) | fresh p99 ms | RSS MiB | threads | idle connections held (of 10,000) |"
echo "|---|---:|---:|---:|---:|---:|"
} >> "$md.tmp"
for name in afterward actix axum; do
    port=$((port + 1))
    pid=$(start "$name" "$port")
    read -r ok p99 rss threads held < <(idle "$name" "$port" "$pid")
    echo "| $name | $ok | $p99 | $rss | $threads | $held |" >> "$md.tmp"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done
mv "$md.tmp" "$md"
cat "$md"
