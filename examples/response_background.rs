//! A response that carries its own background task (Starlette's
//! `JSONResponse(..., background=BackgroundTask(...))`), next to the request's
//! `BackgroundTasks` list: both run, the list first.
//!
//! ```text
//! cargo run --example response_background
//! curl -X POST http://127.0.0.1:8000/signup -H 'Content-Type: application/json' \
//!      -d '{"username": "ada", "email": "ada@example.com"}'
//! cat log.txt    # audit: signup ada
//!                # welcome email to ada@example.com
//! ```
//!
//! `ADDR` sets the address (default `127.0.0.1:8000`); `RUST_LOG` the log level.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use afterward::{App, BackgroundTask, BackgroundTasks, Json, Response, State};
use serde::Deserialize;
use serde_json::json;

/// Where the tasks append their lines.
#[derive(Clone)]
pub struct LogFile(pub Arc<PathBuf>);

fn append(log: &LogFile, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&*log.0)?;
    writeln!(file, "{line}")
}

#[derive(Deserialize)]
struct Signup {
    username: String,
    email: String,
}

fn signup(
    Json(Signup { username, email }): Json<Signup>,
    State(log): State<LogFile>,
    tasks: BackgroundTasks,
) -> Response {
    let audit_log = log.clone();
    tasks.add_task(move || append(&audit_log, &format!("audit: signup {username}")));
    let welcome = BackgroundTask::new(move || append(&log, &format!("welcome email to {email}")))
        .named("send_welcome_email");
    Response::json(&json!({"status": "Signup successful"})).with_background(welcome)
}

/// The app, appending to `log`.
pub fn app(log: PathBuf) -> App {
    App::new()
        .state(LogFile(Arc::new(log)))
        .post("/signup", signup)
}

fn main() -> Result<(), afterward::Error> {
    common::serve(app("log.txt".into()))
}
