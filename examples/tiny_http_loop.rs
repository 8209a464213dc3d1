//! afterward's background tasks in a tiny_http server of your own.
//!
//! The design's shape, literally: a blocking tiny_http accept loop hands
//! requests to worker threads; each handler fills a `BackgroundTasks`; after
//! `respond` the tasks go to afterward's background pool, with its guarantees
//! (a bounded queue, panic isolation, counters, a drain that reports what it
//! could not run). No afterward server, router or extractor is involved.
//!
//! ```text
//! cargo run --example tiny_http_loop
//! curl -X POST http://127.0.0.1:8000/send-notification/ada@example.com
//! cat log.txt    # notification for ada@example.com: some notification
//! ```
//!
//! Ctrl-C (SIGINT) or SIGTERM stops it: the workers finish their requests,
//! then the pool drains within 30 s and reports. `ADDR` sets the
//! address (default `127.0.0.1:8000`); `RUST_LOG` the log level.

use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use afterward::{BackgroundPool, BackgroundTasks, ShutdownReport};

type Response = tiny_http::Response<Cursor<Vec<u8>>>;

/// The slow part: in real life, talking to a mail server.
fn write_notification(log: &Path, email: &str, message: &str) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // One write per line: tasks of different requests run in parallel.
    file.write_all(format!("notification for {email}: {message}\n").as_bytes())
}

/// The handler: it answers at once and leaves the slow part to a task.
fn handle(request: &tiny_http::Request, tasks: &BackgroundTasks, log: &Path) -> Response {
    let email = request.url().strip_prefix("/send-notification/");
    match (request.method(), email) {
        (tiny_http::Method::Post, Some(email)) if !email.is_empty() && !email.contains('/') => {
            let (email, log) = (email.to_owned(), log.to_owned());
            tasks.add_task(move || write_notification(&log, &email, "some notification"));
            json(200, r#"{"message":"Notification sent in the background"}"#)
        }
        (_, Some(_)) => json(405, r#"{"detail":"Method Not Allowed"}"#),
        _ => json(404, r#"{"detail":"Not Found"}"#),
    }
}

fn json(status: u16, body: &str) -> Response {
    let content_type =
        tiny_http::Header::from_bytes("Content-Type", "application/json").expect("a valid header");
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(content_type)
}

/// The tiny_http server, its worker threads, and the background pool.
pub struct Service {
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    pool: BackgroundPool,
}

impl Service {
    /// Starts `workers` threads taking requests from `server`.
    pub fn start(
        server: tiny_http::Server,
        pool: BackgroundPool,
        workers: usize,
        log: PathBuf,
    ) -> io::Result<Service> {
        let server = Arc::new(server);
        let next_id = Arc::new(AtomicU64::new(1));
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let (server, pool) = (server.clone(), pool.clone());
            let (next_id, log) = (next_id.clone(), log.clone());
            let thread = thread::Builder::new()
                .name(format!("http-worker-{index}"))
                .spawn(move || {
                    // `recv` fails once `unblock` wakes this worker: time to stop.
                    while let Ok(request) = server.recv() {
                        let id = format!("req-{}", next_id.fetch_add(1, Ordering::Relaxed));
                        let tasks = pool.tasks(&id);
                        let response = handle(&request, &tasks, &log);
                        // `respond` returns once the response is written and flushed...
                        if let Err(e) = request.respond(response) {
                            log::warn!("request {id}: the response could not be sent: {e}");
                        }
                        // ...and only then are the tasks handed to the pool.
                        pool.dispatch(&tasks);
                    }
                })?;
            threads.push(thread);
        }
        Ok(Service {
            server,
            workers: threads,
            pool,
        })
    }

    /// The background pool (its counters, `wait_idle`).
    pub fn pool(&self) -> &BackgroundPool {
        &self.pool
    }

    /// Stops taking requests, lets the workers finish theirs, then drains the
    /// pool within `timeout`.
    pub fn stop(self, timeout: Duration) -> ShutdownReport {
        // tiny_http queues one wake-up per call, behind the requests waiting.
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
        self.pool.shutdown(timeout)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let address = std::env::var("ADDR").unwrap_or_else(|_| afterward::DEFAULT_ADDRESS.into());
    // Watch the signals first: whoever reads the address may signal at once.
    let stopper = afterward::Stopper::default();
    stopper.stop_on_signals()?;
    let server = tiny_http::Server::http(&address)?;
    println!("listening on http://{}", server.server_addr());
    let pool = BackgroundPool::builder()
        .workers(2)
        .queue_capacity(1024)
        .build()?;
    let service = Service::start(server, pool, 4, "log.txt".into())?;

    stopper.wait();
    let report = service.stop(Duration::from_secs(30));
    println!(
        "stopped: {} tasks completed, {} not run",
        report.stats.completed,
        report.not_run.len()
    );
    Ok(())
}
