//! A full queue applies backpressure: the request worker that has just
//! responded waits for room, so new requests slow down, and no task is lost.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use afterward::testing::{TestRequest, TestServer};
use afterward::{App, BackgroundTasks, Path, Server};
use support::{Events, Gate, TEST_TIMEOUT};

#[test]
fn a_full_queue_makes_the_request_worker_wait_and_loses_nothing() {
    let (events, started, release) = (Events::default(), Gate::new(), Gate::new());
    let (log, started_in, release_in) = (events.clone(), started.clone(), release.clone());
    let app = App::new().post(
        "/job/{n}",
        move |Path(n): Path<u32>, tasks: BackgroundTasks| {
            let (log, started, release) = (log.clone(), started_in.clone(), release_in.clone());
            tasks.add_task(move || {
                if n == 0 {
                    started.open();
                    release.wait();
                }
                log.push(n.to_string());
            });
            format!("accepted {n}")
        },
    );
    // One request worker, one background worker, room for one task list.
    let builder = Server::builder()
        .workers(1)
        .background_workers(1)
        .queue_capacity(1);
    let server = TestServer::with_builder(builder, app);

    // Job 0 occupies the background worker; job 1 fills the queue.
    server.post("/job/0").send();
    assert!(started.wait());
    server.post("/job/1").send();
    // Job 2 is answered (responding comes first), then its worker waits for room.
    assert_eq!(server.post("/job/2").send().text(), "accepted 2");

    // So job 3 is not answered while the queue stays full...
    let (answered_tx, answered) = mpsc::channel();
    let addr = server.addr();
    let client = std::thread::spawn(move || {
        let response = TestRequest::new(addr, "POST", "/job/3").send();
        answered_tx.send(()).unwrap();
        response
    });
    assert!(
        answered.recv_timeout(Duration::from_millis(300)).is_err(),
        "job 3 was answered while the only request worker should be waiting for queue room"
    );
    // Job 2 is still in flight in its worker, its task counted as queued with job 1's.
    let stats = server.stats();
    assert_eq!(
        (stats.requests_in_flight, stats.queued),
        (1, 2),
        "{stats:?}"
    );

    // ...and is once the queue drains.
    release.open();
    assert!(answered.recv_timeout(TEST_TIMEOUT).is_ok());
    assert_eq!(client.join().unwrap().text(), "accepted 3");
    server.wait_idle();

    assert_eq!(events.list(), ["0", "1", "2", "3"]);
    let stats = server.stats();
    assert_eq!(
        (stats.scheduled, stats.completed, stats.discarded),
        (4, 4, 0)
    );
}
