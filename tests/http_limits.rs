//! Size limits: an oversized request line, header or header count answers
//! `431 Request Header Fields Too Large` and closes; a body over the limit answers `413` without
//! being read.

mod support;

use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{App, RawBody};
use support::raw::Raw;

fn server() -> TestServer {
    let builder = support::hardened()
        .max_header_bytes(4096)
        .max_headers(16)
        .max_body_bytes(1024);
    let app = App::new()
        .get("/", || "ok")
        .post("/upload", |RawBody(body): RawBody| body.len().to_string());
    TestServer::with_builder(builder, app)
}

fn refused_and_closed(request: &[u8]) {
    let server = server();
    let mut raw = Raw::connect(server.addr());
    // The server may close before reading everything: a failed write is fine.
    let _ = raw.send(request);
    let response = raw.response();
    // The engine measures the whole head (request line included), so a long
    // target is a head too large as well: 431, never 400 or 414.
    assert_eq!(
        response.status(),
        431,
        "status for a {}-byte request",
        request.len()
    );
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "connection left open"
    );
}

#[test]
fn an_oversized_request_line_is_refused() {
    let path = "a".repeat(8 * 1024);
    refused_and_closed(format!("GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
}

#[test]
fn an_oversized_header_is_refused() {
    let value = "v".repeat(8 * 1024);
    refused_and_closed(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {value}\r\n\r\n").as_bytes());
}

#[test]
fn too_many_headers_are_refused() {
    let headers: String = (0..40).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    refused_and_closed(format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes());
}

#[test]
fn a_declared_body_over_the_limit_answers_413_without_being_sent() {
    let server = server();
    let mut raw = Raw::connect(server.addr());
    // Declares 10 MiB but sends none of it: the answer must not wait for it.
    raw.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
        .unwrap();
    let response = raw
        .response_within(Duration::from_secs(5))
        .expect("an answer");
    assert_eq!(response.status(), 413);
    assert_eq!(response.header("Connection"), Some("close"));
    assert!(raw.closed_within(Duration::from_secs(5)));
}

#[test]
fn requests_within_the_limits_are_served() {
    let server = server();
    let headers: String = (0..10).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let mut raw = Raw::connect(server.addr());
    raw.send(format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .unwrap();
    assert_eq!(raw.response().text(), "ok");
    let body = "b".repeat(1024);
    raw.send(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n{body}")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(raw.response().text(), "1024");
}
