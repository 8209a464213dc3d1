//! Each example's app, served by the test harness: the files its background
//! tasks write are checked after waiting for background work.
// Every example includes examples/common/mod.rs for its `main`, so this file
// loads that module once per example.
#![allow(clippy::duplicate_mod)]

mod support;

use afterward::testing::{TestRequest, TestServer};
use serde_json::json;
use support::{read, TempDir};

#[allow(dead_code)]
#[path = "../examples/send_notification.rs"]
mod send_notification;

#[allow(dead_code)]
#[path = "../examples/dependency_injection.rs"]
mod dependency_injection;

#[allow(dead_code)]
#[path = "../examples/readme_writer.rs"]
mod readme_writer;

#[allow(dead_code)]
#[path = "../examples/async_task.rs"]
mod async_task;

#[allow(dead_code)]
#[path = "../examples/response_background.rs"]
mod response_background;

#[test]
fn send_notification_writes_the_notification() {
    let dir = TempDir::new();
    let log = dir.file("log.txt");
    let server = TestServer::new(send_notification::app(log.clone()));

    let response = server.post("/send-notification/ada@example.com").send();
    assert_eq!(
        response.json(),
        json!({"message": "Notification sent in the background"})
    );
    server.wait_idle();
    assert_eq!(
        read(&log),
        "notification for ada@example.com: some notification"
    );
}

#[test]
fn dependency_injection_logs_the_query_then_the_message() {
    let dir = TempDir::new();
    let log = dir.file("log.txt");
    let server = TestServer::new(dependency_injection::app(log.clone()));

    let response = server
        .post("/send-notification/ada@example.com?q=hello")
        .send();
    assert_eq!(response.json(), json!({"message": "Message sent"}));
    server.wait_idle();
    assert_eq!(
        read(&log),
        "found query: hello\nmessage to ada@example.com\n"
    );

    // Without `q`, only the handler's task writes.
    server.post("/send-notification/bob@example.com").send();
    server.wait_idle();
    assert_eq!(
        read(&log),
        "found query: hello\nmessage to ada@example.com\nmessage to bob@example.com\n"
    );
}

#[test]
fn readme_writer_appends_from_handler_and_dependency() {
    let dir = TempDir::new();
    let readme = dir.file("README.md");
    let server = TestServer::new(readme_writer::app(readme.clone()));

    let response = server.post("/background_tasks?framework=FastAPI").send();
    assert_eq!(response.status(), 200);
    server.wait_idle();
    assert_eq!(read(&readme), "\n## FastAPI 框架精讲");

    let response = server.post("/dependency/background_tasks?q=yes").send();
    assert_eq!(response.json(), json!({"message": "README.md更新成功"}));
    server.wait_idle();
    assert_eq!(
        read(&readme),
        format!("\n## FastAPI 框架精讲{}", readme_writer::INTRO)
    );

    let response = server.post("/dependency/background_tasks").send();
    assert_eq!(response.json(), serde_json::Value::Null);
    assert_eq!(server.post("/background_tasks").send().status(), 422);
    server.wait_idle();
    assert_eq!(
        read(&readme),
        format!("\n## FastAPI 框架精讲{}", readme_writer::INTRO)
    );
}

/// The log holds one notification each for ada and bob, in either order
/// (their tasks ran in parallel).
fn assert_notified_ada_and_bob(log: &std::path::Path) {
    let mut lines: Vec<_> = read(log).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "notification for ada@example.com: some notification",
            "notification for bob@example.com: some notification"
        ]
    );
}

#[test]
fn async_task_writes_the_notification() {
    let dir = TempDir::new();
    let log = dir.file("log.txt");
    let server = TestServer::new(async_task::app(log.clone()));

    server.post("/send-notification/ada@example.com").send();
    server.post("/send-notification/bob@example.com").send();
    server.wait_idle();
    assert_notified_ada_and_bob(&log);
}

#[test]
fn response_background_runs_the_list_then_the_response_task() {
    let dir = TempDir::new();
    let log = dir.file("log.txt");
    let server = TestServer::new(response_background::app(log.clone()));

    let response = server
        .post("/signup")
        .json(&json!({"username": "ada", "email": "ada@example.com"}))
        .send();
    assert_eq!(response.json(), json!({"status": "Signup successful"}));
    server.wait_idle();
    assert_eq!(
        read(&log),
        "audit: signup ada\nwelcome email to ada@example.com\n"
    );
}

#[allow(dead_code)]
#[path = "../examples/tiny_http_loop.rs"]
mod tiny_http_loop;

/// The example's own tiny_http loop on `127.0.0.1:0`, with a pool of its own.
fn tiny_http_service(log: std::path::PathBuf) -> (tiny_http_loop::Service, std::net::SocketAddr) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = server.server_addr().to_ip().expect("an IP address");
    let pool = afterward::BackgroundPool::builder()
        .workers(2)
        .build()
        .unwrap();
    let service = tiny_http_loop::Service::start(server, pool, 2, log).unwrap();
    (service, addr)
}

#[test]
fn tiny_http_loop_runs_its_tasks_after_responding() {
    let dir = TempDir::new();
    let log = dir.file("log.txt");
    let (service, addr) = tiny_http_service(log.clone());

    for email in ["ada@example.com", "bob@example.com"] {
        let path = format!("/send-notification/{email}");
        let response = TestRequest::new(addr, "POST", &path).send();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json(),
            json!({"message": "Notification sent in the background"})
        );
    }
    assert!(service.pool().wait_idle(support::TEST_TIMEOUT));
    assert_notified_ada_and_bob(&log);
    assert_eq!(TestRequest::new(addr, "GET", "/nope").send().status(), 404);

    let report = service.stop(support::TEST_TIMEOUT);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.stats.scheduled, report.stats.completed), (2, 2));
}

#[test]
fn tiny_http_loop_drains_its_tasks_when_stopped() {
    let dir = TempDir::new();
    let log = dir.file("log.txt");
    let (service, addr) = tiny_http_service(log.clone());
    let response = TestRequest::new(addr, "POST", "/send-notification/ada@example.com").send();
    assert_eq!(response.status(), 200);
    // Stopped at once: the task that request added still runs before `stop` returns.
    let report = service.stop(support::TEST_TIMEOUT);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        read(&log),
        "notification for ada@example.com: some notification\n"
    );
}

#[allow(dead_code)]
#[path = "../examples/jobs.rs"]
mod jobs;

/// The jobs example's app, with a backoff short enough for a test.
fn jobs_server(reports: std::path::PathBuf, builder: afterward::ServerBuilder) -> TestServer {
    let builder = builder.job_backoff(std::time::Duration::from_millis(2));
    TestServer::with_builder(builder, jobs::app(reports))
}

#[test]
fn jobs_answers_202_with_a_location_then_retries_until_done() {
    let dir = TempDir::new();
    let reports = dir.file("reports.txt");
    let server = jobs_server(reports.clone(), afterward::Server::builder());

    let response = server.post("/reports?user=ada&fail=2").send();
    assert_eq!(response.status(), 202);
    let id = response.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(response.json(), json!({"id": id, "status": "queued"}));
    let location = response.header("Location").unwrap().to_owned();
    assert_eq!(location, format!("/jobs/{id}"));

    server.wait_idle();
    let status = server.get(&location).send().json();
    assert_eq!(
        status,
        json!({"id": id, "name": "build_report", "queue": "default", "status": "done",
            "attempts": 3, "error": null, "result": {"lines": 1, "attempt": 3}})
    );
    assert_eq!(read(&reports), "report for ada (attempt 3)\n");
    let stats = server.stats();
    assert_eq!((stats.jobs_retried, stats.jobs_succeeded), (2, 1));
    assert_eq!(server.post("/reports").send().status(), 422, "no user");
}

#[test]
fn jobs_run_in_the_handler_in_eager_mode() {
    let dir = TempDir::new();
    let reports = dir.file("reports.txt");
    let builder = afterward::Server::builder().job_mode(afterward::JobMode::Eager);
    let server = jobs_server(reports.clone(), builder);

    let response = server.post("/reports?user=ada&fail=1").send();
    assert_eq!(response.status(), 202);
    // Every attempt ran before the response: no waiting.
    assert_eq!(read(&reports), "report for ada (attempt 2)\n");
}

#[test]
fn jobs_are_listed_not_run_in_capture_mode() {
    let dir = TempDir::new();
    let reports = dir.file("reports.txt");
    let builder = afterward::Server::builder().job_mode(afterward::JobMode::Capture);
    let server = jobs_server(reports.clone(), builder);

    let response = server.post("/reports?user=ada").send();
    assert_eq!(response.status(), 202);
    server.wait_idle();
    let captured = server.jobs().captured();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].name, "build_report");
    let payload: serde_json::Value = serde_json::from_str(&captured[0].payload).unwrap();
    assert_eq!(payload, json!({"user": "ada", "fail": 0}));
    assert_eq!(read(&reports), "", "nothing ran");
}

#[cfg(feature = "redis")]
#[test]
fn jobs_over_redis_run_on_the_example_worker_until_it_is_stopped() {
    use std::time::{Duration, Instant};

    let redis = support::redis::RedisServer::start();
    let dir = TempDir::new();
    let reports = dir.file("reports.txt");
    let builder = jobs::over_redis::server(redis.config());
    let server = jobs_server(reports.clone(), builder);
    let id = server.post("/reports?user=ada&fail=1").send().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stopper = afterward::Stopper::default();
    let worker = {
        let (config, app, stopper) = (redis.config(), jobs::app(reports.clone()), stopper.clone());
        std::thread::spawn(move || jobs::over_redis::work(config, &app, &stopper).unwrap())
    };
    // The status lives in Redis, written by the worker: poll it.
    let started = Instant::now();
    loop {
        let status = server.get(&format!("/jobs/{id}")).send().json();
        if status["status"] == "done" {
            assert_eq!(status["attempts"], 2);
            break;
        }
        assert!(started.elapsed() < support::TEST_TIMEOUT, "{status}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(read(&reports), "report for ada (attempt 2)\n");
    stopper.stop();
    assert!(
        worker.join().unwrap(),
        "the worker finished every job it held"
    );
}
