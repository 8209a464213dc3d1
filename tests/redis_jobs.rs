//! Named jobs over Redis Streams (feature `redis`), against a real
//! `redis-server` each test starts: the web server sends jobs after the
//! response, a worker runs them with retries and dead letters, statuses live
//! in Redis, a durable enqueue promises the job, and nothing is lost while
//! Redis is down or when the server stops.
#![cfg(feature = "redis")]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use afterward::redis::{Admin, RedisConfig, Worker};
use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTasks, HttpError, Job, JobContext, JobResult, JobSettings, Json, OnFull, Query,
    Server,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::redis::RedisServer;
use support::{record_run, runs, Gate, TEST_TIMEOUT};

/// Fails its first `fail` attempts, then succeeds; `fail` above the
/// attempts allowed makes it dead.
#[derive(Serialize, Deserialize)]
struct Flaky {
    key: String,
    fail: u32,
}

impl Job for Flaky {
    const NAME: &'static str = "flaky";
    const MAX_ATTEMPTS: Option<u32> = Some(3);
    fn run(self, job: &JobContext) -> JobResult {
        record_run(format!(
            "{} {} attempt {}",
            self.key,
            job.id(),
            job.attempt()
        ));
        if job.attempt() <= self.fail {
            return Err(format!("attempt {} fails", job.attempt()).into());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Params {
    key: String,
    #[serde(default)]
    fail: u32,
}

fn app() -> App {
    App::new()
        .job::<Flaky>()
        .post(
            "/flaky",
            |Query(p): Query<Params>, tasks: BackgroundTasks| {
                let id = tasks.enqueue(Flaky {
                    key: p.key,
                    fail: p.fail,
                })?;
                Ok::<_, HttpError>((202, Json(json!({"id": id.as_str()}))))
            },
        )
        .post(
            "/durable",
            |Query(p): Query<Params>, tasks: BackgroundTasks| {
                let id = tasks.enqueue_durable(Flaky {
                    key: p.key,
                    fail: p.fail,
                })?;
                Ok::<_, HttpError>((202, Json(json!({"id": id.as_str()}))))
            },
        )
        .get("/jobs/{id}", afterward::job_status_handler)
}

fn server(config: RedisConfig) -> TestServer {
    TestServer::with_builder(
        Server::builder()
            .workers(4)
            .background_workers(2)
            .shutdown_timeout(Duration::from_secs(5))
            .redis(config),
        app(),
    )
}

fn fast_retries() -> JobSettings {
    let mut settings = JobSettings::default();
    settings.backoff = Duration::from_millis(10);
    settings.max_backoff = Duration::from_millis(50);
    settings
}

fn worker(config: RedisConfig) -> Worker {
    Worker::builder(config)
        .job::<Flaky>()
        .concurrency(2)
        .job_settings(fast_retries())
        .visibility_timeout(Duration::from_secs(30))
        .consumer("test-worker")
        .start()
        .expect("the worker starts")
}

fn post(server: &TestServer, path: &str) -> String {
    support::accepted(server, path)
}

#[test]
fn jobs_go_to_redis_after_the_response_and_a_worker_runs_them() {
    let redis = RedisServer::start();
    let server = server(redis.config());
    let ids: Vec<String> = (0..20).map(|_| post(&server, "/flaky?key=ran")).collect();
    // Sent (not run here): the server is idle once Redis has them all.
    server.wait_idle();
    let stats = server.stats();
    assert_eq!(
        (stats.jobs_enqueued, stats.jobs_sent, stats.jobs_buffered),
        (20, 20, 0)
    );
    assert_eq!(stats.jobs_succeeded, 0, "jobs ran in the web server");
    assert!(runs("ran").is_empty(), "a job ran before any worker");
    let status = server.get(&format!("/jobs/{}", ids[0])).send();
    assert_eq!(status.json()["status"], "queued", "{}", status.text());
    assert_eq!(Admin::new(redis.config()).counts().unwrap().ready, 20);

    let worker = worker(redis.config());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 20));
    let ran = runs("ran");
    assert_eq!(ran.len(), 20);
    for id in &ids {
        assert!(
            ran.contains(&format!("ran {id} attempt 1")),
            "{id} did not run"
        );
        let status = server.get(&format!("/jobs/{id}")).send().json();
        assert_eq!(
            (status["status"].as_str(), status["attempts"].as_u64()),
            (Some("done"), Some(1))
        );
    }
    // Acknowledged and deleted: nothing left in the stream.
    let counts = Admin::new(redis.config()).counts().unwrap();
    assert_eq!((counts.ready, counts.pending, counts.delayed), (0, 0, 0));
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn statuses_share_a_hash_per_group_of_ids_that_expires_a_ttl_after_its_last_change() {
    use afterward::redis::client::cmd;
    let redis = RedisServer::start();
    let mut config = redis.config();
    config.status_ttl = Duration::from_secs(2);
    let server = server(config.clone());
    let ids: Vec<String> = (0..50).map(|_| post(&server, "/flaky?key=hash")).collect();
    server.wait_idle();
    // One hash per 4,096 consecutive ids (the counter the id ends with),
    // and no key per job.
    let mut groups: Vec<String> = ids
        .iter()
        .map(|id| {
            let counter = u64::from_str_radix(&id[16..], 16).unwrap();
            format!("{{afterward:default}}:status:{:x}", counter >> 12)
        })
        .collect();
    groups.sort();
    groups.dedup();
    let mut con = redis.connection();
    let mut keys: Vec<String> = cmd("KEYS")
        .arg("{afterward:default}:status:*")
        .query(&mut con)
        .unwrap();
    keys.sort();
    assert_eq!(keys, groups);
    let fields: u64 = groups
        .iter()
        .map(|key| cmd("HLEN").arg(key).query::<u64>(&mut con).unwrap())
        .sum();
    // Each job's status, and the part of its payload kept beside it.
    assert_eq!(fields, 100);
    // The worker's writes set the TTL again (here: down from a minute).
    for key in &groups {
        let _: () = cmd("PEXPIRE").arg(key).arg(60_000).query(&mut con).unwrap();
    }
    let worker = worker(config);
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 50));
    for key in &groups {
        let ttl: i64 = cmd("PTTL").arg(key).query(&mut con).unwrap();
        assert!((1..=2000).contains(&ttl), "{key}: PTTL {ttl}");
    }
    let status = server.get(&format!("/jobs/{}", ids[49])).send().json();
    assert_eq!(status["status"], "done");
    // Then the statuses go with their hash (Redis's clock: nothing to wait
    // on but the key).
    let started = std::time::Instant::now();
    while groups
        .iter()
        .any(|key| cmd("EXISTS").arg(key).query::<bool>(&mut con).unwrap())
    {
        assert!(
            started.elapsed() < TEST_TIMEOUT,
            "the statuses never expired"
        );
        std::thread::yield_now();
    }
    for id in [&ids[0], &ids[49]] {
        assert_eq!(server.get(&format!("/jobs/{id}")).send().status(), 404);
    }
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_failing_job_is_retried_by_the_worker_then_dead_and_can_be_requeued() {
    let redis = RedisServer::start();
    let server = server(redis.config());
    let flaky = post(&server, "/flaky?key=twice&fail=2");
    let doomed = post(&server, "/flaky?key=doomed&fail=9");
    let worker = worker(redis.config());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1 && s.dead == 1));
    let stats = worker.stats();
    assert_eq!((stats.retried, stats.promoted), (4, 4), "{stats:?}");
    assert_eq!(runs("twice").len(), 3);
    assert_eq!(runs("doomed").len(), 3);

    let status = server.get(&format!("/jobs/{flaky}")).send().json();
    assert_eq!(status["status"], "done");
    assert_eq!(status["attempts"], 3);
    assert_eq!(
        status["error"],
        serde_json::Value::Null,
        "a done job carries no stale error"
    );
    let status = server.get(&format!("/jobs/{doomed}")).send().json();
    assert_eq!(status["status"], "dead");
    assert_eq!(status["error"], "attempt 3 fails");

    let admin = Admin::new(redis.config());
    let dead = admin.dead(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (&*dead[0].envelope.id, dead[0].error.as_str()),
        (doomed.as_str(), "attempt 3 fails")
    );
    assert_eq!(admin.counts().unwrap().dead, 1);

    // Requeued, it starts again from its first attempt (and fails again).
    assert!(admin.requeue(&doomed).unwrap());
    assert!(!admin.requeue("no-such-job").unwrap());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.dead == 2));
    assert_eq!(runs("doomed").len(), 6);
    assert!(runs("doomed").contains(&format!("doomed {doomed} attempt 1")));
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn jobs_wait_in_the_buffer_while_redis_is_down_and_arrive_when_it_is_back() {
    let mut redis = RedisServer::not_started();
    let server = server(redis.config());
    let ids: Vec<String> = (0..30).map(|_| post(&server, "/flaky?key=late")).collect();
    // Every request was answered at once; the jobs wait, counted.
    let stats = server.stats();
    assert_eq!(stats.jobs_enqueued, 30);
    assert_eq!(stats.jobs_sent, 0);
    assert_eq!(server.jobs().status(&ids[0]), None, "no Redis to ask");
    assert_eq!(
        server.get(&format!("/jobs/{}", ids[0])).send().status(),
        503
    );

    redis.restart();
    server.wait_idle();
    assert_eq!(server.stats().jobs_sent, 30);
    let worker = worker(redis.config());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 30));
    assert_eq!(runs("late").len(), 30);
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn jobs_arriving_within_the_linger_share_one_send() {
    let redis = RedisServer::start();
    let mut config = redis.config();
    config.linger = Duration::from_secs(1);
    let server = TestServer::with_builder(
        Server::builder().redis(config),
        app().get("/metrics", afterward::metrics_handler),
    );
    let ids: Vec<String> = (0..5).map(|_| post(&server, "/flaky?key=linger")).collect();
    server.wait_idle();
    assert_eq!(server.stats().jobs_sent, 5);
    let metrics = server.get("/metrics").send().text();
    assert!(
        metrics.contains("\nafterward_jobs_send_batches_total 1\n"),
        "{metrics}"
    );
    assert_eq!(
        Admin::new(redis.config()).counts().unwrap().ready,
        ids.len() as u64
    );
}

#[test]
fn a_job_is_sent_from_the_request_worker_even_while_every_pool_thread_is_busy() {
    let redis = RedisServer::start();
    let (entered, release) = (Gate::new(), Gate::new());
    let held = Arc::new(AtomicBool::new(false));
    let (entered_tx, release_rx, held_tx) = (entered.clone(), release.clone(), held.clone());
    let app = app().post("/block", move |tasks: BackgroundTasks| {
        let (entered, release, held) = (entered_tx.clone(), release_rx.clone(), held_tx.clone());
        tasks.add_task(move || {
            held.store(true, Ordering::SeqCst);
            entered.open();
            let opened = release.wait();
            held.store(false, Ordering::SeqCst);
            assert!(opened, "the test never opened the gate");
        });
        (202, "held")
    });
    let server = TestServer::with_builder(
        Server::builder()
            .workers(2)
            .background_workers(1)
            .redis(redis.config()),
        app,
    );
    assert_eq!(server.post("/block").send().status(), 202);
    assert!(entered.wait(), "the closure holds the pool's only thread");
    // Sending needs no pool thread: the job reaches a worker meanwhile.
    let id = post(&server, "/flaky?key=direct");
    let worker = worker(redis.config());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    assert!(
        held.load(Ordering::SeqCst),
        "the job ran only once the pool was free"
    );
    assert_eq!(runs("direct"), [format!("direct {id} attempt 1")]);
    release.open();
    server.wait_idle();
    let stats = server.stats();
    assert_eq!((stats.jobs_sent, stats.completed), (1, 2), "{stats:?}");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_full_send_buffer_falls_back_to_the_pool_and_its_on_full_policy_and_loses_nothing() {
    let mut redis = RedisServer::not_started();
    let mut config = redis.config();
    config.buffer_capacity = 4;
    config.batch = 1;
    let server = TestServer::with_builder(
        Server::builder()
            .workers(2)
            .background_workers(1)
            .queue_capacity(2)
            .on_full(OnFull::Shed)
            .redis(config),
        app(),
    );
    // Redis is down: the buffer fills (the sender holds one more), then a
    // pool thread waits on it, then the pool's queue fills, then requests
    // are shed.
    let mut accepted = Vec::new();
    loop {
        let response = server.post("/flaky?key=full").send();
        if response.status() == 503 {
            assert!(response.json()["detail"].is_string(), "{}", response.text());
            break;
        }
        assert_eq!(response.status(), 202, "{}", response.text());
        accepted.push(response.json()["id"].as_str().unwrap().to_owned());
        assert!(accepted.len() < 50, "no request was shed");
    }
    // At least the buffer, a pool thread's and the queue (and the one the
    // sender holds, once it has taken it).
    assert!(accepted.len() >= 4 + 1 + 2, "{}", accepted.len());
    let stats = server.stats();
    assert_eq!((stats.jobs_sent, stats.jobs_discarded), (0, 0), "{stats:?}");

    redis.restart();
    server.wait_idle();
    let stats = server.stats();
    assert_eq!(stats.jobs_sent, accepted.len() as u64, "{stats:?}");
    assert_eq!((stats.jobs_discarded, stats.jobs_buffered), (0, 0));
    let worker = worker(redis.config());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == accepted.len() as u64));
    let ran = runs("full");
    for id in &accepted {
        assert!(
            ran.contains(&format!("full {id} attempt 1")),
            "{id} did not run"
        );
    }
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_durable_enqueue_answers_once_redis_has_the_job_or_503() {
    let mut redis = RedisServer::start();
    let server = server(redis.config());
    let id = post(&server, "/durable?key=durable");
    // In Redis before the response: no wait for the sender.
    assert_eq!(Admin::new(redis.config()).counts().unwrap().ready, 1);
    assert_eq!(server.jobs().status(&id).unwrap().state.as_str(), "queued");

    redis.kill();
    let refused = server.post("/durable?key=refused").send();
    assert_eq!(refused.status(), 503, "{}", refused.text());
    assert!(refused.json()["detail"]
        .as_str()
        .unwrap()
        .contains("unavailable"));
    server.wait_idle();
    let stats = server.stats();
    assert_eq!(
        (stats.jobs_enqueued, stats.jobs_sent, stats.jobs_discarded),
        (2, 1, 1)
    );
}

#[test]
fn a_job_held_past_the_visibility_timeout_is_taken_over_by_another_worker() {
    let redis = RedisServer::start();
    let server = server(redis.config());
    let id = post(&server, "/flaky?key=orphan");
    server.wait_idle();
    // A consumer reads the job and dies without acknowledging it.
    let mut con = redis.connection();
    let _: () = afterward::redis::client::cmd("XGROUP")
        .arg(&[
            "CREATE",
            "{afterward:default}:jobs",
            "workers",
            "0",
            "MKSTREAM",
        ])
        .query(&mut con)
        .unwrap();
    let read: afterward::redis::client::Value = afterward::redis::client::cmd("XREADGROUP")
        .arg(&[
            "GROUP",
            "workers",
            "crashed",
            "COUNT",
            "1",
            "STREAMS",
            "{afterward:default}:jobs",
            ">",
        ])
        .query(&mut con)
        .unwrap();
    assert!(format!("{read:?}").contains(&id));
    assert_eq!(Admin::new(redis.config()).counts().unwrap().pending, 1);

    let worker = Worker::builder(redis.config())
        .job::<Flaky>()
        .concurrency(1)
        .visibility_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    assert_eq!(worker.stats().reclaimed, 1);
    assert_eq!(worker.stats().claimed, 0);
    assert_eq!(runs("orphan"), [format!("orphan {id} attempt 1")]);
    assert_eq!(Admin::new(redis.config()).counts().unwrap().pending, 0);
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn stopping_the_server_sends_its_buffer_or_reports_what_it_could_not() {
    // Redis up: the shutdown waits for the buffer to reach it.
    let redis = RedisServer::start();
    let up = server(redis.config());
    (0..10).for_each(|_| drop(post(&up, "/flaky?key=spill")));
    let report = up.shutdown(TEST_TIMEOUT);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.stats.jobs_sent, 10);
    assert_eq!(Admin::new(redis.config()).counts().unwrap().ready, 10);

    // Redis down: the deadline passes, and each unsent job is listed.
    let down = RedisServer::not_started();
    let server = server(down.config());
    let ids: Vec<String> = (0..3).map(|_| post(&server, "/flaky?key=lost")).collect();
    let report = server.shutdown(Duration::from_millis(300));
    assert!(!report.is_complete());
    assert_eq!(report.not_run.len(), 3, "{report:?}");
    for id in &ids {
        assert!(
            report.not_run.iter().any(|t| t.name.contains(id.as_str())),
            "{id}"
        );
    }
    let stats = report.stats;
    assert_eq!(
        (
            stats.jobs_enqueued,
            stats.jobs_sent,
            stats.jobs_discarded,
            stats.jobs_buffered
        ),
        (3, 0, 3, 0)
    );
}

#[test]
fn in_mixed_mode_jobs_not_run_by_the_deadline_are_spilled_to_redis() {
    let redis = RedisServer::start();
    // Two gates: the blocking task says it runs, then waits to be let go.
    let (running, release) = (support::Gate::new(), support::Gate::new());
    let app = app().post("/block", {
        let (running, release) = (running.clone(), release.clone());
        move |tasks: BackgroundTasks| {
            let (running, release) = (running.clone(), release.clone());
            tasks.add_task(move || {
                running.open();
                release.wait();
            });
        }
    });
    let server = TestServer::with_builder(
        Server::builder()
            .workers(4)
            .background_workers(1)
            .job_backoff(Duration::from_secs(3600))
            .redis_spill(redis.config()),
        app,
    );
    // A job that fails once: its retry waits an hour in the timer.
    let waiting = post(&server, "/flaky?key=mixed-waiting&fail=1");
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |s| s.jobs_delayed == 1));
    assert_eq!(runs("mixed-waiting").len(), 1, "it ran here first");
    // The one background thread is held; a job queues behind it.
    assert_eq!(server.post("/block").send().status(), 200);
    assert!(running.wait());
    let queued = post(&server, "/flaky?key=mixed-queued");

    let report = server.shutdown(Duration::from_millis(300));
    release.open();
    let spilled: Vec<&str> = report.spilled.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(spilled.len(), 2, "{report:?}");
    for id in [&waiting, &queued] {
        assert!(
            spilled.iter().any(|name| name.contains(id.as_str())),
            "{id} not spilled"
        );
    }
    assert!(report.not_run.is_empty(), "{report:?}");
    assert_eq!(report.still_running.len(), 1, "the blocking task");
    let stats = report.stats;
    assert_eq!(
        (stats.jobs_enqueued, stats.jobs_sent, stats.jobs_discarded),
        (2, 2, 0)
    );
    // In Redis: the queued job ready to run, the waiting one keeps its due time.
    let counts = Admin::new(redis.config()).counts().unwrap();
    assert_eq!((counts.ready, counts.delayed), (1, 1));
    let worker = worker(redis.config());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    assert_eq!(
        runs("mixed-queued"),
        [format!("mixed-queued {queued} attempt 1")]
    );
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_worker_moves_stream_entries_that_are_not_jobs_to_the_dead_letters() {
    use afterward::redis::client::cmd;
    let redis = RedisServer::start();
    let mut con = redis.connection();
    let _: String = cmd("XADD")
        .arg(&["{afterward:default}:jobs", "*", "envelope", "{not json"])
        .query(&mut con)
        .unwrap();
    let _: String = cmd("XADD")
        .arg(&["{afterward:default}:jobs", "*", "other", "field"])
        .query(&mut con)
        .unwrap();
    let worker = worker(redis.config());
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.dead == 2));
    let counts = Admin::new(redis.config()).counts().unwrap();
    assert_eq!(
        (counts.ready, counts.pending, counts.dead),
        (0, 0, 2),
        "{counts:?}"
    );
    let dead: Vec<(String, Vec<String>)> = cmd("XRANGE")
        .arg(&["{afterward:default}:dead", "-", "+"])
        .query(&mut con)
        .unwrap();
    // Two runner threads read them: the dead letters may come in either order.
    let mut texts: Vec<String> = dead
        .into_iter()
        .map(|(_, fields)| fields.join(" "))
        .collect();
    texts.sort();
    assert_eq!(texts.len(), 2);
    assert!(
        texts[0].starts_with("envelope  error the envelope is not JSON"),
        "{texts:?}"
    );
    assert!(
        texts[1].starts_with("envelope {not json error the envelope is not JSON"),
        "{texts:?}"
    );
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

/// Waits for the test to open [`HOLD_RELEASE`] (at most the test timeout).
#[derive(Serialize, Deserialize)]
struct Hold {}

static HOLD_RELEASE: std::sync::OnceLock<Gate> = std::sync::OnceLock::new();

impl Job for Hold {
    const NAME: &'static str = "hold";
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(100));
    fn run(self, _: &JobContext) -> JobResult {
        assert!(HOLD_RELEASE.get_or_init(Gate::new).wait(), "never released");
        Ok(())
    }
}

#[test]
fn a_job_running_past_its_timeout_is_shown_running_and_reported_overdue_once() {
    let redis = RedisServer::start();
    let app = App::new()
        .job::<Hold>()
        .post("/hold", |tasks: BackgroundTasks| {
            let id = tasks.enqueue(Hold {})?;
            Ok::<_, HttpError>((202, Json(json!({"id": id.as_str()}))))
        })
        .get("/jobs/{id}", afterward::job_status_handler);
    let server = TestServer::with_builder(Server::builder().redis(redis.config()), app);
    let id = post(&server, "/hold");
    let worker = Worker::builder(redis.config())
        .job::<Hold>()
        .concurrency(2)
        .start()
        .unwrap();
    // Past its 100 ms: counted once, and still running (it waits for us).
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.overdue == 1));
    let status = server.get(&format!("/jobs/{id}")).send().json();
    assert_eq!(
        (status["status"].as_str(), status["attempts"].as_u64()),
        (Some("running"), Some(1)),
        "{status}"
    );
    HOLD_RELEASE.get_or_init(Gate::new).open();
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    let stats = worker.stats();
    assert_eq!((stats.overdue, stats.succeeded), (1, 1), "{stats:?}");
    let status = server.get(&format!("/jobs/{id}")).send().json();
    assert_eq!(status["status"], "done");
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn jobs_handed_over_while_the_pool_shuts_down_are_each_sent_or_counted_discarded() {
    use afterward::BackgroundPool;
    // A "Redis" that accepts connections and never answers: every send
    // waits for the timeout, and shutdown races the hand-overs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming().take(16) {
            held.push(connection);
        }
    });
    let mut config = RedisConfig::new(&format!("redis://127.0.0.1:{port}")).unwrap();
    config.timeout = Duration::from_millis(20);
    config.buffer_capacity = 1_000_000;
    let pool = BackgroundPool::builder()
        .job::<Flaky>()
        .redis(config)
        .build()
        .unwrap();
    // One request with many jobs: the request worker hands them over one
    // by one while the shutdown runs (its last send to Redis waits for the
    // timeout, and the hand-overs go on meanwhile).
    let tasks = pool.tasks("race");
    for i in 0..300_000 {
        let job = Flaky {
            key: format!("race{i}"),
            fail: 0,
        };
        tasks.enqueue(job).unwrap();
    }
    let dispatcher = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.dispatch(&tasks))
    };
    let started = std::time::Instant::now();
    while pool.stats().jobs_buffered < 1_000 {
        assert!(started.elapsed() < TEST_TIMEOUT, "no job was handed over");
        std::thread::yield_now();
    }
    let report = pool.shutdown(Duration::ZERO);
    dispatcher.join().unwrap();
    let stats = pool.stats();
    assert_eq!(stats.jobs_buffered, 0, "{stats:?}");
    assert_eq!(stats.jobs_enqueued, 300_000);
    assert_eq!(
        stats.jobs_sent + stats.jobs_discarded,
        stats.jobs_enqueued,
        "a job went missing: {stats:?}"
    );
    assert!(report.not_run.len() as u64 <= stats.jobs_discarded);
}
