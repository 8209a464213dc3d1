//! In-process dead letters steered: requeued one by one or all of a queue
//! (attempts reset, counted enqueued again), or dropped for good.

#[path = "support/chain.rs"]
mod chain;
mod support;

use std::sync::Arc;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::Server;
use chain::{app, post_chain, Runs};

#[test]
fn dead_jobs_are_requeued_one_or_all_or_dropped() {
    let runs = Arc::new(Runs::default());
    // Each chain step fails its first attempt; with one attempt, it dies.
    let builder = Server::builder()
        .job_max_attempts(1)
        .job_backoff(Duration::from_millis(1));
    let server = TestServer::with_builder(builder, app(&runs));
    let ids: Vec<String> = (0..3)
        .map(|_| post_chain(&server, "left=0&fail_first=1"))
        .collect();
    server.wait_idle();
    let jobs = server.jobs();
    assert_eq!(jobs.dead_letters().len(), 3);

    assert!(jobs.discard_dead(&ids[0]));
    assert!(!jobs.discard_dead(&ids[0]), "gone");
    assert!(jobs.requeue_dead(&ids[1]));
    server.wait_idle();
    // Attempts reset: its payload fails attempt 1 again, so it is dead again.
    assert_eq!(runs.wait_until(|r| r.len() == 4).last(), Some(&(0, 1)));
    assert_eq!(jobs.dead_letters().len(), 2);
    assert_eq!(jobs.requeue_all_dead(Some("elsewhere")), 0);
    assert_eq!(jobs.requeue_all_dead(Some("default")), 2);
    server.wait_idle();
    assert_eq!(runs.wait_until(|r| r.len() == 6).len(), 6);
    let stats = server.stats();
    assert_eq!(
        (stats.jobs_enqueued, stats.jobs_dead),
        (6, 6),
        "each requeue ends once more"
    );
    assert_eq!(jobs.status(&ids[2]).unwrap().state.as_str(), "dead");
}
