//! The dashboard over Redis (feature `redis`): the jobs workers hold, and
//! those delayed, listed from Redis; the overview counts them per queue.
#![cfg(feature = "redis")]

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::sync::Arc;

use afterward::redis::Worker;
use afterward::testing::TestServer;
use afterward::{dashboard, Dashboard, Server};
use probe::{post, Log};
use support::redis::RedisServer;
use support::TEST_TIMEOUT;

#[test]
fn held_and_delayed_jobs_are_listed_from_redis() {
    let redis = RedisServer::start();
    let log = Arc::new(Log::default());
    let board = Dashboard::open().redis(redis.config());
    let app = probe::app(&log).nest("/afterward", dashboard(board));
    let server = TestServer::with_builder(Server::builder().redis(redis.config()), app);
    let later = post(&server, "/probe?tag=later&delay_ms=600000");
    let held = post(&server, "/probe?tag=held&held=true");
    let worker = Worker::builder(redis.config())
        .app(&probe::app(&log))
        .consumer("w1")
        .start()
        .expect("the worker starts");
    drop(log.wait_until(|s| s.order.iter().any(|t| t == "held")));

    let jobs = server.get("/afterward/jobs").send().text();
    let held_at = jobs.find("Held by workers").unwrap();
    let delayed_at = jobs.find("<h2>Delayed").unwrap();
    let held_row = jobs[held_at..].find(&held).unwrap() + held_at;
    let later_row = jobs[delayed_at..].find(&later).unwrap() + delayed_at;
    assert!(held_row < delayed_at && later_row > delayed_at, "{jobs}");
    assert!(
        jobs[held_at..delayed_at].contains("w1"),
        "the worker holding it"
    );
    let overview = server.get("/afterward/api/overview").send().json();
    assert_eq!(overview["queues"][0]["running"], 1, "{overview}");
    assert_eq!(overview["queues"][0]["delayed"], 1, "{overview}");
    let workers = overview["workers"].as_array().unwrap();
    assert_eq!(workers[0]["name"], "w1");

    // Run now: a worker's next promotion moves it to the stream.
    assert!(afterward::redis::Admin::new(redis.config())
        .run_now(&later)
        .unwrap());
    log.release("held", 1);
    drop(log.wait_until(|s| s.done("later") == 1));
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 2));
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
    // A stopped worker is gone from the list at once.
    let overview = server.get("/afterward/api/overview").send().json();
    assert_eq!(
        overview["workers"].as_array().unwrap().len(),
        0,
        "{overview}"
    );
    // The job's history, as the worker that ran it wrote it.
    let page = server.get(&format!("/afterward/jobs/{held}")).send().text();
    let queued = page.find("<li>queued").expect("the history");
    let running = page.find("<li>running").unwrap();
    let done = page.find("<li>done").unwrap();
    assert!(queued < running && running < done, "{page}");
    // Its payload, which the producer kept beside its status.
    assert!(
        page.contains("<td>payload</td><td><pre>{\n  &quot;held&quot;: true,\n  &quot;tag&quot;: &quot;held&quot;\n}</pre>"),
        "{page}"
    );
    // Both are in the list of jobs done (its order: the next test).
    let done = server.get("/afterward/jobs?state=done").send().text();
    let list = done
        .find("Done last in default (2 kept)")
        .expect("the list");
    assert!(
        done[list..].contains(&later) && done[list..].contains(&held),
        "{done}"
    );
}

#[test]
fn the_done_list_keeps_its_limit_and_payloads_are_kept_only_if_asked() {
    let redis = RedisServer::start();
    let log = Arc::new(Log::default());
    let mut config = redis.config();
    config.recent_done = 2;
    config.status_payload_bytes = 0;
    let app = probe::app(&log);
    let server = TestServer::with_builder(Server::builder().redis(config.clone()), app);
    let ids: Vec<String> = (0..3)
        .map(|i| post(&server, &format!("/probe?tag=t{i}")))
        .collect();
    let worker = Worker::builder(config.clone())
        .app(&probe::app(&log))
        .concurrency(1)
        .start()
        .expect("the worker starts");
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 3));
    let admin = afterward::redis::Admin::new(config);
    let lists = admin.recent_done(0, 10).unwrap();
    assert_eq!(lists.len(), 1);
    let (queue, kept, statuses) = &lists[0];
    let listed: Vec<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
    assert_eq!((queue.as_str(), *kept), ("default", 2));
    // The last two done, the last first: in the order they ran (one at a
    // time), which need not be the order of the requests (each request
    // hands its job over after its response).
    let order = log.state.lock().unwrap().order.clone();
    let id_of = |tag: &str| ids[tag[1..].parse::<usize>().unwrap()].as_str();
    assert_eq!(listed, [id_of(&order[2]), id_of(&order[1])], "{order:?}");
    assert!(statuses.iter().all(|s| s.payload.is_none()));
    // Paging: the second of them alone.
    let (_, _, page) = &admin.recent_done(1, 1).unwrap()[0];
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, id_of(&order[1]));
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}
