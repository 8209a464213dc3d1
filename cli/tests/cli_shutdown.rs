//! SIGTERM and SIGINT drain the background tasks; a deadline that passes first
//! is reported, with the tasks not run, and the exit status says so.

mod support;

use support::cli::Afterward;
use support::read;

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
