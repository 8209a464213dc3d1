//! The worker: a consumer in the group, running jobs on its threads, with
//! one thread for everything it says to Redis (reads, acks, retries, dead
//! letters, reclaims), so that all of it goes in batches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis::streams::{StreamAutoClaimReply, StreamId};
use redis::Value;

use super::{now_ms, pending_count, Keys, RedisConfig, StatusWrite, StatusWrites};
use crate::error::Error;
use crate::jobs::{backoff, Envelope, Failure, Job, JobContext, JobSettings, Registry};
use crate::routing::App;
use crate::state::StateMap;

/// Moves the jobs now due from the delayed set to the stream, atomically
/// (several workers may run it at once; a job moves once).
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'envelope', job)
  redis.call('ZREM', KEYS[1], job)
end
return #due
";

/// Builds a [`Worker`].
///
/// | setting | default |
/// |---|---|
/// | [`concurrency`](Self::concurrency) | the available cores, at least 2 |
/// | [`prefetch`](Self::prefetch) | 100 jobs held at most (at least `concurrency`) |
/// | [`visibility_timeout`](Self::visibility_timeout) | 60 s |
/// | [`job_settings`](Self::job_settings) | [`JobSettings::default`] (5 attempts, 100 ms backoff doubling to 60 s, 30 s timeout) |
/// | [`consumer`](Self::consumer) | `HOST-PID` |
pub struct WorkerBuilder {
    config: RedisConfig,
    registry: Registry,
    state: StateMap,
    concurrency: usize,
    prefetch: usize,
    visibility_timeout: Duration,
    settings: JobSettings,
    consumer: String,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Registers the job type `J`.
    pub fn job<J: Job>(mut self) -> WorkerBuilder {
        self.registry.register::<J>();
        self
    }

    /// Takes `app`'s job types and state ([`App::job`], [`App::state`]): the
    /// worker runs the jobs the web server enqueues, with the state they see
    /// there.
    pub fn app(mut self, app: &App) -> WorkerBuilder {
        self.registry.merge(app.job_registry());
        self.state = app.state_map().clone();
        self
    }

    /// Threads running jobs at once.
    pub fn concurrency(mut self, n: usize) -> WorkerBuilder {
        self.concurrency = n;
        self
    }

    /// Jobs the worker holds at most, read and not finished (never fewer
    /// than [`concurrency`](Self::concurrency)): reading many at once is
    /// what makes short jobs fast, but a job held waits for this worker's
    /// threads even when another worker is idle. For jobs of seconds, set it
    /// near the concurrency (Celery calls this the prefetch).
    pub fn prefetch(mut self, n: usize) -> WorkerBuilder {
        self.prefetch = n;
        self
    }

    /// How long a job read by a worker may go without news (the worker
    /// renews it while the job runs) before another worker takes it over:
    /// the time to notice a crashed or stalled worker.
    pub fn visibility_timeout(mut self, timeout: Duration) -> WorkerBuilder {
        self.visibility_timeout = timeout;
        self
    }

    /// Attempts, backoff and the attempt deadline.
    pub fn job_settings(mut self, settings: JobSettings) -> WorkerBuilder {
        self.settings = settings;
        self
    }

    /// This worker's name in the consumer group (unique per process).
    pub fn consumer(mut self, name: impl Into<String>) -> WorkerBuilder {
        self.consumer = name.into();
        self
    }

    /// Starts the worker's threads: `afterward-worker-io` and
    /// `afterward-worker-N`. Redis need not be up yet.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a setting out of range or no job registered;
    /// [`Error::Io`] when a thread cannot be started.
    pub fn start(self) -> Result<Worker, Error> {
        self.config.check()?;
        if self.concurrency == 0 {
            return Err(Error::Config(
                "worker concurrency must be above zero".into(),
            ));
        }
        if self.visibility_timeout < Duration::from_millis(100) {
            return Err(Error::Config(
                "the visibility timeout must be at least 100 ms".into(),
            ));
        }
        if self.registry.is_empty() {
            return Err(Error::Config("the worker registers no job".into()));
        }
        let shared = Arc::new(Shared::default());
        let capacity = self.prefetch.max(self.concurrency);
        let (jobs, to_run) = crossbeam_channel::bounded::<Delivery>(capacity);
        let (finished, results) = crossbeam_channel::unbounded::<Vec<Finished>>();
        let registry = Arc::new(self.registry);
        let state = Arc::new(self.state);
        let slots: Slots = (0..self.concurrency).map(|_| Mutex::new(None)).collect();
        let mut runners = Vec::with_capacity(self.concurrency);
        for index in 0..self.concurrency {
            let runner = Runner {
                registry: registry.clone(),
                state: state.clone(),
                shared: shared.clone(),
                slots: slots.clone(),
                index,
                default_timeout: self.settings.timeout,
            };
            let (to_run, finished) = (to_run.clone(), finished.clone());
            runners.push(
                thread::Builder::new()
                    .name(format!("afterward-worker-{index}"))
                    .spawn(move || runner.run(&to_run, &finished))?,
            );
        }
        drop(finished);
        let io = IoLoop {
            keys: self.config.keys(),
            config: self.config,
            consumer: self.consumer,
            capacity,
            visibility: self.visibility_timeout,
            settings: self.settings,
            slots,
            shared: shared.clone(),
        };
        let io = thread::Builder::new()
            .name("afterward-worker-io".into())
            .spawn(move || io.run(&jobs, &results))?;
        Ok(Worker {
            shared,
            io: Mutex::new(Some(io)),
            runners: Mutex::new(runners),
        })
    }
}

/// Runs jobs from Redis (see [`crate::redis`]): in a binary of the user's,
/// which registers the job types the web server enqueues — all of them:
/// every worker of a prefix reads every job, and a job of a type it does not
/// know is a dead letter at once.
///
/// ```no_run
/// # use afterward::{App, Job, JobContext, JobResult};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail;
/// # impl Job for SendEmail { const NAME: &'static str = "send_email";
/// #     fn run(self, _: &JobContext) -> JobResult { Ok(()) } }
/// use afterward::redis::{RedisConfig, Worker};
/// use std::time::Duration;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379")?;
/// let worker = Worker::builder(config).job::<SendEmail>().concurrency(8).start()?;
/// // … until SIGTERM, then:
/// let report = worker.stop(Duration::from_secs(30));
/// assert!(report.is_complete());
/// # Ok::<(), afterward::Error>(())
/// ```
pub struct Worker {
    shared: Arc<Shared>,
    io: Mutex<Option<JoinHandle<WorkerReport>>>,
    runners: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What a worker has done, as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Jobs read from the stream, new.
    pub claimed: u64,
    /// Jobs taken over from another consumer that held them past the
    /// visibility timeout (each may run a second time: a duplicate).
    pub reclaimed: u64,
    /// Jobs whose attempt succeeded (acknowledged and deleted).
    pub succeeded: u64,
    /// Failed attempts sent back to wait for a retry.
    pub retried: u64,
    /// Jobs whose attempts ran out, moved to the dead letters.
    pub dead: u64,
    /// Attempts still running past their deadline (reported, not stopped).
    pub overdue: u64,
    /// Calls to Redis that failed (each retried).
    pub redis_errors: u64,
    /// Jobs this worker holds now: read, not yet acknowledged.
    pub in_flight: u64,
    /// Jobs moved from the delayed set to the stream by this worker.
    pub promoted: u64,
    /// Jobs read and not acknowledged, by every worker of the group (Redis's
    /// `XPENDING`), as of the last look (every second).
    pub group_pending: u64,
}

impl WorkerStats {
    /// The counters in the Prometheus text format (a worker's `/metrics`).
    pub fn to_prometheus(&self) -> String {
        use crate::metrics::metric;
        let mut out = String::new();
        let outcomes = [
            ("outcome=\"claimed\"", self.claimed),
            ("outcome=\"reclaimed\"", self.reclaimed),
            ("outcome=\"succeeded\"", self.succeeded),
            ("outcome=\"retried\"", self.retried),
            ("outcome=\"dead\"", self.dead),
            ("outcome=\"overdue\"", self.overdue),
            ("outcome=\"promoted\"", self.promoted),
        ];
        metric(
            &mut out,
            "afterward_worker_jobs_total",
            "counter",
            "Jobs by what this worker did with them (claimed: read new; reclaimed: taken over from a silent worker, may run twice; promoted: moved from the delayed set when due).",
            &outcomes,
        );
        metric(
            &mut out,
            "afterward_worker_redis_errors_total",
            "counter",
            "Calls to Redis that failed (each retried).",
            &[("", self.redis_errors)],
        );
        metric(
            &mut out,
            "afterward_worker_jobs_in_flight",
            "gauge",
            "Jobs this worker holds: read, not yet acknowledged.",
            &[("", self.in_flight)],
        );
        metric(
            &mut out,
            "afterward_worker_group_pending",
            "gauge",
            "Jobs read and not acknowledged by every worker of the group (XPENDING).",
            &[("", self.group_pending)],
        );
        out
    }
}

#[derive(Default)]
struct Shared {
    stats: Mutex<WorkerStats>,
    changed: Condvar,
    stopping: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut WorkerStats)) {
        change(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }
}

/// How a worker's stop went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// The counters at the end.
    pub stats: WorkerStats,
    /// Jobs read and not finished by the deadline: left unacknowledged, for
    /// another worker to take over after the visibility timeout.
    pub left_pending: u64,
}

impl WorkerReport {
    /// Whether every job the worker held was finished.
    pub fn is_complete(&self) -> bool {
        self.left_pending == 0
    }
}

impl Worker {
    /// A worker of the jobs in `config`'s Redis.
    pub fn builder(config: RedisConfig) -> WorkerBuilder {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "worker".into());
        WorkerBuilder {
            config,
            registry: Registry::default(),
            state: StateMap::default(),
            concurrency: cores.max(2),
            prefetch: 100,
            visibility_timeout: Duration::from_secs(60),
            settings: JobSettings::default(),
            consumer: format!("{host}-{}", std::process::id()),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> WorkerStats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until `condition` holds for the counters, or `timeout` has
    /// passed; returns whether it held. For tests and health checks.
    pub fn wait_for(&self, timeout: Duration, condition: impl Fn(&WorkerStats) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut stats = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if condition(&stats) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stats = self
                .shared
                .changed
                .wait_timeout(stats, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops gracefully: reads no more jobs, lets the running ones finish
    /// until `timeout`, acknowledges what finished, and leaves the rest
    /// pending for other workers. Jobs still running at the deadline keep
    /// their threads until they return (Rust cannot stop a thread); their
    /// outcome is not recorded, so they run again elsewhere.
    pub fn stop(&self, timeout: Duration) -> WorkerReport {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + timeout);
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let io = self.io.lock().unwrap_or_else(|e| e.into_inner()).take();
        let report = io
            .and_then(|io| io.join().ok())
            .unwrap_or_else(|| WorkerReport {
                stats: self.stats(),
                left_pending: 0,
            });
        // The job channel is closed: idle runners end now, busy ones when
        // their job returns (not waited for past the deadline).
        let runners = std::mem::take(&mut *self.runners.lock().unwrap_or_else(|e| e.into_inner()));
        for runner in runners {
            if runner.is_finished() {
                let _ = runner.join();
            }
        }
        report
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.io.lock().map(|io| io.is_some()).unwrap_or(false) {
            self.stop(Duration::ZERO);
        }
    }
}

/// A stream entry: its id and its `envelope` field's text (empty when it
/// has none).
struct Entry {
    id: String,
    envelope: String,
}

impl From<StreamId> for Entry {
    fn from(entry: StreamId) -> Entry {
        let envelope = match entry.map.get("envelope") {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        Entry {
            id: entry.id,
            envelope,
        }
    }
}

/// The entries of an `XREADGROUP` reply on one stream, taken apart by hand
/// (the `redis` crate's `StreamReadReply` copies every field into a map of
/// its own, a third of the I/O thread's time at full speed):
/// `[[stream, [[id, [field, value, …]], …]]]`, or nil when nothing came.
fn read_entries(reply: Value) -> Vec<Entry> {
    fn text(value: Value) -> Option<String> {
        match value {
            Value::BulkString(bytes) => Some(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            Value::SimpleString(text) => Some(text),
            _ => None,
        }
    }
    fn items(value: Value) -> Vec<Value> {
        match value {
            Value::Array(items) | Value::Set(items) => items,
            // An entry's fields, in RESP3.
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        }
    }
    // Each stream's entries: RESP2 has `[name, entries]` pairs, RESP3 a map.
    let streams: Vec<Value> = match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, ids)| ids).collect(),
        other => items(other)
            .into_iter()
            .filter_map(|stream| items(stream).into_iter().nth(1))
            .collect(),
    };
    let mut entries = Vec::new();
    for ids in streams {
        for entry in items(ids) {
            let mut parts = items(entry).into_iter();
            let Some(id) = parts.next().and_then(text) else {
                continue;
            };
            let mut fields = parts.next().map(items).unwrap_or_default().into_iter();
            let mut envelope = String::new();
            while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
                if matches!(&field, Value::BulkString(b) if b == b"envelope") {
                    envelope = text(value).unwrap_or_default();
                }
            }
            entries.push(Entry { id, envelope });
        }
    }
    entries
}

/// A job read from the stream, for a runner thread, which reads its
/// envelope (off the I/O thread: reading envelopes was half its time).
struct Delivery {
    entry: String,
    text: String,
}

/// A runner's result, for the I/O thread to record.
struct Finished {
    entry: String,
    outcome: Outcome,
}

enum Outcome {
    /// Not run (the worker is stopping): it stays pending.
    NotRun,
    /// The entry is not a job: a dead letter.
    Unreadable { text: String, error: String },
    /// An attempt ended.
    Ran {
        envelope: Envelope,
        result: Result<(), Failure>,
    },
}

/// The job a runner thread is running, for the I/O thread to announce
/// (`running`) and to watch for its deadline.
struct Running {
    entry: String,
    id: Arc<str>,
    name: std::borrow::Cow<'static, str>,
    /// The attempt running.
    attempt: u32,
    last_error: Option<String>,
    started: Instant,
    deadline: Instant,
    /// Whether its `running` status is written: only for a job still
    /// running [`ANNOUNCE_AFTER`] after it started (a short job goes from
    /// `queued` to its outcome, and costs Redis one status write, not two).
    announced: bool,
    overdue: bool,
}

/// One slot per runner thread: what it runs now. A runner empties its slot
/// before it hands the result over, so the I/O thread never announces a job
/// whose outcome it has recorded.
type Slots = Arc<[Mutex<Option<Running>>]>;

fn lock_slot(slot: &Mutex<Option<Running>>) -> std::sync::MutexGuard<'_, Option<Running>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// A runner thread: runs the jobs it is given, and sends their results in
/// batches (whenever no other job is waiting for it), so that the I/O thread
/// is woken once per batch rather than once per job.
struct Runner {
    registry: Arc<Registry>,
    state: Arc<StateMap>,
    shared: Arc<Shared>,
    slots: Slots,
    index: usize,
    default_timeout: Duration,
}

impl Runner {
    fn run(&self, to_run: &Receiver<Delivery>, finished: &Sender<Vec<Finished>>) {
        let mut results = Vec::new();
        while let Ok(first) = to_run.recv() {
            let mut next = Some(first);
            while let Some(delivery) = next {
                results.push(self.run_one(delivery));
                next = to_run.try_recv().ok();
            }
            if finished.send(std::mem::take(&mut results)).is_err() {
                return;
            }
        }
    }

    /// Runs one job (unless the worker is stopping: then it goes back unrun).
    fn run_one(&self, delivery: Delivery) -> Finished {
        let Delivery { entry, text } = delivery;
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Finished {
                entry,
                outcome: Outcome::NotRun,
            };
        }
        let mut envelope = match Envelope::from_json_text(&text) {
            Ok(envelope) => envelope,
            Err(error) => {
                return Finished {
                    entry,
                    outcome: Outcome::Unreadable { text, error },
                }
            }
        };
        envelope.attempts += 1;
        let spec = self.registry.get(&envelope.name);
        let timeout = spec.map_or(self.default_timeout, |spec| {
            spec.timeout(self.default_timeout)
        });
        let now = Instant::now();
        let slot = &self.slots[self.index];
        *lock_slot(slot) = Some(Running {
            entry: entry.clone(),
            id: envelope.id.clone(),
            name: envelope.name.clone(),
            attempt: envelope.attempts,
            last_error: envelope.last_error.clone(),
            started: now,
            deadline: now + timeout,
            announced: false,
            overdue: false,
        });
        let result = match spec {
            Some(spec) => {
                let context =
                    JobContext::for_attempt(&envelope, envelope.attempts, self.state.clone());
                spec.attempt(&envelope.payload, &context)
            }
            None => Err(Failure {
                message: format!(
                    "no job named {:?} is registered in this worker",
                    envelope.name
                ),
                retry: false,
            }),
        };
        *lock_slot(slot) = None;
        Finished {
            entry,
            outcome: Outcome::Ran { envelope, result },
        }
    }
}

/// The I/O thread: everything said to Redis.
struct IoLoop {
    config: RedisConfig,
    keys: Keys,
    consumer: String,
    capacity: usize,
    visibility: Duration,
    settings: JobSettings,
    slots: Slots,
    shared: Arc<Shared>,
}

/// What the I/O thread keeps between turns.
struct LoopState {
    /// The jobs held: read, not yet recorded, by stream entry id.
    held: HashSet<String>,
    /// Results not yet recorded.
    done: Vec<Finished>,
    /// When the oldest of them came.
    first_done: Option<Instant>,
    last_promote: Instant,
    last_reclaim: Instant,
    last_renew: Instant,
    reclaim_cursor: String,
    last_pending: Instant,
    /// Jobs handed back unrun (the worker is stopping): pending in Redis.
    not_run: u64,
}

impl LoopState {
    /// Takes the results there are, without waiting.
    fn collect(&mut self, results: &Receiver<Vec<Finished>>) {
        let before = self.done.len();
        self.done.extend(results.try_iter().flatten());
        if before == 0 && !self.done.is_empty() {
            self.first_done = Some(Instant::now());
        }
    }

    /// Waits up to `timeout` for a result, then takes those there are.
    fn wait(&mut self, results: &Receiver<Vec<Finished>>, timeout: Duration) {
        match results.recv_timeout(timeout) {
            Ok(finished) => {
                if self.done.is_empty() {
                    self.first_done = Some(Instant::now());
                }
                self.done.extend(finished);
                self.collect(results);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }
}

/// How long a job runs before its `running` status is written.
const ANNOUNCE_AFTER: Duration = Duration::from_millis(2);

impl IoLoop {
    fn run(self, jobs: &Sender<Delivery>, results: &Receiver<Vec<Finished>>) -> WorkerReport {
        let mut connection: Option<redis::Connection> = None;
        let mut state = LoopState {
            held: HashSet::new(),
            done: Vec::new(),
            first_done: None,
            last_promote: Instant::now() - Duration::from_secs(60),
            last_reclaim: Instant::now(),
            last_renew: Instant::now(),
            reclaim_cursor: "0-0".to_owned(),
            last_pending: Instant::now() - Duration::from_secs(60),
            not_run: 0,
        };
        let mut retry_delay = Duration::from_millis(50);
        loop {
            state.collect(results);
            let stopping = self.shared.stopping.load(Ordering::SeqCst);
            if connection.is_none() {
                match self.connect() {
                    Ok(c) => {
                        connection = Some(c);
                        retry_delay = Duration::from_millis(50);
                    }
                    Err(error) => {
                        self.failed(&error);
                        if stopping && self.past_deadline() {
                            break;
                        }
                        state.wait(results, retry_delay);
                        retry_delay = (retry_delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let con = connection.as_mut().expect("connected above");
            match self.step(con, jobs, results, &mut state, stopping) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    self.failed(&error);
                    connection = None;
                }
            }
        }
        // Stopped: what was not finished stays pending in Redis.
        let left = state.held.len() as u64 + state.not_run;
        if left > 0 {
            log::warn!(
                "worker {} stops with {left} jobs unfinished: left pending for other workers",
                self.consumer
            );
        }
        self.shared.update(|s| s.in_flight = 0);
        WorkerReport {
            stats: *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()),
            left_pending: left,
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let mut connection = self.config.connect()?;
        // The group is created on every connect: a Redis restarted without
        // its data has none, and reading would fail with NOGROUP forever.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(&self.keys.group)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut connection);
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
            _ => Ok(connection),
        }
    }

    fn failed(&self, error: &redis::RedisError) {
        log::warn!(
            "worker {}: Redis call failed ({error}); retrying",
            self.consumer
        );
        self.shared.update(|s| s.redis_errors += 1);
    }

    fn past_deadline(&self) -> bool {
        let deadline = *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        deadline.is_none_or(|d| Instant::now() >= d)
    }

    /// One turn of the loop; `Ok(false)` when the worker is done.
    ///
    /// Results are recorded, and jobs read, in batches of at least half the
    /// batch size when there is that much to do: one round trip per job
    /// would make Redis's latency the limit. A result waits at most 2 ms for
    /// others to join it.
    fn step(
        &self,
        con: &mut redis::Connection,
        jobs: &Sender<Delivery>,
        results: &Receiver<Vec<Finished>>,
        state: &mut LoopState,
        stopping: bool,
    ) -> redis::RedisResult<bool> {
        let half = (self.capacity.min(self.config.batch) / 2).max(1);
        let all_done = state.done.len() >= state.held.len();
        let waited = state
            .first_done
            .is_some_and(|first| first.elapsed() >= Duration::from_millis(2));
        if !state.done.is_empty() && (state.done.len() >= half || all_done || waited || stopping) {
            state.not_run += self.record(con, &state.done, &mut state.held)?;
            state.done.clear();
            state.first_done = None;
        }
        self.watch_deadlines();
        self.announce(con)?;
        if stopping {
            if state.held.is_empty() || self.past_deadline() {
                if !state.done.is_empty() {
                    state.not_run += self.record(con, &state.done, &mut state.held)?;
                    state.done.clear();
                }
                return Ok(false);
            }
            state.wait(results, Duration::from_millis(20));
            return Ok(true);
        }
        let now = Instant::now();
        if now.duration_since(state.last_promote) >= Duration::from_millis(50) {
            state.last_promote = now;
            let moved: u64 = redis::cmd("EVAL")
                .arg(PROMOTE)
                .arg(2)
                .arg(&self.keys.delayed)
                .arg(&self.keys.stream)
                .arg(now_ms())
                .arg(self.config.batch)
                .query(con)?;
            if moved > 0 {
                self.shared.update(|s| s.promoted += moved);
            }
        }
        if now.duration_since(state.last_pending) >= Duration::from_secs(1) {
            state.last_pending = now;
            let pending = pending_count(con, &self.keys)?;
            self.shared.update(|s| s.group_pending = pending);
        }
        if !state.held.is_empty() && now.duration_since(state.last_renew) >= self.visibility / 3 {
            state.last_renew = now;
            self.renew(con, &state.held)?;
        }
        let free = self.capacity.saturating_sub(state.held.len());
        if free > 0 && now.duration_since(state.last_reclaim) >= self.visibility / 2 {
            state.last_reclaim = now;
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.keys.stream)
                .arg(&self.keys.group)
                .arg(&self.consumer)
                .arg(self.visibility.as_millis() as u64)
                .arg(&state.reclaim_cursor)
                .arg("COUNT")
                .arg(free)
                .query(con)?;
            state.reclaim_cursor = reply.next_stream_id;
            if !reply.claimed.is_empty() {
                let n = reply.claimed.len() as u64;
                log::warn!(
                    "worker {}: took over {n} jobs held past the visibility timeout by another worker (they may run twice)",
                    self.consumer
                );
                self.shared.update(|s| s.reclaimed += n);
                let entries = reply.claimed.into_iter().map(Entry::from).collect();
                self.hand_out(entries, jobs, &mut state.held);
            }
        }
        let free = self.capacity.saturating_sub(state.held.len());
        if free < half && !state.held.is_empty() {
            // Enough to do: wait for results rather than read a few more.
            state.wait(results, Duration::from_millis(2));
            return Ok(true);
        }
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(&self.keys.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(free.min(self.config.batch));
        if state.held.is_empty() {
            // Nothing to acknowledge meanwhile: wait in Redis, briefly (the
            // delayed set and reclaims are looked at between waits).
            read.arg("BLOCK").arg(100);
        }
        read.arg("STREAMS").arg(&self.keys.stream).arg(">");
        let entries = read_entries(read.query(con)?);
        if entries.is_empty() {
            if !state.held.is_empty() {
                state.wait(results, Duration::from_millis(2));
            }
            return Ok(true);
        }
        let n = entries.len() as u64;
        self.shared.update(|s| s.claimed += n);
        self.hand_out(entries, jobs, &mut state.held);
        Ok(true)
    }

    /// Gives the entries to the runner threads, held until recorded.
    fn hand_out(&self, entries: Vec<Entry>, jobs: &Sender<Delivery>, held: &mut HashSet<String>) {
        for entry in entries {
            held.insert(entry.id.clone());
            // Room for it: `held` never exceeds the channel's capacity.
            let _ = jobs.send(Delivery {
                entry: entry.id,
                text: entry.envelope,
            });
        }
        let in_flight = held.len() as u64;
        self.shared.update(|s| s.in_flight = in_flight);
    }

    /// Adds a dead letter to `pipe`: the envelope's text and the error, in the
    /// dead stream, trimmed (only it ever is) to the dead-letter capacity.
    fn add_dead_letter(&self, pipe: &mut redis::Pipeline, envelope: &str, error: &str) {
        pipe.cmd("XADD")
            .arg(&self.keys.dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.dead_letter_capacity)
            .arg("*")
            .arg("envelope")
            .arg(envelope)
            .arg("error")
            .arg(error)
            .ignore();
    }

    /// Writes the `running` status of the jobs running for at least
    /// [`ANNOUNCE_AFTER`], in one pipeline.
    fn announce(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let mut statuses = StatusWrites::default();
        let mut announced = Vec::new();
        for slot in self.slots.iter() {
            let slot = lock_slot(slot);
            let Some(job) = slot.as_ref() else {
                continue;
            };
            if !job.announced && job.started.elapsed() >= ANNOUNCE_AFTER {
                let status = StatusWrite {
                    name: &job.name,
                    state: "running",
                    attempts: job.attempt,
                    error: job.last_error.as_deref(),
                    next_run_ms: None,
                };
                statuses.push(&self.keys, &job.id, &status);
                announced.push(job.entry.clone());
            }
        }
        if announced.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        statuses.add_to(&mut pipe, &self.config);
        pipe.query::<()>(con)?;
        for slot in self.slots.iter() {
            if let Some(job) = lock_slot(slot).as_mut() {
                if announced.contains(&job.entry) {
                    job.announced = true;
                }
            }
        }
        Ok(())
    }

    /// Resets the idle time of the jobs this worker runs, so that no other
    /// worker takes them over while they run. An entry another worker took
    /// recently (idle under a quarter of the timeout) is not taken back.
    fn renew(&self, con: &mut redis::Connection, held: &HashSet<String>) -> redis::RedisResult<()> {
        let mut claim = redis::cmd("XCLAIM");
        claim
            .arg(&self.keys.stream)
            .arg(&self.keys.group)
            .arg(&self.consumer)
            .arg((self.visibility / 4).as_millis() as u64);
        for entry in held {
            claim.arg(entry);
        }
        claim.arg("JUSTID");
        claim.query::<()>(con)
    }

    /// Reports the jobs running past their deadline, once each.
    fn watch_deadlines(&self) {
        let now = Instant::now();
        for slot in self.slots.iter() {
            let mut slot = lock_slot(slot);
            let Some(job) = slot.as_mut().filter(|j| !j.overdue && now >= j.deadline) else {
                continue;
            };
            job.overdue = true;
            log::warn!(
                "job {} ({}) attempt {} is overdue: still running after {:?}",
                job.name,
                job.id,
                job.attempt,
                now - job.started
            );
            drop(slot);
            self.shared.update(|s| s.overdue += 1);
        }
    }

    /// Records finished attempts, in one atomic transaction: each is
    /// acknowledged and deleted together with what follows it (done, a
    /// retry in the delayed set, or a dead letter). One `XACK` and one
    /// `XDEL` take the whole batch. Returns how many came back unrun.
    fn record(
        &self,
        con: &mut redis::Connection,
        done: &[Finished],
        held: &mut HashSet<String>,
    ) -> redis::RedisResult<u64> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let (mut succeeded, mut retried, mut dead) = (0, 0, 0);
        let mut ack = redis::cmd("XACK");
        ack.arg(&self.keys.stream).arg(&self.keys.group);
        let mut delete = redis::cmd("XDEL");
        delete.arg(&self.keys.stream);
        let mut finished_any = false;
        let mut statuses = StatusWrites::default();
        for finished in done {
            let (envelope, outcome) = match &finished.outcome {
                // Not run: it stays pending, for another worker.
                Outcome::NotRun => continue,
                Outcome::Unreadable { text, error } => {
                    dead += 1;
                    log::error!(
                        "stream entry {} is not a job ({error}): moved to the dead letters",
                        finished.entry
                    );
                    self.add_dead_letter(&mut pipe, text, error);
                    finished_any = true;
                    ack.arg(&finished.entry);
                    delete.arg(&finished.entry);
                    continue;
                }
                Outcome::Ran { envelope, result } => (envelope, result),
            };
            finished_any = true;
            ack.arg(&finished.entry);
            delete.arg(&finished.entry);
            let mut status = StatusWrite {
                name: &envelope.name,
                state: "done",
                attempts: envelope.attempts,
                error: envelope.last_error.as_deref(),
                next_run_ms: None,
            };
            match outcome {
                Ok(()) => {
                    // Done: an earlier attempt's error is history, not status.
                    status.error = None;
                    succeeded += 1;
                }
                Err(failure) if failure.retry && envelope.attempts < envelope.max_attempts => {
                    retried += 1;
                    let delay = backoff(&self.settings, envelope);
                    let due = now_ms() + delay.as_millis() as u64;
                    log::warn!(
                        "job {} ({}) attempt {} of {} failed: {}; retrying in {delay:?}",
                        envelope.name,
                        envelope.id,
                        envelope.attempts,
                        envelope.max_attempts,
                        failure.message
                    );
                    let retry = Envelope {
                        last_error: Some(failure.message.clone()),
                        ..envelope.clone()
                    };
                    pipe.cmd("ZADD")
                        .arg(&self.keys.delayed)
                        .arg(due)
                        .arg(retry.to_json_text())
                        .ignore();
                    status.state = "retrying";
                    status.error = Some(&failure.message);
                    status.next_run_ms = Some(due);
                }
                Err(failure) => {
                    dead += 1;
                    log::error!(
                        "job {} ({}) is dead after {} attempts: {}",
                        envelope.name,
                        envelope.id,
                        envelope.attempts,
                        failure.message
                    );
                    self.add_dead_letter(&mut pipe, &envelope.to_json_text(), &failure.message);
                    status.state = "dead";
                    status.error = Some(&failure.message);
                }
            }
            statuses.push(&self.keys, &envelope.id, &status);
        }
        statuses.add_to(&mut pipe, &self.config);
        if finished_any {
            pipe.add_command(ack).ignore();
            pipe.add_command(delete).ignore();
        }
        pipe.query::<()>(con)?;
        for finished in done {
            held.remove(&finished.entry);
        }
        let in_flight = held.len() as u64;
        self.shared.update(|s| {
            s.succeeded += succeeded;
            s.retried += retried;
            s.dead += dead;
            s.in_flight = in_flight;
        });
        Ok(done
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::NotRun))
            .count() as u64)
    }
}
