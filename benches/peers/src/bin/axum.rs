//! bg-write on axum: `POST /send-notification/{email}` answers at once and
//! appends `message to {email}` to a log file in a blocking task.
use std::io::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;

async fn send_notification(
    Path(email): Path<String>,
    State(log): State<Arc<String>>,
) -> ([(&'static str, &'static str); 1], &'static str) {
    let line = format!("message to {email}\n");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*log);
        if let Ok(mut file) = file {
            let _ = file.write_all(line.as_bytes());
        }
    });
    (
        [("content-type", "application/json")],
        r#"{"message":"Message sent"}"#,
    )
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8002);
    let log = Arc::new(
        std::env::args()
            .nth(2)
            .unwrap_or_else(|| "peers-log.txt".into()),
    );
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
