//! Connections: a burst of keep-alive connections is answered at once,
//! pipelined requests are answered in order, a request sent while the one
//! before it runs is answered after it, unknown HTTP versions are
//! refused without leaving anything behind (no connection held, no worker
//! kept).

mod support;

use std::time::{Duration, Instant};

use afterward::testing::TestServer;
use afterward::{App, Path};
use support::raw::{get, Raw};
use support::TEST_TIMEOUT;

fn app() -> App {
    App::new().get("/echo/{word}", |Path(word): Path<String>| word)
}

#[test]
fn a_burst_of_256_keep_alive_connections_is_answered_within_a_second() {
    let server = TestServer::with_builder(support::hardened(), app());
    // Timed from the first connection: with too small a listen backlog, some
    // handshakes of a burst are dropped and retried a second later.
    let started = Instant::now();
    let mut connections: Vec<Raw> = (0..256).map(|_| Raw::connect(server.addr())).collect();
    for (i, raw) in connections.iter_mut().enumerate() {
        raw.send(&get(&format!("/echo/{i}"))).unwrap();
    }
    for (i, raw) in connections.iter_mut().enumerate() {
        let response = raw
            .response_within(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i} not answered: {e}"));
        assert_eq!(response.text(), i.to_string());
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the burst took {took:?} to be answered"
    );
    // All held open: each can still be used.
    for (i, raw) in connections.iter_mut().enumerate().take(8) {
        raw.send(&get(&format!("/echo/again{i}"))).unwrap();
        assert_eq!(raw.response().text(), format!("again{i}"));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::with_builder(support::hardened(), app());
    let mut raw = Raw::connect(server.addr());
    let pipelined: Vec<u8> = ["one", "two", "three"]
        .iter()
        .flat_map(|w| get(&format!("/echo/{w}")))
        .collect();
    raw.send(&pipelined).unwrap();
    for word in ["one", "two", "three"] {
        assert_eq!(raw.response().text(), word);
    }
}

#[test]
fn a_request_sent_while_the_one_before_runs_is_answered_once_it_is_done() {
    let (entered, release) = (support::Gate::new(), support::Gate::new());
    let hold = {
        let (entered, release) = (entered.clone(), release.clone());
        move || {
            entered.open();
            release.wait();
            "held"
        }
    };
    let server = TestServer::with_builder(support::hardened(), app().get("/hold", hold));
    let mut raw = Raw::connect(server.addr());
    raw.send(&get("/hold")).unwrap();
    assert!(entered.wait());
    // Its bytes come while a worker has the connection: the event loop
    // sees them then, and the worker that puts the connection back must
    // have it registered again (edge-triggered, the event is not repeated).
    raw.send(&get("/echo/next")).unwrap();
    release.open();
    assert_eq!(raw.response().text(), "held");
    let next = raw
        .response_within(Duration::from_secs(2))
        .expect("the request sent meanwhile is answered");
    assert_eq!(next.text(), "next");
}

#[test]
fn unknown_http_versions_are_refused_without_leaking_threads() {
    let server = TestServer::with_builder(support::hardened(), app());
    // Warm up: the first connection may start threads that stay.
    let mut warm = Raw::connect(server.addr());
    warm.send(b"GET /echo/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    warm.response();
    assert!(warm.closed_within(Duration::from_secs(5)));

    for version in ["HTTP/2.0", "HTTP/3.0", "HTTP/1.2", "HTTP/0.9", "FOO/1.1"] {
        for _ in 0..10 {
            let mut raw = Raw::connect(server.addr());
            raw.send(format!("GET /echo/x {version}\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            let response = raw.response();
            assert!(
                [400, 505].contains(&response.status()),
                "{version}: {}",
                response.status()
            );
            assert!(
                raw.closed_within(Duration::from_secs(5)),
                "{version}: left open"
            );
        }
    }
    // Each connection leaves the gauge once it is closed: nothing of it is
    // left behind.
    assert!(
        server
            .handle()
            .wait_for(TEST_TIMEOUT, |stats| stats.connections_open == 0),
        "connections still open: {:?}",
        server.stats()
    );
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = TestServer::with_builder(support::hardened(), app());
    let mut raw = Raw::connect(server.addr());
    raw.send(b"GET /echo/old HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(raw.response().text(), "old");
    assert!(raw.closed_within(Duration::from_secs(5)));

    let mut kept = Raw::connect(server.addr());
    kept.send(b"GET /echo/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(kept.response().text(), "a");
    kept.send(b"GET /echo/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(kept.response().text(), "b");
}

#[test]
fn a_client_beyond_its_own_connection_limit_is_answered_503_at_once() {
    let server = TestServer::with_builder(
        support::hardened()
            .max_connections(16)
            .max_connections_per_client(2),
        app(),
    );
    let mut held: Vec<Raw> = (0..2).map(|_| Raw::connect(server.addr())).collect();
    for (i, raw) in held.iter_mut().enumerate() {
        raw.send(&get(&format!("/echo/{i}"))).unwrap();
        assert_eq!(raw.response().text(), i.to_string());
    }
    // A third from the same address, with room left under the global cap.
    let mut refused = Raw::connect(server.addr());
    let response = refused
        .response_within(Duration::from_secs(5))
        .expect("an immediate answer");
    assert_eq!(response.status(), 503);
    assert_eq!(response.header("Retry-After"), Some("1"));
    assert!(
        response.text().contains("from this address"),
        "{}",
        response.text()
    );
    assert!(refused.closed_within(Duration::from_secs(5)));

    // Its count goes down with its connections.
    drop(held.pop());
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |stats| stats.connections_open <= 1));
    let mut raw = Raw::connect(server.addr());
    raw.send(&get("/echo/back")).unwrap();
    let response = raw.response();
    assert_eq!(
        (response.status(), response.text()),
        (200, "back".to_owned())
    );
}

#[test]
fn connections_beyond_the_cap_are_answered_503_at_once() {
    let server = TestServer::with_builder(support::hardened().max_connections(2), app());
    let mut held: Vec<Raw> = (0..2).map(|_| Raw::connect(server.addr())).collect();
    // Make sure both are open and served (both count against the cap)
    // before the third.
    for (i, raw) in held.iter_mut().enumerate() {
        raw.send(&get(&format!("/echo/{i}"))).unwrap();
        assert_eq!(raw.response().text(), i.to_string());
    }
    let mut refused = Raw::connect(server.addr());
    let response = refused
        .response_within(Duration::from_secs(5))
        .expect("an immediate answer");
    assert_eq!(response.status(), 503);
    assert_eq!(response.header("Retry-After"), Some("1"));
    assert!(refused.closed_within(Duration::from_secs(5)));

    // Once one is closed (and has left the gauge), a new connection is
    // served again.
    drop(held.pop());
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |stats| stats.connections_open <= 1));
    let mut raw = Raw::connect(server.addr());
    raw.send(&get("/echo/back")).unwrap();
    let response = raw.response();
    assert_eq!(
        (response.status(), response.text()),
        (200, "back".to_owned())
    );
}
