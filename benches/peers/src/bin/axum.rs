//! bg-write on axum: `POST /send-notification/{email}` answers at once and
//! appends `message to {email}` to a log file in the background; `GET /health`
//! answers `{"status":"ok"}`.
//!
//! `axum PORT LOG_FILE [spawn-blocking|inline]`: the append runs on tokio's
//! blocking pool (`spawn_blocking`, the default) or as a task on the runtime
//! (`tokio::spawn`, inline). Worker threads: tokio's default, one per core.
use std::sync::Arc;

use afterward_peers::Mode;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;

type Json = ([(&'static str, &'static str); 1], &'static str);

fn json(body: &'static str) -> Json {
    ([("content-type", "application/json")], body)
}

async fn send_notification(Path(email): Path<String>, State(log): State<Arc<str>>) -> Json {
    let line = format!("message to {email}\n");
    tokio::task::spawn_blocking(move || afterward_peers::append_line(&log, &line));
    json(afterward_peers::SENT)
}

async fn send_notification_inline(
    Path(email): Path<String>,
    State(log): State<Arc<str>>,
) -> Json {
    let line = format!("message to {email}\n");
    tokio::spawn(async move { afterward_peers::append_line(&log, &line) });
    json(afterward_peers::SENT)
}

#[tokio::main]
async fn main() {
    let (port, log, mode) = afterward_peers::args(8002);
    let log: Arc<str> = log.into();
    let route = match mode {
        Mode::SpawnBlocking => post(send_notification),
        Mode::Inline => post(send_notification_inline),
    };
    let app = Router::new()
        .route("/send-notification/{email}", route)
        .route("/health", get(|| async { json(afterward_peers::HEALTHY) }))
        .with_state(log);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!("listening on http://127.0.0.1:{port} ({mode:?})");
    axum::serve(listener, app).await.unwrap();
}
