//! FastAPI's semantics for a failing handler: an `Err` from the handler
//! discards the request's tasks (logged and counted, as for a panic); an
//! error response returned on purpose keeps them; `BackgroundTasks::clear`
//! drops what was added so far; a failed dependency fails the request, under
//! `Option` too.

mod support;

use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTask, BackgroundTasks, Dependency, Depends, HttpError, Request, Response,
};
use support::Events;

fn app(events: &Events) -> App {
    let (a, b, c, d) = (
        events.clone(),
        events.clone(),
        events.clone(),
        events.clone(),
    );
    App::new()
        .post(
            "/err",
            move |tasks: BackgroundTasks| -> Result<&'static str, HttpError> {
                let a = a.clone();
                tasks.add_task(move || a.push("err task"));
                Err(HttpError::new(409, "already there"))
            },
        )
        .post("/on-purpose", move |tasks: BackgroundTasks| {
            let b = b.clone();
            tasks.add_task(move || b.push("on-purpose task"));
            HttpError::new(404, "no such item, but the audit line is written")
        })
        .post(
            "/err-with-response-task",
            move || -> Result<(), Response> {
                let c = c.clone();
                Err(Response::new(500)
                    .with_background(BackgroundTask::new(move || c.push("response task"))))
            },
        )
        .post(
            "/clear",
            move |Depends(_): Depends<Audited>, tasks: BackgroundTasks| {
                let dropped = tasks.clear();
                let d = d.clone();
                tasks.add_task(move || d.push("after clear"));
                dropped.to_string()
            },
        )
        .post("/optional-failing", |dep: Option<Depends<Failing>>| {
            format!("{}", dep.is_some())
        })
        .state(events.clone())
}

/// A dependency that adds a task.
#[derive(Clone)]
struct Audited;

impl Dependency for Audited {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let events = request.state::<Events>().unwrap().clone();
        request
            .background_tasks()
            .add_task(move || events.push("audit from dependency"));
        Ok(Audited)
    }
}

/// A dependency that adds a task, then fails.
#[derive(Clone)]
struct Failing;

impl Dependency for Failing {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let events = request.state::<Events>().unwrap().clone();
        request
            .background_tasks()
            .add_task(move || events.push("failing dependency's task"));
        Err(HttpError::new(401, "not authenticated"))
    }
}

#[test]
fn an_err_from_the_handler_discards_its_tasks() {
    let events = Events::default();
    let server = TestServer::new(app(&events));
    let response = server.post("/err").send();
    assert_eq!(response.status(), 409);
    let response = server.post("/err-with-response-task").send();
    assert_eq!(response.status(), 500);
    server.wait_idle();
    assert!(events.list().is_empty(), "{:?}", events.list());
    let stats = server.stats();
    assert_eq!(
        (stats.scheduled, stats.discarded, stats.completed),
        (2, 2, 0)
    );
}

#[test]
fn an_error_response_returned_on_purpose_keeps_its_tasks() {
    let events = Events::default();
    let server = TestServer::new(app(&events));
    assert_eq!(server.post("/on-purpose").send().status(), 404);
    server.wait_idle();
    assert_eq!(events.list(), ["on-purpose task"]);
}

#[test]
fn clear_drops_what_was_added_so_far() {
    let events = Events::default();
    let server = TestServer::new(app(&events));
    assert_eq!(server.post("/clear").send().text(), "1");
    server.wait_idle();
    assert_eq!(events.list(), ["after clear"]);
    let stats = server.stats();
    assert_eq!(
        (stats.scheduled, stats.discarded, stats.completed),
        (2, 1, 1)
    );
}

#[test]
fn a_failed_dependency_fails_the_request_under_option_too() {
    let events = Events::default();
    let server = TestServer::new(app(&events));
    let response = server.post("/optional-failing").send();
    assert_eq!(response.status(), 401);
    server.wait_idle();
    assert!(events.list().is_empty(), "{:?}", events.list());
    assert_eq!(server.stats().discarded, 1);
}
