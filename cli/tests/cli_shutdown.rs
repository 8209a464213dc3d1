//! SIGTERM and SIGINT drain the background tasks; a deadline that passes first
//! is reported, with the tasks not run, and the exit status says so.

mod support;

use support::cli::Afterward;
use support::raw::Raw;
use support::read;
use support::TEST_TIMEOUT;

#[test]
fn sigterm_lets_a_slow_task_complete_before_exit() {
    let mut server = Afterward::start(&["--notify-delay-ms", "300"]);
    server.post("/send-notification/ada@example.com?q=slow");
    let status = server.stop();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        read(&server.log_file()),
        "found query: slow\nmessage to ada@example.com\n"
    );
    assert!(server.stderr().contains("SIGTERM received"));
}

#[test]
fn sigint_also_drains() {
    let mut server = Afterward::start(&["--notify-delay-ms", "100"]);
    server.post("/send-notification/ada@example.com");
    server.signal("INT");
    assert_eq!(server.wait().code(), Some(0));
    assert_eq!(read(&server.log_file()), "message to ada@example.com\n");
}

#[test]
fn a_passed_deadline_reports_the_tasks_not_run() {
    let mut server = Afterward::start(&[
        "--background-workers",
        "1",
        "--notify-delay-ms",
        "3000",
        "--shutdown-timeout",
        "0.2",
    ]);
    server.post("/send-notification/first@example.com");
    server.wait_for_metric("afterward_tasks_running", 1.0);
    server.post("/send-notification/second@example.com?q=x");
    server.post("/send-notification/third@example.com");

    let status = server.stop();
    assert_eq!(status.code(), Some(1));
    let log = server.stderr();
    let report = log
        .lines()
        .find(|l| l.contains("shutdown deadline passed:"))
        .unwrap_or_else(|| panic!("no deadline report in\n{log}"));
    assert!(report.contains("3 background tasks not run"), "{report}");
    assert_eq!(report.matches("write_log(message)").count(), 3, "{report}");
    assert!(report.contains("write_log(found query)"), "{report}");
    assert!(report.contains("1 still running"), "{report}");
    assert!(read(&server.log_file()).is_empty());
}

/// A response's status and request id.
type Answer = (u16, String);

/// One client: new connections, one request each, until refused.
fn notify_until_refused(addr: std::net::SocketAddr, c: usize) -> Vec<Answer> {
    let mut answers = Vec::new();
    for i in 0.. {
        let path = format!("/send-notification/c{c}-{i}@example.com?q=x");
        let request = format!("POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let Ok(mut raw) = Raw::try_connect(addr) else {
            break;
        };
        if raw.send(request.as_bytes()).is_err() {
            break;
        }
        let Ok(response) = raw.response_within(TEST_TIMEOUT) else {
            break;
        };
        let id = response.header("X-Request-Id").unwrap_or("").to_owned();
        answers.push((response.status(), id));
        if response.status() == 503 {
            break;
        }
    }
    answers
}

#[test]
fn the_shutdown_summary_counts_exactly_what_was_logged_and_no_2xx_after_the_deadline_loses_its_tasks(
) {
    // Two slow background threads: the queue fills, requests pile up in
    // front of the request workers, and the deadline passes with much left.
    // The builtin engine's queue to the request workers is what holds the
    // requests whose handlers return after the deadline.
    let mut server = Afterward::start(&[
        "--engine",
        "builtin",
        "--notify-delay-ms",
        "20",
        "--background-workers",
        "2",
        "--queue-capacity",
        "16",
        "--shutdown-timeout",
        "1",
        "--log-buffer-lines",
        "1000000",
    ]);
    let clients: Vec<_> = (0..100)
        .map(|c| {
            let addr = server.addr;
            std::thread::spawn(move || notify_until_refused(addr, c))
        })
        .collect();
    // The queue full, request workers waiting for room, requests waiting
    // for them.
    server.wait_for_metric_at_least("afterward_tasks_scheduled_total", 400.0);
    server.wait_for_metric_at_least("afterward_requests_queued", 20.0);
    let status = server.stop();
    let answers: Vec<Answer> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(
        status.code(),
        Some(1),
        "the deadline passed with tasks left"
    );

    let log = server.stderr();
    let lines: Vec<&str> = log.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("shutdown deadline passed:"))
        .unwrap_or_else(|| panic!("no deadline report in\n{log}"));
    let summary = lines[at];
    let number_after = |text: &str, word: &str| -> usize {
        text.split(word)
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .unwrap_or_else(|| panic!("no number after {word:?} in {text}"))
    };
    let not_run = number_after(summary, "shutdown deadline passed: ");
    let discarded = |lines: &[&str]| lines.iter().filter(|l| l.contains(") discarded: ")).count();
    assert_eq!(
        not_run,
        discarded(&lines[..at]),
        "the summary against the log: {summary}"
    );
    // Only requests still in flight at the report may discard tasks later.
    if summary.contains("; 0 requests still in flight") {
        assert_eq!(
            discarded(&lines[at..]),
            0,
            "discarded after the report:\n{}",
            lines[at..].join("\n")
        );
    }
    let exit_line = lines
        .iter()
        .find(|l| l.contains("exiting with"))
        .unwrap_or_else(|| panic!("no exit line in\n{log}"));
    assert!(
        exit_line.contains(&format!("exiting with {not_run} background tasks not run")),
        "{exit_line}"
    );
    // A request whose handler returned after the deadline had its tasks
    // dropped: it was answered 503, never 2xx.
    let late: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|l| l.contains("discarded: its handler returned after the shutdown deadline"))
        .filter_map(|l| l.split("(request ").nth(1)?.split(')').next())
        .collect();
    assert!(
        !late.is_empty(),
        "no handler returned after the deadline:\n{log}"
    );
    for (status, id) in &answers {
        if late.contains(id.as_str()) {
            assert_eq!(*status, 503, "request {id}: its tasks were dropped");
        }
    }
    assert!(!read(&server.log_file()).is_empty(), "some tasks ran");
}
