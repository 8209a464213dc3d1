//! The test harness behaves like FastAPI's TestClient when asked: a request
//! returns only after its background tasks ran; and a `500` says why.

mod support;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTasks, Dependency, Depends, HttpError, Request, State};
use support::{Events, TempDir};

/// FastAPI's example: the task writes the file the test then reads.
fn app(log: std::path::PathBuf) -> App {
    App::new().post(
        "/send-notification/{email}",
        move |tasks: BackgroundTasks| {
            let log = log.clone();
            tasks.add_task(move || std::fs::write(&log, "notification for ada"));
            "sent"
        },
    )
}

#[test]
fn a_waiting_server_returns_after_the_tasks_ran() {
    // FastAPI's own test, ported as-is: read the file right after the call.
    for round in 0..20 {
        let dir = TempDir::new();
        let log = dir.file("log.txt");
        let server = TestServer::new(app(log.clone())).waiting_for_tasks();
        let response = server.post("/send-notification/ada").send();
        assert_eq!(response.text(), "sent");
        assert_eq!(support::read(&log), "notification for ada", "round {round}");
    }
}

#[test]
fn one_request_can_wait_on_a_server_that_does_not() {
    let events = Events::default();
    let log = events.clone();
    let app = App::new().post("/", move |tasks: BackgroundTasks| {
        let log = log.clone();
        tasks.add_task(move || log.push("task"));
    });
    let server = TestServer::new(app);
    for _ in 0..20 {
        server.post("/").wait_for_tasks().send();
        assert_eq!(events.list().last().map(String::as_str), Some("task"));
    }
    assert_eq!(events.list().len(), 20);
}

#[derive(Clone)]
struct Cycle;

impl Dependency for Cycle {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let Depends(cycle) = request.extract::<Depends<Cycle>>()?;
        Ok(cycle)
    }
}

#[test]
fn a_500_says_why_in_a_test() {
    let app = App::new()
        .get("/state", |State(_): State<String>| "unreachable")
        .get("/cycle", |Depends(_): Depends<Cycle>| "unreachable")
        .get("/panic", || -> &'static str {
            panic!("the handler's own words")
        });
    let server = TestServer::new(app);
    for (path, expected) in [
        ("/state", "State<alloc::string::String>"),
        ("/cycle", "dependency cycle"),
        ("/panic", "the handler's own words"),
    ] {
        let response = server.get(path).send();
        assert_eq!(response.status(), 500);
        let body = response.json();
        assert_eq!(body["detail"], "Internal Server Error");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(expected), "{path}: {body}");
    }
}
