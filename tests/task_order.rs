//! Every `BackgroundTasks` of one request is the same list: tasks added by the
//! handler, its dependencies and their sub-dependencies all run, in the order
//! added, one after another on one background thread.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTasks, Dependency, Depends, HttpError, Query, Request, State};
use serde::Deserialize;
use support::Events;

#[derive(Clone)]
struct Log(Events);

fn record(request: &mut Request<'_>, event: &'static str) -> Result<(), HttpError> {
    let tasks: BackgroundTasks = request.extract()?;
    let State(Log(events)): State<Log> = request.extract()?;
    tasks.add_task(move || events.push(event));
    Ok(())
}

/// A sub-dependency: adds a task, and counts how often it is resolved.
#[derive(Clone)]
struct Inner;

#[derive(Clone, Default)]
struct Resolutions(Arc<AtomicUsize>);

impl Dependency for Inner {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let State(Resolutions(count)): State<Resolutions> = request.extract()?;
        count.fetch_add(1, Ordering::SeqCst);
        record(request, "sub-dependency")?;
        Ok(Inner)
    }
}

/// A dependency that uses the sub-dependency, then adds its own task.
#[derive(Clone)]
struct Outer;

impl Dependency for Outer {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let Depends(Inner) = request.extract()?;
        record(request, "dependency")?;
        Ok(Outer)
    }
}

fn handler(
    Depends(Outer): Depends<Outer>,
    Depends(Inner): Depends<Inner>,
    tasks: BackgroundTasks,
    State(Log(events)): State<Log>,
) -> &'static str {
    let first = events.clone();
    tasks.add_task(move || first.push("handler 1"));
    tasks.add_async_task(async move { events.push("handler 2 (async)") });
    "ok"
}

fn app(events: &Events, resolutions: &Resolutions) -> App {
    App::new()
        .state(Log(events.clone()))
        .state(resolutions.clone())
        .get("/", handler)
}

#[test]
fn tasks_from_handler_dependency_and_sub_dependency_run_in_order_added() {
    let events = Events::default();
    let resolutions = Resolutions::default();
    let server = TestServer::new(app(&events, &resolutions));

    assert_eq!(server.get("/").send().status(), 200);
    server.wait_idle();

    assert_eq!(
        events.list(),
        [
            "sub-dependency",
            "dependency",
            "handler 1",
            "handler 2 (async)"
        ]
    );
    let stats = server.stats();
    assert_eq!(
        (stats.scheduled, stats.completed, stats.discarded),
        (4, 4, 0)
    );
}

#[test]
fn a_dependency_used_twice_in_one_request_is_resolved_once() {
    let events = Events::default();
    let resolutions = Resolutions::default();
    let server = TestServer::new(app(&events, &resolutions));

    // `Inner` is asked for by `Outer` and by the handler; `Outer` by the handler.
    for expected in 1..=3 {
        server.get("/").send();
        assert_eq!(resolutions.0.load(Ordering::SeqCst), expected);
    }
    server.wait_idle();
    assert_eq!(
        events
            .list()
            .iter()
            .filter(|e| *e == "sub-dependency")
            .count(),
        3
    );
}

#[derive(Deserialize)]
struct Count {
    n: usize,
}

#[test]
fn one_requests_tasks_run_on_one_thread_in_order() {
    let events = Events::default();
    let app = App::new().state(Log(events.clone())).get(
        "/many",
        |Query(Count { n }): Query<Count>,
         tasks: BackgroundTasks,
         State(Log(events)): State<Log>| {
            for i in 0..n {
                let events = events.clone();
                tasks.add_task(move || {
                    let thread = std::thread::current().name().unwrap_or("?").to_owned();
                    events.push(format!("{i} {thread}"));
                });
            }
        },
    );
    let server = TestServer::new(app);

    server.get("/many?n=20").send();
    server.wait_idle();

    let list = events.list();
    assert_eq!(list.len(), 20);
    let thread = list[0].split(' ').nth(1).unwrap().to_owned();
    assert!(thread.starts_with("afterward-bg-"), "{thread}");
    for (i, event) in list.iter().enumerate() {
        assert_eq!(*event, format!("{i} {thread}"));
    }
}
