//! Cancellation in-process (`Jobs::cancel`, `DELETE /jobs/{id}`): a job not
//! started never starts, a running one is told and, if it stops, ends
//! `cancelled`; every job still ends exactly once, shutdown included.

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::sync::Arc;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTasks, HttpError, JobOptions, Server};
use probe::{enqueue, patient, post, Log, Patient, Probe};
use serde_json::Value;
use support::TEST_TIMEOUT;

fn later(tasks: BackgroundTasks) -> Result<String, HttpError> {
    let probe = Probe {
        tag: "later".into(),
        held: false,
    };
    let id = tasks.enqueue_with(probe, JobOptions::new().delay(Duration::from_secs(3600)))?;
    Ok(id.to_string())
}

fn server(background_workers: usize) -> (TestServer, Arc<Log>) {
    let log = Arc::new(Log::default());
    let app = App::new()
        .state(log.clone())
        .job::<Probe>()
        .job::<Patient>()
        .post("/probe", enqueue)
        .post("/patient", patient)
        .post("/later", later)
        .get("/jobs/{id}", afterward::job_status_handler)
        .delete("/jobs/{id}", afterward::job_cancel_handler);
    let builder = Server::builder().background_workers(background_workers);
    (TestServer::with_builder(builder, app), log)
}

fn cancel(server: &TestServer, id: &str) -> (u16, Value) {
    let response = server.delete(&format!("/jobs/{id}")).send();
    (response.status(), response.json())
}

fn status(server: &TestServer, id: &str) -> Value {
    server.get(&format!("/jobs/{id}")).send().json()
}

#[test]
fn a_queued_job_cancelled_never_starts() {
    let (server, log) = server(1);
    post(&server, "/probe?tag=hold&held=true");
    drop(log.wait_until(|s| s.order.len() == 1));
    let victim = post(&server, "/probe?tag=victim");
    let (code, body) = cancel(&server, &victim);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(status(&server, &victim)["status"], "cancelled");
    log.release("hold", 1);
    server.wait_idle();
    assert_eq!(log.state.lock().unwrap().done("victim"), 0, "it never ran");
    let stats = server.stats();
    assert_eq!((stats.jobs_succeeded, stats.jobs_cancelled), (1, 1));
    // Ended: a second cancel is a conflict; an unknown id is not found.
    let (code, body) = cancel(&server, &victim);
    assert_eq!(code, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("cancelled"));
    assert_eq!(cancel(&server, "nope").0, 404);
}

#[test]
fn a_running_job_is_told_and_ends_cancelled_not_retried() {
    let (server, log) = server(1);
    let id = server.post("/patient").send().text();
    drop(log.wait_until(|s| s.order.iter().any(|t| t == "patient")));
    let (code, body) = cancel(&server, &id);
    assert_eq!((code, body["status"].as_str()), (200, Some("cancelling")));
    server.wait_idle();
    let status = status(&server, &id);
    assert_eq!(status["status"], "cancelled", "{status}");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["error"], "stopped: cancelled");
    let stats = server.stats();
    assert_eq!((stats.jobs_cancelled, stats.jobs_retried), (1, 0));
}

#[test]
fn a_delayed_job_cancelled_is_not_counted_again_at_shutdown() {
    let (server, _log) = server(1);
    let id = server.post("/later").send().text();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.jobs_delayed == 1));
    assert_eq!(cancel(&server, &id).1["status"], "cancelled");
    // A deadline it cannot meet: the job is due in an hour.
    let report = server.shutdown(Duration::from_millis(50));
    let stats = report.stats;
    assert_eq!(stats.jobs_enqueued, 1);
    assert_eq!(
        (
            stats.jobs_cancelled,
            stats.jobs_discarded,
            stats.jobs_succeeded
        ),
        (1, 0, 0),
        "ended once, as cancelled"
    );
}

#[test]
fn cancels_racing_the_pool_end_every_job_exactly_once() {
    let (server, log) = server(2);
    let ids: Vec<String> = (0..200)
        .map(|i| post(&server, &format!("/probe?tag=j{i}")))
        .collect();
    let replies: Vec<(u16, Value)> = ids.iter().map(|id| cancel(&server, id)).collect();
    server.wait_idle();
    let state = log.state.lock().unwrap();
    let mut cancelled = 0;
    for (i, (code, body)) in replies.iter().enumerate() {
        let ran = state.done(&format!("j{i}"));
        match (*code, body["status"].as_str()) {
            (200, Some("cancelled")) => {
                assert_eq!(ran, 0, "job {i} was cancelled, and ran");
                cancelled += 1;
            }
            // Running when asked: a probe does not look, so it is done.
            (200, Some("cancelling")) | (409, _) => assert_eq!(ran, 1, "job {i}"),
            other => panic!("job {i}: {other:?}"),
        }
    }
    let stats = server.stats();
    assert_eq!(stats.jobs_cancelled, cancelled);
    assert_eq!(stats.jobs_succeeded + stats.jobs_cancelled, 200);
}
