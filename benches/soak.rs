//! Soak: minutes of mixed load with faults against one in-process server,
//! then the accounting and resource checks of issue #4.
//!
//! ```text
//! cargo bench --bench soak                 # 10 minutes
//! SOAK_SECS=60 cargo bench --bench soak    # shorter
//! ```
//!
//! Load, all on 127.0.0.1 and bounded by `SOAK_SECS`: keep-alive clients
//! mixing good requests with failing, panicking and handler-panicking ones and
//! uploads; slowloris clients; clients that abandon a request mid-body or never
//! read a large response; bursts of 100 connections; and the attacks of issue
//! #19: a client flooding empty lines as fast as it can (reconnecting when cut
//! off), slow uploaders dripping a body a byte at a time, and bursts of whole
//! requests whose clients close at once. A probe asks for a fresh `GET
//! /health` every 50 ms throughout and keeps its latencies. Then, once idle, it checks
//! that tasks run + tasks reported not run == tasks scheduled, that every good
//! task wrote its line, and that threads and memory are back to their baseline.
//! Without `--bench` (as `cargo test --all-targets` runs it) it does nothing.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use afterward::testing::TestResponse;
use afterward::{App, BackgroundTasks, Path, RawBody, Server, ServerHandle};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run with `cargo bench --bench soak`");
        return;
    }
    let seconds: u64 = env_or("SOAK_SECS", 600);
    std::panic::set_hook(Box::new(|_| {})); // Panics are the point; count, don't print.
    let dir = std::env::temp_dir().join(format!("afterward-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = Arc::new(dir.join("lines.txt"));

    let handle = start(log.clone());
    let addr = handle.local_addr();
    // Baseline after a warm-up, so that lazily started threads are counted.
    for _ in 0..50 {
        let mut c = Client::connect(addr);
        c.request("POST /ok/0 HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
    }
    assert!(handle.wait_idle(Duration::from_secs(60)));
    let idle_wait = Duration::from_secs(4);
    thread::sleep(idle_wait); // Let the warm-up connections' threads end.
    let (threads_before, rss_before) = (status("Threads:"), status("VmRSS:"));

    // A first, shorter round of the same load: the allocator keeps some of
    // the memory it grew to (per-thread arenas, 4 MiB responses), so the
    // baseline to come back to is the one after the load has run once.
    let warmup: u64 = env_or("SOAK_WARMUP_SECS", 30);
    let (threads_cold, rss_cold) = (threads_before, rss_before);
    run_load(addr, warmup, &Arc::new(Counts::default()));
    assert!(handle.wait_idle(Duration::from_secs(120)));
    settle(threads_cold);
    let (threads_before, rss_before) = (status("Threads:"), status("VmRSS:"));

    let counts = Arc::new(Counts::default());
    run_load(addr, seconds, &counts);
    let idle = handle.wait_idle(Duration::from_secs(120));
    settle(threads_before);
    let (threads_after, rss_after) = (status("Threads:"), status("VmRSS:"));
    let stats = handle.stats();
    let lines = std::fs::read_to_string(&*log).map_or(0, |t| t.lines().count() as u64);
    let report = handle.shutdown(Duration::from_secs(30));

    let accounted = stats.completed + stats.failed + stats.panicked + stats.discarded;
    let good_tasks = counts.ok_tasks.load(Ordering::Relaxed);
    let checks = [
        ("server idle after the load", idle),
        (
            "tasks run + not run == scheduled",
            accounted == stats.scheduled,
        ),
        // Every good request a client saw answered wrote its line (the
        // server may have answered a few more whose response was lost).
        (
            "every good task wrote its line",
            lines >= good_tasks + 50 && lines <= stats.completed,
        ),
        ("threads back to baseline", threads_after <= threads_before),
        (
            "the engine holds no body and no queued request once idle",
            stats.body_bytes_buffered == 0 && stats.requests_queued == 0,
        ),
        (
            "every fresh probe answered within 1 s",
            counts.probe_failed.load(Ordering::Relaxed) == 0
                && probe_percentile(&counts, 1.0) < Duration::from_secs(1),
        ),
        (
            "resident memory back to its warmed-up baseline (+16 MiB)",
            rss_after <= rss_before + 16 * 1024,
        ),
        ("shutdown complete", report.is_complete()),
    ];
    println!("## Soak: {seconds} s of mixed load with faults\n");
    println!("| measure | value |\n|---|---:|");
    println!(
        "| requests answered (warm-up and soak) | {} |",
        stats.requests
    );
    println!(
        "| responses by class 2xx / 4xx / 5xx | {} / {} / {} |",
        stats.requests_by_class[1], stats.requests_by_class[3], stats.requests_by_class[4]
    );
    println!("| tasks scheduled | {} |", stats.scheduled);
    println!(
        "| completed / failed / panicked / discarded | {} / {} / {} / {} |",
        stats.completed, stats.failed, stats.panicked, stats.discarded
    );
    println!("| lines written | {lines} |");
    println!(
        "| slowloris connections cut off | {} |",
        counts.cut_off.load(Ordering::Relaxed)
    );
    println!(
        "| abandoned requests | {} |",
        counts.abandoned.load(Ordering::Relaxed)
    );
    println!(
        "| burst connections answered | {} |",
        counts.burst_answered.load(Ordering::Relaxed)
    );
    println!(
        "| flood connections cut off | {} |",
        counts.flood_cut_off.load(Ordering::Relaxed)
    );
    println!(
        "| slow uploads cut off (408) | {} |",
        counts.slow_uploads_cut.load(Ordering::Relaxed)
    );
    println!(
        "| requests sent by clients gone at once (soak) / dropped unhandled, 499 (warm-up and soak) | {} / {} |",
        counts.dead_sent.load(Ordering::Relaxed),
        stats.client_gone
    );
    println!(
        "| refused 503: queue full / queue timeout / body budget | {} / {} / {} |",
        stats.refused_queue_full, stats.refused_queue_timeout, stats.refused_body_budget
    );
    let probes = lock(&counts.probes).len();
    println!(
        "| fresh probes: answered / failed, p50 / p99 / max | {} / {}, {:.2?} / {:.2?} / {:.2?} |",
        probes,
        counts.probe_failed.load(Ordering::Relaxed),
        probe_percentile(&counts, 0.5),
        probe_percentile(&counts, 0.99),
        probe_percentile(&counts, 1.0)
    );
    println!("| threads: cold / after warm-up / after soak | {threads_cold} / {threads_before} / {threads_after} |");
    println!(
        "| RSS KiB: cold / after warm-up / after soak | {rss_cold} / {rss_before} / {rss_after} |"
    );
    println!();
    let mut failed = false;
    for (name, ok) in checks {
        println!("- [{}] {name}", if ok { "x" } else { " " });
        failed |= !ok;
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        std::process::exit(1);
    }
}

/// Runs every kind of client for `seconds`, then stops and joins them.
fn run_load(addr: SocketAddr, seconds: u64, counts: &Arc<Counts>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..16 {
        load.push(spawn(&stop, counts, move |s, c| mixed(addr, i, s, c)));
    }
    for _ in 0..2 {
        load.push(spawn(&stop, counts, move |s, c| slowloris(addr, s, c)));
        load.push(spawn(&stop, counts, move |s, c| abandon(addr, s, c)));
    }
    load.push(spawn(&stop, counts, move |s, c| bursts(addr, s, c)));
    load.push(spawn(&stop, counts, move |s, c| flood(addr, s, c)));
    load.push(spawn(&stop, counts, move |s, c| slow_uploads(addr, s, c)));
    load.push(spawn(&stop, counts, move |s, c| dead_requests(addr, s, c)));
    load.push(spawn(&stop, counts, move |s, c| probe(addr, s, c)));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.join().unwrap();
    }
}

/// Waits (up to 30 s) until the thread count is back to `threads`: idle
/// connections end after the idle timeout, and their threads with them.
fn settle(threads: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status("Threads:") > threads && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(log: Arc<std::path::PathBuf>) -> ServerHandle {
    let app = App::new()
        .post(
            "/ok/{n}",
            move |Path(n): Path<u64>, tasks: BackgroundTasks| {
                let log = log.clone();
                tasks.add_task(move || -> std::io::Result<()> {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&*log)?;
                    file.write_all(format!("ok {n}\n").as_bytes())
                });
                "ok"
            },
        )
        .post("/fail", |tasks: BackgroundTasks| {
            tasks.add_task(|| Err::<(), _>("planned failure"))
        })
        .post("/panic", |tasks: BackgroundTasks| {
            tasks.add_task(|| -> () { panic!("planned task panic") })
        })
        .post("/handler-panic", |tasks: BackgroundTasks| -> &'static str {
            tasks.add_task(|| ());
            panic!("planned handler panic")
        })
        .post(
            "/upload",
            |RawBody(body): RawBody, tasks: BackgroundTasks| {
                tasks.add_task(move || drop(body));
                "stored"
            },
        )
        .get("/big", || vec![b'x'; 4 * 1024 * 1024])
        .get("/health", || "ok");
    Server::builder()
        .address("127.0.0.1:0")
        .workers(8)
        .background_workers(2)
        .queue_capacity(64)
        .max_connections(512)
        .max_body_bytes(64 * 1024)
        .header_timeout(Duration::from_secs(2))
        .idle_timeout(Duration::from_secs(2))
        .body_timeout(Duration::from_secs(2))
        .max_pending_requests(256)
        .write_timeout(Duration::from_secs(2))
        .build(app)
        .unwrap()
        .spawn()
        .unwrap()
}

#[derive(Default)]
struct Counts {
    flood_cut_off: AtomicU64,
    slow_uploads_cut: AtomicU64,
    dead_sent: AtomicU64,
    probe_failed: AtomicU64,
    /// Each fresh probe's latency.
    probes: std::sync::Mutex<Vec<Duration>>,
    ok_tasks: AtomicU64,
    uploads: AtomicU64,
    cut_off: AtomicU64,
    abandoned: AtomicU64,
    burst_answered: AtomicU64,
}

fn spawn(
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
    f: impl FnOnce(&AtomicBool, &Counts) + Send + 'static,
) -> thread::JoinHandle<()> {
    let (stop, counts) = (stop.clone(), counts.clone());
    thread::spawn(move || f(&stop, &counts))
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a request and reads its response; the status, or 0 on failure.
    fn request(&mut self, request: &str) -> u16 {
        if self.reader.get_mut().write_all(request.as_bytes()).is_err() {
            return 0;
        }
        TestResponse::read_from(&mut self.reader, false).map_or(0, |r| r.status())
    }
}

/// Keep-alive requests of every kind, in a fixed rotation.
fn mixed(addr: SocketAddr, id: u64, stop: &AtomicBool, counts: &Counts) {
    let mut client = Client::connect(addr);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = "u".repeat(1000);
        let request = match n % 10 {
            0 => "POST /fail HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n".to_owned(),
            1 => "POST /panic HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n".to_owned(),
            2 => "POST /handler-panic HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n".to_owned(),
            3 => format!(
                "POST /upload HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            _ => format!("POST /ok/{id} HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n"),
        };
        let status = client.request(&request);
        match (n % 10, status) {
            (4..=9, 200) => {
                counts.ok_tasks.fetch_add(1, Ordering::Relaxed);
            }
            (3, 200) => {
                counts.uploads.fetch_add(1, Ordering::Relaxed);
            }
            (_, 0) => client = Client::connect(addr),
            _ => {}
        }
        // A handler panic answers 500 and keeps the connection; reconnect now
        // and then anyway, as real clients do.
        if n % 97 == 0 {
            client = Client::connect(addr);
        }
    }
}

/// Sends a request head one byte every 300 ms until the server cuts it off.
fn slowloris(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        for byte in b"GET /big HTTP/1.1\r\nHost: s\r\nX-Slow: ".iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if stream.write_all(&[*byte]).is_err() {
                counts.cut_off.fetch_add(1, Ordering::Relaxed);
                break;
            }
            thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Half-sent bodies and large responses never read, each then dropped.
fn abandon(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        let request: &[u8] = if n % 2 == 0 {
            b"POST /upload HTTP/1.1\r\nHost: s\r\nContent-Length: 5000\r\n\r\nonly a little"
        } else {
            b"GET /big HTTP/1.1\r\nHost: s\r\n\r\n"
        };
        let _ = stream.write_all(request);
        thread::sleep(Duration::from_millis(100));
        counts.abandoned.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every 5 s, 100 connections at once, one request each.
fn bursts(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    while !stop.load(Ordering::Relaxed) {
        let mut clients: Vec<Client> = (0..100).map(|_| Client::connect(addr)).collect();
        for c in &mut clients {
            let _ = c
                .reader
                .get_mut()
                .write_all(b"POST /fail HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n");
        }
        for c in &mut clients {
            if TestResponse::read_from(&mut c.reader, false).is_ok() {
                counts.burst_answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(clients);
        for _ in 0..50 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sends empty lines as fast as the socket takes them, reconnecting when the
/// server cuts the connection off.
fn flood(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    let chunk = b"\r\n".repeat(32 * 1024);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        while !stop.load(Ordering::Relaxed) {
            if stream.write_all(&chunk).is_err() {
                counts.flood_cut_off.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// Twenty uploads of 60 KB, each sending a byte every 100 ms (below the
/// minimum rate), opened again when the server cuts them off.
fn slow_uploads(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    let head = b"POST /upload HTTP/1.1\r\nHost: s\r\nContent-Length: 60000\r\n\r\n";
    let mut uploads: Vec<Option<TcpStream>> = (0..20).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        for upload in &mut uploads {
            if upload.is_none() {
                *upload = TcpStream::connect(addr)
                    .ok()
                    .filter(|mut s| s.write_all(head).is_ok());
            }
            if let Some(stream) = upload {
                if stream.write_all(b"u").is_err() {
                    counts.slow_uploads_cut.fetch_add(1, Ordering::Relaxed);
                    *upload = None;
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every 2 s, 200 whole requests whose clients close at once.
fn dead_requests(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    while !stop.load(Ordering::Relaxed) {
        for n in 0..200 {
            if let Ok(mut stream) = TcpStream::connect(addr) {
                let request =
                    format!("POST /ok/{n} HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n");
                if stream.write_all(request.as_bytes()).is_ok() {
                    counts.dead_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A fresh `GET /health` every 50 ms, on a new connection; keeps how long
/// each took.
fn probe(addr: SocketAddr, stop: &AtomicBool, counts: &Counts) {
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let mut client = Client::connect(addr);
        let status = client.request("GET /health HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
        if status == 200 {
            lock(&counts.probes).push(asked.elapsed());
        } else {
            counts.probe_failed.fetch_add(1, Ordering::Relaxed);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `p`-quantile (0 to 1) of the probes' latencies.
fn probe_percentile(counts: &Counts, p: f64) -> Duration {
    let mut latencies = lock(&counts.probes).clone();
    latencies.sort();
    let Some(last) = latencies.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    latencies[((last as f64) * p).round() as usize]
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}
