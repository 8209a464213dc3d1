//! What every example's `main` does: log through env_logger (`RUST_LOG`,
//! default `info`), listen on `ADDR` (default `127.0.0.1:8000`), serve until
//! Ctrl-C (SIGINT) or SIGTERM, then drain the queued tasks and exit.
//!
//! Examples include it with `#[path = "common/mod.rs"] mod common;`, which
//! resolves the same way whether the example is built on its own or included
//! by `tests/examples.rs`.

use afterward::{App, Server};

/// Serves `app` on `ADDR`.
pub fn serve(app: App) -> Result<(), afterward::Error> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let address = std::env::var("ADDR").unwrap_or_else(|_| afterward::DEFAULT_ADDRESS.into());
    let server = Server::builder().address(address).build(app)?;
    println!("listening on http://{}", server.local_addr());
    let report = server.run_until_signal()?;
    println!(
        "stopped: {} tasks completed, {} not run",
        report.stats.completed,
        report.not_run.len()
    );
    Ok(())
}
