#!/usr/bin/env python3
"""The attacks of SECURITY.md against `afterward` binaries, side by side.

    scripts/attacks.py [BINARY ...]        (default: target/release/afterward)

Each binary is started on a free loopback port with its defaults (and, for
the log stall, stderr a pipe nobody reads); each attack runs for a bounded
time while a probe opens a fresh connection for `GET /health` every 20 ms.
For each attack and binary: the probes' p50, p99 and max latency and how many
got no answer within 5 s; then the attack's own figures. Markdown on stdout.

Attacks:
  flood-1, flood-2   one or two clients sending "\\r\\n" as fast as the socket
                     takes it, reconnecting when cut off
  slow-uploads-300   300 uploads of a 1 MB body, 150 dripping a byte every
                     20 ms, 150 sending only their head
  dead-burst-15000   the workers held by 8 slow requests (--notify-delay-ms
                     does not hold workers; a 2 s body does: see below), then
                     15,000 whole requests whose clients close at once; RSS and
                     descriptors of the server before, at the peak, and 10 s
                     after
  log-stall          stderr a pipe nobody reads; 8,000 keep-alive requests:
                     how many were answered, and how fast

Only loopback; every loop bounded; every process started is killed by pid.
"""

import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

PROBE_EVERY = 0.02
PROBE_TIMEOUT = 5.0


def start(binary, args=(), stderr=subprocess.DEVNULL):
    proc = subprocess.Popen(
        [binary, "--port", "0", "--log-file", "/dev/null", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "info"},
    )
    line = proc.stdout.readline().decode()
    port = int(line.strip().rsplit(":", 1)[1])
    return proc, port


def stop(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def get(port, path="/health", timeout=PROBE_TIMEOUT):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.settimeout(timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


class Probe:
    """A fresh GET /health every PROBE_EVERY seconds until stopped."""

    def __init__(self, port):
        self.port, self.latencies, self.failed = port, [], 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            t = time.monotonic()
            try:
                ok = get(self.port).startswith(b"HTTP/1.1 200")
            except OSError:
                ok = False
            if ok:
                self.latencies.append(time.monotonic() - t)
            else:
                self.failed += 1
            time.sleep(PROBE_EVERY)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        lat = sorted(self.latencies) or [float("nan")]
        pick = lambda q: lat[min(len(lat) - 1, int(q * (len(lat) - 1) + 0.5))] * 1000
        return f"{pick(0.5):.1f} / {pick(0.99):.1f} / {pick(1.0):.1f} ms, {self.failed} failed of {len(lat) + self.failed}"


def flood(port, stopping, cut):
    chunk = b"\r\n" * 32768
    while not stopping.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            continue
        s.settimeout(5)
        try:
            while not stopping.is_set():
                s.sendall(chunk)
        except OSError:
            cut[0] += 1
        finally:
            s.close()


def attack_flood(binary, n, seconds=10):
    proc, port = start(binary)
    stopping, cut = threading.Event(), [0]
    floods = [threading.Thread(target=flood, args=(port, stopping, cut)) for _ in range(n)]
    for f in floods:
        f.start()
    time.sleep(0.5)
    probe = Probe(port)
    time.sleep(seconds)
    result = probe.stop()
    stopping.set()
    for f in floods:
        f.join()
    stop(proc)
    return result, f"flood connections cut off: {cut[0]}"


def attack_slow_uploads(binary, seconds=10):
    proc, port = start(binary)
    head = b"POST /files HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nu"
    conns = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(head)
        conns.append(s)
    stopping = threading.Event()

    def drip():
        while not stopping.is_set():
            for s in conns[:150]:
                try:
                    s.send(b"u")
                except OSError:
                    pass
            time.sleep(0.02)

    dripper = threading.Thread(target=drip)
    dripper.start()
    probe = Probe(port)
    time.sleep(seconds)
    result = probe.stop()
    stopping.set()
    dripper.join()
    for s in conns:
        s.close()
    stop(proc)
    return result, "300 uploaders"


def status(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def attack_dead_burst(binary, n=15000):
    # 8 request workers held by bodies that take 2 s to arrive: on an engine
    # whose workers read bodies, they hold the workers; on one whose loop
    # reads them, nothing is held and the burst is served or dropped at once.
    proc, port = start(binary, ["--workers", "8"])
    pid = proc.pid
    before = (status(pid, "VmRSS:"), descriptors(pid))
    holders = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /files HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n")
        holders.append(s)
    probe = Probe(port)
    peak = [0, 0]
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(f"POST /send-notification/d{i}@x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".encode())
            s.close()
        except OSError:
            pass
        if i % 1000 == 0:
            peak = [max(peak[0], status(pid, "VmRSS:")), max(peak[1], descriptors(pid))]
    peak = [max(peak[0], status(pid, "VmRSS:")), max(peak[1], descriptors(pid))]
    time.sleep(2)
    for s in holders:
        try:
            s.sendall(b"ok")
        except OSError:
            pass
    time.sleep(10)
    result = probe.stop()
    after = (status(pid, "VmRSS:"), descriptors(pid))
    metrics = get(port, "/metrics").decode(errors="replace")
    gone = [l for l in metrics.splitlines() if l.startswith("afterward_requests_client_gone_total")]
    answered = [l for l in metrics.splitlines() if l.startswith('afterward_requests_total{class="2xx"}')]
    for s in holders:
        s.close()
    stop(proc)
    return result, (
        f"RSS KiB before / peak / 10 s after: {before[0]} / {peak[0]} / {after[0]}; "
        f"descriptors {before[1]} / {peak[1]} / {after[1]}; "
        f"{(gone or ['client_gone: n/a'])[0]}; {(answered or ['2xx: n/a'])[0]}"
    )


def attack_log_stall(binary, n=8000):
    proc, port = start(binary, stderr=subprocess.PIPE)
    answered, failed, started = [0], [0], time.monotonic()

    def client():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.settimeout(5)
            for _ in range(n // 8):
                s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
                data = b""
                while not data.endswith(b'{"status":"ok"}'):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise OSError("closed")
                    data += chunk
                answered[0] += 1
        except OSError:
            failed[0] += 1

    clients = [threading.Thread(target=client) for _ in range(8)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    took = time.monotonic() - started
    stop(proc)
    return f"{answered[0]} of {n} answered in {took:.1f} s", f"{failed[0]} clients stalled (5 s without an answer)"


def main():
    binaries = sys.argv[1:] or ["target/release/afterward"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attacks = [
        ("flood-1", lambda b: attack_flood(b, 1)),
        ("flood-2", lambda b: attack_flood(b, 2)),
        ("slow-uploads-300", attack_slow_uploads),
        ("dead-burst-15000", attack_dead_burst),
        ("log-stall", attack_log_stall),
    ]
    only = os.environ.get("ATTACKS_ONLY", "").split()
    print("| attack | binary | fresh GET /health p50 / p99 / max, failed | attack's own figures |")
    print("|---|---|---|---|")
    for name, attack in attacks:
        if only and name not in only:
            continue
        for binary in binaries:
            probe, extra = attack(binary)
            print(f"| {name} | {binary} | {probe} | {extra} |", flush=True)


if __name__ == "__main__":
    main()
