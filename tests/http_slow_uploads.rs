//! Bodies are read by the event loop, never by a request worker: a request
//! reaches a worker only with its whole body, read under a whole-body
//! deadline and a minimum rate, within a budget for every body buffered at
//! once. So no number of slow uploaders delays anyone else, `100 Continue`
//! is sent by the loop, and a body that does not fit the budget is a `503`
//! at once.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use afterward::testing::{TestRequest, TestServer, TEST_TIMEOUT};
use afterward::{App, RawBody};
use support::raw::Raw;
use support::Gate;

/// Far longer than a fresh request takes on a loaded machine, far shorter
/// than what a held worker made clients wait (a body timeout, or more).
const PROMPT: Duration = Duration::from_secs(1);

fn app() -> App {
    App::new()
        .get("/health", || "ok")
        .post("/upload", |RawBody(body): RawBody| {
            format!("{} bytes", body.len())
        })
}

/// A head announcing `length` bytes of body, and `sent` of them.
fn upload(length: usize, sent: usize) -> Vec<u8> {
    let mut bytes = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n")
        .into_bytes();
    bytes.resize(bytes.len() + sent, b'u');
    bytes
}

/// Asks for `/health` on fresh connections `n` times; the slowest answer.
fn probe(addr: SocketAddr, n: usize) -> Duration {
    (0..n)
        .map(|_| {
            let asked = Instant::now();
            assert_eq!(TestRequest::new(addr, "GET", "/health").send().text(), "ok");
            asked.elapsed()
        })
        .max()
        .unwrap_or_default()
}

#[test]
fn hundreds_of_slow_uploaders_delay_no_fresh_client() {
    // Two workers; three hundred clients each sending a 1 MB body a byte at
    // a time, or its head and nothing more.
    // No deadline or rate cuts them off during the test: only the design
    // keeps the workers free.
    let builder = support::hardened()
        .workers(2)
        .max_body_buffer_bytes(1 << 40)
        .body_timeout(Duration::from_secs(600))
        .min_body_rate(0);
    let server = TestServer::with_builder(builder, app());
    let stop = Arc::new(AtomicBool::new(false));
    let mut uploaders: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr()).unwrap();
            stream.write_all(&upload(1_000_000, 1)).unwrap();
            stream
        })
        .collect();
    let dripping = {
        let stop = stop.clone();
        let mut drips: Vec<TcpStream> = uploaders.drain(..150).collect();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for stream in &mut drips {
                    let _ = stream.write_all(b"u");
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Every head read, every body reserved and waiting on the loop.
    assert!(
        server
            .handle()
            .wait_for(TEST_TIMEOUT, |stats| stats.body_bytes_buffered
                >= 300 * 1_000_000),
        "{:?}",
        server.stats()
    );
    let slowest = probe(server.addr(), 50);
    stop.store(true, Ordering::SeqCst);
    dripping.join().unwrap();
    assert!(slowest < PROMPT, "a fresh client waited {slowest:?}");
    // The probes done (the last finishes just after its client has its
    // answer), only they were ever answered: no upload reached a worker.
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_in_flight == 0));
    let stats = server.stats();
    assert_eq!(stats.requests, 50, "{stats:?}");
}

#[test]
fn a_body_too_slow_for_its_deadline_is_cut_off_with_408() {
    let timeout = Duration::from_millis(500);
    let builder = support::hardened().body_timeout(timeout).min_body_rate(0);
    let server = TestServer::with_builder(builder, app());
    let mut slow = Raw::connect(server.addr());
    slow.send(&upload(1000, 10)).unwrap();
    let started = Instant::now();
    // A byte every 20 ms, steadily: each read is prompt, the whole is late.
    let response = loop {
        if let Ok(response) = slow.response_within(Duration::from_millis(20)) {
            break response;
        }
        let _ = slow.send(b"u");
        assert!(started.elapsed() < TEST_TIMEOUT, "never cut off");
    };
    assert_eq!(response.status(), 408);
    assert!(
        started.elapsed() < timeout + PROMPT,
        "408 after {:?}",
        started.elapsed()
    );
    assert!(slow.closed_within(TEST_TIMEOUT));
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.body_bytes_buffered == 0));
}

#[test]
fn a_body_below_the_minimum_rate_is_cut_off_before_its_deadline() {
    // 2 s of grace, then 1 MB/s on average: a body sent at a few hundred
    // bytes a second is cut off long before its 10 minutes.
    let builder = support::hardened()
        .body_timeout(Duration::from_secs(600))
        .min_body_rate(1_000_000);
    let server = TestServer::with_builder(builder, app());
    let mut slow = Raw::connect(server.addr());
    slow.send(&upload(1_000_000, 10)).unwrap();
    let started = Instant::now();
    let response = loop {
        if let Ok(response) = slow.response_within(Duration::from_millis(20)) {
            break response;
        }
        let _ = slow.send(b"uuuu");
        assert!(started.elapsed() < TEST_TIMEOUT, "never cut off");
    };
    assert_eq!(response.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(3) + PROMPT);
}

#[test]
fn whole_bodies_reach_the_handler_in_any_framing() {
    let server = TestServer::with_builder(support::hardened(), app());
    let mut client = Raw::connect(server.addr());
    // In pieces, with a pause between them...
    client.send(&upload(5, 2)).unwrap();
    client.send(b"uuu").unwrap();
    assert_eq!(client.response().text(), "5 bytes");
    // ...chunked, and pipelined behind another request.
    client
        .send(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    assert_eq!(client.response().text(), "7 bytes");
    assert_eq!(client.response().text(), "ok");
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.body_bytes_buffered == 0));
}

#[test]
fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let builder = support::hardened().max_body_bytes(100);
    let server = TestServer::with_builder(builder, app());
    // Declared too long: 413 at once, nothing read.
    let mut declared = Raw::connect(server.addr());
    declared.send(&upload(101, 0)).unwrap();
    assert_eq!(declared.response_within(PROMPT).unwrap().status(), 413);
    assert!(declared.closed_within(TEST_TIMEOUT));
    // Chunked past it: 413 once a chunk would go over.
    let mut chunked = Raw::connect(server.addr());
    chunked
        .send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n")
        .unwrap();
    chunked.send(&[b'c'; 0x50]).unwrap();
    chunked.send(b"\r\n50\r\n").unwrap();
    assert_eq!(chunked.response_within(PROMPT).unwrap().status(), 413);
    let stats = server.stats();
    assert_eq!(
        (stats.requests_in_flight, stats.requests),
        (0, 2),
        "{stats:?}"
    );
}

#[test]
fn a_body_that_does_not_fit_the_budget_is_503_at_once() {
    let builder = support::hardened().max_body_buffer_bytes(10_000);
    let server = TestServer::with_builder(builder, app());
    let mut first = Raw::connect(server.addr());
    first.send(&upload(6_000, 100)).unwrap();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.body_bytes_buffered == 6_000));
    let mut second = Raw::connect(server.addr());
    second.send(&upload(6_000, 0)).unwrap();
    let refused = second.response_within(PROMPT).unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(server.stats().refused_body_budget, 1);
    // The first goes on, and its reservation returns with it.
    first.send(&vec![b'u'; 5_900]).unwrap();
    assert_eq!(first.response().text(), "6000 bytes");
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.body_bytes_buffered == 0));
    let mut third = Raw::connect(server.addr());
    third.send(&upload(6_000, 6_000)).unwrap();
    assert_eq!(third.response().text(), "6000 bytes");
}

#[test]
fn the_loop_sends_100_continue_while_every_worker_is_busy() {
    let release = Gate::new();
    let gate = release.clone();
    let app = app().get("/busy", move || {
        gate.wait();
        "done"
    });
    let server = TestServer::with_builder(support::hardened().workers(1), app);
    let mut busy = Raw::connect(server.addr());
    busy.send(b"GET /busy HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_in_flight == 1));
    let mut client = Raw::connect(server.addr());
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .unwrap();
    let interim = client
        .response_within(PROMPT)
        .expect("100 Continue at once");
    assert_eq!(interim.status(), 100);
    client.send(b"data").unwrap();
    release.open();
    assert_eq!(busy.response().text(), "done");
    assert_eq!(client.response().text(), "4 bytes");
}
