//! Cancellation over Redis (feature `redis`): a job no worker has read is
//! taken out of its stream (or delayed set) and never runs; a job a worker
//! holds or runs is dropped before it starts, or told; racing a worker's
//! fetch, every job still ends exactly once.
#![cfg(feature = "redis")]

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::sync::Arc;

use afterward::redis::Worker;
use afterward::testing::TestServer;
use afterward::{App, Server};
use probe::{patient, post, Log, Patient};
use serde_json::Value;
use support::redis::RedisServer;
use support::TEST_TIMEOUT;

fn app(log: &Arc<Log>) -> App {
    probe::app(log)
        .job::<Patient>()
        .post("/patient", patient)
        .delete("/jobs/{id}", afterward::job_cancel_handler)
}

struct Setup {
    redis: RedisServer,
    server: TestServer,
    log: Arc<Log>,
}

impl Setup {
    fn new() -> Setup {
        let redis = RedisServer::start();
        let log = Arc::new(Log::default());
        let server = TestServer::with_builder(Server::builder().redis(redis.config()), app(&log));
        Setup { redis, server, log }
    }

    fn worker(&self, concurrency: usize) -> Worker {
        Worker::builder(self.redis.config())
            .app(&app(&self.log))
            .concurrency(concurrency)
            .start()
            .expect("the worker starts")
    }

    fn wait_sent(&self, n: u64) {
        let sent = |stats: &afterward::Stats| stats.jobs_sent == n;
        assert!(self.server.handle().wait_for(TEST_TIMEOUT, sent));
    }

    fn cancel(&self, id: &str) -> (u16, Value) {
        let response = self.server.delete(&format!("/jobs/{id}")).send();
        (response.status(), response.json())
    }

    fn status(&self, id: &str) -> Value {
        self.server.get(&format!("/jobs/{id}")).send().json()
    }
}

#[test]
fn jobs_no_worker_has_read_are_taken_out_and_never_run() {
    let setup = Setup::new();
    let ready = post(&setup.server, "/probe?tag=ready&unique=u");
    let delayed = post(&setup.server, "/probe?tag=delayed&delay_ms=50");
    setup.wait_sent(2);
    for id in [&ready, &delayed] {
        let (code, body) = setup.cancel(id);
        assert_eq!(
            (code, body["status"].as_str()),
            (200, Some("cancelled")),
            "{body}"
        );
        assert_eq!(setup.status(id)["status"], "cancelled");
    }
    assert_eq!(setup.server.stats().jobs_cancelled, 2);
    // The unique key went with it: the same key is a new job.
    let after = post(&setup.server, "/probe?tag=after&unique=u");
    assert_ne!(after, ready);
    let worker = setup.worker(2);
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1 && s.in_flight == 0));
    // Past the delay, promoted jobs included: nothing else ever comes.
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.promoted == 0 && s.succeeded == 1));
    let state = setup.log.state.lock().unwrap();
    assert_eq!(
        (
            state.done("ready"),
            state.done("delayed"),
            state.done("after")
        ),
        (0, 0, 1)
    );
    drop(state);
    assert_eq!(setup.cancel(&ready).0, 409);
    assert_eq!(setup.cancel("nope").0, 404);
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_running_job_is_told_and_ends_cancelled_on_its_worker() {
    let setup = Setup::new();
    let worker = setup.worker(1);
    let id = setup.server.post("/patient").send().text();
    drop(
        setup
            .log
            .wait_until(|s| s.order.iter().any(|t| t == "patient")),
    );
    let (code, body) = setup.cancel(&id);
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("cancelling")),
        "{body}"
    );
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.cancelled == 1 && s.in_flight == 0));
    let status = setup.status(&id);
    assert_eq!(status["status"], "cancelled", "{status}");
    assert_eq!(status["error"], "stopped: cancelled");
    assert_eq!(worker.stats().retried, 0);
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn cancels_racing_a_workers_fetch_end_every_job_exactly_once() {
    let setup = Setup::new();
    let worker = setup.worker(2);
    let n = 200;
    let mut replies = Vec::new();
    for i in 0..n {
        let id = post(&setup.server, &format!("/probe?tag=j{i}"));
        replies.push((id.clone(), setup.cancel(&id)));
    }
    let ended = |s: &afterward::redis::WorkerStats| {
        s.succeeded + s.cancelled + setup.server.stats().jobs_cancelled == n && s.in_flight == 0
    };
    assert!(
        worker.wait_for(TEST_TIMEOUT, ended),
        "{:?} {:?} {:?}",
        worker.stats(),
        setup.server.stats(),
        replies
            .iter()
            .map(|(_, (c, b))| (*c, b["status"].clone()))
            .collect::<Vec<_>>()
    );
    let state = setup.log.state.lock().unwrap();
    let (mut taken_out, mut cancelling) = (0, 0);
    for (i, (id, (code, body))) in replies.iter().enumerate() {
        let ran = state.done(&format!("j{i}"));
        let status = setup.status(id);
        match (*code, body["status"].as_str()) {
            (200, Some("cancelled")) => {
                assert_eq!(
                    (ran, status["status"].as_str()),
                    (0, Some("cancelled")),
                    "job {i}"
                );
                taken_out += 1;
            }
            // Held or running when asked: dropped unstarted, or done.
            (200, Some("cancelling")) => {
                cancelling += 1;
                let expected = if ran == 1 { "done" } else { "cancelled" };
                assert_eq!(status["status"], expected, "job {i} ran {ran} times");
            }
            (409, _) => assert_eq!(
                (ran, status["status"].as_str()),
                (1, Some("done")),
                "job {i}"
            ),
            other => panic!("job {i}: {other:?}"),
        }
    }
    eprintln!("{n} jobs cancelled as they were sent: {taken_out} taken out of Redis, {cancelling} held or running, the rest done first");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}
