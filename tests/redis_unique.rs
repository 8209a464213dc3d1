//! Unique jobs over Redis (feature `redis`): two web servers racing to
//! enqueue one key get one job and the same id; the key is free again once
//! a worker ends the job.
#![cfg(feature = "redis")]

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::collections::HashSet;
use std::sync::Arc;

use afterward::redis::Worker;
use afterward::testing::TestServer;
use afterward::Server;
use probe::{app, post, Log};
use support::redis::RedisServer;
use support::TEST_TIMEOUT;

#[test]
fn two_servers_racing_on_one_key_get_one_job_until_it_ends() {
    let redis = RedisServer::start();
    let log = Arc::new(Log::default());
    let servers: Vec<TestServer> = (0..2)
        .map(|_| TestServer::with_builder(Server::builder().redis(redis.config()), app(&log)))
        .collect();
    let ids: HashSet<String> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..16)
            .map(|i| {
                let server = &servers[i % 2];
                scope.spawn(move || post(server, "/probe?tag=raced&held=true&unique=race"))
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 1, "one id for every racer: {ids:?}");
    let first = ids.into_iter().next().unwrap();

    let worker = Worker::builder(redis.config())
        .app(&app(&log))
        .start()
        .expect("the worker starts");
    drop(log.wait_until(|s| s.order.len() == 1));
    // Running on the worker: still held.
    assert_eq!(post(&servers[1], "/probe?tag=raced&unique=race"), first);
    log.release("raced", 1);
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1 && s.in_flight == 0));
    // Ended: released in the MULTI that recorded it.
    let again = post(&servers[0], "/probe?tag=raced&unique=race");
    assert_ne!(again, first);
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 2));
    assert_eq!(log.state.lock().unwrap().done("raced"), 2);
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}
