//! The hand-off between the event loop and the request workers is bounded:
//! a full queue is an immediate, counted `503`; a request that waited in it
//! past the queue timeout is a `503` too, not served late; and a request
//! whose client has gone is dropped before a handler runs (counted, as
//! nginx's 499), not answered into the void. A request queued behind a
//! busy worker is not left to it: a sleeping worker is woken for it within
//! `worker_wake_after`. While every worker is held, the event loop still
//! turns.

mod support;

use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use afterward::testing::{TestServer, TEST_TIMEOUT};
use afterward::App;
use support::raw::{get, Raw};
use support::Gate;

/// Far longer than a refusal takes on a loaded machine.
const PROMPT: Duration = Duration::from_secs(1);

/// `/busy` waits for the gate; `/count` counts its calls.
fn app(release: &Gate, calls: &Arc<AtomicUsize>) -> App {
    let (gate, calls) = (release.clone(), calls.clone());
    App::new()
        .get("/busy", move || {
            gate.wait();
            "done"
        })
        .get("/count", move || {
            calls.fetch_add(1, Ordering::SeqCst);
            "counted"
        })
}

/// Holds the server's only worker with a `/busy` request.
fn hold_the_worker(server: &TestServer) -> Raw {
    let mut busy = Raw::connect(server.addr());
    busy.send(&get("/busy")).unwrap();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_in_flight == 1));
    busy
}

/// A server with one of its workers held by `/busy`, which waits for the
/// gate and says whether it was opened or its wait gave up; its `/count`
/// answers at once.
struct Held {
    server: TestServer,
    gate: Gate,
    busy: Raw,
}

impl Held {
    fn start(workers: usize, wake_after: Duration) -> Held {
        let gate = Gate::new();
        let opened = gate.clone();
        let app = App::new()
            .get("/busy", move || match opened.wait() {
                true => "released",
                false => "gave up waiting",
            })
            .get("/count", || "counted");
        let builder = support::hardened()
            .workers(workers)
            .worker_wake_after(wake_after);
        let server = TestServer::with_builder(builder, app);
        let busy = hold_the_worker(&server);
        Held { server, gate, busy }
    }

    /// Opens the gate. Had no worker been woken for the requests sent
    /// meanwhile, they would have been answered only once `/busy` gave up
    /// waiting (TEST_TIMEOUT), and it would say so.
    fn release(mut self) {
        self.gate.open();
        assert_eq!(self.busy.response().text(), "released");
    }
}

/// Sends `/count` on `n` fresh connections, without waiting for answers.
fn ask_to_count(server: &TestServer, n: usize) -> Vec<Raw> {
    (0..n)
        .map(|_| {
            let mut client = Raw::connect(server.addr());
            client.send(&get("/count")).unwrap();
            client
        })
        .collect()
}

#[test]
fn requests_whose_clients_have_gone_are_dropped_before_their_handler_runs() {
    let (release, calls) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    // Every request is checked (by default, only those that waited 10 ms).
    let builder = support::hardened()
        .workers(1)
        .client_gone_check_after(Duration::ZERO);
    let server = TestServer::with_builder(builder, app(&release, &calls));
    let mut busy = hold_the_worker(&server);
    // A hundred whole requests, whose clients close at once.
    for _ in 0..100 {
        let mut gone = Raw::connect(server.addr());
        gone.send(&get("/count")).unwrap();
        gone.stream().shutdown(Shutdown::Both).unwrap();
    }
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_queued == 100));
    release.open();
    assert_eq!(busy.response().text(), "done");
    assert!(
        server
            .handle()
            .wait_for(TEST_TIMEOUT, |s| s.client_gone == 100
                && s.requests_queued == 0),
        "{:?}",
        server.stats()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no handler ran for a client gone"
    );
    let stats = server.stats();
    assert_eq!(stats.requests, 1, "only /busy was answered: {stats:?}");
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.connections_open == 1));
}

#[test]
fn requests_queued_behind_a_blocked_handler_are_taken_by_sleeping_workers() {
    // The event loop lets a request wait for a busy worker to come back
    // (a quick one would); `/busy` does not until the test lets it. Every
    // request behind it must be answered by the other workers all the same,
    // which sleep once they have found nothing to do.
    let held = Held::start(4, Duration::from_millis(5));
    for _ in 0..3 {
        for client in &mut ask_to_count(&held.server, 3) {
            assert_eq!(client.response().text(), "counted");
        }
    }
    held.release();
}

#[test]
fn a_request_behind_a_handler_that_has_run_long_is_taken_at_once() {
    // No worker has come back from a request lately: the busy one may be
    // in a slow handler, so a sleeping one is woken at once, not after
    // `worker_wake_after` (here longer than the test).
    let held = Held::start(2, Duration::from_secs(3600));
    assert_eq!(
        ask_to_count(&held.server, 1)[0].response().text(),
        "counted"
    );
    held.release();
}

#[test]
fn a_full_queue_to_the_workers_is_503_at_once() {
    let (release, calls) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let builder = support::hardened().workers(1).max_pending_requests(4);
    let server = TestServer::with_builder(builder, app(&release, &calls));
    let mut busy = hold_the_worker(&server);
    let mut waiting = ask_to_count(&server, 4);
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_queued == 4));
    for _ in 0..3 {
        let mut refused = Raw::connect(server.addr());
        refused.send(&get("/count")).unwrap();
        let response = refused.response_within(PROMPT).expect("a 503 at once");
        assert_eq!(response.status(), 503);
        assert_eq!(response.header("Retry-After"), Some("1"));
    }
    assert_eq!(server.stats().refused_queue_full, 3);
    release.open();
    assert_eq!(busy.response().text(), "done");
    for client in &mut waiting {
        assert_eq!(client.response().text(), "counted");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[test]
fn a_request_that_waited_past_the_queue_timeout_is_503_not_served_late() {
    let (release, calls) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let timeout = Duration::from_millis(200);
    let builder = support::hardened().workers(1).queue_timeout(timeout);
    let server = TestServer::with_builder(builder, app(&release, &calls));
    let mut busy = hold_the_worker(&server);
    let mut late = Raw::connect(server.addr());
    late.send(&get("/count")).unwrap();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_queued == 1));
    // The queue timeout passes while the only worker is held: this wait is
    // the subject of the test, not a synchronisation.
    let queued = Instant::now();
    std::thread::sleep(timeout);
    assert!(queued.elapsed() >= timeout);
    release.open();
    assert_eq!(busy.response().text(), "done");
    let response = late.response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.header("Retry-After"), Some("1"));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "its handler never ran");
    assert_eq!(server.stats().refused_queue_timeout, 1);
}

#[test]
fn a_burst_of_dead_requests_leaves_nothing_held_behind() {
    let (release, calls) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let builder = support::hardened()
        .workers(1)
        .client_gone_check_after(Duration::ZERO);
    let server = TestServer::with_builder(builder, app(&release, &calls));
    let mut busy = hold_the_worker(&server);
    for _ in 0..2000 {
        let mut gone = Raw::connect(server.addr());
        let body = vec![b'b'; 10_000];
        let mut request = format!(
            "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        gone.send(&request).unwrap();
    }
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_queued == 2000));
    assert!(server.stats().body_bytes_buffered >= 2000 * 10_000);
    release.open();
    assert_eq!(busy.response().text(), "done");
    drop(busy);
    // The clients had gone (their sockets closed when `gone` was dropped):
    // every request is dropped, and everything it held is given back.
    assert!(
        server.handle().wait_for(TEST_TIMEOUT, |s| {
            s.client_gone == 2000 && s.connections_open == 0 && s.body_bytes_buffered == 0
        }),
        "{:?}",
        server.stats()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn the_event_loop_keeps_turning_while_every_worker_is_held() {
    // A worker with nothing to serve runs the event loop's turns; here the
    // only one is in a handler that does not return. The loop must turn all
    // the same (the watcher runs it): a new request is read and queued, and
    // a head that never ends is cut off at its deadline, while the handler
    // still holds the worker. However long requests may wait for a busy
    // worker (here longer than the test), the loop waits 2 ms at most.
    let (release, calls) = (Gate::new(), Arc::new(AtomicUsize::new(0)));
    let builder = support::hardened()
        .workers(1)
        .worker_wake_after(Duration::from_secs(3600))
        .header_timeout(PROMPT);
    let server = TestServer::with_builder(builder, app(&release, &calls));
    let mut busy = hold_the_worker(&server);
    let mut queued = ask_to_count(&server, 1);
    let mut slow = Raw::connect(server.addr());
    slow.send(b"GET /count HTTP/1.1\r\nHost: t\r\n").unwrap();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.requests_queued == 1));
    assert!(slow.closed_within(TEST_TIMEOUT), "the head's deadline held");
    assert_eq!(server.stats().requests_in_flight, 1, "still held");
    release.open();
    assert_eq!(busy.response().text(), "done");
    assert_eq!(queued[0].response().text(), "counted");
}
