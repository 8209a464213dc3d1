//! Redis Cluster (feature `redis`): each queue's keys under one hash tag,
//! queues spread over the nodes, pipelines split by node; producers and
//! workers follow a slot being moved (`ASK`), moved (`MOVED`), and a
//! primary killed (its replica promoted), against clusters the tests start.
#![cfg(feature = "redis")]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use afterward::redis::client::cmd;
use afterward::redis::{Admin, RedisConfig, Worker};
use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTasks, HttpError, Job, JobContext, JobOptions, JobResult, Json, Query, Server,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::cluster::Cluster;
use support::failover::{acknowledge, every_one_runs};
use support::{record_run, runs, TEST_TIMEOUT};

/// Records its run; with `then`, enqueues a follow-up in queue `then`.
#[derive(Serialize, Deserialize)]
struct Note {
    key: String,
    #[serde(default)]
    then: Option<String>,
}

impl Job for Note {
    const NAME: &'static str = "note";
    fn run(self, job: &JobContext) -> JobResult {
        record_run(format!("{} {}", self.key, job.id()));
        if let Some(queue) = self.then {
            let follow = Note {
                key: format!("{}-after", self.key),
                then: None,
            };
            job.enqueue_with(follow, JobOptions::new().queue(queue))?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Params {
    key: String,
    queue: String,
    #[serde(default)]
    then: Option<String>,
    #[serde(default)]
    durable: bool,
}

fn app() -> App {
    App::new().job::<Note>().post(
        "/note",
        |Query(p): Query<Params>, tasks: BackgroundTasks| {
            let note = Note {
                key: p.key,
                then: p.then,
            };
            let mut options = JobOptions::new().queue(p.queue);
            if p.durable {
                options = options.durable();
            }
            let id = tasks.enqueue_with(note, options)?;
            Ok::<_, HttpError>((202, Json(json!({"id": id.as_str()}))))
        },
    )
}

const QUEUES: [&str; 6] = ["q0", "q1", "q2", "q3", "q4", "q5"];

fn worker(config: RedisConfig) -> Worker {
    Worker::builder(config)
        .job::<Note>()
        .queues(afterward::Queues::weighted(QUEUES.map(|q| (q, 1))))
        .concurrency(4)
        .visibility_timeout(Duration::from_secs(2))
        .start()
        .expect("the worker starts")
}

fn ran(key: &str) -> usize {
    runs(key).len()
}

#[test]
fn queues_spread_over_the_nodes_and_jobs_follow_up_across_them() {
    let cluster = Cluster::start(3, 0);
    let config = cluster.config();
    config.verify().expect("the cluster answers");
    // The queues' tags land on more than one node.
    let owners: BTreeSet<usize> = QUEUES
        .iter()
        .map(|q| cluster.owner(&format!("{{afterward:{q}}}")))
        .collect();
    assert!(owners.len() >= 2, "{owners:?}");
    let server = TestServer::with_builder(Server::builder().redis(config.clone()), app());
    let worker = worker(config.clone());
    let mut parents = Vec::new();
    for (i, queue) in QUEUES.iter().enumerate() {
        let then = QUEUES[(i + 1) % QUEUES.len()];
        let response = server
            .post(&format!("/note?key=spread{i}&queue={queue}&then={then}"))
            .send();
        assert_eq!(response.status(), 202, "{}", response.text());
        parents.push(response.json()["id"].as_str().unwrap().to_owned());
    }
    // Each job, then its follow-up in the next queue (another node, often).
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 12));
    let admin = Admin::new(config.clone());
    for (i, parent) in parents.iter().enumerate() {
        assert_eq!(ran(&format!("spread{i}")), 1);
        assert_eq!(ran(&format!("spread{i}-after")), 1);
        let status = admin.status(parent).unwrap().expect("the parent's status");
        assert_eq!(
            (status.queue.as_str(), status.children.len()),
            (QUEUES[i], 1)
        );
        let child = admin
            .status(&status.children[0])
            .unwrap()
            .expect("its child's");
        assert_eq!(child.queue, QUEUES[(i + 1) % QUEUES.len()]);
        assert_eq!(child.state, afterward::JobState::Done);
    }
    // The dashboard's and the CLI's view: each queue's counts, from its node.
    let queues = admin.queues().unwrap();
    assert_eq!(queues.len(), QUEUES.len(), "{queues:?}");
    assert!(queues.iter().all(|(_, c)| c.ready == 0 && c.dead == 0));
    let done = admin.recent_done(0, 10).unwrap();
    assert!(done.iter().all(|(_, kept, _)| *kept == 2), "{done:?}");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn jobs_follow_a_queues_slot_moved_to_another_node() {
    let cluster = Cluster::start(3, 0);
    let config = cluster.config();
    let server = TestServer::with_builder(Server::builder().redis(config.clone()), app());
    let worker = worker(config);
    let send = |key: &str| {
        let response = server
            .post(&format!("/note?key={key}&queue=q0&durable=true"))
            .send();
        assert_eq!(response.status(), 202, "{}", response.text());
    };
    send("before");
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    // Move q0's slot, keys and all, to another node.
    let tag = "{afterward:q0}";
    let from = cluster.owner(tag);
    let to = (from + 1) % 3;
    let slot: u16 = cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(tag)
        .query(&mut cluster.nodes[0].connection())
        .unwrap();
    let (from_id, to_id) = (cluster.id(from), cluster.id(to));
    let node = |i: usize| cluster.nodes[i].connection();
    let _: () = cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from_id)
        .query(&mut node(to))
        .unwrap();
    let _: () = cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to_id)
        .query(&mut node(from))
        .unwrap();
    loop {
        let keys: Vec<String> = cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut node(from))
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(cluster.nodes[to].port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut node(from))
            .unwrap();
    }
    // Mid-move: the old node answers ASK for the keys it gave away; the
    // server and the worker ask the new one (ASKING), and go on.
    for _ in 0..10 {
        send("asked");
    }
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 11));
    assert_eq!(ran("asked"), 10);
    let asked: String = cmd("INFO")
        .arg("commandstats")
        .query(&mut node(to))
        .unwrap();
    assert!(
        asked.contains("cmdstat_asking:"),
        "no ASKING reached the new node"
    );
    for i in 0..3 {
        let _: () = cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to_id)
            .query(&mut node(i))
            .unwrap();
    }
    cluster.wait_until("the move seen", |c| c.owner(tag) == to);
    // The server and the worker had q0 on the old node: they follow.
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut sent = 0;
    while sent < 20 {
        let response = server.post("/note?key=moved&queue=q0&durable=true").send();
        match response.status() {
            202 => sent += 1,
            503 => assert!(Instant::now() < deadline, "never followed the move"),
            other => panic!("{other}: {}", response.text()),
        }
    }
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 31));
    assert_eq!(ran("moved"), 20);
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn every_job_acknowledged_runs_after_a_primary_is_killed_mid_load() {
    let mut cluster = Cluster::start(3, 1);
    let mut config = cluster.config();
    config.wait_replicas = 1;
    let server =
        TestServer::with_builder(Server::builder().workers(4).redis(config.clone()), app());
    let worker = worker(config);
    let tag = "{afterward:q1}";
    let victim = cluster.owner(tag);
    let mut killed = false;
    let (total, kill_at) = (150, 50);
    let (acknowledged, refused) = acknowledge(
        &server,
        total,
        |i| format!("/note?key=killed&queue={}&durable=true", QUEUES[i % 3]),
        |acknowledged| {
            if acknowledged == kill_at && !killed {
                killed = true;
                cluster.nodes[victim].kill();
            }
            // Once its replica has taken over, the killed node comes back,
            // as a replica of it: the promoted primary has a replica again,
            // and with wait_replicas = 1 its queue's jobs are acknowledged
            // again.
            if killed && !cluster.nodes[victim].is_running() && cluster.owner(tag) != victim {
                cluster.nodes[victim].restart();
            }
        },
    );
    let counts = every_one_runs("killed", &acknowledged);
    eprintln!(
        "{total} acknowledged, {refused} refused during the failover; runs per job: {counts:?}"
    );
    assert!(refused > 0, "the failover was seen");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_stopped_replica_holds_back_only_the_jobs_of_its_own_primary() {
    let cluster = Cluster::start(3, 1);
    let mut config = cluster.config();
    config.wait_replicas = 1;
    // The primary of the deployment's set of queue names, and its replica.
    let names_owner = cluster.owner("afterward:queues");
    let names_port = cluster.nodes[names_owner].port();
    let replica = cluster
        .nodes
        .iter()
        .find(|n| {
            let replication: String = cmd("INFO")
                .arg("replication")
                .query(&mut n.connection())
                .unwrap_or_default();
            replication.contains(&format!("master_port:{names_port}"))
        })
        .expect("its replica");
    // Queues whose jobs live on the other primaries.
    let elsewhere: Vec<String> = (0..50)
        .map(|i| format!("e{i}"))
        .filter(|q| cluster.owner(&format!("{{afterward:{q}}}")) != names_owner)
        .take(3)
        .collect();
    let server = TestServer::with_builder(Server::builder().redis(config), app());
    replica.signal("-STOP");
    let answers: Vec<u16> = elsewhere
        .iter()
        .map(|q| {
            server
                .post(&format!("/note?key=elsewhere&queue={q}&durable=true"))
                .send()
                .status()
        })
        .collect();
    replica.signal("-CONT");
    assert_eq!(answers, [202, 202, 202], "{elsewhere:?}");
}
