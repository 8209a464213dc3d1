"""Helpers of scripts/jobs-peers.sh.

  jobs_peers.py enqueue SYSTEM N [PORT]
      Queues N jobs for SYSTEM (afterward, celery, dramatiq) with no worker
      running. afterward: N `POST /flaky` (a job that appends one line) to the
      web server on PORT, pipelined on a few keep-alive connections; Celery
      and Dramatiq: N `.delay()` / `.send()` calls.
  jobs_peers.py drain N LOG TIMEOUT -- COMMAND...
      Starts the worker COMMAND, waits until LOG has N lines (or TIMEOUT
      seconds pass), stops the worker (SIGTERM to its pid; after 30 s SIGKILL
      to the process group it was started in), and prints "SECONDS
      FIRST_LINE_SECONDS LINES": from the worker's start to the Nth line, and
      to the first line.
"""
import os
import signal
import socket
import subprocess
import sys
import time


def enqueue_afterward(n, port, connections=4, batch=500):
    """Sends n `POST /flaky` to the web server, `batch` at a time on each of
    `connections` connections, and checks each answer is 202."""
    request = b"POST /flaky HTTP/1.1\r\nHost: jobs-peers\r\nContent-Length: 0\r\n\r\n"
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(connections)]
    left, accepted = n, 0
    while left > 0:
        sent = []
        for s in socks:
            k = min(batch, left)
            if k == 0:
                break
            s.sendall(request * k)
            sent.append((s, k))
            left -= k
        for s, k in sent:
            accepted += read_answers(s, k)
    for s in socks:
        s.close()
    if accepted != n:
        sys.exit(f"afterward accepted {accepted} of {n} jobs")


def read_answers(s, count):
    """Reads `count` HTTP/1.1 answers with a Content-Length; returns how many were 202."""
    buf, accepted = b"", 0
    for _ in range(count):
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("the web server closed the connection")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buf) < length:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("the web server closed the connection")
            buf += chunk
        buf = buf[length:]
        if lines[0].split()[1] == b"202":
            accepted += 1
    return accepted


def enqueue(system, n, port=None):
    if system == "afterward":
        enqueue_afterward(n, int(port))
    elif system == "celery":
        from celery_app import app, write_line

        with app.producer_or_acquire() as producer:
            for i in range(n):
                write_line.apply_async((i,), producer=producer)
    elif system == "dramatiq":
        from dramatiq_app import write_line

        for i in range(n):
            write_line.send(i)
    else:
        sys.exit(f"unknown system {system}")


def count_lines(path, state):
    """Lines in the file at `path`, read incrementally (`state`: offset, count)."""
    try:
        with open(path, "rb") as f:
            f.seek(state[0])
            data = f.read()
    except FileNotFoundError:
        return state[1]
    state[0] += len(data)
    state[1] += data.count(b"\n")
    return state[1]


def drain(n, log, timeout, command):
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    # The worker's own output goes to stderr: stdout is the result alone.
    worker = subprocess.Popen(
        command, start_new_session=True, stdin=subprocess.DEVNULL, stdout=sys.stderr
    )
    state, first, done = [0, 0], None, None
    try:
        while time.monotonic() - started < timeout:
            lines = count_lines(log, state)
            now = time.monotonic()
            if lines > 0 and first is None:
                first = now - started
            if lines >= n:
                done = now - started
                break
            if worker.poll() is not None:
                break
            time.sleep(0.002)
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    lines = count_lines(log, state)
    if done is None:
        sys.exit(f"{lines} of {n} lines after {time.monotonic() - started:.1f} s (worker exit status {worker.returncode})")
    print(f"{done:.3f} {first:.3f} {lines}")


def main():
    args = sys.argv[1:]
    if args[:1] == ["enqueue"] and len(args) in (3, 4):
        enqueue(args[1], int(args[2]), *args[3:])
    elif args[:1] == ["drain"] and len(args) > 5 and args[4] == "--":
        drain(int(args[1]), args[2], float(args[3]), args[5:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
