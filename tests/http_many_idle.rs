//! Thousands of idle keep-alive connections (issue #9): held by the event
//! loop without a thread each and with no read buffer while idle, none
//! refused below the cap, while fresh clients are answered. (A file of its
//! own, so that this process's threads and memory are the server's and this
//! test's.)

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use afterward::testing::{TestRequest, TestServer, TEST_TIMEOUT};
use afterward::App;
use support::raw::{rss_kib, thread_count};

/// The soft descriptor limit of this process, from `/proc/self/limits`.
fn descriptor_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("a descriptor limit")
}

/// Connects, makes one keep-alive request and reads its answer: a client
/// that then stays connected, idle.
fn idle_client(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    while !answer.ends_with(b"\r\n\r\nok") {
        let n = stream.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{answer:?}");
    stream
}

#[test]
fn thousands_of_idle_connections_cost_no_thread_and_fresh_clients_are_served() {
    let builder = support::hardened()
        .workers(4)
        .background_workers(2)
        .idle_timeout(Duration::from_secs(120));
    // The server raises this process's descriptor limit as it starts.
    let server = TestServer::with_builder(builder, App::new().get("/", || "ok"));
    // Both ends of every connection are in this process. (Thousands where
    // the hard limit allows: 5,000 need 10,000 descriptors.)
    let idle = 5000.min(descriptor_limit().saturating_sub(256) / 2);
    assert!(idle >= 300, "descriptor limit {}", descriptor_limit());
    if idle < 5000 {
        eprintln!(
            "only {idle} idle connections: the descriptor limit is {}",
            descriptor_limit()
        );
    }
    assert_eq!(server.get("/").send().text(), "ok");
    let (threads_before, rss_before) = (thread_count(), rss_kib());

    let clients: Vec<TcpStream> = (0..idle).map(|_| idle_client(&server)).collect();
    let stats = server.stats();
    assert_eq!(
        stats.connections_open, idle as u64,
        "none refused: {stats:?}"
    );

    for _ in 0..50 {
        let response = TestRequest::new(server.addr(), "GET", "/").send();
        assert_eq!((response.status(), response.text()), (200, "ok".into()));
    }
    // No thread per connection...
    let threads = thread_count().saturating_sub(threads_before);
    assert!(threads <= 2, "{threads} new threads for {idle} connections");
    // ...and no read buffer held while idle: under 2 KiB each.
    let rss = rss_kib().saturating_sub(rss_before);
    assert!(rss < idle * 2, "{rss} KiB more for {idle} idle connections");
    // Every idle connection is still open, and served again.
    assert!(
        server
            .handle()
            .wait_for(TEST_TIMEOUT, |stats| stats.connections_open == idle as u64),
        "{:?}",
        server.stats()
    );
    let mut last = clients.into_iter().last().unwrap();
    last.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    last.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("ok"),
        "{answer}"
    );
}
