//! Results and follow-up jobs over Redis (feature `redis`): a worker keeps
//! each job's result with its status, and writes its follow-ups in the same
//! `MULTI` as its acknowledgement, only from the attempt that succeeds.
#![cfg(feature = "redis")]

#[path = "support/chain.rs"]
mod chain;
mod support;

use std::sync::Arc;
use std::time::Duration;

use afterward::redis::Worker;
use afterward::testing::TestServer;
use afterward::{JobSettings, Queues, Server};
use chain::{app, post_chain, Runs};
use serde_json::json;
use support::redis::RedisServer;
use support::TEST_TIMEOUT;

#[test]
fn a_chain_over_redis_runs_each_step_once_with_results_and_children_in_the_statuses() {
    let redis = RedisServer::start();
    let runs = Arc::new(Runs::default());
    let server = TestServer::with_builder(Server::builder().redis(redis.config()), app(&runs));
    let mut settings = JobSettings::default();
    settings.backoff = Duration::from_millis(1);
    settings.max_backoff = Duration::from_millis(1);
    let worker = Worker::builder(redis.config())
        .app(&app(&runs))
        .job_settings(settings)
        .queues(Queues::strict(["default", "next"]))
        .start()
        .expect("the worker starts");
    let mut id = post_chain(&server, "left=3&fail_first=2");
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 4 && s.in_flight == 0));
    let seen = runs.wait_until(|_| true).clone();
    assert_eq!(seen, [(3, 1), (3, 2), (3, 3), (2, 1), (1, 1), (0, 1)]);
    for left in (0..=3).rev() {
        let status = server.get(&format!("/jobs/{id}")).send().json();
        let attempts = if left == 3 { 3 } else { 1 };
        assert_eq!(status["status"], "done", "{status}");
        assert_eq!(status["queue"], if left == 3 { "default" } else { "next" });
        assert_eq!(status["result"], json!({"left": left, "attempt": attempts}));
        match status.get("children") {
            Some(children) => id = children[0].as_str().unwrap().to_owned(),
            None => assert_eq!(left, 0, "only the last step has no child: {status}"),
        }
    }
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}
