//! 1,000 idle connections: new clients are still answered promptly, threads
//! and memory stay within the documented per-connection cost, and the idle
//! connections are closed after the idle timeout. (A file of its own, so that
//! this process's thread count and memory are the server's and this test's.)

mod support;

use std::time::{Duration, Instant};

use afterward::testing::{TestRequest, TestServer};
use afterward::App;
use support::raw::{rss_kib, thread_count, Raw};

const IDLE: usize = 1000;
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn a_thousand_idle_connections_do_not_lock_out_new_clients() {
    let builder = support::hardened()
        .workers(4)
        .background_workers(2)
        .idle_timeout(IDLE_TIMEOUT)
        .max_connections(IDLE + 64);
    let server = TestServer::with_builder(builder, App::new().get("/", || "ok"));
    assert_eq!(
        TestRequest::new(server.addr(), "GET", "/").send().text(),
        "ok"
    );
    let (threads_before, rss_before) = (thread_count(), rss_kib());

    let mut idle: Vec<Raw> = (0..IDLE).map(|_| Raw::connect(server.addr())).collect();
    let asked = Instant::now();
    let response = TestRequest::new(server.addr(), "GET", "/").send();
    assert_eq!(response.text(), "ok");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        asked.elapsed()
    );

    // Documented cost: no thread per connection (at most one per connection
    // on any engine; `http_many_idle.rs` holds the builtin one to two)...
    let threads = thread_count() - threads_before;
    assert!(
        threads <= IDLE + 1,
        "{threads} new threads for {IDLE} connections"
    );
    // ...and well under 64 KiB of resident memory each.
    let rss = rss_kib().saturating_sub(rss_before);
    assert!(
        rss < IDLE * 64,
        "{rss} KiB more for {IDLE} idle connections"
    );

    // Every idle connection is closed once the idle timeout has passed.
    let deadline = Instant::now() + IDLE_TIMEOUT + Duration::from_secs(10);
    for (i, raw) in idle.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(raw.closed_within(left), "idle connection {i} still open");
    }
    // ...and has left the gauge: it is back to zero.
    assert!(
        server
            .handle()
            .wait_for(support::TEST_TIMEOUT, |stats| stats.connections_open == 0),
        "{:?}",
        server.stats()
    );
}
