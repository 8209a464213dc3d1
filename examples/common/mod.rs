//! What every example's `main` does: log through env_logger (`RUST_LOG`,
//! default `info`), listen on `ADDR` (default `127.0.0.1:8000`), serve until
//! Ctrl-C (SIGINT) or SIGTERM, then drain the queued tasks and exit.
//!
//! Examples include it with `#[path = "common/mod.rs"] mod common;`, which
//! resolves the same way whether the example is built on its own or included
//! by `tests/examples.rs`.

// Each example uses a part of this module.
#![allow(dead_code)]

use afterward::{App, Server, ServerBuilder};

/// Logs through env_logger: `RUST_LOG`, `info` by default. Without a logger,
/// the library's log lines (access lines, task failures, retries, the
/// shutdown report) go nowhere.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// Serves `app` on `ADDR`.
pub fn serve(app: App) -> Result<(), afterward::Error> {
    serve_with(Server::builder(), app)
}

/// Serves `app` on `ADDR`, with `builder`'s other settings.
pub fn serve_with(builder: ServerBuilder, app: App) -> Result<(), afterward::Error> {
    init_logging();
    let address = std::env::var("ADDR").unwrap_or_else(|_| afterward::DEFAULT_ADDRESS.into());
    let server = builder.address(address).build(app)?;
    println!("listening on http://{}", server.local_addr());
    let report = server.run_until_signal()?;
    println!(
        "stopped: {} tasks completed, {} not run",
        report.stats.completed,
        report.not_run.len()
    );
    Ok(())
}
