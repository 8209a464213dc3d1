//! Request smuggling and header injection: ambiguous framing is refused with
//! `400` and the connection closed, so no second request is ever parsed from
//! a body; a response header with CR or LF is never emitted.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{App, RawBody, Response};
use support::raw::Raw;

/// A request hidden in a body: if the server ever parses it, `/smuggled` counts it.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

fn server() -> (TestServer, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = App::new()
        .post("/", |RawBody(body): RawBody| body.len().to_string())
        .get("/smuggled", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            "smuggled"
        })
        .get("/inject", || {
            Response::text("x").with_header("X-Evil", "a\r\nSet-Cookie: stolen=1")
        });
    (TestServer::with_builder(support::hardened(), app), hits)
}

/// Sends `head` (without the blank line) with a body holding a smuggled
/// request; expects `400`, then the connection closed, and no smuggled hit.
fn refused(head: &str) {
    let (server, hits) = server();
    let mut raw = Raw::connect(server.addr());
    let body = SMUGGLED;
    raw.send(format!("{head}\r\n\r\n{body}").as_bytes())
        .unwrap();
    let response = raw.response();
    assert_eq!(response.status(), 400, "{head:?}: {}", response.text());
    assert!(response.json()["detail"].is_string(), "{head:?}");
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "{head:?}: connection left open"
    );
    server.wait_idle();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "{head:?}: a request was parsed from the body"
    );
}

#[test]
fn transfer_encodings_other_than_chunked_are_refused() {
    for te in [
        "gzip",
        "gzip, chunked",
        "chunked, gzip",
        "identity",
        "xchunked",
        "chunked;x=1",
    ] {
        refused(&format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}"
        ));
    }
    refused(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    );
}

#[test]
fn transfer_encoding_with_content_length_is_refused() {
    refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked");
    refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4");
}

#[test]
fn duplicate_or_invalid_content_lengths_are_refused() {
    for cl in [
        "Content-Length: 4\r\nContent-Length: 4",
        "Content-Length: 4\r\nContent-Length: 40",
        "Content-Length: 4, 4",
        "Content-Length: abc",
        "Content-Length: -4",
        "Content-Length: +4",
        "Content-Length: 0x4",
        "Content-Length: 99999999999999999999999",
    ] {
        refused(&format!("POST / HTTP/1.1\r\nHost: x\r\n{cl}"));
    }
}

#[test]
fn whitespace_before_the_colon_is_refused() {
    refused("POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 4");
    refused("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked");
}

#[test]
fn a_well_formed_chunked_body_is_read_and_nothing_more() {
    let (server, hits) = server();
    let mut raw = Raw::connect(server.addr());
    raw.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(raw.response().text(), "5");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn a_header_value_with_a_line_break_is_never_emitted() {
    let (server, _) = server();
    let mut raw = Raw::connect(server.addr());
    raw.send(b"GET /inject HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = raw.response();
    assert_eq!(response.status(), 500);
    assert!(response.header("Set-Cookie").is_none());
    assert!(response.header("X-Evil").is_none());
}
