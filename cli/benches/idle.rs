//! Idle keep-alive connections against fresh clients (issue #9), on the
//! `afterward` binary as a process of its own:
//!
//! ```text
//! cargo bench -p afterward-cli --bench idle
//! IDLE_CONNECTIONS=4000 FRESH_REQUESTS=500 cargo bench -p afterward-cli --bench idle
//! ```
//!
//! 1. The empty server's RSS and threads (`/proc/PID/status`).
//! 2. `IDLE_CONNECTIONS` (10,000) keep-alive connections opened one after
//!    the other, each making one `GET /health` and then staying open, idle:
//!    how many were answered `200`, refused (`503`), or failed; how long
//!    opening them took.
//! 3. Meanwhile, `FRESH_REQUESTS` (200) fresh clients, one at a time: a new
//!    connection, `GET /health`, `Connection: close`; their answers and
//!    latency (p50, p99, max), each capped at 2 s.
//! 4. The server's RSS and threads while it holds the idle connections.
//!
//! The markdown is printed and written to `target/bench-idle.md`. Both
//! processes need descriptors for every connection (`ulimit -n`). Without
//! `--bench` it makes a quick check with 100 connections.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use afterward::testing::TestResponse;
use support::cli::Afterward;

/// How long a client waits for an answer.
const CAP: Duration = Duration::from_secs(2);

/// VmRSS in KiB and the thread count of process `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// How one request went.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Status(u16),
    Failed,
}

/// `GET /health` on `stream`; the answer's status, or `Failed` (refused,
/// reset, closed, or nothing within [`CAP`]).
fn health(stream: &TcpStream, close: bool) -> Answer {
    let _ = stream.set_read_timeout(Some(CAP));
    let connection = if close { "close" } else { "keep-alive" };
    let request =
        format!("GET /health HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n");
    if (&*stream).write_all(request.as_bytes()).is_err() {
        return Answer::Failed;
    }
    match TestResponse::read_from(&mut BufReader::new(stream), false) {
        Ok(response) => Answer::Status(response.status()),
        Err(_) => Answer::Failed,
    }
}

fn count(answers: &[Answer], which: Answer) -> usize {
    answers.iter().filter(|&&a| a == which).count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let idle = env_number("IDLE_CONNECTIONS", if full { 10_000 } else { 100 });
    let fresh = env_number("FRESH_REQUESTS", if full { 200 } else { 20 });
    let server = Afterward::start(&[]);
    let addr: SocketAddr = server.addr;
    let (empty_rss, empty_threads) = usage(server.pid());

    // The idle connections, each after one answered request.
    let started = Instant::now();
    let mut held = Vec::with_capacity(idle);
    let mut idle_answers = Vec::with_capacity(idle);
    for _ in 0..idle {
        match TcpStream::connect_timeout(&addr, CAP) {
            Ok(stream) => {
                let answer = health(&stream, false);
                idle_answers.push(answer);
                if answer == Answer::Status(200) {
                    held.push(stream);
                }
            }
            Err(_) => idle_answers.push(Answer::Failed),
        }
    }
    let opening = started.elapsed();
    let (idle_rss, idle_threads) = usage(server.pid());

    // Fresh clients meanwhile.
    let mut fresh_answers = Vec::with_capacity(fresh);
    let mut latencies = Vec::with_capacity(fresh);
    for _ in 0..fresh {
        let started = Instant::now();
        let answer = match TcpStream::connect_timeout(&addr, CAP) {
            Ok(stream) => health(&stream, true),
            Err(_) => Answer::Failed,
        };
        latencies.push(started.elapsed());
        fresh_answers.push(answer);
    }
    let fresh_took = started.elapsed() - opening;
    let still_open = held
        .iter()
        .filter(|stream| {
            // An idle connection the server closed reads as end of file.
            let _ = stream.set_nonblocking(true);
            let mut byte = [0u8; 1];
            // Open: nothing to read yet. End of file or an error: closed.
            matches!(
                std::io::Read::read(&mut &**stream, &mut byte),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            )
        })
        .count();
    drop(held);
    latencies.sort();

    let per_connection = (idle_rss.saturating_sub(empty_rss) as f64 * 1024.0)
        / count(&idle_answers, Answer::Status(200)).max(1) as f64;
    let markdown = format!(
        "| measure ({idle} idle keep-alive connections, then {fresh} fresh clients) | afterward |\n\
         |---|---:|\n\
         | empty server: RSS, threads | {:.1} MiB, {empty_threads} |\n\
         | idle connections answered 200 / refused 503 / failed | {} / {} / {} |\n\
         | time to open them | {} |\n\
         | while they are held: RSS, threads | {:.1} MiB, {idle_threads} |\n\
         | RSS per idle connection | {:.1} KiB |\n\
         | fresh clients answered 200 / refused 503 / failed (cap {} s) | {} / {} / {} |\n\
         | fresh clients' latency p50 / p99 / max | {} / {} / {} |\n\
         | idle connections still open after the fresh clients ({}) | {still_open} |\n",
        empty_rss as f64 / 1024.0,
        count(&idle_answers, Answer::Status(200)),
        count(&idle_answers, Answer::Status(503)),
        idle_answers.len()
            - count(&idle_answers, Answer::Status(200))
            - count(&idle_answers, Answer::Status(503)),
        ms(opening),
        idle_rss as f64 / 1024.0,
        per_connection / 1024.0,
        CAP.as_secs(),
        count(&fresh_answers, Answer::Status(200)),
        count(&fresh_answers, Answer::Status(503)),
        fresh_answers.len()
            - count(&fresh_answers, Answer::Status(200))
            - count(&fresh_answers, Answer::Status(503)),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        ms(fresh_took),
    );
    println!("\n{markdown}");
    if full {
        // The workspace's target directory, as the root package's benches
        // use (cargo runs this one from `cli/`).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(format!("{dir}/bench-idle.md"), &markdown);
    }
}
