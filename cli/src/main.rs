//! `afterward`: the demo server as an operable binary.
//!
//! Flags and their `AFTERWARD_*` variables are in `args.rs` (`--help` lists
//! them); the routes in `demo.rs`. SIGINT or SIGTERM starts a graceful
//! shutdown; a second one exits at once.
//!
//! Architecture invariant: the binary uses only the library's public API;
//! whatever it needs from the server is a library feature first.

mod args;
mod demo;
#[cfg(feature = "redis")]
mod redis;

use std::process::ExitCode;

use afterward::Server;

use crate::args::{Args, Command};

fn main() -> ExitCode {
    let command = args::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok());
    let log_buffer_lines = match &command {
        Ok(Command::Serve(args)) => args.log_buffer_lines,
        Ok(Command::Worker(args)) => args.log_buffer_lines,
        _ => args::LOG_BUFFER_LINES,
    };
    let run: Box<dyn FnOnce() -> Result<ExitCode, Fail>> = match command {
        Ok(Command::Serve(args)) => Box::new(move || serve(args)),
        #[cfg(feature = "redis")]
        Ok(Command::Worker(args)) => Box::new(move || redis::worker(args)),
        #[cfg(feature = "redis")]
        Ok(Command::Jobs(args)) => Box::new(move || redis::jobs(args)),
        #[cfg(feature = "redis")]
        Ok(Command::Dashboard(args)) => Box::new(move || redis::dashboard(args)),
        // Parsed only in a build with the feature.
        #[cfg(not(feature = "redis"))]
        Ok(Command::Worker(_) | Command::Jobs(_) | Command::Dashboard(_)) => {
            eprintln!("error: this afterward was built without the feature `redis`");
            return ExitCode::from(2);
        }
        Ok(Command::Help) => {
            print!("{}", args::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("afterward {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\nRun `afterward --help` for the options.");
            return ExitCode::from(2);
        }
    };
    let flusher = match init_logging(log_buffer_lines) {
        Ok(flusher) => flusher,
        Err(e) => {
            eprintln!("error: cannot start the log writer thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run() {
        Ok(code) => code,
        Err(Fail::Start(message)) => {
            log::error!("{message}");
            ExitCode::FAILURE
        }
        Err(Fail::Usage(message)) => {
            log::error!("{message}");
            ExitCode::from(2)
        }
    };
    // Whatever is still queued goes out before the process ends, unless
    // stderr is stalled: then it is not waited for long.
    flusher.flush(std::time::Duration::from_secs(2));
    code
}

/// Why a command ends early: it could not start (exit status 1), or what
/// it was given is wrong (2: a flag, or a Redis that refuses us at start).
pub(crate) enum Fail {
    Start(String),
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Usage(String),
}

impl From<String> for Fail {
    fn from(message: String) -> Fail {
        Fail::Start(message)
    }
}

/// The dashboard the flags ask for (its token, if any; its actions).
pub(crate) fn board(options: &args::DashboardArgs) -> afterward::Dashboard {
    let board = match &options.token {
        Some(token) => afterward::Dashboard::with_token(token.clone()),
        None => afterward::Dashboard::open(),
    };
    board.actions(options.actions)
}

/// Logs to stderr through env_logger (`RUST_LOG`, default `info`), without
/// ever blocking a thread that logs: lines go through a queue of
/// `buffer_lines` to a thread of their own; when stderr cannot keep up,
/// lines are dropped and counted (`afterward_log_lines_dropped_total`).
fn init_logging(buffer_lines: usize) -> std::io::Result<afterward::logging::LogFlusher> {
    let (writer, flusher) =
        afterward::logging::NonBlockingWriter::new(std::io::stderr(), buffer_lines)?;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(writer)))
        .init();
    Ok(flusher)
}

fn serve(args: Args) -> Result<ExitCode, Fail> {
    let address = args::socket_address(&args.host, args.port);
    let mut builder = Server::builder()
        .address(address)
        .engine(args.engine)
        .queue_capacity(args.queue_capacity)
        .on_full(args.on_full)
        .shed_exempt(["/health", "/metrics"])
        .max_body_bytes(args.max_body_bytes)
        .body_timeout(args.body_timeout)
        .min_body_rate(args.min_body_rate)
        .max_body_buffer_bytes(args.max_body_buffer_bytes)
        .max_pending_requests(args.max_pending_requests)
        .queue_timeout(args.queue_timeout)
        .shutdown_timeout(args.shutdown_timeout)
        .job_max_attempts(args.job_max_attempts)
        .job_backoff(args.job_backoff)
        .job_timeout(args.job_timeout)
        .job_status_payload_bytes(args.job_payload_bytes);
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some(n) = args.background_workers {
        builder = builder.background_workers(n);
    }
    if let Some(queues) = args.queues {
        builder = builder.queues(queues);
    }
    #[allow(unused_mut)]
    let mut files = demo::Files::default();
    #[cfg(feature = "redis")]
    if let Some(target) = &args.redis {
        let mut config = redis::config(target)?;
        config.status_payload_bytes = args.job_payload_bytes;
        config.wait_replicas = args.redis_wait_replicas;
        config.partitions = args.queue_partitions.clone();
        files = demo::Files::in_redis(config.clone());
        builder = match args.redis_mode {
            args::RedisMode::Send => builder.redis(config),
            args::RedisMode::Spill => builder.redis_spill(config),
        };
    }
    let notifier = demo::Notifier::new(args.log_file, args.notify_delay);
    let mut app = demo::app(notifier, files, args.heartbeat);
    if let Some(options) = &args.dashboard {
        #[allow(unused_mut)]
        let mut board = board(options);
        #[cfg(feature = "redis")]
        if let Some(target) = &args.redis {
            board = board.redis(redis::config(target)?);
        }
        app = app.nest("/afterward", afterward::dashboard(board));
    }
    let server = builder.build(app).map_err(|e| e.to_string())?;
    // Signals are watched before the address is printed: whoever reads it
    // may signal at once. (`run_until_signal` would install them after.)
    server
        .stopper()
        .stop_on_signals()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    println!("listening on http://{}", server.local_addr());
    // The builder's shutdown timeout is --shutdown-timeout.
    let report = server.run().map_err(|e| e.to_string())?;
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        // Server::shutdown has logged every task not run, with its name.
        log::error!(
            "exiting with {} background tasks not run and {} still running",
            report.not_run.len(),
            report.still_running.len()
        );
        ExitCode::FAILURE
    })
}
