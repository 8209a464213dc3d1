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

fn envelope(id: &str, name: &str, payload: &str) -> String {
    Envelope {
        id: id.into(),
        name: name.to_owned().into(),
        payload: payload.to_owned(),
        attempts: 0,
        max_attempts: 3,
        enqueued_at_ms: now_ms(),
        request_id: "test".into(),
        last_error: None,
    }
    .to_json_text()
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
    visibility: Duration,
    concurrency: usize,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            store: Arc::default(),
            gate: Arc::default(),
            visibility: Duration::from_secs(60),
            concurrency: 2,
        }
    }

    fn start(&self) -> Consumer {
        let mut registry = Registry::default();
        registry.register::<Flaky>();
        registry.register::<Gated>();
        let mut state = StateMap::default();
        state.insert(self.gate.clone());
        let settings = JobSettings {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            ..JobSettings::default()
        };
        let backend = MemoryBackend {
            store: self.store.clone(),
            name: "here".into(),
        };
        Consumer::start(
            backend,
            ConsumerOptions {
                registry,
                state,
                settings,
                concurrency: self.concurrency,
                prefetch: 10,
                visibility: self.visibility,
                batch: 10,
                name: "here".into(),
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
    assert_eq!(announced, [("slow".into(), "gated".into(), 1, None)]);
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
    setup.store.push(envelope("busy", "gated", "null"));
    setup.store.push(flaky("waiting", 0, false));
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.claimed == 2));
    let report = consumer.stop(Duration::ZERO);
    // The running job and the one queued behind it: neither acknowledged.
    assert_eq!(report.left_pending, 2);
    assert!(!report.is_complete());
    assert_eq!(setup.store.lock().held.len(), 2);
    setup.gate.open();
}

#[test]
fn a_store_that_fails_is_retried_and_nothing_is_lost_or_recorded_twice() {
    let setup = Setup::new();
    setup.store.lock().fail_calls = 3;
    for i in 0..3 {
        setup.store.push(flaky(&format!("j{i}"), 0, false));
    }
    let consumer = setup.start();
    assert!(consumer.wait_for(PATIENCE, |s| s.succeeded == 3 && s.in_flight == 0));
    let stats = consumer.stats();
    assert_eq!(stats.redis_errors, 3);
    let inner = setup.store.lock();
    for i in 0..3 {
        assert_eq!(inner.statuses[&format!("j{i}")], ["done"]);
    }
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
fn settings_out_of_range_are_refused() {
    let store = Arc::new(MemoryStore::default());
    let options = |concurrency, visibility, registry| ConsumerOptions {
        registry,
        state: StateMap::default(),
        settings: JobSettings::default(),
        concurrency,
        prefetch: 1,
        visibility,
        batch: 1,
        name: "x".into(),
    };
    let backend = || MemoryBackend {
        store: store.clone(),
        name: "x".into(),
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
