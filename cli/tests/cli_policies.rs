//! `--on-full`: what the binary does when the background queue is full.
//! One background worker and room for one request's tasks make it full: the
//! first request's task runs (slowly), the second's waits in the queue.

mod support;

use support::cli::Afterward;
use support::read;

fn fill_queue(server: &Afterward) {
    server.post("/send-notification/first@example.com");
    server.wait_for_metric("afterward_tasks_running", 1.0);
    server.post("/send-notification/second@example.com");
    // The response comes before the dispatch: wait for the task to be queued.
    server.wait_for_metric("afterward_tasks_queued", 1.0);
}

const FULL: [&str; 6] = [
    "--background-workers",
    "1",
    "--queue-capacity",
    "1",
    "--notify-delay-ms",
    "400",
];

#[test]
fn shed_refuses_new_requests_with_503_and_retry_after() {
    let mut server = Afterward::start(&[&FULL[..], &["--on-full", "shed"]].concat());
    fill_queue(&server);

    let refused = server.post("/send-notification/third@example.com?q=x");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert!(refused.json()["detail"].is_string());
    // Only what could add work is shed: GET is served, so is an exempt path,
    // and an unknown path or a wrong method still gets its own answer.
    assert_eq!(server.get("/health").status(), 200);
    assert_eq!(server.get("/files/0123456789abcdef").status(), 404);
    assert_eq!(server.post("/nowhere").status(), 404);
    assert_eq!(server.request("DELETE", "/files").send().status(), 405);
    assert_eq!(server.request("BREW", "/files").send().status(), 501);
    assert_eq!(server.metric("afterward_requests_shed_total"), 1.0);

    assert!(server.stop().success());
    let log = read(&server.log_file());
    assert_eq!(
        log,
        "message to first@example.com\nmessage to second@example.com\n"
    );
}

#[test]
fn caller_runs_runs_the_tasks_on_the_request_worker_and_loses_nothing() {
    let mut server = Afterward::start(&[&FULL[..], &["--on-full", "caller-runs"]].concat());
    fill_queue(&server);

    let response = server.post("/send-notification/third@example.com?q=x");
    assert_eq!(response.status(), 200);
    server.wait_for_metric("afterward_tasks_ran_by_caller_total", 2.0);

    assert!(server.stop().success());
    let mut lines: Vec<_> = read(&server.log_file())
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "found query: x",
            "message to first@example.com",
            "message to second@example.com",
            "message to third@example.com",
        ]
    );
}

#[test]
fn block_waits_for_room_and_loses_nothing() {
    let mut server = Afterward::start(&[&FULL[..], &["--on-full", "block"]].concat());
    fill_queue(&server);

    assert_eq!(
        server.post("/send-notification/third@example.com").status(),
        200
    );
    assert_eq!(server.metric("afterward_requests_shed_total"), 0.0);

    assert!(server.stop().success());
    assert_eq!(read(&server.log_file()).lines().count(), 3);
}
