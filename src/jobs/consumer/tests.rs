//! The consumer's behaviour, on the in-memory backend: what a Redis worker
//! does, shown without Redis.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::memory::{Inner, MemoryBackend, MemoryStore};
use super::{Consumer, ConsumerOptions};
use crate::jobs::envelope::{now_ms, Envelope};
use crate::jobs::job::{GiveUp, Job, JobContext, JobResult};
use crate::jobs::queues::Queues;
use crate::jobs::registry::Registry;
use crate::jobs::settings::JobSettings;
use crate::state::StateMap;

/// Long enough never to be reached by a passing test: every wait below
/// ends on the consumer's own condition.
const PATIENCE: Duration = Duration::from_secs(30);

/// A job that fails its first `fail_first` attempts, for good when `fatal`.
#[derive(Serialize, Deserialize)]
struct Flaky {
    fail_first: u32,
    fatal: bool,
}

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);

impl Job for Flaky {
    const NAME: &'static str = "flaky";
    fn run(self, job: &JobContext) -> JobResult {
        FLAKY_RUNS.fetch_add(1, Ordering::SeqCst);
        if job.attempt() <= self.fail_first {
            if self.fatal {
                return Err(GiveUp::new("fatal").into());
            }
            return Err(format!("attempt {} failed", job.attempt()).into());
        }
        Ok(())
    }
}

/// A job that keeps its attempt number as its result and enqueues
/// `children` follow-ups (`Flaky` ones that succeed, one of them delayed),
/// then fails its first `fail_first` attempts.
#[derive(Serialize, Deserialize)]
struct Parent {
    fail_first: u32,
    children: u32,
}

impl Job for Parent {
    const NAME: &'static str = "parent";
    fn run(self, job: &JobContext) -> JobResult {
        job.set_result(&serde_json::json!({ "attempt": job.attempt() }))?;
        for i in 0..self.children {
            let child = Flaky {
                fail_first: 0,
                fatal: false,
            };
            let delay = Duration::from_millis(u64::from(i % 2));
            job.enqueue_with(child, crate::JobOptions::new().delay(delay))?;
        }
        if job.attempt() <= self.fail_first {
            return Err("not yet".into());
        }
        Ok(())
    }
}

/// A job that waits for the test to let it go (a gate in the state).
#[derive(Serialize, Deserialize)]
struct Gated;

/// The gate: a job waits until it is opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

impl Job for Gated {
    const NAME: &'static str = "gated";
    const TIMEOUT: Option<Duration> = Some(Duration::from_millis(1));
    fn run(self, job: &JobContext) -> JobResult {
        let gate = job.state::<Arc<Gate>>().expect("the gate is in the state");
        let mut open = gate.open.lock().unwrap();
        while !*open {
            open = gate.changed.wait(open).unwrap();
        }
        Ok(())
    }
}

/// A job that says when it runs: its tag joins the log's order, and the
/// log keeps how many jobs of each tag ran at once at most; a gated one
/// waits for the gate while it runs; a slow one takes `sleep_ms`.
#[derive(Serialize, Deserialize)]
struct Probe {
    tag: String,
    gated: bool,
    sleep_ms: u64,
}

#[derive(Default)]
struct ProbeLog {
    state: Mutex<ProbeState>,
    /// Notified when a probe starts.
    started: std::sync::Condvar,
}

impl ProbeLog {
    /// Waits until a probe tagged `tag` has started; whether one did.
    fn wait_for_start(&self, tag: &str) -> bool {
        let state = self.state.lock().unwrap();
        let waited = self.started.wait_timeout_while(state, PATIENCE, |state| {
            !state.order.iter().any(|t| t == tag)
        });
        !waited.unwrap().1.timed_out()
    }
}

#[derive(Default)]
struct ProbeState {
    order: Vec<String>,
    running: std::collections::HashMap<String, usize>,
    most: std::collections::HashMap<String, usize>,
}

impl Job for Probe {
    const NAME: &'static str = "probe";
    fn run(self, job: &JobContext) -> JobResult {
        let log = job
            .state::<Arc<ProbeLog>>()
            .expect("the log is in the state");
        {
            let mut state = log.state.lock().unwrap();
            state.order.push(self.tag.clone());
            let running = state.running.entry(self.tag.clone()).or_default();
            *running += 1;
            let now = *running;
            let most = state.most.entry(self.tag.clone()).or_default();
            *most = (*most).max(now);
            log.started.notify_all();
        }
        if self.gated {
            let gate = job.state::<Arc<Gate>>().expect("the gate is in the state");
            let mut open = gate.open.lock().unwrap();
            while !*open {
                open = gate.changed.wait(open).unwrap();
            }
        }
        // The job's own work, here its duration: what the consumer measures.
        std::thread::sleep(Duration::from_millis(self.sleep_ms));
        *log.state
            .lock()
            .unwrap()
            .running
            .get_mut(&self.tag)
            .unwrap() -= 1;
        Ok(())
    }
}

fn probe(id: &str, queue: &str, tag: &str, gated: bool, sleep_ms: u64) -> String {
    let mut envelope = Envelope::from_json_text(&envelope(
        id,
        "probe",
        &format!("{{\"tag\":\"{tag}\",\"gated\":{gated},\"sleep_ms\":{sleep_ms}}}"),
    ))
    .unwrap();
    envelope.queue = queue.to_owned().into();
    envelope.to_json_text()
}

fn envelope(id: &str, name: &str, payload: &str) -> String {
    Envelope {
        id: id.into(),
        name: name.to_owned().into(),
        queue: "default".into(),
        payload: payload.to_owned(),
        attempts: 0,
        max_attempts: 3,
        enqueued_at_ms: now_ms(),
        request_id: "test".into(),
        last_error: None,
        unique: None,
    }
    .to_json_text()
}

/// Queues `n` jobs that succeed at once: `j0`, `j1`, …
fn push_jobs(store: &MemoryStore, n: usize) {
    for i in 0..n {
        store.push(flaky(&format!("j{i}"), 0, false));
    }
}

/// Each of [`push_jobs`]'s `n` jobs is recorded done, once.
fn assert_done_once(store: &MemoryStore, n: usize) {
    let inner = store.lock();
    for i in 0..n {
        assert_eq!(inner.statuses[&format!("j{i}")], ["done"]);
    }
}

fn flaky(id: &str, fail_first: u32, fatal: bool) -> String {
    envelope(
        id,
        "flaky",
        &format!("{{\"fail_first\":{fail_first},\"fatal\":{fatal}}}"),
    )
}

struct Setup {
    store: Arc<MemoryStore>,
    gate: Arc<Gate>,
    log: Arc<ProbeLog>,
    visibility: Duration,
    concurrency: usize,
    queues: Queues,
    prefetch: usize,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            store: Arc::default(),
            gate: Arc::default(),
            log: Arc::default(),
            visibility: Duration::from_secs(60),
            concurrency: 2,
            queues: Queues::strict(["default"]),
            prefetch: 10,
        }
    }

    fn start(&self) -> Consumer {
        self.start_as("here")
    }

    /// A consumer named `name` on the same store.
    fn start_as(&self, name: &str) -> Consumer {
        let mut registry = Registry::default();
        registry.register::<Flaky>();
        registry.register::<Gated>();
        registry.register::<Probe>();
        registry.register::<Parent>();
        let mut state = StateMap::default();
        state.insert(self.gate.clone());
        state.insert(self.log.clone());
        let settings = JobSettings {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            ..JobSettings::default()
        };
        let backend = MemoryBackend {
            store: self.store.clone(),
            name: name.into(),
            queues: self.queues.names().map(str::to_owned).collect(),
            cancel_version: 0,
        };
        Consumer::start(
            backend,
            ConsumerOptions {
                registry,
                state,
                settings,
                concurrency: self.concurrency,
                prefetch: self.prefetch,
                horizon: Duration::from_millis(20),
                queues: self.queues.clone(),
                visibility: self.visibility,
                batch: 10,
                name: name.into(),
            },
        )
        .expect("the consumer starts")
    }
}

fn statuses(store: &MemoryStore, id: &str) -> Vec<String> {
    store.lock().statuses.get(id).cloned().unwrap_or_default()
}

#[test]
fn jobs_run_and_are_recorded_done_once() {
    let setup = Setup::new();
    for i in 0..5 {
        setup.store.push(flaky(&format!("ok{i}"), 0, false));
    }
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 5 && s.in_flight == 0));
    let report = consumer.stop(PATIENCE);
    assert!(report.is_complete());
    assert_eq!(report.stats.claimed, 5);
    let inner = setup.store.lock();
    assert!(inner.held.is_empty() && inner.ready.is_empty());
    for i in 0..5 {
        assert_eq!(inner.statuses[&format!("ok{i}")], ["done"]);
    }
    let recorded: usize = inner.records.iter().map(Vec::len).sum();
    assert_eq!(recorded, 5, "each job recorded once");
}

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_through_the_delayed_jobs() {
    let setup = Setup::new();
    setup.store.push(flaky("twice", 2, false));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 1));
    let stats = consumer.stats();
    assert_eq!((stats.retried, stats.promoted, stats.dead), (2, 2, 0));
    assert_eq!(
        statuses(&setup.store, "twice"),
        ["retrying", "retrying", "done"]
    );
}

#[test]
fn a_job_whose_attempts_run_out_is_a_dead_letter_with_its_error() {
    let setup = Setup::new();
    setup.store.push(flaky("never", 99, false));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.dead == 1 && s.in_flight == 0));
    assert_eq!(consumer.stats().retried, 2, "3 attempts in all");
    let inner = setup.store.lock();
    let (text, error) = &inner.dead[0];
    assert_eq!(error, "attempt 3 failed");
    let dead = Envelope::from_json_text(text).unwrap();
    assert_eq!((&*dead.id, dead.attempts), ("never", 3));
    assert_eq!(inner.statuses["never"].last().unwrap(), "dead");
}

#[test]
fn a_job_that_gives_up_is_dead_at_once() {
    let setup = Setup::new();
    setup.store.push(flaky("fatal", 1, true));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.dead == 1));
    assert_eq!(consumer.stats().retried, 0);
    assert_eq!(statuses(&setup.store, "fatal"), ["dead"]);
}

#[test]
fn an_unknown_job_and_a_text_that_is_no_job_are_dead_letters_as_they_came() {
    let setup = Setup::new();
    setup
        .store
        .push(envelope("stranger", "not_registered", "null"));
    setup.store.push("not json".into());
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.dead == 2 && s.in_flight == 0));
    let inner = setup.store.lock();
    assert!(inner.dead.iter().any(|(text, _)| text == "not json"));
    assert!(inner
        .dead
        .iter()
        .any(|(_, error)| error.contains("no job named \"not_registered\"")));
}

#[test]
fn a_job_held_past_the_visibility_timeout_by_a_silent_consumer_is_taken_over() {
    let mut setup = Setup::new();
    setup.visibility = Duration::from_millis(100);
    let long_ago = Instant::now() - Duration::from_secs(1);
    setup
        .store
        .push_held("crashed", long_ago, flaky("orphan", 0, false));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.reclaimed == 1 && s.succeeded == 1));
    assert_eq!(consumer.stats().claimed, 0);
    assert!(setup.store.lock().held.is_empty());
}

#[test]
fn a_running_job_is_renewed_announced_and_reported_overdue_once() {
    let mut setup = Setup::new();
    // Renewed every second while it runs.
    setup.visibility = Duration::from_secs(3);
    setup.store.push(envelope("slow", "gated", "null"));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.overdue == 1 && s.in_flight == 1));
    let since = |inner: &Inner| inner.held.values().next().map(|h| h.since);
    let first = since(&setup.store.lock()).expect("held");
    assert!(
        setup
            .store
            .wait_for(PATIENCE, |inner| since(inner) != Some(first)),
        "renewed"
    );
    assert!(setup
        .store
        .wait_for(PATIENCE, |inner| inner.statuses.contains_key("slow")));
    assert_eq!(statuses(&setup.store, "slow"), ["running"]);
    let announced = setup.store.lock().announced.clone();
    let expected = ("slow".into(), "default".into(), "gated".into(), 1, None);
    assert_eq!(announced, [expected]);
    setup.gate.open();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 1));
    let stats = consumer.stats();
    assert_eq!((stats.overdue, stats.reclaimed), (1, 0));
    assert_eq!(statuses(&setup.store, "slow"), ["running", "done"]);
}

#[test]
fn a_stop_leaves_what_has_not_finished_pending_in_the_store_and_says_so() {
    let mut setup = Setup::new();
    setup.concurrency = 1;
    // A job of microseconds first: the consumer then holds jobs ahead.
    setup.store.push(flaky("warm", 0, false));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 1));
    setup.store.push(envelope("busy", "gated", "null"));
    setup.store.push(flaky("waiting", 0, false));
    assert!(consumer.wait_for(PATIENCE, |s| s.claimed == 3));
    let report = consumer.stop(Duration::ZERO);
    // The running job and the one queued behind it: neither acknowledged.
    assert_eq!(report.left_pending, 2);
    assert!(!report.is_complete());
    assert_eq!(setup.store.lock().held.len(), 2);
    setup.gate.open();
}

#[test]
fn a_fetch_still_out_at_the_stop_is_counted_and_its_jobs_stay_pending() {
    let setup = Setup::new();
    setup.store.lock().hold_fetches = true;
    push_jobs(&setup.store, 3);
    let consumer = setup.start();
    // The fetching thread's first call waits in the store; the store
    // answers it once the stop has begun.
    assert!(setup
        .store
        .wait_for(PATIENCE, |inner| inner.fetches_held == 1));
    let (store, shared) = (setup.store.clone(), consumer.shared.clone());
    let release = std::thread::spawn(move || {
        let began = Instant::now();
        while !shared.stopping.load(Ordering::SeqCst) {
            assert!(began.elapsed() < PATIENCE, "the stop never began");
            std::thread::yield_now();
        }
        store.release_fetches();
    });
    let report = consumer.stop(Duration::ZERO);
    release.join().unwrap();
    // Taken by the fetch (one per runner, before any job is timed), never
    // run: counted, and pending in the store.
    let taken = report.stats.claimed;
    assert!(taken > 0);
    assert_eq!(report.left_pending, taken);
    assert_eq!(report.stats.succeeded, 0);
    assert_eq!(setup.store.lock().held.len() as u64, taken);
}

#[test]
fn the_next_batch_runs_while_the_last_one_is_recorded() {
    let setup = Setup::new();
    {
        let mut inner = setup.store.lock();
        inner.hold_records = true;
        // A fetch with nothing ready waits for a job as long as the test.
        inner.fetch_wait = Some(PATIENCE);
    }
    setup
        .store
        .push(probe("first", "default", "first", true, 0));
    let consumer = setup.start();
    // While the first job runs, the next fetch is out, waiting in the store
    // for a job (one fetch at a time: the first one's reply was taken).
    assert!(setup.log.wait_for_start("first"));
    assert!(setup.store.wait_for(PATIENCE, |inner| inner.fetches >= 2));
    setup.gate.open();
    // The first job's record waits in the store; a job queued meanwhile is
    // fetched and runs before that record is done.
    assert!(setup
        .store
        .wait_for(PATIENCE, |inner| inner.records_held == 1));
    setup
        .store
        .push(probe("second", "default", "second", false, 0));
    assert!(
        setup.log.wait_for_start("second"),
        "the second job waited for the record"
    );
    assert_eq!(setup.store.lock().records_held, 1);
    assert_eq!(consumer.stats().succeeded, 0);
    setup.store.lock().fetch_wait = None;
    setup.store.release_records();
    // The fetch out now waits for a job: one ends it.
    setup
        .store
        .push(probe("third", "default", "third", false, 0));
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 3 && s.in_flight == 0));
}

#[test]
fn a_fetching_thread_that_dies_leaves_the_fetches_to_the_io_thread() {
    let setup = Setup::new();
    setup.store.lock().panic_fetches = 1;
    push_jobs(&setup.store, 3);
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 3 && s.in_flight == 0));
    assert_done_once(&setup.store, 3);
}

#[test]
fn a_store_that_fails_is_retried_and_nothing_is_lost_or_recorded_twice() {
    let setup = Setup::new();
    setup.store.lock().fail_calls = 3;
    push_jobs(&setup.store, 3);
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 3 && s.in_flight == 0));
    let stats = consumer.stats();
    assert_eq!(stats.redis_errors, 3);
    assert_done_once(&setup.store, 3);
}

#[test]
fn a_record_that_fails_is_made_again_whole() {
    let setup = Setup::new();
    setup.store.push(envelope("slow", "gated", "null"));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.claimed == 1));
    setup.store.lock().fail_records = 1;
    setup.gate.open();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 1 && s.in_flight == 0));
    assert_eq!(consumer.stats().redis_errors, 1);
    let inner = setup.store.lock();
    assert_eq!(inner.records.len(), 1, "recorded once, after the failure");
    assert!(inner.held.is_empty());
}

#[test]
fn a_stop_ends_by_its_deadline_while_every_record_fails() {
    let setup = Setup::new();
    // A store that takes connections but fails every record (one out of
    // memory, a replica).
    setup.store.lock().fail_records = u32::MAX;
    push_jobs(&setup.store, 3);
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.claimed == 3 && s.redis_errors >= 2));
    let (stopped, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = stopped.send(consumer.stop(Duration::from_millis(100)));
    });
    let report = stop.recv_timeout(PATIENCE).expect("the stop ends");
    // Run, never recorded: counted, and pending in the store.
    assert_eq!(report.left_pending, 3);
    assert_eq!(report.stats.succeeded, 0);
    assert_eq!(setup.store.lock().held.len(), 3);
}

#[test]
fn settings_out_of_range_are_refused() {
    let store = Arc::new(MemoryStore::default());
    let options = |concurrency, visibility, registry| ConsumerOptions {
        registry,
        state: StateMap::default(),
        settings: JobSettings::default(),
        concurrency,
        prefetch: 1,
        horizon: Duration::ZERO,
        queues: Queues::strict(["default"]),
        visibility,
        batch: 1,
        name: "x".into(),
    };
    let backend = || MemoryBackend {
        store: store.clone(),
        name: "x".into(),
        queues: vec!["default".into()],
        cancel_version: 0,
    };
    let registry = || {
        let mut r = Registry::default();
        r.register::<Flaky>();
        r
    };
    let second = Duration::from_secs(1);
    for (options, expected) in [
        (options(0, second, registry()), "concurrency"),
        (
            options(1, Duration::from_millis(10), registry()),
            "visibility",
        ),
        (options(1, second, Registry::default()), "registers no job"),
    ] {
        let error = Consumer::start(backend(), options).err().expect("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn the_counters_read_in_the_prometheus_text_format() {
    let setup = Setup::new();
    setup.store.push(flaky("one", 0, false));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 1 && s.in_flight == 0));
    let text = consumer.stats().to_prometheus();
    assert!(
        text.contains("afterward_worker_jobs_total{outcome=\"succeeded\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("afterward_worker_jobs_in_flight 0\n"),
        "{text}"
    );
}

#[test]
fn strict_order_runs_the_first_queue_with_work_first() {
    let mut setup = Setup::new();
    setup.concurrency = 1;
    setup.queues = Queues::strict(["critical", "low"]);
    // The runner is held by a `low` job while more of each queue arrive.
    setup
        .store
        .push_to("low", probe("hold", "low", "hold", true, 0));
    let consumer = setup.start();
    assert!(setup.store.wait_for(PATIENCE, |inner| inner.held.len() == 1
        && inner.ready.is_empty()));
    for i in 0..3 {
        setup
            .store
            .push_to("low", probe(&format!("l{i}"), "low", "low", false, 0));
    }
    setup
        .store
        .push_to("critical", probe("c", "critical", "critical", false, 0));
    setup.gate.open();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 5));
    let order = setup.log.state.lock().unwrap().order.clone();
    assert_eq!(order, ["hold", "critical", "low", "low", "low"]);
}

#[test]
fn a_queue_limit_holds_its_jobs_to_that_many_at_once_while_others_flow() {
    let mut setup = Setup::new();
    setup.concurrency = 3;
    setup.queues = Queues::weighted([("default", 1), ("reports", 1)]).limit("reports", 1);
    for i in 0..4 {
        let id = format!("r{i}");
        setup
            .store
            .push_to("reports", probe(&id, "reports", "reports", false, 5));
    }
    for i in 0..20 {
        let id = format!("d{i}");
        setup
            .store
            .push_to("default", probe(&id, "default", "default", false, 1));
    }
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 24));
    let most = setup.log.state.lock().unwrap().most.clone();
    assert_eq!(most["reports"], 1, "never two reports at once");
    assert!(most["default"] >= 1);
}

/// A consumer with one runner, measured first on `measured_ms` jobs (none:
/// it has timed no attempt), is held by a job of unknown length while five
/// more arrive: a second consumer, idle, runs them all, and the first holds
/// none of them.
fn busy_consumer_leaves_jobs_to_an_idle_one(measured_ms: &[u64]) {
    let mut setup = Setup::new();
    setup.concurrency = 1;
    setup.prefetch = 100;
    for (i, ms) in measured_ms.iter().enumerate() {
        setup
            .store
            .push(probe(&format!("m{i}"), "default", "measure", false, *ms));
    }
    let busy = setup.start_as("busy");
    let measured = measured_ms.len() as u64;
    assert!(busy.wait_for(PATIENCE, |s| s.succeeded == measured));
    setup.store.push(probe("long", "default", "long", true, 0));
    assert!(busy.wait_for(PATIENCE, |s| s.claimed == measured + 1));
    for i in 0..5 {
        setup
            .store
            .push(probe(&format!("f{i}"), "default", "fast", false, 0));
    }
    let idle = setup.start_as("idle");
    assert!(idle.wait_for(PATIENCE, |s| s.succeeded == 5));
    assert_eq!(busy.stats().claimed, measured + 1);
    setup.gate.open();
    assert!(busy.wait_for(PATIENCE, |s| s.succeeded == measured + 1));
}

#[test]
fn a_job_of_unknown_length_is_not_held_while_another_consumer_is_idle() {
    busy_consumer_leaves_jobs_to_an_idle_one(&[]);
}

#[test]
fn jobs_measured_long_are_held_no_more_than_the_free_runners() {
    // Measured at 50 ms an attempt, a job expected to wait more than the
    // 20 ms horizon is not held.
    busy_consumer_leaves_jobs_to_an_idle_one(&[50, 50]);
}

#[test]
fn jobs_measured_short_are_fetched_in_batches() {
    let mut setup = Setup::new();
    setup.concurrency = 1;
    setup.prefetch = 100;
    setup.store.push(flaky("warm", 0, false));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 1));
    // Now measured at microseconds: the next fetch takes many at once.
    let texts: Vec<String> = (0..50).map(|i| flaky(&format!("b{i}"), 0, false)).collect();
    {
        let mut inner = setup.store.lock();
        for text in texts {
            let entry = format!("batch-{}", inner.ready.len());
            inner.ready.push_back(("default".into(), entry, text));
        }
    }
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 51));
    let records = setup.store.lock().records.len();
    assert!(records < 40, "{records} records for 51 jobs: not batched");
}

#[test]
fn a_result_and_follow_ups_are_kept_only_from_the_attempt_that_succeeds() {
    let setup = Setup::new();
    let payload = r#"{"fail_first":2,"children":3}"#;
    setup.store.push(envelope("parent", "parent", payload));
    let consumer = setup.start();
    // The parent, then its three children (one of them through the delayed set).
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 4 && s.in_flight == 0));
    assert_eq!(consumer.stats().retried, 2);
    let inner = setup.store.lock();
    let (result, children) = &inner.results["parent"];
    assert_eq!(result.as_deref(), Some(r#"{"attempt":3}"#));
    // Two failed attempts enqueued three each: none of them went out.
    assert_eq!(children.len(), 3);
    let done: Vec<&String> = inner
        .statuses
        .iter()
        .filter(|(_, states)| states.last().map(String::as_str) == Some("done"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(done.len(), 4, "the parent and its three children: {done:?}");
    for child in children {
        let states = &inner.statuses[child];
        assert_eq!(
            (states[0].as_str(), states.last().unwrap().as_str()),
            ("queued", "done")
        );
    }
}

#[test]
fn a_result_over_the_limit_is_refused() {
    // JobSettings' default limit is 64 KiB; a result over it fails the job.
    #[derive(Serialize, Deserialize)]
    struct Huge;
    impl Job for Huge {
        const NAME: &'static str = "huge";
        fn run(self, job: &JobContext) -> JobResult {
            let big = "x".repeat(crate::DEFAULT_MAX_RESULT_BYTES);
            match job.set_result(&big) {
                Err(crate::ResultError::TooLarge { bytes, limit }) => {
                    assert_eq!(
                        (bytes, limit),
                        (big.len() + 2, crate::DEFAULT_MAX_RESULT_BYTES)
                    );
                    Err(crate::GiveUp::new("too large").into())
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let scope = crate::jobs::scope::JobScope {
        ids: Arc::default(),
        max_attempts: 3,
        max_result_bytes: crate::DEFAULT_MAX_RESULT_BYTES,
        served: None,
        cancels: Arc::default(),
    };
    let text = envelope("huge", "huge", "null");
    let context = JobContext::for_attempt(
        &Envelope::from_json_text(&text).unwrap(),
        1,
        Arc::default(),
        Arc::new(scope),
    );
    assert!(Huge.run(&context).is_err());
    assert!(context.take_outbox().result.is_none());
}

#[test]
fn a_job_asked_to_stop_before_it_starts_never_starts() {
    let mut setup = Setup::new();
    setup.concurrency = 1;
    // One runner, held by a gated job; a second job waits behind it.
    setup.store.push(envelope("gated", "gated", "null"));
    let consumer = setup.start();
    assert!(setup.store.wait_for(PATIENCE, |s| s.held.len() == 1));
    setup.store.push(flaky("behind", 0, false));
    {
        let mut inner = setup.store.lock();
        inner.cancels = (1, vec!["behind".into()]);
    }
    // The consumer has read the request (within CANCELS_EVERY).
    assert!(setup.store.wait_for(PATIENCE, |s| s.cancels_read == 1));
    setup.gate.open();
    assert!(consumer.wait_for(PATIENCE, |s| s.cancelled == 1 && s.succeeded == 1));
    let inner = setup.store.lock();
    assert_eq!(inner.cancelled, [("behind".to_owned(), None)]);
    assert_eq!(inner.statuses["behind"], ["cancelled"], "never started");
    assert!(
        inner.cancels.1.is_empty(),
        "the request is gone with the job"
    );
}
