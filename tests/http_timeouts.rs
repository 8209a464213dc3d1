//! Timeouts: a slow request head, an idle connection, a client that never
//! reads its response or goes away mid-request cannot hold a thread for long,
//! and no task is lost.

mod support;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use afterward::testing::{TestRequest, TestServer};
use afterward::{App, BackgroundTasks, RawBody};
use support::raw::{get, Raw};
use support::Gate;

const SHORT: Duration = Duration::from_millis(400);
/// Slack for a loaded CI machine on top of a configured timeout.
const SLACK: Duration = Duration::from_secs(3);

fn builder() -> afterward::ServerBuilder {
    support::hardened()
        .header_timeout(SHORT)
        .idle_timeout(SHORT)
        .body_timeout(SHORT)
        .write_timeout(SHORT)
}

#[test]
fn a_slowloris_head_is_cut_off_at_the_header_timeout() {
    let server = TestServer::with_builder(builder(), App::new().get("/", || "ok"));
    let mut raw = Raw::connect(server.addr());
    let mut writer = raw.stream().try_clone().unwrap();
    let started = Instant::now();
    // One header byte every 100 ms, for far longer than the header timeout.
    let dribble = thread::spawn(move || {
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(
        raw.closed_within(SHORT + SLACK),
        "still open after {:?}",
        started.elapsed()
    );
    dribble.join().unwrap();
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::with_builder(builder(), App::new().get("/", || "ok"));
    let mut silent = Raw::connect(server.addr());
    assert!(
        silent.closed_within(SHORT + SLACK),
        "a connection that never spoke stays open"
    );

    let mut kept = Raw::connect(server.addr());
    kept.send(&get("/")).unwrap();
    assert_eq!(kept.response().text(), "ok");
    assert!(
        kept.closed_within(SHORT + SLACK),
        "an idle keep-alive connection stays open"
    );
}

#[test]
fn a_client_that_never_reads_frees_the_worker_and_loses_no_task() {
    let handling = Gate::new();
    let signal = handling.clone();
    let app = App::new()
        .get("/big", move |tasks: BackgroundTasks| {
            tasks.add_task(|| ());
            signal.open();
            vec![b'x'; 32 * 1024 * 1024]
        })
        .get("/small", || "small");
    let server = TestServer::with_builder(builder().workers(1), app);

    // Asks for 32 MiB and never reads: the only worker blocks writing...
    let mut stuck = Raw::connect(server.addr());
    stuck.send(&get("/big")).unwrap();
    assert!(handling.wait());
    // ...until the write timeout frees it for the next client.
    let small = TestRequest::new(server.addr(), "GET", "/small").send();
    assert_eq!(small.text(), "small");
    server.wait_idle();
    let stats = server.stats();
    assert_eq!((stats.scheduled, stats.completed), (1, 1), "{stats:?}");
    drop(stuck);
}

#[test]
fn a_client_gone_mid_body_frees_the_worker() {
    let app = App::new()
        .post(
            "/upload",
            |RawBody(body): RawBody, tasks: BackgroundTasks| {
                tasks.add_task(|| ());
                body.len().to_string()
            },
        )
        .get("/small", || "small");
    let server = TestServer::with_builder(builder().workers(1), app);

    let mut gone = Raw::connect(server.addr());
    gone.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        .unwrap();
    drop(gone);
    let mut silent = Raw::connect(server.addr());
    silent
        .send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nthen nothing")
        .unwrap();

    let small = TestRequest::new(server.addr(), "GET", "/small").send();
    assert_eq!(small.text(), "small");
    server.wait_idle();
    let stats = server.stats();
    // Neither handler ran (their bodies never arrived), so no task was added.
    assert_eq!((stats.scheduled, stats.pending()), (0, 0), "{stats:?}");
    drop(silent);
}
