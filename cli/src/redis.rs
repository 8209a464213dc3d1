//! `afterward worker` and `afterward jobs`: the demo's jobs over Redis
//! (feature `redis`).

use std::process::ExitCode;
use std::time::Duration;

use afterward::redis::{Admin, RedisConfig, Worker};
use afterward::{App, JobSettings, Response, Server, ServerHandle, Stopper};
use serde_json::json;
use std::sync::Arc;

use crate::args::{DashboardCommand, JobsAction, JobsArgs, RedisTarget, WorkerArgs};
use crate::{demo, Fail};

/// The Redis `target` names, checked at once: it answers, with these
/// credentials and certificates. Any failure is a usage error (exit
/// status 2) naming Redis, its address (the password hidden) and the cause,
/// not a retry loop later.
pub fn config(target: &RedisTarget) -> Result<RedisConfig, Fail> {
    let usage = |e: afterward::Error| Fail::Usage(format!("--redis-url: {e}"));
    let mut config = RedisConfig::new(&target.url).map_err(usage)?;
    if let Some(ca) = &target.ca_file {
        config = config.ca_file(ca).map_err(usage)?;
    }
    if let Some((cert, key)) = &target.client_cert {
        config = config.client_cert(cert, key).map_err(usage)?;
    }
    config.verify().map_err(|e| Fail::Usage(e.to_string()))?;
    Ok(config)
}

/// Runs the demo's jobs until SIGINT or SIGTERM, then stops gracefully.
pub fn worker(args: WorkerArgs) -> Result<ExitCode, Fail> {
    let mut config = config(&args.redis)?;
    config.partitions = args.queue_partitions.clone();
    let shown = config.redacted_url().to_owned();
    // The attempts allowed travel with each job (the web server's setting).
    let mut settings = JobSettings::default();
    settings.backoff = args.job_backoff;
    settings.timeout = args.job_timeout;
    // The demo app's jobs, and the state they read (the log file).
    let app = demo::app(
        demo::Notifier::new(args.log_file, Duration::ZERO),
        demo::Files::in_redis(config.clone()),
        None,
    );
    let mut builder = Worker::builder(config)
        .app(&app)
        .job_settings(settings)
        .visibility_timeout(args.visibility_timeout);
    if let Some(n) = args.concurrency {
        builder = builder.concurrency(n);
    }
    if let Some(n) = args.prefetch {
        builder = builder.prefetch(n);
    }
    if let Some(queues) = args.queues {
        builder = builder.queues(queues);
    }
    let stopper = Stopper::default();
    stopper
        .stop_on_signals()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let worker = Arc::new(builder.start().map_err(|e| e.to_string())?);
    let metrics = match &args.metrics_address {
        Some(address) => Some(serve_metrics(address, &worker)?),
        None => None,
    };
    match &metrics {
        Some(server) => println!(
            "worker running jobs from {}; metrics on http://{}/metrics",
            shown,
            server.local_addr()
        ),
        None => println!("worker running jobs from {shown}"),
    }
    stopper.wait();
    let report = worker.stop(args.shutdown_timeout);
    if let Some(server) = metrics {
        server.shutdown(Duration::from_secs(1));
    }
    let stats = report.stats;
    log::info!(
        "worker stopped: {} succeeded, {} retried, {} dead, {} taken over from other workers; {} left pending for others",
        stats.succeeded,
        stats.retried,
        stats.dead,
        stats.reclaimed,
        report.left_pending
    );
    // Jobs left pending are not lost: another worker takes them over.
    Ok(ExitCode::SUCCESS)
}

/// Serves the worker's counters at `/metrics`, on a small server of our own.
fn serve_metrics(address: &str, worker: &Arc<Worker>) -> Result<ServerHandle, String> {
    let worker = worker.clone();
    let app = App::new().get("/metrics", move || {
        Response::new(200)
            .with_header("Content-Type", afterward::PROMETHEUS_CONTENT_TYPE)
            .with_body(worker.stats().to_prometheus())
    });
    Server::builder()
        .address(address)
        .workers(2)
        .background_workers(1)
        .build(app)
        .and_then(|server| server.spawn())
        .map_err(|e| format!("cannot serve the worker's metrics on {address}: {e}"))
}

/// `afterward dashboard --redis-url URL --address HOST:PORT`: the dashboard
/// of a Redis deployment, on its own, until SIGINT or SIGTERM.
pub fn dashboard(args: DashboardCommand) -> Result<ExitCode, Fail> {
    let config = config(&args.redis)?;
    let board = crate::board(&args.dashboard).redis(config);
    let app = afterward::App::new()
        .nest("/afterward", afterward::dashboard(board))
        .get("/", || {
            afterward::Response::new(303).with_header("Location", "/afterward")
        });
    let server = afterward::Server::builder()
        .address(args.address.as_str())
        .build(app)
        .map_err(|e| e.to_string())?;
    server
        .stopper()
        .stop_on_signals()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    println!("dashboard on http://{}/afterward", server.local_addr());
    server.run().map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `afterward jobs pending|queues|dead|requeue ID|requeue --all [--queue Q]|discard ID|cancel ID`.
pub fn jobs(args: JobsArgs) -> Result<ExitCode, Fail> {
    let config = config(&args.redis)?;
    let admin = Admin::new(config);
    match args.action {
        JobsAction::Pending => {
            let counts = admin.counts()?;
            println!(
                "{}",
                json!({
                    "ready": counts.ready,
                    "pending": counts.pending,
                    "delayed": counts.delayed,
                    "dead": counts.dead,
                })
            );
        }
        JobsAction::Queues => {
            for (queue, counts) in admin.queues()? {
                println!(
                    "{}",
                    json!({
                        "queue": queue,
                        "ready": counts.ready,
                        "pending": counts.pending,
                        "delayed": counts.delayed,
                        "dead": counts.dead,
                    })
                );
            }
        }
        JobsAction::Dead => {
            for dead in admin.dead(usize::MAX)? {
                let envelope = dead.envelope;
                println!(
                    "{}",
                    json!({
                        "id": &*envelope.id,
                        "name": &*envelope.name,
                        "queue": &*envelope.queue,
                        "attempts": envelope.attempts,
                        "error": dead.error,
                        "payload": serde_json::from_str::<serde_json::Value>(&envelope.payload)
                            .unwrap_or(serde_json::Value::Null),
                    })
                );
            }
        }
        JobsAction::Requeue(id) => {
            if !admin.requeue(&id)? {
                return Err(format!("no dead job with id {id}").into());
            }
            println!("{}", json!({"requeued": id}));
        }
        JobsAction::RequeueAll(queue) => {
            let n = admin.requeue_all(queue.as_deref())?;
            println!("{}", json!({"requeued": n, "queue": queue}));
        }
        JobsAction::Discard(id) => {
            if !admin.discard(&id)? {
                return Err(format!("no dead job with id {id}").into());
            }
            println!("{}", json!({"discarded": id}));
        }
        JobsAction::Schedules => {
            for schedule in admin.schedules()? {
                println!("{}", schedule.to_json());
            }
        }
        JobsAction::Pause(name, paused) => {
            admin.pause_schedule(&name, paused)?;
            println!("{}", json!({"schedule": name, "paused": paused}));
        }
        JobsAction::Cancel(id) => {
            let done = admin.cancel(&id).map_err(|e| format!("job {id}: {e}"))?;
            println!("{}", json!({"id": id, "status": done.as_str()}));
        }
    }
    Ok(ExitCode::SUCCESS)
}
