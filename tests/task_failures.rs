//! A failing or panicking task is logged and counted and does not stop the
//! request's later tasks; a panicking handler answers 500, keeps its worker,
//! and its tasks are discarded and counted; nothing is lost silently.

mod support;

use std::sync::{Arc, Mutex};

use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTask, BackgroundTasks, Dependency, Depends, HttpError, Json, Request, Server,
    State,
};
use serde::Deserialize;
use support::{Events, Gate};

fn buggy() {
    panic!("task bug");
}

#[test]
fn a_failing_or_panicking_task_does_not_stop_the_next_ones() {
    let events = Events::default();
    let log = events.clone();
    let app = App::new().post("/", move |tasks: BackgroundTasks| {
        let id = tasks.request_id().to_owned();
        let (a, b, c) = (log.clone(), log.clone(), log.clone());
        let (id_a, id_b) = (id.clone(), id.clone());
        tasks.add_task(move || -> Result<(), String> {
            a.push(format!("{id_a} fails"));
            Err("mail server said no".into())
        });
        tasks.add(
            BackgroundTask::new(move || {
                b.push(format!("{id_b} panics"));
                buggy();
            })
            .named("panicky"),
        );
        tasks.add_task(move || c.push(format!("{id} still runs")));
    });
    let server = TestServer::new(app);

    let ids: Vec<String> = (0..3)
        .map(|_| {
            let response = server.post("/").send();
            assert_eq!(response.status(), 200);
            response.header("X-Request-Id").unwrap().to_owned()
        })
        .collect();
    server.wait_idle();

    let list = events.list();
    assert_eq!(list.len(), 9);
    for id in ids {
        let of_request: Vec<_> = list
            .iter()
            .filter(|e| e.starts_with(&format!("{id} ")))
            .collect();
        assert_eq!(
            of_request,
            [
                &format!("{id} fails"),
                &format!("{id} panics"),
                &format!("{id} still runs")
            ]
        );
    }
    let stats = server.stats();
    assert_eq!(
        (
            stats.scheduled,
            stats.completed,
            stats.failed,
            stats.panicked,
            stats.discarded
        ),
        (9, 3, 3, 3, 0)
    );
}

#[test]
fn a_panicking_handler_answers_500_and_its_tasks_are_discarded() {
    let events = Events::default();
    let log = events.clone();
    let app = App::new()
        .post("/boom", move |tasks: BackgroundTasks| {
            let log = log.clone();
            tasks.add_task(move || log.push("must not run"));
            buggy();
        })
        .get("/fine", || "fine");
    // One request worker: if the panic killed it, nothing would answer `/fine`.
    let server = TestServer::with_builder(Server::builder().workers(1), app);

    for _ in 0..3 {
        let response = server.post("/boom").send();
        assert_eq!(response.status(), 500);
        let body = response.json();
        assert_eq!(body["detail"], "Internal Server Error");
        // The test server shows why; a real one only logs it.
        assert!(body["reason"]
            .as_str()
            .unwrap()
            .contains("panicked: task bug"));
        assert_eq!(server.get("/fine").send().text(), "fine");
    }
    server.wait_idle();

    assert!(events.list().is_empty());
    let stats = server.stats();
    assert_eq!(
        (stats.scheduled, stats.discarded, stats.completed),
        (3, 3, 0)
    );
}

#[derive(Deserialize)]
struct Body {
    #[allow(dead_code)]
    name: String,
}

/// A dependency that adds a task; it is resolved before the body is rejected.
#[derive(Clone)]
struct AddsTask;

impl Dependency for AddsTask {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let tasks: BackgroundTasks = request.extract()?;
        let State(events): State<Events> = request.extract()?;
        tasks.add_task(move || events.push("dependency task ran"));
        Ok(AddsTask)
    }
}

#[test]
fn tasks_of_a_request_rejected_before_its_handler_are_discarded() {
    let events = Events::default();
    let app = App::new().state(events.clone()).post(
        "/",
        |Depends(AddsTask): Depends<AddsTask>, Json(_): Json<Body>| "created",
    );
    let server = TestServer::new(app);

    let response = server.post("/").json(&serde_json::json!({"nom": 1})).send();
    assert_eq!(response.status(), 422);
    server.wait_idle();
    assert!(events.list().is_empty(), "{:?}", events.list());
    let stats = server.stats();
    assert_eq!((stats.scheduled, stats.discarded), (1, 1));

    let ok = server
        .post("/")
        .json(&serde_json::json!({"name": "a"}))
        .send();
    assert_eq!(ok.text(), "created");
    server.wait_idle();
    assert_eq!(events.list(), ["dependency task ran"]);
}

#[test]
fn a_task_added_after_dispatch_is_counted_as_discarded() {
    let kept: Arc<Mutex<Option<BackgroundTasks>>> = Arc::default();
    let slot = kept.clone();
    let app = App::new().post("/", move |tasks: BackgroundTasks| {
        *slot.lock().unwrap() = Some(tasks);
    });
    let server = TestServer::new(app);

    server.post("/").send();
    server.wait_idle();
    let tasks = kept
        .lock()
        .unwrap()
        .take()
        .expect("the handler kept its list");
    let ran = Gate::new();
    let flag = ran.clone();
    tasks.add_task(move || flag.open());
    server.wait_idle();

    let stats = server.stats();
    assert_eq!((stats.scheduled, stats.discarded), (1, 1));
    assert!(
        !ran.wait_for(std::time::Duration::ZERO),
        "a late task must not run"
    );
}
