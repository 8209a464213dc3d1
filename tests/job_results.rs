//! Results and follow-up jobs in-process: a job keeps a value with its
//! status, and its follow-ups go out only from the attempt that succeeds;
//! the parent's status names them.

#[path = "support/chain.rs"]
mod chain;
mod support;

use std::sync::Arc;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{Queues, Server, ServerBuilder};
use chain::{app, post_chain, Runs};
use serde_json::{json, Value};

fn fast_retries() -> ServerBuilder {
    Server::builder()
        .job_backoff(Duration::from_millis(1))
        .job_max_backoff(Duration::from_millis(1))
}

fn status(server: &TestServer, id: &str) -> Value {
    let response = server.get(&format!("/jobs/{id}")).send();
    assert_eq!(response.status(), 200, "{id}: {}", response.text());
    response.json()
}

#[test]
fn a_chain_runs_each_step_once_and_each_status_names_its_result_and_child() {
    let runs = Arc::new(Runs::default());
    let builder = fast_retries().queues(Queues::strict(["default", "next"]));
    let server = TestServer::with_builder(builder, app(&runs));
    let head = post_chain(&server, "left=3&fail_first=2");
    drop(runs.wait_until(|r| r.contains(&(0, 1))));
    server.wait_idle();
    // Two failed attempts of the head each enqueued a step 2: neither went out.
    let seen = runs.wait_until(|_| true).clone();
    assert_eq!(seen, [(3, 1), (3, 2), (3, 3), (2, 1), (1, 1), (0, 1)]);

    let mut id = head;
    for left in (0..=3).rev() {
        let status = status(&server, &id);
        let queue = if left == 3 { "default" } else { "next" };
        let attempts = if left == 3 { 3 } else { 1 };
        assert_eq!(status["status"], "done", "{status}");
        assert_eq!(status["queue"], queue);
        assert_eq!(status["result"], json!({"left": left, "attempt": attempts}));
        match status.get("children") {
            Some(children) => {
                let children = children.as_array().unwrap();
                assert_eq!(children.len(), 1, "{status}");
                id = children[0].as_str().unwrap().to_owned();
            }
            None => assert_eq!(left, 0, "only the last step has no child: {status}"),
        }
    }
    let stats = server.stats();
    assert_eq!(
        (
            stats.jobs_enqueued,
            stats.jobs_succeeded,
            stats.jobs_retried
        ),
        (4, 4, 2)
    );
}

#[test]
fn a_result_over_the_limit_fails_the_attempt_with_a_clear_error() {
    let runs = Arc::new(Runs::default());
    let builder = fast_retries().job_max_attempts(1).job_max_result_bytes(10);
    let server = TestServer::with_builder(builder, app(&runs));
    let id = post_chain(&server, "left=0");
    server.wait_idle();
    let status = status(&server, &id);
    assert_eq!(status["status"], "dead");
    assert_eq!(status["result"], Value::Null);
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("over the limit of 10"), "{error}");
}

#[test]
fn a_follow_up_to_a_queue_not_served_fails_the_attempt_and_goes_nowhere() {
    let runs = Arc::new(Runs::default());
    let builder = fast_retries()
        .job_max_attempts(2)
        .queues(Queues::strict(["default"]));
    let server = TestServer::with_builder(builder, app(&runs));
    let id = post_chain(&server, "left=1");
    server.wait_idle();
    let status = status(&server, &id);
    assert_eq!(status["status"], "dead", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("\"next\"") && error.contains("not served"),
        "{error}"
    );
    assert_eq!(server.stats().jobs_enqueued, 1, "no follow-up counted");
}
