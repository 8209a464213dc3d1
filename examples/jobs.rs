//! Named jobs: a handler enqueues one and answers `202 Accepted` at once,
//! with a `Location` to poll; a failed attempt is retried with backoff.
//!
//! ```text
//! cargo run --example jobs
//! curl -i -X POST 'http://127.0.0.1:8000/reports?user=ada&fail=2'
//!                                     # 202 {"id": ID, "status": "queued"}, Location: /jobs/ID
//! curl http://127.0.0.1:8000/jobs/ID  # queued, running, retrying (with its error), done
//! cat reports.txt                     # report for ada (attempt 3)
//! ```
//!
//! The same jobs over Redis (cargo feature `redis`): the web server sends
//! them, and worker processes, here or on other machines, run them.
//!
//! ```text
//! redis-server --port 6379 --save '' &
//! cargo run --example jobs --features redis -- --redis redis://127.0.0.1:6379           # web server
//! cargo run --example jobs --features redis -- worker --redis redis://127.0.0.1:6379    # a worker
//! ```
//!
//! The worker stops gracefully on Ctrl-C or SIGTERM: it reads no more jobs,
//! finishes those running (up to 30 s), and leaves the rest for other workers.
//! `ADDR` sets the web server's address (default `127.0.0.1:8000`); `RUST_LOG`
//! the log level (default `info`: every retry and failure is logged).

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use afterward::{
    App, BackgroundTasks, HttpError, Job, JobContext, JobResult, Query, Response, Server,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Where reports are written: the app's state, which jobs read too.
#[derive(Clone)]
pub struct Reports(pub Arc<PathBuf>);

/// The job: its fields are its payload, serialized when it is enqueued.
#[derive(Debug, Serialize, Deserialize)]
pub struct BuildReport {
    pub user: String,
    /// Attempts that fail before one succeeds (to see the retries).
    pub fail: u32,
}

impl Job for BuildReport {
    const NAME: &'static str = "build_report";

    fn run(self, job: &JobContext) -> JobResult {
        if job.attempt() <= self.fail {
            // An `Err` (or a panic) is retried with backoff, until the
            // attempts run out (5 by default); then the job is dead.
            return Err(format!("attempt {} fails on purpose", job.attempt()).into());
        }
        let reports = job
            .state::<Reports>()
            .ok_or("no Reports in the app's state")?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*reports.0)?;
        // One write per line: jobs run in parallel.
        file.write_all(
            format!("report for {} (attempt {})\n", self.user, job.attempt()).as_bytes(),
        )?;
        // Kept with the status once the attempt succeeds: `GET /jobs/{id}`
        // shows it as "result".
        job.set_result(&json!({ "lines": 1, "attempt": job.attempt() }))?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct ReportQuery {
    user: String,
    #[serde(default)]
    fail: u32,
}

/// `POST /reports?user=ada&fail=N`: `202` with the job's id and where to
/// poll it. An unregistered job or an unserializable payload is a `500`
/// here, at enqueue, not when the job would run.
fn request_report(
    Query(query): Query<ReportQuery>,
    tasks: BackgroundTasks,
) -> Result<Response, HttpError> {
    let id = tasks.enqueue(BuildReport {
        user: query.user,
        fail: query.fail,
    })?;
    Ok(
        Response::json(&json!({"id": id.as_str(), "status": "queued"}))
            .with_status(202)
            .with_header("Location", format!("/jobs/{id}")),
    )
}

/// The app: the job registered like a route, and the status route.
pub fn app(reports: PathBuf) -> App {
    App::new()
        .state(Reports(Arc::new(reports)))
        .job::<BuildReport>()
        .post("/reports", request_report)
        .get("/jobs/{id}", afterward::job_status_handler)
}

/// The jobs over Redis: the web server's builder, and a worker of the same
/// app that stops gracefully on SIGINT or SIGTERM.
#[cfg(feature = "redis")]
pub mod over_redis {
    use std::time::Duration;

    use afterward::redis::{RedisConfig, Worker};
    use afterward::{App, ServerBuilder, Stopper};

    /// The web server: every job it enqueues goes to Redis after the response.
    pub fn server(config: RedisConfig) -> ServerBuilder {
        afterward::Server::builder().redis(config)
    }

    /// A worker running `app`'s jobs until SIGINT or SIGTERM (or `stopper`),
    /// then stopping within 30 s; whether every job it held was finished.
    pub fn work(
        config: RedisConfig,
        app: &App,
        stopper: &Stopper,
    ) -> Result<bool, Box<dyn std::error::Error>> {
        let worker = Worker::builder(config).app(app).concurrency(4).start()?;
        stopper.wait();
        let report = worker.stop(Duration::from_secs(30));
        log::info!(
            "worker stopped: {} succeeded, {} retried, {} dead; {} left pending for other workers",
            report.stats.succeeded,
            report.stats.retried,
            report.stats.dead,
            report.left_pending
        );
        Ok(report.is_complete())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = app("reports.txt".into());
    match args.as_slice() {
        [] => common::serve_with(Server::builder(), app)?,
        #[cfg(feature = "redis")]
        ["--redis", url] => {
            let config = afterward::redis::RedisConfig::new(url)?;
            common::serve_with(over_redis::server(config), app)?
        }
        #[cfg(feature = "redis")]
        ["worker", "--redis", url] => {
            common::init_logging();
            let config = afterward::redis::RedisConfig::new(url)?;
            let stopper = afterward::Stopper::default();
            stopper.stop_on_signals()?;
            println!("worker running");
            if !over_redis::work(config, &app, &stopper)? {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!(
                "usage: jobs [--redis URL | worker --redis URL] (--redis needs the cargo feature `redis`)"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
