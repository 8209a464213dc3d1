//! The job runner: attempts on the background pool, retries waiting in a
//! timer (never on a pool thread), dead letters, statuses and counters.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::status::{JobState, JobStatus, StatusStore, DEFAULT_JOB_STATUS_CAPACITY};
use super::{EnqueueError, Envelope, Failure, Job, JobContext, JobId, Registry};
use crate::pool::{current_slot, PoolSubmitter};
use crate::state::StateMap;
use crate::stats::Counters;
use crate::tasks::{panic_message, BackgroundTask, Batch, TaskInfo};

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
    /// [`status_capacity`](JobSettings::status_capacity) jobs).
    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.runner.statuses.get(id)
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
        let mut out = format!(
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
    /// The attempts running now, by job id: the attempt number, and whether
    /// it has gone overdue.
    running: Mutex<std::collections::HashMap<Arc<str>, (u32, bool)>>,
    pool: PoolSubmitter,
    timer: Arc<Timer>,
    ids: IdSource,
}

/// Jobs waiting for their time (a retry's backoff, a delayed enqueue), by due time.
struct Timer {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    waiting: BinaryHeap<Reverse<Waiting>>,
    next_seq: u64,
    closed: bool,
}

struct Waiting {
    due: Instant,
    seq: u64,
    what: Due,
}

/// What comes due in the timer.
enum Due {
    /// A job to run again (a retry, a delayed enqueue).
    Job(Envelope),
    /// The deadline of a running attempt.
    Deadline {
        id: Arc<str>,
        name: Cow<'static, str>,
        attempt: u32,
        /// The pool slot of the thread running it, if a pool thread.
        slot: Option<usize>,
    },
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
    ) -> std::io::Result<Arc<JobRunner>> {
        let timer = Arc::new(Timer {
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        let runner = Arc::new(JobRunner {
            registry,
            state: Arc::new(state),
            statuses: StatusStore::new(settings.status_capacity),
            settings,
            counters,
            dead: Mutex::default(),
            captured: Mutex::default(),
            running: Mutex::default(),
            pool: pool.clone(),
            timer: timer.clone(),
            ids: IdSource::default(),
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
            max_attempts: spec
                .max_attempts
                .unwrap_or(self.settings.max_attempts)
                .max(1),
            enqueued_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            request_id: request_id.clone(),
        };
        if self.settings.mode != JobMode::Capture {
            // A captured job is not in the system: no status, not counted.
            self.statuses.insert(&envelope.id, envelope.name.clone());
            self.counters.job_enqueued();
            spec.counts.bump(ENQUEUED);
        }
        Ok(envelope)
    }

    /// The task that runs the job's next attempt; a discarded task discards
    /// the job, counted.
    pub(crate) fn attempt_task(self: &Arc<Self>, envelope: Envelope) -> BackgroundTask {
        let name = task_name(&envelope);
        let (runner, hook) = (self.clone(), self.clone());
        let (id, job) = (envelope.id.clone(), envelope.name.clone());
        BackgroundTask::new(move || runner.run_attempt(envelope))
            .named(name)
            .on_discard(move |reason| hook.discarded(&id, &job, reason))
    }

    /// The task that puts the job in the timer, due `delay` from when it runs.
    pub(crate) fn delayed_task(
        self: &Arc<Self>,
        envelope: Envelope,
        delay: Duration,
    ) -> BackgroundTask {
        let name = task_name(&envelope);
        let (runner, hook) = (self.clone(), self.clone());
        let (id, job) = (envelope.id.clone(), envelope.name.clone());
        BackgroundTask::new(move || runner.wait(envelope, Instant::now() + delay))
            .named(name)
            .on_discard(move |reason| hook.discarded(&id, &job, reason))
    }

    /// Counts `outcome` for the job type `name` (the metrics' `job` label).
    fn count(&self, name: &str, outcome: usize) {
        if let Some(spec) = self.registry.get(name) {
            spec.counts.bump(outcome);
        }
    }

    fn discarded(&self, id: &str, name: &str, reason: &str) {
        self.statuses.update(id, |s| s.state = JobState::Discarded);
        self.counters.job_discarded();
        self.count(name, DISCARDED);
        log::warn!("job {id} discarded: {reason}");
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
        let context = JobContext {
            id: JobId::new(envelope.id.clone()),
            attempt: attempts,
            max_attempts: envelope.max_attempts,
            request_id: envelope.request_id.to_string(),
            state: self.state.clone(),
        };
        lock(&self.running).insert(envelope.id.clone(), (attempts, false));
        let timeout = spec.timeout.unwrap_or(self.settings.timeout);
        self.schedule(
            Instant::now() + timeout,
            Due::Deadline {
                id: envelope.id.clone(),
                name: envelope.name.clone(),
                attempt: attempts,
                slot: current_slot(),
            },
        );
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| (spec.run)(&envelope.payload, &context)))
                .unwrap_or_else(|panic| {
                    Err(Failure {
                        message: format!("panicked: {}", panic_message(panic.as_ref())),
                        retry: true,
                    })
                });
        let late = lock(&self.running)
            .remove(&envelope.id)
            .is_some_and(|(_, overdue)| overdue);
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
                self.statuses
                    .update(&envelope.id, |s| s.state = JobState::Done);
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
        let exponent = envelope.attempts.saturating_sub(1).min(30);
        let full = self
            .settings
            .backoff
            .saturating_mul(1 << exponent)
            .min(self.settings.max_backoff);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write(envelope.id.as_bytes());
        hasher.write_u32(envelope.attempts);
        let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
        full.mul_f64(0.5 + fraction / 2.0)
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
            return self.discarded(&envelope.id, &envelope.name, "the pool has shut down");
        }
        self.counters.job_delayed(1);
        self.schedule(due, Due::Job(envelope));
    }

    fn schedule(&self, due: Instant, what: Due) {
        let mut state = lock(&self.timer.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        // The timer thread sleeps until the earliest entry: wake it only
        // when this one comes first (most deadlines come after).
        let first = state
            .waiting
            .peek()
            .is_none_or(|Reverse(next)| due < next.due);
        state.waiting.push(Reverse(Waiting { due, seq, what }));
        if first {
            self.timer.changed.notify_one();
        }
    }

    /// An attempt's deadline has come: if it still runs, it is overdue
    /// (logged, counted) and its pool thread gets a replacement.
    fn deadline(&self, id: &str, name: &str, attempt: u32, slot: Option<usize>) {
        {
            let mut running = lock(&self.running);
            match running.get_mut(id) {
                Some((running_attempt, overdue)) if *running_attempt == attempt => *overdue = true,
                _ => return,
            }
        }
        self.counters.job_overdue();
        self.count(name, OVERDUE);
        let replaced = slot.is_some_and(|slot| self.pool.replace(slot));
        log::warn!(
            "job {id} attempt {attempt} is overdue: still running past its deadline; {}",
            if replaced {
                "a replacement thread keeps the pool's capacity"
            } else {
                "no replacement thread (none left, or not on a pool thread)"
            }
        );
    }

    /// Shutdown: the timer stops; jobs still waiting will not run, and are
    /// discarded, counted and listed.
    pub(crate) fn close(&self) -> Vec<TaskInfo> {
        let waiting = {
            let mut state = lock(&self.timer.state);
            state.closed = true;
            self.timer.changed.notify_all();
            std::mem::take(&mut state.waiting)
        };
        waiting
            .into_iter()
            .filter_map(|Reverse(waiting)| match waiting.what {
                Due::Job(envelope) => Some(envelope),
                Due::Deadline { .. } => None,
            })
            .map(|envelope| {
                self.discarded(
                    &envelope.id,
                    &envelope.name,
                    "the shutdown deadline passed while it waited",
                );
                self.counters.job_delayed(-1);
                TaskInfo {
                    name: task_name(&envelope),
                    request_id: envelope.request_id.to_string(),
                }
            })
            .collect()
    }
}

impl Drop for JobRunner {
    /// A pool dropped without a shutdown: the timer stops, and the jobs still
    /// waiting in it are discarded, logged and counted, not lost silently.
    fn drop(&mut self) {
        self.close();
    }
}

fn task_name(envelope: &Envelope) -> String {
    format!("job {} ({})", envelope.name, envelope.id)
}

/// The timer thread: hands each job to the pool when it is due.
fn run_timer(timer: &Timer, runner: &Weak<JobRunner>, pool: &PoolSubmitter) {
    let mut state = lock(&timer.state);
    loop {
        if state.closed {
            return;
        }
        let now = Instant::now();
        match state.waiting.peek() {
            None => state = timer.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(Reverse(next)) if next.due > now => {
                let left = next.due - now;
                state = timer
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Some(_) => {
                let Some(Reverse(due)) = state.waiting.pop() else {
                    continue;
                };
                drop(state);
                if let Some(runner) = runner.upgrade() {
                    match due.what {
                        Due::Job(envelope) => {
                            let request_id = envelope.request_id.clone();
                            let task = runner.attempt_task(envelope);
                            // Sealed (counted as scheduled) before it stops counting
                            // as delayed: the pool is never seen idle in between.
                            let batch = Batch::seal(&request_id, vec![task], &runner.counters);
                            runner.counters.job_delayed(-1);
                            pool.submit(batch);
                        }
                        Due::Deadline {
                            id,
                            name,
                            attempt,
                            slot,
                        } => runner.deadline(&id, &name, attempt, slot),
                    }
                }
                state = lock(&timer.state);
            }
        }
    }
}

/// Job ids: 64 unguessable bits (the standard library's randomly keyed
/// hasher over a counter), then the counter, which makes them unique.
#[derive(Default)]
struct IdSource {
    keys: std::collections::hash_map::RandomState,
    next: AtomicU64,
}

impl IdSource {
    fn next(&self) -> Arc<str> {
        use std::io::Write;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut hasher = self.keys.build_hasher();
        hasher.write_u64(n);
        // Written on the stack, then one allocation: the shared id.
        let mut buf = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cursor, "{:016x}{n:x}", hasher.finish());
        let len = cursor.position() as usize;
        Arc::from(std::str::from_utf8(&buf[..len]).unwrap_or_default())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
