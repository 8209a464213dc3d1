//! A fair event loop: one client sending as fast as it can gets a few reads
//! per turn, like every other connection, and the loop looks at deadlines at
//! every turn; empty lines before a request count toward the head's limit.
//! So a flooding client is cut off, and fresh clients are answered all the
//! while.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use afterward::testing::{TestRequest, TestServer, TEST_TIMEOUT};
use afterward::App;
use support::raw::Raw;

/// Far longer than a fresh request takes on a loaded machine, far shorter
/// than what a monopolised loop made clients wait (seconds, or never).
const PROMPT: Duration = Duration::from_secs(1);

fn app() -> App {
    App::new().get("/health", || "ok")
}

/// Floods `addr` with `\r\n` from one connection at a time, as fast as the
/// socket takes it, reconnecting when the server cuts it off, until `stop`;
/// counts the connections the server cut off.
fn flood(addr: SocketAddr, stop: Arc<AtomicBool>, cut_off: Arc<AtomicUsize>) {
    let chunk = b"\r\n".repeat(32 * 1024);
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            continue;
        };
        stream.set_write_timeout(Some(TEST_TIMEOUT)).unwrap();
        while !stop.load(Ordering::SeqCst) {
            if stream.write_all(&chunk).is_err() {
                cut_off.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
}

/// Asks for `/health` on fresh connections `n` times; the slowest answer.
fn probe(addr: SocketAddr, n: usize) -> Duration {
    (0..n)
        .map(|_| {
            let asked = Instant::now();
            let response = TestRequest::new(addr, "GET", "/health").send();
            assert_eq!(response.text(), "ok");
            asked.elapsed()
        })
        .max()
        .unwrap_or_default()
}

#[test]
fn clients_flooding_empty_lines_are_cut_off_and_delay_no_one() {
    let server = TestServer::with_builder(support::hardened(), app());
    let stop = Arc::new(AtomicBool::new(false));
    let cut_off = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, cut_off) = (stop.clone(), cut_off.clone());
            let addr = server.addr();
            thread::spawn(move || flood(addr, stop, cut_off))
        })
        .collect();
    // Both flooders at it: each has been cut off at least once.
    let started = Instant::now();
    while cut_off.load(Ordering::SeqCst) < 2 {
        assert!(
            started.elapsed() < TEST_TIMEOUT,
            "a flooding connection is never cut off"
        );
        thread::yield_now();
    }
    let slowest = probe(server.addr(), 50);
    stop.store(true, Ordering::SeqCst);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    assert!(slowest < PROMPT, "a fresh client waited {slowest:?}");
}

#[test]
fn empty_lines_before_a_request_count_toward_the_head_limit() {
    let max = 1024;
    let server = TestServer::with_builder(support::hardened().max_header_bytes(max), app());
    // A few are skipped, as RFC 9112 §2.2 allows...
    let mut polite = Raw::connect(server.addr());
    polite
        .send(b"\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(polite.response().text(), "ok");
    // ...more than the head's limit are an error, answered at once.
    let mut flood = Raw::connect(server.addr());
    flood.send(&b"\r\n".repeat(max)).unwrap();
    flood.send(b"\r\n").unwrap();
    let response = flood.response_within(PROMPT).expect("an answer at once");
    assert_eq!(response.status(), 400);
    assert!(flood.closed_within(TEST_TIMEOUT));
}

#[test]
fn deadlines_hold_while_clients_flood() {
    // A head begun and never finished: its header timeout passes while two
    // clients keep the loop as busy as they can.
    let timeout = Duration::from_millis(500);
    let server = TestServer::with_builder(support::hardened().header_timeout(timeout), app());
    let stop = Arc::new(AtomicBool::new(false));
    let cut_off = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, cut_off) = (stop.clone(), cut_off.clone());
            let addr = server.addr();
            thread::spawn(move || flood(addr, stop, cut_off))
        })
        .collect();
    let mut slow = Raw::connect(server.addr());
    slow.send(b"GET /health HTTP/1.1\r\nHost: t\r\n").unwrap();
    let started = Instant::now();
    let response = slow.response_within(timeout + PROMPT);
    let waited = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    let response = response.unwrap_or_else(|e| panic!("no 408 after {waited:?}: {e}"));
    assert_eq!(response.status(), 408);
    assert!(waited < timeout + PROMPT, "408 after {waited:?}");
}
