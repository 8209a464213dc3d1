//! Graceful shutdown: stop taking requests, finish those in flight, drain the
//! queue until the deadline; list, log and count every task not run by then.

mod support;

use std::time::Duration;

use afterward::testing::{TestRequest, TestServer};
use afterward::{App, BackgroundTask, BackgroundTasks, Path, Server};
use support::{Events, Gate, TEST_TIMEOUT};

/// `POST /task/{name}` adds a task named `name` that records itself; the task
/// named `blocker` first signals `started`, then waits for `release`, and is
/// followed by a second task of the same request, `after-blocker`.
fn app(events: &Events, started: &Gate, release: &Gate) -> App {
    let (events, started, release) = (events.clone(), started.clone(), release.clone());
    App::new().post(
        "/task/{name}",
        move |Path(name): Path<String>, tasks: BackgroundTasks| {
            let (events, started, release) = (events.clone(), started.clone(), release.clone());
            let blocker = name == "blocker";
            let log = events.clone();
            let task_name = name.clone();
            tasks.add(
                BackgroundTask::new(move || {
                    if blocker {
                        started.open();
                        release.wait();
                    }
                    log.push(name);
                })
                .named(task_name),
            );
            if blocker {
                let after = BackgroundTask::new(move || events.push("after-blocker"));
                tasks.add(after.named("after-blocker"));
            }
        },
    )
}

fn one_background_worker() -> afterward::ServerBuilder {
    Server::builder().workers(2).background_workers(1)
}

#[test]
fn shutdown_drains_queued_tasks_before_returning() {
    let (events, started, release) = (Events::default(), Gate::new(), Gate::new());
    let server =
        TestServer::with_builder(one_background_worker(), app(&events, &started, &release));

    server.post("/task/blocker").send();
    assert!(started.wait());
    for name in ["a", "b", "c"] {
        server.post(&format!("/task/{name}")).send();
    }
    // The queue holds a, b and c behind the blocker when shutdown begins.
    let releaser = std::thread::spawn(move || release.open());
    let report = server.shutdown(TEST_TIMEOUT);
    releaser.join().unwrap();

    assert!(report.is_complete(), "{report:?}");
    // a, b and c were answered by two request workers: their order may vary.
    let mut ran = events.list();
    ran[2..].sort();
    assert_eq!(ran, ["blocker", "after-blocker", "a", "b", "c"]);
    assert_eq!((report.stats.completed, report.stats.discarded), (5, 0));
}

#[test]
fn tasks_not_started_by_the_deadline_are_reported_and_counted() {
    let (events, started, release) = (Events::default(), Gate::new(), Gate::new());
    let server =
        TestServer::with_builder(one_background_worker(), app(&events, &started, &release));

    server.post("/task/blocker").send();
    assert!(started.wait());
    server.post("/task/queued-1").send();
    server.post("/task/queued-2").send();

    let report = server.shutdown(Duration::from_millis(200));
    release.open();

    let names =
        |list: &[afterward::TaskInfo]| list.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert!(!report.is_complete());
    // The worker's own job comes first; the two queued requests were answered
    // by different request workers, so their order in the queue may vary.
    let mut not_run = names(&report.not_run);
    not_run[1..].sort();
    assert_eq!(not_run, ["after-blocker", "queued-1", "queued-2"]);
    assert_eq!(names(&report.still_running), ["blocker"]);
    assert!(report.not_run.iter().all(|t| !t.request_id.is_empty()));
    let stats = report.stats;
    assert_eq!((stats.scheduled, stats.discarded, stats.queued), (4, 3, 0));
    assert!(!events.list().contains(&"queued-1".to_owned()));
}

#[test]
fn a_request_in_flight_finishes_and_its_tasks_run() {
    let events = Events::default();
    let (entered, release) = (Gate::new(), Gate::new());
    let (log, entered_in, release_in) = (events.clone(), entered.clone(), release.clone());
    let app = App::new().post("/slow", move |tasks: BackgroundTasks| {
        entered_in.open();
        release_in.wait();
        let log = log.clone();
        tasks.add_task(move || log.push("task of the request in flight"));
        "finished"
    });
    let server = TestServer::new(app);
    let addr = server.addr();
    let client = std::thread::spawn(move || TestRequest::new(addr, "POST", "/slow").send());
    assert!(entered.wait());

    let releaser = std::thread::spawn(move || release.open());
    let report = server.shutdown(TEST_TIMEOUT);
    releaser.join().unwrap();

    assert!(report.is_complete(), "{report:?}");
    assert_eq!(client.join().unwrap().text(), "finished");
    assert_eq!(events.list(), ["task of the request in flight"]);
}

#[test]
fn run_returns_a_report_once_stopped() {
    let server = Server::builder()
        .address("127.0.0.1:0")
        .shutdown_timeout(TEST_TIMEOUT)
        .build(App::new().get("/", || "hi"))
        .unwrap();
    let stopper = server.stopper();
    let runner = std::thread::spawn(move || server.run());
    stopper.stop();
    let report = runner
        .join()
        .unwrap()
        .expect("run starts and stops cleanly");
    assert!(report.is_complete());
    assert!(stopper.is_stopped());
}

#[test]
fn new_requests_are_refused_at_once_while_the_queue_drains() {
    let events = Events::default();
    let (started, release) = (Gate::new(), Gate::new());
    let app = app(&events, &started, &release).get("/health", || "ok");
    let server = TestServer::with_builder(one_background_worker(), app);
    server.post("/task/blocker").send();
    assert!(started.wait());

    let (stopper, addr) = (server.handle().stopper(), server.addr());
    let shutdown = std::thread::spawn(move || server.shutdown(TEST_TIMEOUT));
    stopper.wait(); // shutdown has begun: new requests are refused from now on
    let refused = TestRequest::new(addr, "GET", "/health").send();
    // Answered while the drain is still blocked on the task: not held.
    assert!(events.list().is_empty(), "{:?}", events.list());
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(
        refused.json(),
        serde_json::json!({"detail": "the server is shutting down"})
    );
    assert!(refused.header("X-Request-Id").is_some());

    release.open();
    let report = shutdown.join().unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(events.list(), ["blocker", "after-blocker"]);
    // The refusal is counted like any answer: 1 accepted, 1 refused.
    assert_eq!(report.stats.requests_by_class, [0, 1, 0, 0, 1]);
}

#[test]
fn a_keep_alive_response_in_flight_closes_its_connection() {
    let (entered, release) = (Gate::new(), Gate::new());
    let (entered_in, release_in) = (entered.clone(), release.clone());
    let app = App::new().post("/slow", move || {
        entered_in.open();
        release_in.wait();
        "done"
    });
    // The builtin engine: tiny_http cannot close a connection on our word.
    let server = TestServer::with_builder(support::hardened(), app);
    let mut raw = support::raw::Raw::connect(server.addr());
    raw.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert!(entered.wait());

    let stopper = server.handle().stopper();
    let shutdown = std::thread::spawn(move || server.shutdown(TEST_TIMEOUT));
    stopper.wait();
    release.open();
    let response = raw.response();
    assert_eq!(
        (response.status(), response.text()),
        (200, "done".to_owned())
    );
    assert_eq!(response.header("Connection"), Some("close"));
    assert!(raw.closed_within(Duration::from_secs(5)));
    assert!(shutdown.join().unwrap().is_complete());
}
