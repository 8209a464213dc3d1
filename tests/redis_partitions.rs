//! A queue split in partitions (feature `redis`, `RedisConfig::partitions`):
//! its jobs spread evenly over `hot.0` … `hot.3`, each a stream under its
//! own hash tag (on a cluster, on several primaries); a worker serving
//! `hot` runs them all; a unique job stays in one partition, so it is
//! still unique; a job is found, cancelled and retried in its partition.
#![cfg(feature = "redis")]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use afterward::redis::{Admin, RedisConfig, Worker};
use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTasks, HttpError, Job, JobContext, JobOptions, JobResult, Json, Query, Queues,
    Server,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::cluster::Cluster;
use support::redis::RedisServer;
use support::{record_run, runs, TEST_TIMEOUT};

/// Records its run; fails its first `fail` attempts.
#[derive(Serialize, Deserialize)]
struct Hot {
    key: String,
    #[serde(default)]
    fail: u32,
}

impl Job for Hot {
    const NAME: &'static str = "hot";
    const QUEUE: &'static str = "hot";
    fn run(self, job: &JobContext) -> JobResult {
        record_run(format!("{} {} {}", self.key, job.id(), job.attempt()));
        if job.attempt() <= self.fail {
            return Err("not yet".into());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Params {
    key: String,
    #[serde(default)]
    fail: u32,
    #[serde(default)]
    unique: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
}

fn app() -> App {
    App::new()
        .job::<Hot>()
        .post("/hot", |Query(p): Query<Params>, tasks: BackgroundTasks| {
            let mut options = JobOptions::new().durable();
            if let Some(key) = p.unique {
                options = options.unique(key);
            }
            if let Some(ms) = p.delay_ms {
                options = options.delay(Duration::from_millis(ms));
            }
            let id = tasks.enqueue_with(
                Hot {
                    key: p.key,
                    fail: p.fail,
                },
                options,
            )?;
            Ok::<_, HttpError>((202, Json(json!({"id": id.as_str()}))))
        })
        .get("/jobs/{id}", afterward::job_status_handler)
}

fn partitioned(mut config: RedisConfig) -> RedisConfig {
    config.partitions = vec![("hot".into(), 4)];
    config
}

fn post(server: &TestServer, path: &str) -> String {
    support::accepted(server, path)
}

#[test]
fn a_partitioned_queues_jobs_spread_evenly_and_one_worker_runs_them_all() {
    let redis = RedisServer::start();
    let config = partitioned(redis.config());
    let server = TestServer::with_builder(Server::builder().redis(config.clone()), app());
    for i in 0..40 {
        post(&server, &format!("/hot?key=even{i}"));
    }
    // Ten in each partition, each its own stream and hash tag.
    let admin = Admin::new(config.clone());
    let queues = admin.queues().unwrap();
    let names: Vec<&str> = queues.iter().map(|(q, _)| q.as_str()).collect();
    assert_eq!(names, ["hot.0", "hot.1", "hot.2", "hot.3"]);
    assert!(queues.iter().all(|(_, c)| c.ready == 10), "{queues:?}");
    // A unique job: a second enqueue with its key finds the first.
    let unique = post(&server, "/hot?key=once&unique=k1");
    assert_eq!(post(&server, "/hot?key=twice&unique=k1"), unique);
    // A delayed job, cancelled in its partition before it is due.
    let later = post(&server, "/hot?key=later&delay_ms=600000");
    admin.cancel(&later).unwrap();
    // A worker serving `hot` (its job type's queue) reads all four.
    let worker = Worker::builder(config.clone())
        .job::<Hot>()
        .concurrency(2)
        .start()
        .unwrap();
    post(&server, "/hot?key=retried&fail=1");
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 42));
    for i in 0..40 {
        assert_eq!(runs(&format!("even{i}")).len(), 1);
    }
    assert_eq!((runs("once").len(), runs("twice").len()), (1, 0));
    assert_eq!(runs("retried").len(), 2, "retried in its partition");
    assert!(runs("later").is_empty());
    let status = server.get(&format!("/jobs/{later}")).send().json();
    assert_eq!(status["status"], "cancelled");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_worker_serves_a_partitioned_queue_as_its_partitions() {
    let redis = RedisServer::start();
    let config = partitioned(redis.config());
    let queues = Queues::weighted([("hot", 1), ("cold", 1)]);
    // Served as hot.0..hot.3 (weight 1 each) and cold (weight 4): still half
    // each (the split's own test: queues.rs).
    let worker = Worker::builder(config.clone())
        .job::<Hot>()
        .queues(queues)
        .start()
        .unwrap();
    let admin = Admin::new(config);
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    let workers = loop {
        let workers = admin.workers().unwrap();
        if !workers.is_empty() {
            break workers;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        workers[0].queues,
        ["hot.0", "hot.1", "hot.2", "hot.3", "cold"]
    );
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn on_a_cluster_a_partitioned_queue_spreads_over_its_primaries() {
    let cluster = Cluster::start(3, 0);
    let config = partitioned(cluster.config());
    let owners: BTreeSet<usize> = (0..4)
        .map(|k| cluster.owner(&format!("{{afterward:hot.{k}}}")))
        .collect();
    assert!(owners.len() >= 2, "{owners:?}");
    let server = TestServer::with_builder(Server::builder().redis(config.clone()), app());
    for i in 0..20 {
        post(&server, &format!("/hot?key=spread{i}"));
    }
    let worker = Worker::builder(config)
        .job::<Hot>()
        .concurrency(2)
        .start()
        .unwrap();
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 20));
    assert!((0..20).all(|i| runs(&format!("spread{i}")).len() == 1));
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}
