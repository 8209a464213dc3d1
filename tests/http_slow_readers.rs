//! Slow readers (issue #9): a request worker never waits on a client socket.
//! What the socket does not take at once is sent by the event loop, the
//! connection reads no further request meanwhile, a whole-response deadline
//! and a minimum rate close clients that read too slowly, and the request's
//! tasks run once its response is sent (or can no longer be). And the
//! loop's deadlines hold whatever a worker does meanwhile.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use afterward::testing::{TestRequest, TestServer, TEST_TIMEOUT};
use afterward::{App, BackgroundTasks, ServerBuilder};
use support::raw::{get, Raw};
use support::Gate;

/// Far more than the kernel's socket buffers on both sides hold.
const BIG: usize = 32 * 1024 * 1024;
/// Slack for a loaded CI machine on top of a configured time.
const SLACK: Duration = Duration::from_secs(3);

fn app() -> App {
    App::new()
        .get("/big", |tasks: BackgroundTasks| {
            tasks.add_task(|| ());
            vec![b'x'; BIG]
        })
        .get("/medium", || vec![b'm'; 256 * 1024])
        .get("/small", || "small")
}

/// Waits until `server` has a request in flight: the response to a client
/// that reads slowly, once it is being sent.
fn wait_in_flight(server: &TestServer) {
    assert!(
        server
            .handle()
            .wait_for(TEST_TIMEOUT, |stats| stats.requests_in_flight == 1),
        "{:?}",
        server.stats()
    );
}

/// Reads `stream` slowly (`chunk` bytes every 20 ms) until it ends or
/// `stop` is set; returns how many bytes it read.
fn read_slowly(mut stream: TcpStream, chunk: usize, stop: Arc<AtomicBool>) -> usize {
    let mut buf = vec![0u8; chunk];
    let mut total = 0;
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        thread::sleep(Duration::from_millis(20));
    }
    total
}

#[test]
fn a_client_that_never_reads_holds_no_worker_and_its_task_runs_once_it_is_gone() {
    // A write timeout far beyond the test: only the engine's design frees
    // the worker, not a timeout.
    let builder = support::hardened()
        .workers(1)
        .write_timeout(Duration::from_secs(600))
        .min_write_rate(0);
    let server = TestServer::with_builder(builder, app());

    let mut stuck = Raw::connect(server.addr());
    stuck.send(&get("/big")).unwrap();
    // The only worker is free for the next client at once...
    let asked = Instant::now();
    let small = TestRequest::new(server.addr(), "GET", "/small").send();
    assert_eq!(small.text(), "small");
    assert!(
        asked.elapsed() < SLACK,
        "answered after {:?}",
        asked.elapsed()
    );
    // ...while the big response still waits for its client, and its task
    // with it: tasks run once the response is sent. (The `/small` request
    // finishes just after its client has the response: wait for that, the
    // server's own condition, before reading what is left in flight.)
    assert!(
        server.handle().wait_for(TEST_TIMEOUT, |stats| {
            stats.connections_open == 1 && stats.requests_in_flight == 1
        }),
        "{:?}",
        server.stats()
    );
    assert_eq!(server.stats().scheduled, 0, "{:?}", server.stats());

    // The client goes: the rest cannot be sent, and the task runs.
    drop(stuck);
    server.wait_idle();
    let stats = server.stats();
    assert_eq!((stats.scheduled, stats.completed), (1, 1), "{stats:?}");
    assert!(
        server
            .handle()
            .wait_for(TEST_TIMEOUT, |stats| stats.connections_open == 0),
        "{:?}",
        server.stats()
    );
}

/// A server from `builder` and a client reading its `/big` at about 50 KiB/s
/// (never stalling), which the server must cut off `within` of the response's
/// start; returns the server and how many bytes the client read.
fn cut_off_slow_reader(builder: ServerBuilder, within: Duration) -> (TestServer, usize) {
    let server = TestServer::with_builder(builder, app());
    let mut slow = Raw::connect(server.addr());
    slow.send(&get("/big")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stream, stop) = (slow.stream().try_clone().unwrap(), stop.clone());
        thread::spawn(move || read_slowly(stream, 1024, stop))
    };
    wait_in_flight(&server);
    let started = Instant::now();
    assert!(
        server
            .handle()
            .wait_for(within, |stats| stats.connections_open == 0),
        "still open after {:?}: {:?}",
        started.elapsed(),
        server.stats()
    );
    stop.store(true, Ordering::SeqCst);
    let read = reader.join().unwrap();
    (server, read)
}

#[test]
fn a_client_reading_steadily_but_slowly_is_cut_off_at_the_whole_response_deadline() {
    let write_timeout = Duration::from_secs(1);
    let builder = support::hardened()
        .write_timeout(write_timeout)
        .min_write_rate(0);
    let (server, read) = cut_off_slow_reader(builder, write_timeout + SLACK);
    assert!(read < BIG, "the whole response was read ({read} bytes)");
    assert_eq!(server.get("/small").send().text(), "small");
    server.wait_idle();
    let stats = server.stats();
    assert_eq!((stats.scheduled, stats.completed), (1, 1), "{stats:?}");
}

#[test]
fn a_client_reading_below_the_minimum_rate_is_cut_off_before_the_write_timeout() {
    // 2 s of grace, then less than 1 MiB/s taken on average: closed long
    // before the write timeout.
    let builder = support::hardened()
        .write_timeout(Duration::from_secs(600))
        .min_write_rate(1024 * 1024);
    let (server, _) = cut_off_slow_reader(builder, Duration::from_secs(2) + SLACK * 2);
    server.wait_idle();
    assert_eq!(server.stats().completed, 1, "{:?}", server.stats());
}

#[test]
fn clients_pipelining_requests_they_never_read_block_no_worker() {
    // Twelve clients against four workers, each pipelining far more
    // response bytes than its socket holds, none reading a byte.
    let builder = support::hardened()
        .workers(4)
        .write_timeout(Duration::from_secs(600))
        .min_write_rate(0);
    let server = TestServer::with_builder(builder, app());
    let pipelined: Vec<u8> = (0..400).flat_map(|_| get("/medium")).collect();
    let hogs: Vec<Raw> = (0..12)
        .map(|_| {
            let mut hog = Raw::connect(server.addr());
            hog.send(&pipelined).unwrap();
            hog
        })
        .collect();
    // Every hog has a response waiting on the event loop...
    assert!(
        server
            .handle()
            .wait_for(TEST_TIMEOUT, |stats| stats.requests_in_flight >= 12),
        "{:?}",
        server.stats()
    );
    // ...and fresh clients are answered all the same.
    for _ in 0..20 {
        let asked = Instant::now();
        assert_eq!(server.get("/small").send().text(), "small");
        assert!(
            asked.elapsed() < SLACK,
            "answered after {:?}",
            asked.elapsed()
        );
    }
    // Each hog read no further request than its output allowed: far fewer
    // than it sent were answered.
    let stats = server.stats();
    assert!(stats.requests < 12 * 400 / 2, "{stats:?}");
    drop(hogs);
}

#[test]
fn timeouts_too_large_for_a_clock_mean_no_timeout() {
    // Duration::MAX as "never": the event loop keeps no deadline it cannot
    // compute, and serves on.
    let builder = support::hardened()
        .idle_timeout(Duration::MAX)
        .header_timeout(Duration::MAX)
        .body_timeout(Duration::MAX)
        .write_timeout(Duration::MAX);
    let server = TestServer::with_builder(builder, app());
    let mut client = Raw::connect(server.addr());
    for _ in 0..2 {
        client.send(&get("/small")).unwrap();
        assert_eq!(client.response().text(), "small");
    }
    assert_eq!(server.get("/medium").send().body().len(), 256 * 1024);
}

#[test]
fn a_connection_back_from_a_handler_slower_than_the_idle_timeout_still_idles_out() {
    let idle = Duration::from_millis(300);
    let release = Gate::new();
    let gate = release.clone();
    let app = App::new().get("/slow", move || {
        gate.wait();
        "slow"
    });
    let server = TestServer::with_builder(support::hardened().idle_timeout(idle), app);
    let mut kept = Raw::connect(server.addr());
    kept.send(&get("/slow")).unwrap();
    wait_in_flight(&server);
    // A connection opened after it idles out: the first one's own idle
    // deadline has passed too, while its handler still runs.
    let mut witness = Raw::connect(server.addr());
    assert!(
        witness.closed_within(idle + SLACK),
        "the witness stays open"
    );
    release.open();
    assert_eq!(kept.response().text(), "slow");
    // Back from the worker with its deadline gone: it gets a new one.
    assert!(
        kept.closed_within(idle + SLACK),
        "an idle connection stays open"
    );
}
