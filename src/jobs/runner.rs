//! The job runner: attempts on the background pool, retries waiting in a
//! timer (never on a pool thread), dead letters, statuses and counters.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::broker::{Broker, Refused};
use super::status::{IdSource, JobState, JobStatus, StatusStore, DEFAULT_JOB_STATUS_CAPACITY};
use super::{EnqueueError, Envelope, Job, JobContext, Registry};
use crate::pool::{current_slot, PoolSubmitter};
use crate::state::StateMap;
use crate::stats::Counters;
use crate::stats::TaskInfo;
use crate::tasks::{BackgroundTask, Batch, TaskName};

/// Indexes into [`OUTCOMES`](super::OUTCOMES).
const ENQUEUED: usize = 0;
const SUCCEEDED: usize = 1;
const RETRIED: usize = 2;
const DEAD: usize = 3;
const OVERDUE: usize = 4;
const DISCARDED: usize = 5;

/// How jobs are retried and remembered, set on the
/// [`ServerBuilder`](crate::ServerBuilder) (or the
/// [`BackgroundPoolBuilder`](crate::BackgroundPoolBuilder)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobSettings {
    /// Attempts in all for a job that does not set its own: 5.
    pub max_attempts: u32,
    /// The delay before the first retry: 100 ms; it doubles at each retry.
    pub backoff: Duration,
    /// The longest delay between two attempts: 60 s.
    pub max_backoff: Duration,
    /// Job statuses kept: 10,000, the oldest evicted first.
    pub status_capacity: usize,
    /// Dead jobs kept: 1,000, the oldest evicted first.
    pub dead_letter_capacity: usize,
    /// How jobs run: normally, or, for tests, at once or not at all.
    pub mode: JobMode,
    /// How long an attempt may run before it is reported overdue and its
    /// thread replaced: 30 s (a job may set its own, `Job::TIMEOUT`).
    pub timeout: Duration,
    /// Replacement threads the pool may add for threads held by overdue
    /// jobs: 4. Rust cannot stop a running thread, so an overdue job keeps
    /// its thread until it returns; its replacement keeps the pool's
    /// capacity, and the held thread ends once it is free.
    pub max_replacement_threads: usize,
}

/// How enqueued jobs run. The modes other than `Normal` are for tests, in
/// the spirit of Celery's eager mode and Laravel's `Queue::fake()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobMode {
    /// After the response, on the pool, with retries in the timer.
    #[default]
    Normal,
    /// At once, in the handler, before the response: every attempt in a row,
    /// without the backoff. A test sees the job's effects as soon as it has
    /// the response.
    Eager,
    /// Not at all: [`Jobs::captured`] lists what was enqueued (name,
    /// payload, id), so a test asserts "this request enqueued `send_email`
    /// for ada". Captured jobs have no status and are not counted.
    Capture,
}

impl Default for JobSettings {
    fn default() -> JobSettings {
        JobSettings {
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(60),
            status_capacity: DEFAULT_JOB_STATUS_CAPACITY,
            dead_letter_capacity: 1000,
            mode: JobMode::Normal,
            timeout: Duration::from_secs(30),
            max_replacement_threads: 4,
        }
    }
}

/// A job that will not run again, as the dead-letter list keeps it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The job as it was last attempted.
    pub envelope: Envelope,
    /// The last attempt's error.
    pub error: String,
}

/// The jobs of a server: their statuses and dead letters. Take it as a
/// handler argument (it is an extractor) to read them.
#[derive(Clone)]
pub struct Jobs {
    runner: Arc<JobRunner>,
}

impl Jobs {
    pub(crate) fn new(runner: Arc<JobRunner>) -> Jobs {
        Jobs { runner }
    }

    /// What is known of job `id` (statuses are kept for the last
    /// [`status_capacity`](JobSettings::status_capacity) jobs; with Redis,
    /// in Redis). `None` too when Redis cannot be asked (logged); see
    /// [`lookup`](Self::lookup).
    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.lookup(id).unwrap_or_else(|error| {
            log::warn!("job {id}: its status could not be read: {error}");
            None
        })
    }

    /// [`status`](Self::status), telling "unknown" (`Ok(None)`) from "could
    /// not ask" (`Err`, the broker's error).
    pub fn lookup(&self, id: &str) -> Result<Option<JobStatus>, String> {
        match &self.runner.broker {
            Some(broker) => broker.status(id),
            None => Ok(self.runner.statuses.get(id)),
        }
    }

    /// The dead jobs kept, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.runner.dead).iter().cloned().collect()
    }

    /// Each registered job type's counts by outcome, as
    /// `afterward_jobs_by_name_total{job, outcome}` in the Prometheus text
    /// format (appended by [`metrics_handler`](crate::metrics_handler)).
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let name = "afterward_jobs_by_name_total";
        let mut out = self
            .runner
            .broker
            .as_ref()
            .map(|broker| broker.to_prometheus())
            .unwrap_or_default();
        let _ = write!(
            out,
            "# HELP {name} Jobs by type and outcome (enqueued, succeeded, retried, dead, overdue, discarded).\n# TYPE {name} counter\n"
        );
        for (job, counts) in self.runner.registry.counts() {
            // A label value escapes backslashes, quotes and line feeds.
            let job = job
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            for (outcome, n) in super::OUTCOMES.iter().zip(counts) {
                let _ = writeln!(out, "{name}{{job=\"{job}\",outcome=\"{outcome}\"}} {n}");
            }
        }
        out
    }

    /// The jobs enqueued so far in [`JobMode::Capture`], in order.
    pub fn captured(&self) -> Vec<Envelope> {
        lock(&self.runner.captured).clone()
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// Runs jobs on the pool and keeps their statuses.
pub(crate) struct JobRunner {
    registry: Registry,
    /// The app's state, for [`JobContext::state`].
    state: Arc<StateMap>,
    settings: JobSettings,
    counters: Arc<Counters>,
    statuses: StatusStore,
    dead: Mutex<VecDeque<DeadLetter>>,
    /// Jobs enqueued in [`JobMode::Capture`].
    captured: Mutex<Vec<Envelope>>,
    pool: PoolSubmitter,
    timer: Arc<Timer>,
    ids: IdSource,
    /// Where jobs go instead of the pool, when they run elsewhere.
    broker: Option<Arc<dyn Broker>>,
    /// Where jobs go that would be dropped at the shutdown deadline (mixed
    /// mode: they run here, and go to Redis only then).
    spill: Option<Arc<dyn Broker>>,
    /// The shutdown deadline has passed: jobs discarded now are spilled.
    closing: std::sync::atomic::AtomicBool,
    /// A spill failed: the rest are discarded without waiting on Redis again.
    spill_failed: std::sync::atomic::AtomicBool,
}

/// Jobs waiting for their time (a retry's backoff, a delayed enqueue), by due
/// time, and the deadlines of the attempts running now.
struct Timer {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    waiting: BinaryHeap<Reverse<Waiting>>,
    next_seq: u64,
    /// The attempts running now (a few: one per pool thread at most, plus
    /// eager ones), each with its deadline. They are kept here, not in the
    /// heap, so that an attempt that ends in time leaves nothing behind.
    running: Vec<Running>,
    /// When the timer thread will look again.
    wake: Wake,
    closed: bool,
}

struct Waiting {
    due: Instant,
    seq: u64,
    /// A job to run again (a retry, a delayed enqueue).
    envelope: Envelope,
}

/// When the timer thread looks at its state again.
#[derive(Default, Clone, Copy)]
enum Wake {
    /// It is awake, and reads the state again before it sleeps.
    #[default]
    Awake,
    /// It sleeps until then.
    At(Instant),
    /// It sleeps until woken: nothing is due.
    Never,
}

/// An attempt running now.
#[derive(Clone)]
struct Running {
    id: Arc<str>,
    name: Cow<'static, str>,
    attempt: u32,
    deadline: Instant,
    /// The pool slot of the thread running it, if a pool thread.
    slot: Option<usize>,
    overdue: bool,
}

impl TimerState {
    /// The earliest time the timer thread has something to do.
    fn next_due(&self) -> Option<Instant> {
        let retry = self.waiting.peek().map(|Reverse(next)| next.due);
        let deadline = self
            .running
            .iter()
            .filter(|r| !r.overdue)
            .map(|r| r.deadline)
            .min();
        retry.into_iter().chain(deadline).min()
    }

    /// Whether something due at `due` comes before the timer looks again.
    fn wakes_too_late_for(&self, due: Instant) -> bool {
        match self.wake {
            Wake::Awake => false,
            Wake::At(wake) => due < wake,
            Wake::Never => true,
        }
    }
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl JobRunner {
    /// Starts the runner and its timer thread (`afterward-jobs-timer`), which
    /// hands due jobs to the pool through `pool`.
    pub(crate) fn start(
        registry: Registry,
        state: StateMap,
        settings: JobSettings,
        counters: Arc<Counters>,
        pool: PoolSubmitter,
        broker: Option<Arc<dyn Broker>>,
        spill: Option<Arc<dyn Broker>>,
    ) -> std::io::Result<Arc<JobRunner>> {
        let timer = Arc::new(Timer {
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        let ids = IdSource::default();
        let runner = Arc::new(JobRunner {
            registry,
            state: Arc::new(state),
            statuses: StatusStore::new(settings.status_capacity, ids.origin()),
            settings,
            counters,
            dead: Mutex::default(),
            captured: Mutex::default(),
            pool: pool.clone(),
            timer: timer.clone(),
            ids,
            broker,
            spill,
            closing: Default::default(),
            spill_failed: Default::default(),
        });
        let weak = Arc::downgrade(&runner);
        thread::Builder::new()
            .name("afterward-jobs-timer".into())
            .spawn(move || run_timer(&timer, &weak, &pool))?;
        Ok(runner)
    }

    /// Checks, serializes and registers a new job; counts it as enqueued.
    pub(crate) fn envelope<J: Job>(
        &self,
        job: &J,
        request_id: &Arc<str>,
    ) -> Result<Envelope, EnqueueError> {
        let spec = self
            .registry
            .get(J::NAME)
            .ok_or(EnqueueError::Unregistered(J::NAME))?;
        let payload = serde_json::to_string(job).map_err(|source| EnqueueError::Payload {
            name: J::NAME,
            source,
        })?;
        let envelope = Envelope {
            id: self.ids.next(),
            name: Cow::Borrowed(J::NAME),
            payload,
            attempts: 0,
            max_attempts: spec.max_attempts(self.settings.max_attempts),
            enqueued_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            request_id: request_id.clone(),
            last_error: None,
        };
        if self.settings.mode != JobMode::Capture {
            // A captured job is not in the system: no status, not counted.
            // A job for the broker gets its status there, as it is sent.
            if self.broker.is_none() {
                self.statuses.insert(&envelope.id, envelope.name.clone());
            }
            self.counters.job_enqueued();
            spec.counts.bump(ENQUEUED);
        }
        Ok(envelope)
    }

    /// The task that runs the job's next attempt; a discarded task discards
    /// the job, counted.
    /// Whether jobs go to a broker instead of the pool.
    pub(crate) fn has_broker(&self) -> bool {
        self.broker.is_some()
    }

    /// Sends the job to the broker now, on this thread (a durable enqueue).
    pub(crate) fn send_now(
        &self,
        envelope: &Envelope,
        delay: Option<Duration>,
    ) -> Result<(), String> {
        match &self.broker {
            Some(broker) => {
                let sent = broker.send_now(envelope, delay);
                match &sent {
                    Ok(()) => self.counters.jobs_sent_now(),
                    Err(error) => self.discarded(envelope, error),
                }
                sent
            }
            None => Err("no broker is configured".into()),
        }
    }

    /// The task that hands the job to the broker after the response.
    pub(crate) fn send_task(
        self: &Arc<Self>,
        envelope: Envelope,
        delay: Option<Duration>,
    ) -> BackgroundTask {
        BackgroundTask::job(JobStep {
            runner: self.clone(),
            envelope,
            delay,
            send: true,
        })
    }

    pub(crate) fn attempt_task(self: &Arc<Self>, envelope: Envelope) -> BackgroundTask {
        BackgroundTask::job(JobStep {
            runner: self.clone(),
            envelope,
            delay: None,
            send: false,
        })
    }

    /// The task that puts the job in the timer, due `delay` from when it runs.
    pub(crate) fn delayed_task(
        self: &Arc<Self>,
        envelope: Envelope,
        delay: Duration,
    ) -> BackgroundTask {
        BackgroundTask::job(JobStep {
            runner: self.clone(),
            envelope,
            delay: Some(delay),
            send: false,
        })
    }

    /// Counts `outcome` for the job type `name` (the metrics' `job` label).
    fn count(&self, name: &str, outcome: usize) {
        if let Some(spec) = self.registry.get(name) {
            spec.counts.bump(outcome);
        }
    }

    /// A job counted buffered that the broker refused, having stopped: it
    /// is discarded, counted, and out of the buffer count.
    fn broker_stopped(&self, envelope: &Envelope) {
        self.discarded(envelope, "the broker's sender has stopped");
        self.counters.jobs_unbuffered(1, false);
    }

    /// A job that will not run here: its status says so, and it is counted.
    fn count_discarded(&self, id: &str, name: &str) {
        self.statuses.update(id, |s| s.state = JobState::Discarded);
        self.counters.job_discarded();
        self.count(name, DISCARDED);
    }

    /// A job that will not run, and that no task stands for (it waited in
    /// the timer or the broker's buffer, or its broker refused it): counted,
    /// logged as a task not run is, and kept for a shutdown's report.
    fn discarded(&self, envelope: &Envelope, reason: &str) {
        self.count_discarded(&envelope.id, &envelope.name);
        let info = job_info(envelope, false);
        self.counters.not_run(log::Level::Warn, &info, reason);
    }

    /// Runs one attempt, on a pool thread; what follows (done, a retry in
    /// the timer, dead) is decided here.
    fn run_attempt(&self, envelope: Envelope) {
        if let Some((envelope, delay)) = self.attempt(envelope) {
            self.wait(envelope, Instant::now() + delay);
        }
    }

    /// Runs one attempt and records how it ended; `Some` is a job to retry
    /// after the delay (already counted and shown as retrying).
    fn attempt(&self, mut envelope: Envelope) -> Option<(Envelope, Duration)> {
        envelope.attempts += 1;
        let attempts = envelope.attempts;
        self.statuses.update(&envelope.id, |s| {
            s.state = JobState::Running;
            s.attempts = attempts;
        });
        let Some(spec) = self.registry.get(&envelope.name) else {
            let error = format!("no job named {:?} is registered", envelope.name);
            self.dead(envelope, error);
            return None;
        };
        let context = JobContext::for_attempt(&envelope, attempts, self.state.clone());
        let timeout = spec.timeout(self.settings.timeout);
        self.started(Running {
            id: envelope.id.clone(),
            name: envelope.name.clone(),
            attempt: attempts,
            deadline: Instant::now() + timeout,
            slot: current_slot(),
            overdue: false,
        });
        let outcome = spec.attempt(&envelope.payload, &context);
        let late = self.ended(&envelope.id, attempts);
        if late {
            log::warn!(
                "job {} ({}) attempt {attempts} returned after its deadline: {}",
                envelope.name,
                envelope.id,
                if outcome.is_ok() {
                    "it succeeded"
                } else {
                    "it failed"
                }
            );
        }
        match outcome {
            Ok(()) => {
                // Done: an earlier attempt's error is history, not status.
                self.statuses.update(&envelope.id, |s| {
                    s.state = JobState::Done;
                    s.error = None;
                });
                self.counters.job_succeeded();
                spec.counts.bump(SUCCEEDED);
                None
            }
            Err(failure) if failure.retry && attempts < envelope.max_attempts => {
                let delay = self.backoff(&envelope);
                log::warn!(
                    "job {} ({}) attempt {attempts} of {} failed: {}; retrying in {delay:?}",
                    envelope.name,
                    envelope.id,
                    envelope.max_attempts,
                    failure.message
                );
                let next_run = SystemTime::now() + delay;
                self.statuses.update(&envelope.id, |s| {
                    s.state = JobState::Retrying { next_run };
                    s.error = Some(failure.message.clone());
                });
                self.counters.job_retried();
                spec.counts.bump(RETRIED);
                Some((envelope, delay))
            }
            Err(failure) => {
                self.dead(envelope, failure.message);
                None
            }
        }
    }

    /// Eager mode: every attempt now, on this thread, without the backoff.
    pub(crate) fn run_now(&self, envelope: Envelope) {
        let mut next = Some(envelope);
        while let Some(envelope) = next.take() {
            next = self.attempt(envelope).map(|(envelope, _)| envelope);
        }
    }

    /// Capture mode: kept for the test to read, never run.
    pub(crate) fn capture(&self, envelope: Envelope) {
        lock(&self.captured).push(envelope);
    }

    pub(crate) fn mode(&self) -> JobMode {
        self.settings.mode
    }

    /// Exponential backoff with jitter: `backoff × 2^(attempts-1)`, capped,
    /// then a random point in its upper half.
    fn backoff(&self, envelope: &Envelope) -> Duration {
        backoff(&self.settings, envelope)
    }

    fn dead(&self, envelope: Envelope, error: String) {
        log::error!(
            "job {} ({}) is dead after {} attempts: {error}",
            envelope.name,
            envelope.id,
            envelope.attempts
        );
        self.statuses.update(&envelope.id, |s| {
            s.state = JobState::Dead;
            s.error = Some(error.clone());
        });
        self.counters.job_dead();
        self.count(&envelope.name, DEAD);
        let mut dead = lock(&self.dead);
        if self.settings.dead_letter_capacity > 0 {
            while dead.len() >= self.settings.dead_letter_capacity {
                dead.pop_front();
            }
            dead.push_back(DeadLetter { envelope, error });
        }
    }

    /// Puts the job in the timer until `due`; it counts as delayed (and the
    /// pool as not idle) until then.
    fn wait(&self, envelope: Envelope, due: Instant) {
        if lock(&self.timer.state).closed {
            return self.discarded(&envelope, "the pool has shut down");
        }
        self.counters.job_delayed(1);
        self.schedule(due, envelope);
    }

    fn schedule(&self, due: Instant, envelope: Envelope) {
        let mut state = lock(&self.timer.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        let wake = state.wakes_too_late_for(due);
        state.waiting.push(Reverse(Waiting { due, seq, envelope }));
        if wake {
            self.timer.changed.notify_one();
        }
    }

    /// An attempt starts: its deadline goes to the timer, which is woken
    /// only if it would look too late (with one timeout for all, deadlines
    /// come in order, so it rarely is).
    fn started(&self, attempt: Running) {
        let mut state = lock(&self.timer.state);
        let wake = state.wakes_too_late_for(attempt.deadline);
        state.running.push(attempt);
        if wake {
            self.timer.changed.notify_one();
        }
    }

    /// An attempt has returned; whether it had gone overdue.
    fn ended(&self, id: &Arc<str>, attempt: u32) -> bool {
        let mut state = lock(&self.timer.state);
        let position = state
            .running
            .iter()
            .position(|r| Arc::ptr_eq(&r.id, id) && r.attempt == attempt);
        position.is_some_and(|i| state.running.swap_remove(i).overdue)
    }

    /// An attempt is still running past its deadline: logged, counted, and
    /// its pool thread gets a replacement.
    fn overdue(&self, attempt: &Running) {
        self.counters.job_overdue();
        self.count(&attempt.name, OVERDUE);
        let replaced = attempt.slot.is_some_and(|slot| self.pool.replace(slot));
        log::warn!(
            "job {} ({}) attempt {} is overdue: still running past its deadline; {}",
            attempt.name,
            attempt.id,
            attempt.attempt,
            if replaced {
                "a replacement thread keeps the pool's capacity"
            } else {
                "no replacement thread (none left, or not on a pool thread)"
            }
        );
    }

    /// Shutdown: the timer stops; jobs still waiting will not run, and are
    /// discarded, counted and listed.
    /// The shutdown deadline has passed: from now on, a job that would be
    /// dropped is spilled to Redis, in mixed mode.
    pub(crate) fn deadline_passed(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends a job that would be dropped at the shutdown deadline to Redis,
    /// due `delay` from now; whether it went (counted as sent).
    fn try_spill(&self, envelope: &Envelope, delay: Option<Duration>) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(spill) = &self.spill else {
            return false;
        };
        if !self.closing.load(SeqCst) || self.spill_failed.load(SeqCst) {
            return false;
        }
        match spill.send_now(envelope, delay) {
            Ok(()) => {
                self.counters.jobs_sent_now();
                log::warn!(
                    "job {} ({}) spilled to Redis at the shutdown deadline, for a worker to run",
                    envelope.name,
                    envelope.id
                );
                true
            }
            Err(error) => {
                self.spill_failed.store(true, SeqCst);
                log::error!("jobs could not be spilled to Redis ({error}): they are discarded");
                false
            }
        }
    }

    /// Shutdown: the timer stops, and the broker's sender; the jobs still
    /// waiting in either will not run here: each is discarded (logged,
    /// counted, kept for the shutdown's report) or, in mixed mode, spilled.
    pub(crate) fn close(&self) {
        self.deadline_passed();
        let waiting = {
            let mut state = lock(&self.timer.state);
            state.closed = true;
            self.timer.changed.notify_all();
            std::mem::take(&mut state.waiting)
        };
        let unsent = self.broker.as_ref().map(|b| b.close()).unwrap_or_default();
        let unsent_n = unsent.len() as u64;
        for envelope in &unsent {
            self.discarded(
                envelope,
                "the shutdown deadline passed before the broker had it",
            );
        }
        if unsent_n > 0 {
            self.counters.jobs_unbuffered(unsent_n, false);
        }
        let now = Instant::now();
        for Reverse(waiting) in waiting {
            let envelope = waiting.envelope;
            let delay = waiting.due.saturating_duration_since(now);
            if self.try_spill(&envelope, Some(delay)) {
                let info = job_info(&envelope, true);
                self.counters.not_run(log::Level::Warn, &info, "spilled");
            } else {
                self.discarded(&envelope, "the shutdown deadline passed while it waited");
            }
            self.counters.job_delayed(-1);
        }
    }
}

impl Drop for JobRunner {
    /// A pool dropped without a shutdown: the timer stops, and the jobs still
    /// waiting in it are discarded, logged and counted, not lost silently.
    fn drop(&mut self) {
        self.close();
    }
}

/// A job as a shutdown report lists it.
fn job_info(envelope: &Envelope, spilled: bool) -> TaskInfo {
    TaskInfo {
        name: format!("job {} ({})", envelope.name, envelope.id),
        request_id: envelope.request_id.to_string(),
        spilled,
    }
}

/// Exponential backoff with jitter, after `envelope`'s attempts so far:
/// `backoff × 2^(attempts-1)`, capped at `max_backoff`, then a random point
/// in its upper half. The same policy in-process and on Redis workers.
pub(crate) fn backoff(settings: &JobSettings, envelope: &Envelope) -> Duration {
    let exponent = envelope.attempts.saturating_sub(1).min(30);
    let full = settings
        .backoff
        .saturating_mul(1 << exponent)
        .min(settings.max_backoff);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(envelope.id.as_bytes());
    hasher.write_u32(envelope.attempts);
    let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
    full.mul_f64(0.5 + fraction / 2.0)
}

/// A job's next step, as a pool task: an attempt, or (with a delay) its
/// wait in the timer.
pub(crate) struct JobStep {
    runner: Arc<JobRunner>,
    envelope: Envelope,
    delay: Option<Duration>,
    /// Hand it to the broker (with its delay) instead of running it here.
    send: bool,
}

impl JobStep {
    pub(crate) fn name(&self) -> TaskName {
        TaskName::Job {
            name: self.envelope.name.clone(),
            id: self.envelope.id.clone(),
        }
    }

    /// Whether this step hands the job to a broker.
    pub(crate) fn sends(&self) -> bool {
        self.send && self.runner.broker.is_some()
    }

    /// A send step, done on this thread if the broker's buffer takes it
    /// without waiting; otherwise the step comes back (the buffer is full,
    /// or this is not a send step). A broker that has stopped discards the
    /// job, counted, as [`run`](Self::run) would.
    pub(crate) fn try_send(self) -> Option<JobStep> {
        let Some(broker) = self.runner.broker.as_ref().filter(|_| self.send) else {
            return Some(self);
        };
        // Counted before the broker has it: its sender may count it sent at once.
        self.runner.counters.job_buffered();
        match broker.try_send(self.envelope, self.delay) {
            Ok(()) => None,
            Err(Refused::Full(envelope)) => {
                self.runner.counters.jobs_unbuffered(1, false);
                Some(JobStep { envelope, ..self })
            }
            Err(Refused::Stopped(envelope)) => {
                self.runner.broker_stopped(&envelope);
                None
            }
        }
    }

    /// Runs on a pool thread (catches the job's panics itself).
    pub(crate) fn run(self) {
        let JobStep {
            runner,
            envelope,
            delay,
            send,
        } = self;
        match (&runner.broker, delay) {
            (Some(broker), _) if send => {
                runner.counters.job_buffered();
                if let Err(envelope) = broker.send(envelope, delay) {
                    runner.broker_stopped(&envelope);
                }
            }
            (_, None) => runner.run_attempt(envelope),
            (_, Some(delay)) => runner.wait(envelope, Instant::now() + delay),
        }
    }

    /// Its task was discarded: so is the job, counted (its task logs it and
    /// is listed); or, at the shutdown deadline in mixed mode, it is spilled
    /// to Redis (`true`).
    pub(crate) fn discarded(self) -> bool {
        let JobStep {
            runner,
            envelope,
            delay,
            send,
        } = self;
        if !send && runner.try_spill(&envelope, delay) {
            return true;
        }
        runner.count_discarded(&envelope.id, &envelope.name);
        false
    }
}

/// The timer thread: hands each job to the pool when it is due, and reports
/// attempts still running past their deadlines.
fn run_timer(timer: &Timer, runner: &Weak<JobRunner>, pool: &PoolSubmitter) {
    let mut state = lock(&timer.state);
    loop {
        if state.closed {
            return;
        }
        let now = Instant::now();
        let overdue: Vec<Running> = state
            .running
            .iter_mut()
            .filter(|r| !r.overdue && r.deadline <= now)
            .map(|r| {
                r.overdue = true;
                r.clone()
            })
            .collect();
        if !overdue.is_empty() {
            drop(state);
            if let Some(runner) = runner.upgrade() {
                overdue.iter().for_each(|attempt| runner.overdue(attempt));
            }
            state = lock(&timer.state);
            continue;
        }
        let due = state
            .waiting
            .peek()
            .is_some_and(|Reverse(next)| next.due <= now);
        if due {
            let Some(Reverse(due)) = state.waiting.pop() else {
                continue;
            };
            drop(state);
            if let Some(runner) = runner.upgrade() {
                let request_id = due.envelope.request_id.clone();
                let task = runner.attempt_task(due.envelope);
                // Sealed (counted as scheduled) before it stops counting
                // as delayed: the pool is never seen idle in between.
                let batch = Batch::seal(&request_id, vec![task], &runner.counters);
                runner.counters.job_delayed(-1);
                pool.submit(batch);
            }
            state = lock(&timer.state);
            continue;
        }
        state.wake = state.next_due().map_or(Wake::Never, Wake::At);
        state = match state.wake {
            Wake::At(wake) => {
                let left = wake.saturating_duration_since(now);
                timer
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            _ => timer.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
        };
        state.wake = Wake::Awake;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackgroundPool, JobResult};
    use std::sync::mpsc;

    /// What the jobs below share with the test: a gate each, and a line
    /// to say they have started.
    struct Gates {
        gates: Mutex<Vec<mpsc::Receiver<()>>>,
        started: Mutex<mpsc::Sender<()>>,
    }

    /// Says it has started, then waits until its gate opens (or is dropped).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Hold;

    impl Job for Hold {
        const NAME: &'static str = "hold";
        const TIMEOUT: Option<Duration> = Some(Duration::from_secs(3600));
        fn run(self, context: &JobContext) -> JobResult {
            let shared = context.state::<Arc<Gates>>().unwrap();
            let gate = lock(&shared.gates).remove(0);
            lock(&shared.started).send(()).unwrap();
            let _ = gate.recv();
            Ok(())
        }
    }

    /// `Hold`, with a deadline that passes while it waits.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Stuck;

    impl Job for Stuck {
        const NAME: &'static str = "stuck";
        const TIMEOUT: Option<Duration> = Some(Duration::from_millis(50));
        fn run(self, context: &JobContext) -> JobResult {
            Hold.run(context)
        }
    }

    /// A pool of `workers`, and the senders opening `jobs` gates, in order.
    fn pool(
        workers: usize,
        jobs: usize,
    ) -> (BackgroundPool, Vec<mpsc::Sender<()>>, mpsc::Receiver<()>) {
        let (opens, gates) = (0..jobs).map(|_| mpsc::channel()).unzip();
        let (started, starts) = mpsc::channel();
        let mut state = StateMap::default();
        state.insert(Arc::new(Gates {
            gates: Mutex::new(gates),
            started: Mutex::new(started),
        }));
        let pool = BackgroundPool::builder()
            .workers(workers)
            .job::<Hold>()
            .job::<Stuck>()
            .jobs(Registry::default(), state)
            .build()
            .unwrap();
        (pool, opens, starts)
    }

    fn runner(pool: &BackgroundPool) -> Arc<JobRunner> {
        pool.jobs().unwrap().runner
    }

    /// What the timer holds: jobs waiting, attempts running.
    fn timer_entries(pool: &BackgroundPool) -> (usize, usize) {
        let runner = runner(pool);
        let state = lock(&runner.timer.state);
        (state.waiting.len(), state.running.len())
    }

    const GUARD: Duration = Duration::from_secs(30);

    #[test]
    fn an_attempt_that_ends_in_time_leaves_nothing_in_the_timer() {
        let (pool, opens, starts) = pool(2, 100);
        let tasks = pool.tasks("r1");
        (0..100).for_each(|_| drop(tasks.enqueue(Hold).unwrap()));
        pool.dispatch(&tasks);
        starts.recv_timeout(GUARD).unwrap();
        // One attempt runs (a list runs on one thread), with its deadline.
        assert_eq!(timer_entries(&pool), (0, 1));
        drop(opens);
        assert!(pool.wait_idle(GUARD));
        assert_eq!(pool.stats().jobs_succeeded, 100);
        assert_eq!(timer_entries(&pool), (0, 0));
        pool.shutdown(GUARD);
    }

    #[test]
    fn a_short_deadline_is_seen_while_the_timer_waits_for_a_long_one() {
        let (pool, opens, starts) = pool(2, 2);
        let first = pool.tasks("r1");
        first.enqueue(Hold).unwrap();
        pool.dispatch(&first);
        starts.recv_timeout(GUARD).unwrap();
        // The timer now sleeps until Hold's deadline, an hour away.
        let second = pool.tasks("r2");
        second.enqueue(Stuck).unwrap();
        pool.dispatch(&second);
        let counters = runner(&pool).counters.clone();
        assert!(
            counters.wait_until(GUARD, |c| c.snapshot().jobs_overdue == 1),
            "the 50 ms deadline was not reported while the timer waited for the hour"
        );
        drop(opens);
        assert!(pool.wait_idle(GUARD));
        assert_eq!(pool.stats().jobs_succeeded, 2);
        pool.shutdown(GUARD);
    }
}
