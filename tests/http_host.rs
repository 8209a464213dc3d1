//! `Host` (RFC 9112 §3.2, a MUST): an HTTP/1.1 request with no `Host`, two
//! `Host` headers, or an invalid `Host` value gets `400` and the connection
//! is closed; valid values, and HTTP/1.0 without `Host`, are served.

mod support;

use std::time::Duration;

use afterward::testing::TestServer;
use afterward::App;
use support::raw::Raw;

fn server() -> TestServer {
    TestServer::with_builder(support::hardened(), App::new().get("/", || "ok"))
}

fn answer(server: &TestServer, head: &str) -> (u16, bool) {
    let mut raw = Raw::connect(server.addr());
    raw.send(format!("{head}\r\n").as_bytes()).unwrap();
    let response = raw.response();
    let status = response.status();
    if status == 400 {
        assert!(
            response.text().contains("Host"),
            "{head:?}: {}",
            response.text()
        );
    }
    (status, raw.closed_within(Duration::from_secs(5)))
}

#[test]
fn a_missing_repeated_or_invalid_host_is_refused_and_closed() {
    let server = server();
    let cases = [
        "GET / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n",
        "GET / HTTP/1.1\r\nHost: x/y\r\n",
        "GET / HTTP/1.1\r\nHost: user@evil\r\n",
        "GET / HTTP/1.1\r\nHost: example.com:80a\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\n",
        "GET / HTTP/1.1\r\nHost: [::1]x\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n",
    ];
    for head in cases {
        assert_eq!(answer(&server, head), (400, true), "{head:?}");
    }
}

#[test]
fn valid_hosts_and_http_1_0_without_host_are_served() {
    let server = server();
    let cases = [
        "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n",
        "GET / HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n",
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
        "GET / HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n",
        "GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\nConnection: close\r\n",
        "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n",
        "GET / HTTP/1.0\r\n",
    ];
    for head in cases {
        assert_eq!(answer(&server, head), (200, true), "{head:?}");
    }
}
