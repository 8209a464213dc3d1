//! bg-write on actix-web: `POST /send-notification/{email}` answers at once
//! and appends `message to {email}` to a log file in a blocking task, after
//! the response is built (as afterward's background task does).
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

async fn send_notification(email: web::Path<String>, log: web::Data<Arc<String>>) -> HttpResponse {
    let line = format!("message to {email}\n");
    let path = log.get_ref().clone();
    actix_web::rt::task::spawn_blocking(move || afterward_peers::append_line(&path, &line));
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"message":"Message sent"}"#)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let (port, log) = afterward_peers::args(8001);
    let log = Arc::new(log);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(log.clone()))
            .route(
                "/send-notification/{email}",
                web::post().to(send_notification),
            )
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
    })
    .bind(("127.0.0.1", port))?;
    println!("listening on http://127.0.0.1:{port}");
    server.run().await
}
