//! Named jobs on the in-process pool: enqueued by a handler after its
//! response, retried with backoff in a timer (never holding a pool thread),
//! dead after their last attempt, with statuses, dead letters and counters;
//! every job ends once as succeeded, dead or discarded.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTasks, HttpError, Job, JobContext, JobResult, Jobs, Json, Query, Server,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{record_run, runs, Gate, TEST_TIMEOUT};

/// Fails its first `fail` attempts (by error, or by panic), then succeeds.
#[derive(Serialize, Deserialize)]
struct Flaky {
    key: String,
    fail: u32,
    panic: bool,
}

impl Job for Flaky {
    const NAME: &'static str = "flaky";
    fn run(self, job: &JobContext) -> JobResult {
        record_run(format!(
            "{} attempt {} of {}",
            self.key,
            job.attempt(),
            job.id()
        ));
        if job.attempt() <= self.fail {
            if self.panic {
                panic!("attempt {} panics", job.attempt());
            }
            return Err(format!("attempt {} fails", job.attempt()).into());
        }
        Ok(())
    }
}

/// Never succeeds, and allows three attempts only.
#[derive(Serialize, Deserialize)]
struct Doomed {
    key: String,
}

impl Job for Doomed {
    const NAME: &'static str = "doomed";
    const MAX_ATTEMPTS: Option<u32> = Some(3);
    fn run(self, job: &JobContext) -> JobResult {
        record_run(format!("{} attempt {}", self.key, job.attempt()));
        Err("the mail server is gone".into())
    }
}

/// Registered, but its value never serializes (JSON keys must be strings).
#[derive(Serialize, Deserialize)]
struct Unwritable {
    by_pair: std::collections::HashMap<(u8, u8), u8>,
}

impl Job for Unwritable {
    const NAME: &'static str = "unwritable";
    fn run(self, _: &JobContext) -> JobResult {
        record_run("unwritable ran");
        Ok(())
    }
}

/// Not registered with the app.
#[derive(Serialize, Deserialize)]
struct Stranger;

impl Job for Stranger {
    const NAME: &'static str = "stranger";
    fn run(self, _: &JobContext) -> JobResult {
        Ok(())
    }
}

#[derive(Deserialize)]
struct Params {
    key: String,
    #[serde(default)]
    fail: u32,
    #[serde(default)]
    panic: bool,
}

fn app(gate: Gate) -> App {
    App::new()
        .job::<Flaky>()
        .job::<Doomed>()
        .job::<Unwritable>()
        .post(
            "/unwritable",
            |tasks: BackgroundTasks| -> Result<(), HttpError> {
                let by_pair = [((1, 2), 3)].into_iter().collect();
                tasks.enqueue(Unwritable { by_pair })?;
                Ok(())
            },
        )
        .post(
            "/flaky",
            |Query(p): Query<Params>, tasks: BackgroundTasks| {
                let id = tasks.enqueue(Flaky {
                    key: p.key,
                    fail: p.fail,
                    panic: p.panic,
                })?;
                Ok::<_, HttpError>((202, Json(json!({"id": id.as_str(), "status": "queued"}))))
            },
        )
        .post(
            "/doomed",
            |Query(p): Query<Params>, tasks: BackgroundTasks| {
                let id = tasks.enqueue(Doomed { key: p.key })?;
                Ok::<_, HttpError>(Json(json!({"id": id.as_str()})))
            },
        )
        .post(
            "/flaky-then-fail",
            |Query(p): Query<Params>, tasks: BackgroundTasks| {
                tasks.enqueue(Flaky {
                    key: p.key,
                    fail: 0,
                    panic: false,
                })?;
                Err::<(), _>(HttpError::new(409, "changed my mind"))
            },
        )
        .post(
            "/stranger",
            |tasks: BackgroundTasks| -> Result<(), HttpError> {
                tasks.enqueue(Stranger)?;
                Ok(())
            },
        )
        .post("/notify", move |tasks: BackgroundTasks| {
            let gate = gate.clone();
            tasks.add_task(move || gate.open());
        })
        .get("/jobs/{id}", afterward::job_status_handler)
        .get("/dead", |jobs: Jobs| {
            Json(Value::from(
                jobs.dead_letters()
                    .iter()
                    .map(|d| json!({"id": &*d.envelope.id, "error": d.error}))
                    .collect::<Vec<_>>(),
            ))
        })
}

fn fast_retries() -> afterward::ServerBuilder {
    Server::builder().job_backoff(Duration::from_millis(2))
}

#[test]
fn a_job_runs_after_the_response_and_its_status_follows_it() {
    let server = TestServer::with_builder(fast_retries(), app(Gate::new()));
    let response = server.post("/flaky?key=plain").send();
    assert_eq!(response.status(), 202);
    let id = response.json()["id"].as_str().unwrap().to_owned();
    server.wait_idle();
    assert_eq!(runs("plain"), [format!("plain attempt 1 of {id}")]);
    let status = server.get(&format!("/jobs/{id}")).send();
    assert_eq!(status.header("Cache-Control"), Some("no-store"));
    assert_eq!(
        status.json(),
        json!({"id": id, "name": "flaky", "queue": "default", "status": "done",
            "attempts": 1, "error": null, "result": null})
    );
    assert_eq!(server.get("/jobs/nope").send().status(), 404);
    let stats = server.stats();
    assert_eq!((stats.jobs_enqueued, stats.jobs_succeeded), (1, 1));
}

#[test]
fn a_failing_job_is_retried_until_it_succeeds_with_the_same_id() {
    let server = TestServer::with_builder(fast_retries(), app(Gate::new()));
    let id = server.post("/flaky?key=retried&fail=2").send().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let panics = server.post("/flaky?key=panics&fail=1&panic=true").send();
    assert_eq!(panics.status(), 202);
    server.wait_idle();
    assert_eq!(
        runs("retried"),
        (1..=3)
            .map(|n| format!("retried attempt {n} of {id}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(runs("panics").len(), 2, "a panic is retried like an error");
    let status = server.get(&format!("/jobs/{id}")).send().json();
    assert_eq!(
        (status["status"].as_str(), status["attempts"].as_u64()),
        (Some("done"), Some(3))
    );
    assert_eq!(
        status["error"],
        serde_json::Value::Null,
        "a done job carries no stale error"
    );
    let stats = server.stats();
    assert_eq!(
        (stats.jobs_retried, stats.jobs_succeeded, stats.jobs_dead),
        (3, 2, 0)
    );
}

#[test]
fn a_job_whose_attempts_run_out_is_dead_and_kept_in_the_dead_letters() {
    let server = TestServer::with_builder(fast_retries(), app(Gate::new()));
    let id = server.post("/doomed?key=doomed").send().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_idle();
    assert_eq!(
        runs("doomed").len(),
        3,
        "its own MAX_ATTEMPTS, not the default 5"
    );
    let status = server.get(&format!("/jobs/{id}")).send().json();
    assert_eq!(status["status"], "dead");
    assert_eq!(status["error"], "the mail server is gone");
    assert_eq!(
        server.get("/dead").send().json(),
        json!([{"id": id, "error": "the mail server is gone"}])
    );
    let stats = server.stats();
    assert_eq!((stats.jobs_dead, stats.jobs_retried), (1, 2));
}

#[test]
fn waiting_for_a_retry_holds_no_pool_thread_and_shutdown_reports_it() {
    // One background thread; the retry waits a minute in the timer.
    let builder = Server::builder()
        .background_workers(1)
        .job_backoff(Duration::from_secs(60))
        .job_max_backoff(Duration::from_secs(60));
    let gate = Gate::new();
    let server = TestServer::with_builder(builder, app(gate.clone()));
    let id = server.post("/flaky?key=waiting&fail=1").send().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |stats| stats.jobs_delayed == 1));
    // Meanwhile a task of another request runs on the only thread.
    server.post("/notify").send();
    assert!(gate.wait(), "the retry's wait held the pool thread");
    assert_eq!(
        server.get(&format!("/jobs/{id}")).send().json()["status"],
        "retrying"
    );

    let report = server.shutdown(Duration::from_millis(200));
    assert_eq!(report.not_run.len(), 1, "{report:?}");
    assert!(report.not_run[0].name.contains(&id), "{report:?}");
    let stats = report.stats;
    assert_eq!(
        (
            stats.jobs_enqueued,
            stats.jobs_discarded,
            stats.jobs_delayed
        ),
        (1, 1, 0)
    );
}

#[test]
fn a_job_of_a_failed_request_is_discarded_and_an_unknown_job_is_refused_at_enqueue() {
    let server = TestServer::with_builder(fast_retries(), app(Gate::new()));
    assert_eq!(
        server.post("/flaky-then-fail?key=failed").send().status(),
        409
    );
    let refused = server.post("/stranger").send();
    assert_eq!(refused.status(), 500);
    assert!(refused.json()["reason"]
        .as_str()
        .unwrap()
        .contains("\"stranger\""));
    // A value that does not serialize is refused now, not when it would run.
    let unwritable = server.post("/unwritable").send();
    assert_eq!(unwritable.status(), 500);
    let reason = unwritable.json()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("\"unwritable\" does not serialize"),
        "{reason}"
    );
    server.wait_idle();
    assert!(runs("failed").is_empty());
    assert!(runs("unwritable").is_empty());
    let stats = server.stats();
    assert_eq!((stats.jobs_enqueued, stats.jobs_discarded), (1, 1));
}

#[test]
fn the_dead_letters_keep_the_newest_up_to_their_capacity() {
    let server = TestServer::with_builder(fast_retries().dead_letter_capacity(2), app(Gate::new()));
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let id = server.post(&format!("/doomed?key=capped{i}")).send().json()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            // One at a time, so that they die in this order.
            server.wait_idle();
            id
        })
        .collect();
    assert_eq!(server.stats().jobs_dead, 3);
    let dead: Vec<String> = server
        .jobs()
        .dead_letters()
        .iter()
        .map(|d| d.envelope.id.to_string())
        .collect();
    assert_eq!(dead, ids[1..], "the oldest dead letter is evicted first");
}

#[test]
fn every_job_ends_once_as_succeeded_dead_or_discarded() {
    let server = TestServer::with_builder(fast_retries(), app(Gate::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let addr = server.addr();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let path = match i % 4 {
                        0 => format!("/flaky?key=load{c}-{i}&fail=1"),
                        1 => format!("/flaky?key=load{c}-{i}&fail=2&panic=true"),
                        2 => format!("/doomed?key=load{c}-{i}"),
                        _ => format!("/flaky-then-fail?key=load{c}-{i}"),
                    };
                    afterward::testing::TestRequest::new(addr, "POST", &path).send();
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    server.wait_idle();
    let stats = server.stats();
    assert_eq!(stats.jobs_enqueued, 40);
    assert_eq!(
        stats.jobs_succeeded + stats.jobs_dead + stats.jobs_discarded,
        stats.jobs_enqueued,
        "{stats:?}"
    );
    // Per client: 6 that succeed (after retries), 2 dead, 2 discarded with
    // their failed request.
    assert_eq!(
        (stats.jobs_succeeded, stats.jobs_dead, stats.jobs_discarded),
        (24, 8, 8)
    );
    assert_eq!(stats.pending(), 0);
}

/// Blocks on the gate its key names, as a job held by a slow service.
#[derive(Serialize, Deserialize)]
struct Stuck {
    key: String,
}

static STUCK_GATES: Mutex<Vec<(String, Gate)>> = Mutex::new(Vec::new());

impl Job for Stuck {
    const NAME: &'static str = "stuck";
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(50));
    fn run(self, _: &JobContext) -> JobResult {
        let gate = STUCK_GATES
            .lock()
            .unwrap()
            .iter()
            .find(|(key, _)| *key == self.key)
            .map(|(_, gate)| gate.clone())
            .unwrap();
        assert!(gate.wait(), "never released");
        Ok(())
    }
}

#[test]
fn an_overdue_job_is_reported_and_its_thread_replaced() {
    let release = Gate::new();
    STUCK_GATES
        .lock()
        .unwrap()
        .push(("overdue".into(), release.clone()));
    let notified = Gate::new();
    let app = app(notified.clone())
        .job::<Stuck>()
        .post("/stuck", |tasks: BackgroundTasks| {
            tasks.enqueue(Stuck {
                key: "overdue".into(),
            })?;
            Ok::<_, HttpError>("stuck")
        });
    // One background thread, held by the stuck job.
    let builder = Server::builder().background_workers(1);
    let server = TestServer::with_builder(builder, app);
    server.post("/stuck").send();
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |stats| stats.jobs_overdue == 1));
    // The replacement thread runs another request's task meanwhile.
    server.post("/notify").send();
    assert!(
        notified.wait(),
        "the pool lost its only thread to the stuck job"
    );

    // When the late job returns, its outcome is still counted.
    release.open();
    server.wait_idle();
    let stats = server.stats();
    assert_eq!((stats.jobs_overdue, stats.jobs_succeeded), (1, 1));
}
