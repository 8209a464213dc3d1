//! Redis behind Sentinel (feature `redis`): producers and workers find the
//! primary through the sentinels and follow a failover by themselves.
//! With `wait_replicas = 1`, every job a durable enqueue acknowledged runs
//! after the primary is killed mid-load (some may run twice: counted).
#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, Instant};

use afterward::redis::{RedisConfig, Worker};
use afterward::testing::TestServer;
use afterward::{App, BackgroundTasks, HttpError, Job, JobContext, JobResult, Json, Query, Server};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::failover::{acknowledge, every_one_runs};
use support::sentinel::SentinelSet;
use support::{record_run, runs, TEST_TIMEOUT};

#[derive(Serialize, Deserialize)]
struct Note {
    key: String,
}

impl Job for Note {
    const NAME: &'static str = "note";
    fn run(self, job: &JobContext) -> JobResult {
        record_run(format!("{} {}", self.key, job.id()));
        Ok(())
    }
}

#[derive(Deserialize)]
struct Params {
    key: String,
}

fn app() -> App {
    App::new().job::<Note>().post(
        "/durable",
        |Query(p): Query<Params>, tasks: BackgroundTasks| {
            let id = tasks.enqueue_durable(Note { key: p.key })?;
            Ok::<_, HttpError>((202, Json(json!({"id": id.as_str()}))))
        },
    )
}

fn worker(config: RedisConfig) -> Worker {
    Worker::builder(config)
        .job::<Note>()
        .concurrency(2)
        .visibility_timeout(Duration::from_secs(2))
        .start()
        .expect("the worker starts")
}

#[test]
fn jobs_go_through_the_primary_the_sentinels_name() {
    let set = SentinelSet::start(1);
    let config = set.config();
    config.verify().expect("the primary, through the sentinels");
    let server = TestServer::with_builder(Server::builder().redis(config.clone()), app());
    let worker = worker(config.clone());
    let response = server.post("/durable?key=plain").send();
    assert_eq!(response.status(), 202, "{}", response.text());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    assert_eq!(runs("plain").len(), 1);
    // A wrong service is said at start.
    let wrong = RedisConfig::new(&set.url().replace("/main", "/other")).unwrap();
    let error = wrong.verify().unwrap_err().to_string();
    assert!(error.contains("no such service"), "{error}");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn every_job_acknowledged_runs_after_the_primary_is_killed_mid_load() {
    let mut set = SentinelSet::start(2);
    let mut config = set.config();
    config.wait_replicas = 1;
    let server =
        TestServer::with_builder(Server::builder().workers(4).redis(config.clone()), app());
    let worker = worker(config);
    let first = set.primary_port();
    let (total, kill_at) = (150, 50);
    let (acknowledged, refused) = acknowledge(
        &server,
        total,
        |_| "/durable?key=failover".into(),
        |acknowledged| {
            if acknowledged == kill_at && set.primary_port() == first {
                let primary = set.nodes.iter_mut().find(|n| n.port() == first).unwrap();
                primary.kill();
            }
        },
    );
    let promoted = set.wait_for_failover_from(first);
    assert_ne!(promoted, first);
    // Every job acknowledged runs: none lost. Some may run twice (a read
    // or an acknowledgement the killed primary took and never passed on).
    let counts = every_one_runs("failover", &acknowledged);
    eprintln!(
        "{total} acknowledged, {refused} refused during the failover; runs per job: {counts:?}"
    );
    assert!(refused > 0, "the failover was seen");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_job_no_replica_confirmed_is_refused_not_acknowledged() {
    let set = SentinelSet::start(1);
    let mut config = set.config();
    config.wait_replicas = 1;
    let server = TestServer::with_builder(Server::builder().redis(config), app());
    assert_eq!(server.post("/durable?key=wait").send().status(), 202);
    // The replica stops: the primary takes the job, no replica has it.
    set.nodes[1].signal("-STOP");
    let refused = server.post("/durable?key=wait").send();
    set.nodes[1].signal("-CONT");
    assert_eq!(refused.status(), 503, "{}", refused.text());
    // And once it is back, jobs are acknowledged again.
    let deadline = Instant::now() + TEST_TIMEOUT;
    while server.post("/durable?key=wait").send().status() != 202 {
        assert!(Instant::now() < deadline, "never acknowledged again");
    }
}
