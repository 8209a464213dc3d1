//! Periodic jobs over Redis (feature `redis`): every web server carries the
//! same schedule, and each tick is enqueued by exactly one of them (its
//! claim in Redis), however many run and when one stops; paused for all at
//! once; the last run is the deployment's.
#![cfg(feature = "redis")]

mod support;
#[path = "support/ticks.rs"]
mod ticks;

use std::sync::Arc;
use std::time::Duration;

use afterward::redis::Worker;
use afterward::testing::TestServer;
use afterward::{App, Missed, Schedule, Server};
use support::redis::RedisServer;
use support::TEST_TIMEOUT;
use ticks::{each_once, Seen, Tick};

const EVERY_MS: u64 = 100;

fn app(seen: &Arc<Seen>) -> App {
    let schedule = Schedule::every(Duration::from_millis(EVERY_MS)).missed(Missed::RunOnce);
    App::new()
        .state(seen.clone())
        .schedule(schedule, |at| Tick { at })
}

#[test]
fn three_servers_enqueue_each_tick_once_and_lose_none_when_one_stops() {
    let redis = RedisServer::start();
    let seen = Arc::new(Seen::default());
    let mut servers: Vec<TestServer> = (0..3)
        .map(|_| TestServer::with_builder(Server::builder().redis(redis.config()), app(&seen)))
        .collect();
    let worker = Worker::builder(redis.config())
        .app(&app(&seen))
        .start()
        .expect("the worker starts");
    drop(seen.wait_until(|t| t.len() >= 10));
    // One server stops mid-way; the others go on.
    let stopped = servers.remove(0).shutdown(TEST_TIMEOUT).stats;
    assert_eq!(stopped.jobs_discarded, 0);
    let mut sent = stopped.jobs_sent;
    drop(seen.wait_until(|t| t.len() >= 20));
    // Paused for every server at once, through any of them.
    let jobs = servers[1].jobs();
    assert_eq!(jobs.pause_schedule("tick"), Ok(true));
    assert!(servers[0].jobs().schedules().unwrap()[0].paused);
    for server in servers {
        let stats = server.shutdown(TEST_TIMEOUT).stats;
        assert_eq!(stats.jobs_discarded, 0);
        sent += stats.jobs_sent;
    }
    // Every tick sent has run.
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == sent));
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
    let sorted = each_once(&seen.ticks(), EVERY_MS);
    let gaps: Vec<&[u64]> = sorted
        .windows(2)
        .filter(|w| w[1] - w[0] != EVERY_MS)
        .collect();
    assert!(gaps.is_empty(), "ticks lost between {gaps:?} of {sorted:?}");
}
