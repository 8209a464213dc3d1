//! The binary's jobs: `POST /flaky` and `POST /files` enqueue jobs that
//! `GET /jobs/{id}` follows through retries to done or dead; the job flags
//! set their attempts and backoff.

mod support;

use serde_json::json;
use support::cli::Afterward;

#[test]
fn a_flaky_job_is_retried_then_done() {
    let server = Afterward::start(&["--job-backoff-ms", "1"]);
    let accepted = server.post("/flaky?fail=2");
    assert_eq!(accepted.status(), 202);
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(accepted.json(), json!({"id": id, "status": "queued"}));
    assert_eq!(accepted.header("Location"), Some(&*format!("/jobs/{id}")));

    server.wait_for_metric("afterward_jobs_succeeded_total", 1.0);
    assert_eq!(
        server.get(&format!("/jobs/{id}")).json(),
        json!({"id": id, "name": "flaky", "queue": "default", "status": "done",
            "attempts": 3, "error": null, "result": {"attempt": 3}})
    );
    assert_eq!(server.metric("afterward_jobs_retried_total"), 2.0);
    let unknown = server.get("/jobs/0123");
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json()["detail"].is_string());
}

#[test]
fn a_job_out_of_attempts_is_dead() {
    let server = Afterward::start(&["--job-backoff-ms", "1", "--job-max-attempts", "2"]);
    let id = server.post("/flaky?fail=5").json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_for_metric("afterward_jobs_dead_total", 1.0);
    let status = server.get(&format!("/jobs/{id}")).json();
    assert_eq!(
        (status["status"].as_str(), status["attempts"].as_u64()),
        (Some("dead"), Some(2))
    );
}

#[test]
fn an_upload_is_a_job_too() {
    let server = Afterward::start(&[]);
    let accepted = server
        .request("POST", "/files")
        .body("one two\nthree")
        .send();
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    server.wait_for_metric("afterward_jobs_succeeded_total", 1.0);
    let job = server.get(&format!("/jobs/{id}")).json();
    assert_eq!(
        (job["name"].as_str(), job["status"].as_str()),
        (Some("count_words"), Some("done"))
    );
    let file = server.get(&format!("/files/{id}")).json();
    assert_eq!(file["result"], json!({"bytes": 13, "lines": 1, "words": 3}));

    // Not text: the file fails, and the job is dead at once, no retries.
    let binary = server
        .request("POST", "/files")
        .body(vec![0xff, 0xfe])
        .send();
    let id = binary.json()["id"].as_str().unwrap().to_owned();
    server.wait_for_metric("afterward_jobs_dead_total", 1.0);
    let job = server.get(&format!("/jobs/{id}")).json();
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("dead"), Some(1))
    );
    assert_eq!(
        server.get(&format!("/files/{id}")).json()["status"],
        "failed"
    );
}

#[test]
fn metrics_count_jobs_by_name_and_outcome() {
    let server = Afterward::start(&["--job-backoff-ms", "1", "--job-max-attempts", "2"]);
    server.post("/flaky?fail=1");
    server.post("/flaky?fail=9");
    server.wait_for_metric("afterward_jobs_dead_total", 1.0);
    server.wait_for_metric("afterward_jobs_succeeded_total", 1.0);
    let text = server.get("/metrics").text();
    assert!(
        text.contains("\n# TYPE afterward_jobs_by_name_total counter\n"),
        "{text}"
    );
    for (outcome, n) in [
        ("enqueued", 2),
        ("succeeded", 1),
        ("retried", 2),
        ("dead", 1),
    ] {
        let line =
            format!("afterward_jobs_by_name_total{{job=\"flaky\",queue=\"default\",outcome=\"{outcome}\"}} {n}\n");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(
        text.contains("afterward_jobs_by_name_total{job=\"count_words\",queue=\"default\",outcome=\"enqueued\"} 0\n")
    );
}
