//! FastAPI's first "Background Tasks" example.
//!
//! ```text
//! cargo run --example send_notification
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

/// Where notifications are written.
#[derive(Clone)]
pub struct LogFile(pub Arc<PathBuf>);

/// The slow part: in real life, talking to a mail server.
fn write_notification(log: &LogFile, email: &str, message: &str) -> std::io::Result<()> {
    // FastAPI's example opens the file with mode="w": each notification
    // replaces the last one.
    let mut file = std::fs::File::create(&*log.0)?;
    write!(file, "notification for {email}: {message}")
}

fn send_notification(
    Path(email): Path<String>,
    State(log): State<LogFile>,
    tasks: BackgroundTasks,
) -> Json<Value> {
    tasks.add_task(move || write_notification(&log, &email, "some notification"));
    Json(json!({"message": "Notification sent in the background"}))
}

/// The app, writing to `log`.
pub fn app(log: PathBuf) -> App {
    App::new()
        .state(LogFile(Arc::new(log)))
        .post("/send-notification/{email}", send_notification)
}

fn main() -> Result<(), afterward::Error> {
    common::serve(app("log.txt".into()))
}
