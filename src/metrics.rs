//! The counters in the Prometheus text exposition format.

use std::fmt::Write;

use crate::jobs::Jobs;
use crate::prometheus::metric;
use crate::response::Response;
use crate::stats::Stats;

/// The `Content-Type` of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Stats {
    /// The counters in the Prometheus text exposition format (version 0.0.4):
    /// `afterward_*` metrics with `HELP` and `TYPE` lines.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let gauges = [
            (
                "afterward_requests_in_flight",
                "Requests being handled.",
                self.requests_in_flight,
            ),
            (
                "afterward_connections_open",
                "Client connections open (builtin engine).",
                self.connections_open,
            ),
            (
                "afterward_tasks_queued",
                "Background tasks waiting for a worker.",
                self.queued,
            ),
            (
                "afterward_tasks_running",
                "Background tasks running.",
                self.running,
            ),
            (
                "afterward_jobs_delayed",
                "Jobs waiting: in the timer (a retry's backoff, a delayed enqueue), or in an in-process queue for their turn.",
                self.jobs_delayed,
            ),
            (
                "afterward_jobs_buffered",
                "Jobs waiting to be sent to Redis (feature redis).",
                self.jobs_buffered,
            ),
            (
                "afterward_queue_capacity",
                "Request task lists the queue holds at most.",
                self.queue_capacity,
            ),
            (
                "afterward_requests_queued",
                "Complete requests waiting for a request worker.",
                self.requests_queued,
            ),
            (
                "afterward_body_buffer_bytes",
                "Bytes of request bodies held by the engine.",
                self.body_bytes_buffered,
            ),
        ];
        for (name, help, value) in gauges {
            metric(&mut out, name, "gauge", help, &[("", value)]);
        }
        let counters = [
            ("afterward_tasks_scheduled_total", "Background tasks added.", self.scheduled),
            ("afterward_tasks_completed_total", "Background tasks that succeeded.", self.completed),
            ("afterward_tasks_failed_total", "Background tasks that returned an error.", self.failed),
            ("afterward_tasks_panicked_total", "Background tasks that panicked.", self.panicked),
            (
                "afterward_tasks_discarded_total",
                "Background tasks that will never run (handler panicked, request rejected, added late, shutdown deadline).",
                self.discarded,
            ),
            (
                "afterward_tasks_ran_by_caller_total",
                "Background tasks run by their request worker because the queue was full.",
                self.ran_by_caller,
            ),
            (
                "afterward_requests_shed_total",
                "Requests shed with 503 because the queue was full; their handlers never ran.",
                self.rejected,
            ),
        ];
        let jobs = [
            (
                "afterward_jobs_enqueued_total",
                "Jobs enqueued.",
                self.jobs_enqueued,
            ),
            (
                "afterward_jobs_succeeded_total",
                "Jobs that succeeded.",
                self.jobs_succeeded,
            ),
            (
                "afterward_jobs_retried_total",
                "Failed job attempts followed by a retry.",
                self.jobs_retried,
            ),
            (
                "afterward_jobs_dead_total",
                "Jobs whose every attempt failed.",
                self.jobs_dead,
            ),
            (
                "afterward_jobs_overdue_total",
                "Job attempts that ran past their deadline (their thread was replaced).",
                self.jobs_overdue,
            ),
            (
                "afterward_jobs_discarded_total",
                "Jobs that never ran to the end (request failed, shutdown deadline).",
                self.jobs_discarded,
            ),
            (
                "afterward_jobs_cancelled_total",
                "Jobs cancelled: before they started, or stopping when told.",
                self.jobs_cancelled,
            ),
            (
                "afterward_jobs_sent_total",
                "Jobs Redis has acknowledged, to run on workers (feature redis).",
                self.jobs_sent,
            ),
        ];
        for (name, help, value) in counters.into_iter().chain(jobs) {
            metric(&mut out, name, "counter", help, &[("", value)]);
        }
        metric(
            &mut out,
            "afterward_requests_refused_total",
            "counter",
            "Requests the engine answered 503 before their handler ran: the queue to the request workers was full, a request waited in it too long, or the request body budget was full.",
            &[
                ("reason=\"queue_full\"", self.refused_queue_full),
                ("reason=\"queue_timeout\"", self.refused_queue_timeout),
                ("reason=\"body_budget\"", self.refused_body_budget),
            ],
        );
        metric(
            &mut out,
            "afterward_requests_client_gone_total",
            "counter",
            "Requests dropped unanswered because their client had closed the connection before a worker took them (nginx's 499).",
            &[("", self.client_gone)],
        );
        metric(
            &mut out,
            "afterward_log_lines_dropped_total",
            "counter",
            "Log lines dropped because the log's sink could not keep up (its bounded queue was full).",
            &[("", self.log_lines_dropped)],
        );
        let classes: Vec<(String, u64)> = self
            .requests_by_class
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("class=\"{}xx\"", i + 1), *n))
            .collect();
        let classes: Vec<(&str, u64)> = classes.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        metric(
            &mut out,
            "afterward_requests_total",
            "counter",
            "Requests answered, by status class.",
            &classes,
        );

        let name = "afterward_task_duration_seconds";
        let _ = writeln!(out, "# HELP {name} How long background tasks ran.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, count) in self.task_durations.cumulative_buckets() {
            let le = if bound.is_infinite() {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_sum {}", self.task_durations.sum_seconds());
        let _ = writeln!(out, "{name}_count {}", self.task_durations.count());
        out
    }
}

/// A `GET /metrics` handler: the server's counters for Prometheus, and, when
/// the app registers jobs, `afterward_jobs_by_name_total{job, outcome}`.
///
/// ```
/// let app = afterward::App::new().get("/metrics", afterward::metrics_handler);
/// # let _ = app;
/// ```
pub fn metrics_handler(stats: Stats, jobs: Option<Jobs>) -> Response {
    let mut body = stats.to_prometheus();
    if let Some(jobs) = jobs {
        body.push_str(&jobs.to_prometheus());
    }
    Response::new(200)
        .with_header("Content-Type", PROMETHEUS_CONTENT_TYPE)
        // The counters change all the time: no cache may keep an old copy.
        .with_header("Cache-Control", "no-store")
        .with_body(body)
}

#[cfg(test)]
mod tests {
    use crate::stats::Stats;

    #[test]
    fn every_sample_follows_its_help_and_type_lines() {
        let stats = Stats {
            completed: 3,
            connections_open: 2,
            requests_by_class: [0, 5, 0, 1, 0],
            ..Stats::default()
        };
        let text = stats.to_prometheus();
        assert!(text.contains("afterward_tasks_completed_total 3\n"));
        assert!(text.contains("afterward_connections_open 2\n"));
        assert!(text.contains("afterward_requests_total{class=\"2xx\"} 5\n"));
        assert!(text.contains("afterward_task_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = declared.last().expect("a TYPE line comes first");
                assert!(
                    name.starts_with(family.as_str()),
                    "{name} after TYPE {family}"
                );
            }
        }
        assert_eq!(declared.len(), 29);
    }
}
