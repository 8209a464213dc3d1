//! FastAPI's "Dependency Injection" background tasks example: the handler and
//! its dependency both add tasks to the same per-request list.
//!
//! ```text
//! cargo run --example dependency_injection
//! curl -X POST 'http://127.0.0.1:8000/send-notification/ada@example.com?q=hello'
//! cat log.txt    # found query: hello
//!                # message to ada@example.com
//! ```
//!
//! `ADDR` sets the address (default `127.0.0.1:8000`); `RUST_LOG` the log level.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use afterward::{
    App, BackgroundTasks, Dependency, Depends, HttpError, Json, Path, Query, Request, State,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// Where messages are appended.
#[derive(Clone)]
pub struct LogFile(pub Arc<PathBuf>);

fn write_log(log: &LogFile, message: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&*log.0)?;
    file.write_all(message.as_bytes())
}

#[derive(Deserialize)]
struct QueryParams {
    q: Option<String>,
}

/// FastAPI's `get_query(background_tasks: BackgroundTasks, q: str | None = None)`.
#[derive(Clone)]
struct GetQuery(Option<String>);

impl Dependency for GetQuery {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let tasks: BackgroundTasks = request.extract()?;
        let State(log): State<LogFile> = request.extract()?;
        let Query(QueryParams { q }) = request.extract()?;
        if let Some(q) = q.clone().filter(|q| !q.is_empty()) {
            let message = format!("found query: {q}\n");
            tasks.add_task(move || write_log(&log, &message));
        }
        Ok(GetQuery(q))
    }
}

fn send_notification(
    Path(email): Path<String>,
    State(log): State<LogFile>,
    tasks: BackgroundTasks,
    Depends(GetQuery(_q)): Depends<GetQuery>,
) -> Json<Value> {
    let message = format!("message to {email}\n");
    tasks.add_task(move || write_log(&log, &message));
    Json(json!({"message": "Message sent"}))
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
