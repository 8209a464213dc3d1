//! Named queues over Redis (feature `redis`): one stream per queue, workers
//! serving chosen queues in strict order or by weights with limits per
//! queue, fast jobs flowing past a backlog of slow ones, and a worker that
//! holds no job another, idle worker could start sooner.
#![cfg(feature = "redis")]

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use afterward::redis::{Admin, Worker};
use afterward::testing::TestServer;
use afterward::{App, Queues, Server};
use probe::{app, Log};
use support::redis::RedisServer;
use support::TEST_TIMEOUT;

struct Setup {
    redis: RedisServer,
    server: TestServer,
    log: Arc<Log>,
    app: App,
}

impl Setup {
    fn new() -> Setup {
        Setup::on(RedisServer::start())
    }

    /// The web server and the probes' app on `redis`.
    fn on(redis: RedisServer) -> Setup {
        let log = Arc::new(Log::default());
        let builder = Server::builder()
            .background_workers(2)
            .redis(redis.config());
        let server = TestServer::with_builder(builder, app(&log));
        Setup {
            server,
            app: app(&log),
            log,
            redis,
        }
    }

    fn worker(&self, name: &str, concurrency: usize, queues: Queues) -> Worker {
        Worker::builder(self.redis.config())
            .app(&self.app)
            .concurrency(concurrency)
            .queues(queues)
            .consumer(name)
            .start()
            .expect("the worker starts")
    }

    fn post(&self, path: &str) -> String {
        let response = self.server.post(path).send();
        assert_eq!(response.status(), 200, "{}", response.text());
        response.json()["id"].as_str().unwrap().to_owned()
    }

    /// Waits until Redis has every job posted (`n` in all): the sender
    /// counts a job sent once Redis has acknowledged it.
    fn wait_sent(&self, n: u64) {
        let sent = |stats: &afterward::Stats| stats.jobs_sent == n;
        assert!(
            self.server.handle().wait_for(TEST_TIMEOUT, sent),
            "{:?}",
            self.server.stats()
        );
    }
}

#[test]
fn fast_jobs_keep_flowing_while_a_limited_queue_holds_a_backlog_of_slow_ones() {
    let setup = Setup::new();
    let queues = Queues::weighted([("default", 1), ("slow", 1)]).limit("slow", 1);
    let worker = setup.worker("w", 2, queues);
    for _ in 0..20 {
        setup.post("/probe?tag=slow&queue=slow&held=true");
    }
    drop(setup.log.wait_until(|s| s.order.len() == 1));
    // One `slow` job holds one thread; the other takes every fast job.
    let mut posted = Vec::new();
    for _ in 0..50 {
        posted.push(Instant::now());
        setup.post("/probe?tag=fast");
    }
    let state = setup.log.wait_until(|s| s.done("fast") == 50);
    assert_eq!((state.most("slow"), state.done("slow")), (1, 0));
    // How long each fast job waited, from its request to its start.
    let starts: Vec<Instant> = state
        .order
        .iter()
        .zip(&state.started)
        .filter(|(tag, _)| *tag == "fast")
        .map(|(_, at)| *at)
        .collect();
    let mut waits: Vec<Duration> = starts.iter().zip(&posted).map(|(s, p)| *s - *p).collect();
    waits.sort();
    eprintln!(
        "fast jobs behind a backlog of 19 held slow jobs: wait from request to start p50 {:?}, p99 {:?}, max {:?}",
        waits[waits.len() / 2],
        waits[waits.len() * 99 / 100],
        waits[waits.len() - 1]
    );
    drop(state);
    setup.log.release("slow", 20);
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 70));
    assert_eq!(
        setup.log.state.lock().unwrap().most("slow"),
        1,
        "never two at once"
    );
}

#[test]
fn a_strict_worker_runs_the_first_queue_with_work_first() {
    let setup = Setup::new();
    // The worker's only thread is held while a backlog forms in Redis.
    let worker = setup.worker("w", 1, Queues::strict(["critical", "default"]));
    setup.post("/probe?tag=hold&held=true");
    drop(setup.log.wait_until(|s| s.order.len() == 1));
    for _ in 0..10 {
        setup.post("/probe?tag=backlog");
    }
    setup.post("/probe?tag=urgent&queue=critical");
    setup.wait_sent(12);
    setup.log.release("hold", 1);
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 12));
    let order = setup.log.state.lock().unwrap().order.clone();
    assert_eq!(&order[..2], ["hold", "urgent"], "{order:?}");
}

#[test]
fn a_worker_holds_no_job_that_an_idle_worker_could_start_sooner() {
    let setup = Setup::new();
    let default = || Queues::strict(["default"]);
    // Its only thread is held by a job whose length it cannot know yet.
    let busy = setup.worker("busy", 1, default());
    setup.post("/probe?tag=long&held=true");
    drop(setup.log.wait_until(|s| s.order.len() == 1));
    for _ in 0..5 {
        setup.post("/probe?tag=next");
    }
    setup.wait_sent(6);
    let idle = setup.worker("idle", 1, default());
    assert!(idle.wait_for(TEST_TIMEOUT, |s| s.succeeded == 5));
    assert_eq!(
        busy.stats().claimed,
        1,
        "the busy worker held only its own job"
    );
    setup.log.release("long", 1);
    assert!(busy.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
}

#[test]
fn each_queue_is_a_stream_of_its_own_and_the_admin_counts_them_apart() {
    let setup = Setup::new();
    for _ in 0..3 {
        setup.post("/probe?tag=a&queue=alpha");
    }
    setup.post("/probe?tag=b&queue=beta");
    let id = setup.post("/probe?tag=c");
    setup.wait_sent(5);
    let admin = Admin::new(setup.redis.config());
    let queues: Vec<(String, u64)> = admin
        .queues()
        .unwrap()
        .into_iter()
        .map(|(queue, counts)| (queue, counts.ready))
        .collect();
    assert_eq!(
        queues,
        [
            ("alpha".into(), 3),
            ("beta".into(), 1),
            ("default".into(), 1)
        ]
    );
    let mut con = setup.redis.connection();
    let length: u64 = afterward::redis::client::cmd("XLEN")
        .arg("{afterward:alpha}:jobs")
        .query(&mut con)
        .unwrap();
    assert_eq!(length, 3);
    // A worker of `alpha` alone leaves the others where they are.
    let worker = setup.worker("w", 2, Queues::strict(["alpha"]));
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 3));
    let left: Vec<u64> = admin
        .queues()
        .unwrap()
        .iter()
        .map(|(_, c)| c.ready)
        .collect();
    assert_eq!(left, [0, 1, 1]);
    let status = setup.server.get(&format!("/jobs/{id}")).send().json();
    assert_eq!(
        (status["queue"].as_str(), status["status"].as_str()),
        (Some("default"), Some("queued"))
    );
}

/// A job's status is found whichever queue it is in.
#[test]
fn a_status_is_read_from_the_jobs_own_queue() {
    let setup = Setup::new();
    let id = setup.post("/probe?tag=x&queue=reports");
    let worker = setup.worker("w", 1, Queues::strict(["reports"]));
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    let status = setup.server.get(&format!("/jobs/{id}")).send().json();
    assert_eq!(status["queue"], "reports");
    assert_eq!(status["status"], "done");
}

#[test]
fn jobs_a_fetch_took_before_one_of_its_reads_failed_run_at_once() {
    // User `jobs` may read (`XREADGROUP`) queue `default` only: every fetch
    // reads it, then fails on queue `other`, with the jobs it took from
    // `default` claimed in Redis by then.
    let setup = Setup::on(RedisServer::start_with(&[
        "--appendonly",
        "no",
        "--user",
        "jobs",
        "on",
        ">reader",
        "~*",
        "&*",
        "+@all",
        "-xreadgroup",
        "(+xreadgroup ~{afterward:default}:jobs)",
    ]));
    for _ in 0..3 {
        setup.post("/probe?tag=taken");
    }
    setup.wait_sent(3);
    // Dropped, they would wait for a reclaim: past the visibility timeout.
    let worker = Worker::builder(setup.redis.config_as("jobs", "reader"))
        .app(&setup.app)
        .queues(Queues::strict(["default", "other"]))
        .visibility_timeout(Duration::from_secs(600))
        .start()
        .expect("the worker starts");
    // The failed reads are counted (the first as the next fetch's answer).
    assert!(
        worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 3 && s.redis_errors > 0),
        "{:?}",
        worker.stats()
    );
    assert_eq!(worker.stop(TEST_TIMEOUT).stats.reclaimed, 0);
}
