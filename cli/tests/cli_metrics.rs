//! `GET /metrics` of the `afterward` binary: the Prometheus text format, with
//! every metric the contract names, its HELP and TYPE lines.

mod support;

use support::cli::Afterward;

#[test]
fn metrics_are_prometheus_text_with_help_and_type() {
    let server = Afterward::start(&["--queue-capacity", "64"]);
    server.post("/send-notification/ada@example.com?q=x");
    server.get("/nope");
    let response = server.get("/metrics");
    assert_eq!(response.status(), 200);
    assert!(response
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text();

    let expected = [
        ("afterward_connections_open", "gauge"),
        ("afterward_jobs_delayed", "gauge"),
        ("afterward_jobs_enqueued_total", "counter"),
        ("afterward_jobs_succeeded_total", "counter"),
        ("afterward_jobs_retried_total", "counter"),
        ("afterward_jobs_dead_total", "counter"),
        ("afterward_jobs_overdue_total", "counter"),
        ("afterward_jobs_discarded_total", "counter"),
        ("afterward_tasks_queued", "gauge"),
        ("afterward_tasks_running", "gauge"),
        ("afterward_tasks_completed_total", "counter"),
        ("afterward_tasks_failed_total", "counter"),
        ("afterward_tasks_panicked_total", "counter"),
        ("afterward_tasks_discarded_total", "counter"),
        ("afterward_requests_shed_total", "counter"),
        ("afterward_queue_capacity", "gauge"),
        ("afterward_requests_total", "counter"),
        ("afterward_task_duration_seconds", "histogram"),
    ];
    for (name, kind) in expected {
        assert!(
            text.contains(&format!("\n# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            text.contains(&format!("\n# TYPE {name} {kind}\n")),
            "no TYPE {kind} for {name}"
        );
    }
    assert!(text.contains("afterward_queue_capacity 64\n"));
    assert!(
        text.contains("afterward_requests_total{class=\"4xx\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("afterward_requests_total{class=\"2xx\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("afterward_task_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(text.contains("afterward_task_duration_seconds_count"));

    // Every sample line is `name{labels} value` with a number for a value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line:?}");
        assert!(line.starts_with("afterward_"), "{line:?}");
    }
}
