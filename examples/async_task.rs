//! The notification written by an `async` task (FastAPI accepts `async def`
//! tasks). The future runs to completion on a background thread; no async
//! runtime is needed, because it only awaits plain futures.
//!
//! ```text
//! cargo run --example async_task
//! curl -X POST http://127.0.0.1:8000/send-notification/ada@example.com
//! cat log.txt    # notification for ada@example.com: some notification
//! ```
//!
//! `ADDR` sets the address (default `127.0.0.1:8000`); `RUST_LOG` the log level.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use afterward::{App, BackgroundTasks, Json, Path, State};
use serde_json::{json, Value};

/// Where notifications are appended.
#[derive(Clone)]
pub struct LogFile(pub Arc<PathBuf>);

/// Builds the message; `async` to stand for a real async client call.
async fn render(email: &str, message: &str) -> String {
    format!("notification for {email}: {message}\n")
}

async fn write_notification(log: LogFile, email: String, message: &str) -> std::io::Result<()> {
    let line = render(&email, message).await;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&*log.0)?;
    file.write_all(line.as_bytes())
}

fn send_notification(
    Path(email): Path<String>,
    State(log): State<LogFile>,
    tasks: BackgroundTasks,
) -> Json<Value> {
    tasks.add_async_task(write_notification(log, email, "some notification"));
    Json(json!({"message": "Notification sent in the background"}))
}

/// The app, appending to `log`.
pub fn app(log: PathBuf) -> App {
    App::new()
        .state(LogFile(Arc::new(log)))
        .post("/send-notification/{email}", send_notification)
}

fn main() -> Result<(), afterward::Error> {
    common::serve(app("log.txt".into()))
}
