//! bg-write on actix-web: `POST /send-notification/{email}` answers at once
//! and appends `message to {email}` to a log file in the background, after
//! the response is built (as afterward's background task does); `GET /health`
//! answers `{"status":"ok"}`.
//!
//! `actix PORT LOG_FILE [spawn-blocking|inline]`: the append runs on the
//! blocking pool (`spawn_blocking`, the default) or as a task on the worker's
//! own runtime (`actix_rt::spawn`, inline). Workers: actix's default, one per core.
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use afterward_peers::Mode;

fn sent() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(afterward_peers::SENT)
}

async fn send_notification(email: web::Path<String>, log: web::Data<Arc<str>>) -> HttpResponse {
    let line = format!("message to {email}\n");
    let path = log.get_ref().clone();
    actix_web::rt::task::spawn_blocking(move || afterward_peers::append_line(&path, &line));
    sent()
}

async fn send_notification_inline(
    email: web::Path<String>,
    log: web::Data<Arc<str>>,
) -> HttpResponse {
    let line = format!("message to {email}\n");
    let path = log.get_ref().clone();
    actix_web::rt::spawn(async move { afterward_peers::append_line(&path, &line) });
    sent()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let (port, log, mode) = afterward_peers::args(8001);
    let log: Arc<str> = log.into();
    let server = HttpServer::new(move || {
        let route = match mode {
            Mode::SpawnBlocking => web::post().to(send_notification),
            Mode::Inline => web::post().to(send_notification_inline),
        };
        App::new()
            .app_data(web::Data::new(log.clone()))
            .route("/send-notification/{email}", route)
            .route(
                "/health",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(afterward_peers::HEALTHY)
                }),
            )
    })
    .bind(("127.0.0.1", port))?;
    println!("listening on http://127.0.0.1:{port} ({mode:?})");
    server.run().await
}
