//! Unique jobs in-process: while a job of a key has not ended, enqueueing
//! the same key returns its id and adds nothing; the key is free again once
//! the job ends, however it ends (done, or discarded with its request).

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::collections::HashSet;
use std::sync::Arc;

use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTasks, HttpError, Job, JobContext, JobOptions, JobResult, Query, Server,
};
use probe::{enqueue, post, Log, Probe};
use serde::{Deserialize, Serialize};

/// A job unique by its order number (`Job::unique_key`).
#[derive(Serialize, Deserialize)]
struct Receipt {
    order: u32,
}

impl Job for Receipt {
    const NAME: &'static str = "receipt";
    fn run(self, _: &JobContext) -> JobResult {
        Ok(())
    }
    fn unique_key(&self) -> Option<String> {
        Some(self.order.to_string())
    }
}

#[derive(Deserialize)]
struct Order {
    order: u32,
}

fn receipt(tasks: BackgroundTasks, Query(q): Query<Order>) -> Result<String, HttpError> {
    Ok(tasks.enqueue(Receipt { order: q.order })?.to_string())
}

/// Enqueues a unique probe, then fails: the request's jobs are discarded.
fn enqueue_then_fail(tasks: BackgroundTasks) -> Result<String, HttpError> {
    let probe = Probe {
        tag: "doomed".into(),
        held: false,
    };
    tasks.enqueue_with(probe, JobOptions::new().unique("k"))?;
    Err(HttpError::new(500, "failed after its enqueue"))
}

fn server() -> (TestServer, Arc<Log>) {
    let log = Arc::new(Log::default());
    let app = App::new()
        .state(log.clone())
        .job::<Probe>()
        .job::<Receipt>()
        .post("/probe", enqueue)
        .post("/receipt", receipt)
        .post("/fail", enqueue_then_fail);
    let builder = Server::builder().background_workers(2);
    (TestServer::with_builder(builder, app), log)
}

#[test]
fn a_key_held_by_a_job_that_has_not_ended_returns_that_job() {
    let (server, log) = server();
    let first = post(&server, "/probe?tag=a&held=true&unique=k");
    drop(log.wait_until(|s| s.order.len() == 1));
    // Running: the same key is the same job; another key is another job.
    assert_eq!(post(&server, "/probe?tag=a&unique=k"), first);
    let other = post(&server, "/probe?tag=b&unique=other");
    assert_ne!(other, first);
    log.release("a", 1);
    server.wait_idle();
    assert_eq!(
        log.state.lock().unwrap().done("a"),
        1,
        "one job of key k ran"
    );
    // It ended: the key is free.
    let again = post(&server, "/probe?tag=a&unique=k");
    assert_ne!(again, first);
    server.wait_idle();
    assert_eq!(server.stats().jobs_enqueued, 3);
}

#[test]
fn a_type_may_be_unique_by_its_own_fields() {
    let (server, log) = server();
    // The background threads are held, so the receipts wait.
    post(&server, "/probe?tag=hold&held=true");
    post(&server, "/probe?tag=hold&held=true");
    drop(log.wait_until(|s| s.order.len() == 2));
    let text = |path: &str| server.post(path).send().text();
    let one = text("/receipt?order=1");
    assert_eq!(text("/receipt?order=1"), one);
    assert_ne!(text("/receipt?order=2"), one);
    log.release("hold", 2);
    server.wait_idle();
    assert_eq!(server.stats().jobs_succeeded, 4, "two holds, two receipts");
}

#[test]
fn a_unique_job_discarded_with_its_request_frees_its_key() {
    let (server, _log) = server();
    assert_eq!(server.post("/fail").send().status(), 500);
    server.wait_idle();
    assert_eq!(server.stats().jobs_discarded, 1);
    post(&server, "/probe?tag=after&unique=k");
    server.wait_idle();
    assert_eq!(server.stats().jobs_succeeded, 1, "a new job of key k ran");
}

#[test]
fn threads_racing_on_one_key_get_one_job() {
    let (server, log) = server();
    post(&server, "/probe?tag=hold&held=true");
    post(&server, "/probe?tag=hold&held=true");
    drop(log.wait_until(|s| s.order.len() == 2));
    let ids: HashSet<String> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| post(&server, "/probe?tag=raced&unique=race")))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 1, "{ids:?}");
    log.release("hold", 2);
    server.wait_idle();
    assert_eq!(log.state.lock().unwrap().done("raced"), 1);
}
