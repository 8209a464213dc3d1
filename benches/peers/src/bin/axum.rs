//! bg-write on axum: `POST /send-notification/{email}` answers at once and
//! appends `message to {email}` to a log file in a blocking task.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;

async fn send_notification(
    Path(email): Path<String>,
    State(log): State<Arc<String>>,
) -> ([(&'static str, &'static str); 1], &'static str) {
    let line = format!("message to {email}\n");
    tokio::task::spawn_blocking(move || afterward_peers::append_line(&log, &line));
    (
        [("content-type", "application/json")],
        r#"{"message":"Message sent"}"#,
    )
}

#[tokio::main]
async fn main() {
    let (port, log) = afterward_peers::args(8002);
    let log = Arc::new(log);
    let app = Router::new()
        .route("/send-notification/{email}", post(send_notification))
        .route("/health", get(|| async { "ok" }))
        .with_state(log);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!("listening on http://127.0.0.1:{port}");
    axum::serve(listener, app).await.unwrap();
}
