//! The background pool: named threads fed by a bounded channel of sealed task
//! lists ([`Batch`]es), with panic isolation and a shutdown that reports what
//! it could not run. [`BackgroundPool`] is public: the server runs on it, and
//! so can any other synchronous server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::Error;
use crate::jobs::broker::Broker;
use crate::jobs::{Job, JobRunner, JobSettings, Jobs, Registry};
use crate::state::StateMap;
use crate::stats::{Counters, Stats, TaskInfo};
use crate::tasks::{BackgroundTask, BackgroundTasks, Batch, TaskName};

/// The default number of queued request task lists: 1024.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// What happens to a request when the background queue is full.
///
/// Whatever the policy, no task is dropped: a task list that meets a full
/// queue after its handler ran is run or waited for, never lost.
///
/// Non-exhaustive: more policies may come; match with a wildcard arm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnFull {
    /// The request worker, having responded, waits for room in the queue.
    /// New requests wait for a free worker meanwhile (backpressure).
    #[default]
    Block,
    /// The request worker, having responded, runs the tasks itself, in
    /// order. Counted in [`Stats::ran_by_caller`](crate::Stats::ran_by_caller).
    CallerRuns,
    /// While the queue is full, new requests are refused with `503 Service
    /// Unavailable` and `Retry-After` before their handler runs (paths
    /// exempted with [`ServerBuilder::shed_exempt`](crate::ServerBuilder::shed_exempt)
    /// are still served). Counted in [`Stats::rejected`](crate::Stats::rejected).
    /// A request admitted just before the queue filled up waits for room, as
    /// with `Block`. (A [`BackgroundPool`] used on its own waits as with
    /// `Block`; its caller refuses requests while
    /// [`is_full`](BackgroundPool::is_full).)
    Shed,
}

/// What a graceful shutdown managed to do before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks that had not started by the deadline and never will.
    pub not_run: Vec<TaskInfo>,
    /// Jobs that had not run by the deadline and went to Redis instead, for
    /// a worker to run (`redis_spill`, feature `redis`).
    pub spilled: Vec<TaskInfo>,
    /// Tasks still running at the deadline, left to finish on their threads.
    pub still_running: Vec<TaskInfo>,
    /// Requests whose handler had not returned by the deadline (for a
    /// [`BackgroundPool`] on its own: task lists not yet dispatched). Tasks
    /// they add later are discarded, each logged and counted, but are not
    /// listed here.
    pub requests_in_flight: u64,
    /// The counters when the report was made.
    pub stats: Stats,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Whether every request finished and every task ran before the
    /// deadline (or, for a job spilled to Redis, is there for a worker).
    pub fn is_complete(&self) -> bool {
        self.not_run.is_empty() && self.still_running.is_empty() && self.requests_in_flight == 0
    }
}

/// Configures and builds a [`BackgroundPool`].
///
/// | setting | default |
/// |---|---|
/// | [`workers`](Self::workers) | the available cores, at least 2 |
/// | [`queue_capacity`](Self::queue_capacity) | [`DEFAULT_QUEUE_CAPACITY`] (1024) |
/// | [`on_full`](Self::on_full) | [`OnFull::Block`] |
#[derive(Clone)]
pub struct BackgroundPoolBuilder {
    workers: usize,
    queue_capacity: usize,
    on_full: OnFull,
    jobs: Registry,
    job_settings: JobSettings,
    /// What jobs see as the app's state.
    job_state: StateMap,
    /// Starts the broker jobs go to instead of the pool, if any.
    pub(crate) broker: Option<BrokerFactory>,
    /// Starts the broker jobs are spilled to at the shutdown deadline.
    pub(crate) spill: Option<BrokerFactory>,
}

/// Starts a broker, given the counters it reports to.
#[derive(Clone)]
pub(crate) struct BrokerFactory(pub(crate) Arc<StartBroker>);

type StartBroker = dyn Fn(Arc<Counters>) -> Result<Arc<dyn Broker>, Error> + Send + Sync;

impl std::fmt::Debug for BrokerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerFactory")
    }
}

impl std::fmt::Debug for BackgroundPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundPoolBuilder")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("on_full", &self.on_full)
            .field("job_settings", &self.job_settings)
            .finish_non_exhaustive()
    }
}

impl Default for BackgroundPoolBuilder {
    fn default() -> BackgroundPoolBuilder {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        BackgroundPoolBuilder {
            workers: cores.max(2),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            on_full: OnFull::Block,
            jobs: Registry::default(),
            job_settings: JobSettings::default(),
            job_state: StateMap::default(),
            broker: None,
            spill: None,
        }
    }
}

impl BackgroundPoolBuilder {
    /// Background worker threads (`afterward-bg-N`): how many task lists run at once.
    pub fn workers(mut self, n: usize) -> BackgroundPoolBuilder {
        self.workers = n;
        self
    }

    /// How many task lists may wait for a worker; see [`OnFull`] for what a
    /// full queue does.
    pub fn queue_capacity(mut self, n: usize) -> BackgroundPoolBuilder {
        self.queue_capacity = n;
        self
    }

    /// What [`dispatch`](BackgroundPool::dispatch) does when the queue is full.
    pub fn on_full(mut self, policy: OnFull) -> BackgroundPoolBuilder {
        self.on_full = policy;
        self
    }

    /// Registers the job type `J`, so that [`BackgroundTasks::enqueue`] can
    /// enqueue it (the server's pool takes the [`App`](crate::App)'s jobs).
    ///
    /// # Panics
    ///
    /// If another job type has the same name.
    pub fn job<J: Job>(mut self) -> BackgroundPoolBuilder {
        self.jobs.register::<J>();
        self
    }

    /// How jobs are retried and remembered; see [`JobSettings`].
    pub fn job_settings(mut self, settings: JobSettings) -> BackgroundPoolBuilder {
        self.job_settings = settings;
        self
    }

    /// Sends jobs to this broker instead of running them here.
    pub(crate) fn broker(mut self, broker: Option<BrokerFactory>) -> BackgroundPoolBuilder {
        self.broker = broker;
        self
    }

    /// Spills jobs to this broker at the shutdown deadline.
    pub(crate) fn spill(mut self, spill: Option<BrokerFactory>) -> BackgroundPoolBuilder {
        self.spill = spill;
        self
    }

    /// Adds `registry`'s jobs, and the state they see (the app's, for the
    /// server's pool).
    pub(crate) fn jobs(mut self, registry: Registry, state: StateMap) -> BackgroundPoolBuilder {
        self.jobs.merge(registry);
        self.job_state = state;
        self
    }

    /// Checks the settings and starts the worker threads.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero workers or a zero capacity; [`Error::Io`]
    /// when a thread cannot be started.
    pub fn build(self) -> Result<BackgroundPool, Error> {
        let counters = Arc::new(Counters::new(self.queue_capacity));
        self.build_with(counters)
    }

    /// Builds the pool on counters shared with a server.
    pub(crate) fn build_with(self, counters: Arc<Counters>) -> Result<BackgroundPool, Error> {
        if self.workers == 0 {
            return Err(Error::Config(
                "background_workers must be at least 1".into(),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(Error::Config("queue_capacity must be at least 1".into()));
        }
        BackgroundPool::start(self, counters)
    }
}

/// The background pool: worker threads running task lists after their
/// responses have been sent, on their own or under a [`Server`](crate::Server).
///
/// The server uses one of these; use one directly to give any synchronous
/// server (tiny_http, a hand-written loop) FastAPI's background tasks with
/// afterward's guarantees: a bounded queue with an [`OnFull`] policy, panic
/// isolation, counters ([`stats`](Self::stats)), [`wait_idle`](Self::wait_idle),
/// and a [`shutdown`](Self::shutdown) that drains within a deadline and
/// reports every task it could not run.
///
/// ```
/// use afterward::BackgroundPool;
/// use std::time::Duration;
///
/// let pool = BackgroundPool::builder().workers(2).build()?;
///
/// // For each request: a list, filled while handling it...
/// let tasks = pool.tasks("request-1");
/// tasks.add_task(|| println!("after the response"));
/// // ... respond to the client, and only then hand the list over.
/// pool.dispatch(&tasks);
///
/// let report = pool.shutdown(Duration::from_secs(30));
/// assert!(report.is_complete());
/// assert_eq!(report.stats.completed, 1);
/// # Ok::<(), afterward::Error>(())
/// ```
///
/// Cloning the pool is cheap: every clone is a handle to the same threads.
/// Dropping the last handle without [`shutdown`](Self::shutdown) lets the
/// threads finish what is queued and end, with no deadline and no report.
#[derive(Clone)]
pub struct BackgroundPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// The job runner, when jobs are registered.
    jobs: Option<Arc<JobRunner>>,
    sender: Sender<Delivery>,
    /// A receiver of our own, so that shutdown can empty the queue at its deadline.
    receiver: Receiver<Delivery>,
    state: Arc<PoolState>,
    on_full: OnFull,
    /// The worker threads; taken by the first shutdown.
    threads: Mutex<Option<Vec<JoinHandle<()>>>>,
}

/// A way for the job timer to hand batches to the pool without keeping it
/// alive (the pool owns the timer).
#[derive(Clone)]
pub(crate) struct PoolSubmitter(Weak<PoolInner>);

impl PoolSubmitter {
    /// Submits `batch`; if the pool is gone, dropping it discards its tasks,
    /// logged and counted.
    pub(crate) fn submit(&self, batch: Batch) {
        if let Some(inner) = self.0.upgrade() {
            BackgroundPool { inner }.submit(batch);
        }
    }

    /// The thread of slot `overdue` is held by an overdue job: start a
    /// replacement thread, so that the pool keeps its capacity; the held
    /// thread ends once its batch is done. Replacements are bounded; `false`
    /// when none is left (or the pool has shut down).
    pub(crate) fn replace(&self, overdue: usize) -> bool {
        let Some(inner) = self.0.upgrade() else {
            return false;
        };
        let mut threads = lock(&inner.threads);
        let Some(threads) = threads.as_mut() else {
            return false; // shutting down
        };
        let state = &inner.state;
        let Some(index) = lock(&state.free_slots).pop() else {
            return false;
        };
        let (receiver, state_for_thread) = (inner.receiver.clone(), state.clone());
        let spawned = thread::Builder::new()
            .name(format!("afterward-bg-{index}"))
            .spawn(move || work(index, &receiver, &state_for_thread));
        match spawned {
            Ok(thread) => {
                lock(&state.slots[overdue]).retire = true;
                threads.push(thread);
                true
            }
            Err(e) => {
                log::warn!("cannot start a replacement background thread: {e}");
                lock(&state.free_slots).push(index);
                false
            }
        }
    }
}

/// What the queue carries to the workers.
enum Delivery {
    /// One request's tasks, to run in order.
    Run(Batch),
    /// Shutdown: the worker that takes this ends. (A plain `recv` on one
    /// channel: selecting over a second, stop-only channel cost the request
    /// path about 15% of its CPU in the HTTP benchmark.)
    Stop,
}

/// What the worker threads share with the pool's handles.
struct PoolState {
    counters: Arc<Counters>,
    /// Set once shutdown is over: whatever is dispatched later is discarded.
    stopped: AtomicBool,
    /// Set at the shutdown deadline: from then on nothing more is started.
    abandoned: AtomicBool,
    /// Dropped when the pool stops or abandons its queue: a sender waiting
    /// for room in the queue gives up at once (`given_up` disconnects).
    abandon: Mutex<Option<Sender<()>>>,
    given_up: Receiver<()>,
    /// What each worker holds: the rest of its current batch and the running
    /// task. One per worker, then one per possible replacement thread.
    slots: Vec<Mutex<Slot>>,
    /// The slots no live thread uses: where a replacement thread starts.
    free_slots: Mutex<Vec<usize>>,
}

#[derive(Default)]
struct Slot {
    batch: Option<Batch>,
    running: Option<(TaskName, Arc<str>)>,
    /// A replacement took this thread's place (its job went overdue): it
    /// ends once its current batch is done.
    retire: bool,
}

thread_local! {
    /// The slot of the pool thread running this code, if it is one.
    static CURRENT_SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The slot of the pool worker thread this is called on, if any.
pub(crate) fn current_slot() -> Option<usize> {
    CURRENT_SLOT.with(std::cell::Cell::get)
}

impl BackgroundPool {
    /// A [`BackgroundPoolBuilder`] with the default settings.
    pub fn builder() -> BackgroundPoolBuilder {
        BackgroundPoolBuilder::default()
    }

    fn start(
        config: BackgroundPoolBuilder,
        counters: Arc<Counters>,
    ) -> Result<BackgroundPool, Error> {
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity);
        let (give_up, given_up) = crossbeam_channel::bounded(0);
        let state = Arc::new(PoolState {
            counters,
            stopped: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            abandon: Mutex::new(Some(give_up)),
            given_up,
            slots: (0..config.workers + config.job_settings.max_replacement_threads)
                .map(|_| Mutex::default())
                .collect(),
            free_slots: Mutex::new(
                (config.workers..config.workers + config.job_settings.max_replacement_threads)
                    .rev()
                    .collect(),
            ),
        });
        let mut threads = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let (receiver, state) = (receiver.clone(), state.clone());
            let spawned = thread::Builder::new()
                .name(format!("afterward-bg-{index}"))
                .spawn(move || work(index, &receiver, &state));
            match spawned {
                Ok(thread) => threads.push(thread),
                // Dropping `sender` on return ends the threads already started.
                Err(e) => return Err(Error::Io(e)),
            }
        }
        let mut runner_error = None;
        let inner = Arc::new_cyclic(|weak: &Weak<PoolInner>| {
            let jobs = if config.jobs.is_empty() {
                None
            } else {
                let submitter = PoolSubmitter(weak.clone());
                let (registry, settings) = (config.jobs.clone(), config.job_settings.clone());
                let job_state = config.job_state.clone();
                let counters = state.counters.clone();
                let start = |factory: &Option<BrokerFactory>| match factory {
                    Some(start) => (start.0)(counters.clone()).map(Some),
                    None => Ok(None),
                };
                let started = start(&config.broker).and_then(|broker| {
                    let spill = start(&config.spill)?;
                    let counters = counters.clone();
                    JobRunner::start(
                        registry, job_state, settings, counters, submitter, broker, spill,
                    )
                    .map_err(Error::Io)
                });
                match started {
                    Ok(runner) => Some(runner),
                    Err(e) => {
                        runner_error = Some(e);
                        None
                    }
                }
            };
            PoolInner {
                jobs,
                sender,
                receiver,
                state,
                on_full: config.on_full,
                threads: Mutex::new(Some(threads)),
            }
        });
        if let Some(e) = runner_error {
            return Err(e);
        }
        Ok(BackgroundPool { inner })
    }

    /// A new, empty task list for one request; `request_id` names it in logs
    /// and reports. Fill it while handling the request, then
    /// [`dispatch`](Self::dispatch) it once the response has been sent.
    ///
    /// Until it is dispatched (or dropped, which discards its tasks, logged
    /// and counted), the list keeps the pool from being idle.
    pub fn tasks(&self, request_id: &str) -> BackgroundTasks {
        self.task_list(Arc::from(request_id))
    }

    /// A new task list, able to enqueue this pool's jobs.
    pub(crate) fn task_list(&self, request_id: Arc<str>) -> BackgroundTasks {
        let tasks = BackgroundTasks::new(request_id, self.inner.state.counters.clone());
        match &self.inner.jobs {
            Some(runner) => tasks.with_jobs(runner.clone()),
            None => tasks,
        }
    }

    /// The jobs' statuses and dead letters, when jobs are registered.
    pub fn jobs(&self) -> Option<Jobs> {
        self.inner.jobs.clone().map(Jobs::new)
    }

    /// Hands a request's tasks to the pool: call it after the response has
    /// been sent. The list is sealed: tasks added to it later are discarded
    /// (logged and counted). When the queue is full it waits for room, or runs
    /// the tasks on this thread under [`OnFull::CallerRuns`]. After
    /// [`shutdown`](Self::shutdown) the tasks are discarded, logged and counted.
    pub fn dispatch(&self, tasks: &BackgroundTasks) {
        self.submit(tasks.seal(Vec::new()));
    }

    /// Hands a sealed batch to the workers, by the pool's [`OnFull`] policy.
    pub(crate) fn submit(&self, mut batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let state = &self.inner.state;
        if state.stopped.load(Ordering::SeqCst) {
            batch.discard("the background pool has shut down");
            return;
        }
        let sends_jobs = self.inner.jobs.as_ref().is_some_and(|r| r.has_broker());
        if sends_jobs && !state.abandoned.load(Ordering::SeqCst) {
            batch.send_jobs_now();
            if batch.is_empty() {
                return;
            }
        }
        batch.mark_queued();
        if state.abandoned.load(Ordering::SeqCst) {
            batch.discard(DEADLINE_PASSED);
            return;
        }
        let sender = &self.inner.sender;
        match self.inner.on_full {
            OnFull::CallerRuns => match sender.try_send(Delivery::Run(batch)) {
                Ok(()) => {}
                Err(TrySendError::Full(Delivery::Run(batch))) => {
                    state.counters.ran_by_caller(batch.len() as u64);
                    batch.run_all();
                }
                // Disconnected: the pool keeps a receiver, so this cannot
                // happen; were it to, dropping the batch discards its tasks,
                // logged and counted.
                Err(_) => {}
            },
            _ => send_blocking(sender, batch, state),
        }
    }

    /// Whether the queue is full right now (for a caller that sheds load).
    pub fn is_full(&self) -> bool {
        self.inner.sender.is_full()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.state.counters.snapshot()
    }

    /// Blocks until every task list has been dispatched and every task has
    /// finished (or been discarded), or until `timeout` has passed. Returns
    /// whether the pool became idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.inner.state.counters.wait_idle(timeout)
    }

    /// Shuts down gracefully: waits, until `timeout`, for the open task lists
    /// to be dispatched and for every task to run; then stops the threads.
    ///
    /// Whatever has not started by then is not run: the report lists it (and
    /// the tasks still running, which are left to finish on their own
    /// threads), each is logged, and the counters count it as discarded.
    /// Stop accepting requests first: lists made meanwhile keep the pool busy.
    /// A second call returns at once, with nothing listed.
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.shutdown_by(Instant::now() + timeout)
    }

    /// [`shutdown`](Self::shutdown) with an absolute deadline.
    pub(crate) fn shutdown_by(&self, deadline: Instant) -> ShutdownReport {
        let mut report = self.stop_by(deadline);
        self.finish_report(&mut report);
        report
    }

    /// Stops the pool by `deadline` (see [`shutdown`](Self::shutdown)) and
    /// reports, without logging the report: the server adds to it first.
    pub(crate) fn stop_by(&self, deadline: Instant) -> ShutdownReport {
        let started = Instant::now();
        let inner = &*self.inner;
        let state = &*inner.state;
        // Everything not run from now on is logged, and kept for the report.
        state.counters.keep_not_run();
        let threads = lock(&inner.threads).take().unwrap_or_default();
        let idle = state
            .counters
            .wait_idle(deadline.saturating_duration_since(Instant::now()));
        let still_running = if idle {
            Vec::new()
        } else {
            // Jobs dropped from now on may be spilled (mixed mode).
            if let Some(runner) = &inner.jobs {
                runner.deadline_passed();
            }
            self.abandon()
        };
        // Jobs waiting in the timer will not run now (none when idle).
        if let Some(runner) = &inner.jobs {
            runner.close();
        }
        state.stopped.store(true, Ordering::SeqCst);
        drop(lock(&state.abandon).take());
        if idle {
            // The queue is empty and the workers wait on it: each takes one
            // `Stop` at once.
            for _ in &threads {
                let _ = inner.sender.send(Delivery::Stop);
            }
            for thread in threads {
                // A worker catches every task panic, so it cannot end by panicking.
                let _ = thread.join();
            }
            // A batch dispatched in the instant before `stopped` was set.
            self.sweep();
        } else {
            self.sweep();
            // Each worker ends once its running task returns; one that finds
            // no `Stop` (a queue refilled meanwhile) ends when the last
            // handle is dropped and the queue disconnects.
            for _ in &threads {
                let _ = inner.sender.try_send(Delivery::Stop);
            }
        }
        ShutdownReport {
            spilled: Vec::new(),
            not_run: Vec::new(),
            still_running,
            requests_in_flight: 0,
            stats: Stats::default(),
            elapsed: started.elapsed(),
        }
    }

    /// Completes `report` and logs its summary line: every task or job not
    /// run since the shutdown began (each logged when it was discarded or
    /// spilled), the counters, the requests still in flight (whose tasks,
    /// if any, are discarded and logged when they return, after this line).
    /// No task is logged as not run between the reading and the line.
    pub(crate) fn finish_report(&self, report: &mut ShutdownReport) {
        if self.inner.state.abandoned.load(Ordering::SeqCst) {
            // A batch a sender handed over as the queue was abandoned (the
            // sweep came between its look and its send): discarded now, so
            // that the report counts it.
            self.sweep();
        }
        let counters = &self.inner.state.counters;
        counters.with_not_run(|kept| {
            let (spilled, not_run) = kept.iter().cloned().partition(|task| task.spilled);
            report.spilled = spilled;
            report.not_run = not_run;
            report.stats = counters.snapshot();
            report.requests_in_flight = report.stats.requests_in_flight.max(counters.lists_open());
            log_report(report);
        });
    }

    /// From now on, every task or job not run is kept for the shutdown's
    /// report (as it is logged).
    pub(crate) fn keep_not_run(&self) {
        self.inner.state.counters.keep_not_run();
    }

    /// Whether a shutdown's deadline has passed: a task list dispatched from
    /// now on is discarded.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.inner.state.abandoned.load(Ordering::SeqCst)
    }

    /// The shutdown deadline has passed: start nothing more; discard what
    /// will not run (queued, or waiting behind a running task of the same
    /// request: each logged, and kept for the report), and list what is
    /// still running. A sender waiting for room in the queue gives up at
    /// once, discarding its batch.
    ///
    /// A batch in flight between the channel and a worker's slot at this
    /// moment is discarded (logged, kept) by the worker when it sees it.
    fn abandon(&self) -> Vec<TaskInfo> {
        let state = &self.inner.state;
        state.abandoned.store(true, Ordering::SeqCst);
        drop(lock(&state.abandon).take());
        let mut still_running = Vec::new();
        for slot in &state.slots {
            let mut slot = lock(slot);
            if let Some((name, request_id)) = &slot.running {
                still_running.push(TaskInfo {
                    name: name.to_string(),
                    request_id: request_id.to_string(),
                    spilled: false,
                });
            }
            if let Some(batch) = slot.batch.take() {
                batch.discard(DEADLINE_PASSED);
            }
        }
        self.sweep();
        still_running
    }

    /// Empties the queue, discarding the batches it held; the workers'
    /// `Stop`s it finds go back in.
    fn sweep(&self) {
        let mut stops = 0;
        while let Ok(delivery) = self.inner.receiver.try_recv() {
            match delivery {
                Delivery::Run(batch) => drop(batch.discard(DEADLINE_PASSED)),
                Delivery::Stop => stops += 1,
            }
        }
        for _ in 0..stops {
            let _ = self.inner.sender.try_send(Delivery::Stop);
        }
    }
}

impl std::fmt::Debug for BackgroundPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundPool")
            .field("workers", &self.inner.state.slots.len())
            .field("on_full", &self.inner.on_full)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// One line for the whole shutdown; each task not run was logged on its own
/// already, and the line counts exactly those.
fn log_report(report: &ShutdownReport) {
    if report.is_complete() && report.spilled.is_empty() {
        log::info!("shutdown complete: every background task ran");
        return;
    }
    let names = |tasks: &[TaskInfo]| {
        tasks
            .iter()
            .map(|t| format!("{} (request {})", t.name, t.request_id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !report.spilled.is_empty() {
        log::warn!(
            "shutdown deadline passed: {} jobs spilled to Redis, for workers to run [{}]",
            report.spilled.len(),
            names(&report.spilled)
        );
    }
    if report.is_complete() {
        return;
    }
    log::warn!(
        "shutdown deadline passed: {} background tasks not run [{}]; {} still running [{}]; \
         {} requests still in flight",
        report.not_run.len(),
        names(&report.not_run),
        report.still_running.len(),
        names(&report.still_running),
        report.requests_in_flight
    );
}

/// Sends `batch`, waiting for room; gives up at once (discarding it, logged
/// and counted) if the pool stops or abandons its queue meanwhile, so no
/// sender waits on a queue that nothing reads any more.
fn send_blocking(sender: &Sender<Delivery>, batch: Batch, state: &PoolState) {
    // Room at once (the common case): no waiting.
    let delivery = match sender.try_send(Delivery::Run(batch)) {
        Ok(()) => return,
        Err(TrySendError::Full(delivery)) => delivery,
        // The pool keeps a receiver, so this cannot happen; were it to,
        // dropping the batch discards its tasks, logged and counted.
        Err(TrySendError::Disconnected(_)) => return,
    };
    let mut delivery = delivery;
    loop {
        // Room, or the pool has given up: whichever comes first (the flags
        // are looked at again, as both may be ready at once).
        let mut select = crossbeam_channel::Select::new();
        select.send(sender);
        select.recv(&state.given_up);
        select.ready();
        if state.stopped.load(Ordering::SeqCst) || state.abandoned.load(Ordering::SeqCst) {
            if let Delivery::Run(batch) = delivery {
                batch.discard(DEADLINE_PASSED);
            }
            return;
        }
        match sender.try_send(delivery) {
            // Disconnected drops the batch: discarded, logged, counted.
            Ok(()) | Err(TrySendError::Disconnected(_)) => return,
            Err(TrySendError::Full(returned)) => delivery = returned,
        }
    }
}

const DEADLINE_PASSED: &str = "the shutdown deadline passed before it started";

/// A background worker: runs each received batch's tasks in order, until
/// it takes a `Stop` or the queue disconnects (every handle dropped).
fn work(index: usize, receiver: &Receiver<Delivery>, state: &PoolState) {
    CURRENT_SLOT.with(|current| current.set(Some(index)));
    let slot = &state.slots[index];
    while let Ok(Delivery::Run(batch)) = receiver.recv() {
        // Architecture invariant: one request's tasks are one batch, run in
        // order by this one thread.
        lock(slot).batch = Some(batch);
        while let Some((task, request_id)) = next_task(slot, state) {
            task.run_counted(&request_id, &state.counters);
            lock(slot).running = None;
        }
        let mut slot = lock(slot);
        if slot.retire {
            // A replacement has this thread's place since its job went
            // overdue: end, and leave the slot to a future replacement.
            slot.retire = false;
            lock(&state.free_slots).push(index);
            return;
        }
    }
}

/// Takes the next task of the worker's current batch, marking it as running,
/// or gives up the rest of the batch if shutdown has abandoned the queue.
fn next_task(slot: &Mutex<Slot>, state: &PoolState) -> Option<(BackgroundTask, Arc<str>)> {
    let mut slot = lock(slot);
    let mut batch = slot.batch.take()?;
    if state.abandoned.load(Ordering::SeqCst) {
        batch.discard(DEADLINE_PASSED);
        return None;
    }
    let task = batch.start_next()?;
    let request_id = batch.request_id().clone();
    slot.running = Some((task.shared_name(), request_id.clone()));
    slot.batch = Some(batch);
    Some((task, request_id))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Tasks run outside these locks, so no task panic can poison them mid-update.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn pool(workers: usize) -> BackgroundPool {
        BackgroundPool::builder()
            .workers(workers)
            .queue_capacity(4)
            .build()
            .unwrap()
    }

    #[test]
    fn runs_a_lists_tasks_in_order_and_survives_a_panic() {
        let pool = pool(1);
        let (tx, rx) = mpsc::channel();
        let tasks = pool.tasks("r1");
        for i in 0..3 {
            let tx = tx.clone();
            tasks.add_task(move || {
                tx.send(i).unwrap();
                if i == 1 {
                    panic!("task 1 panics");
                }
            });
        }
        pool.dispatch(&tasks);
        assert!(pool.wait_idle(Duration::from_secs(30)));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [0, 1, 2]);
        let stats = pool.stats();
        assert_eq!((stats.completed, stats.panicked), (2, 1));
        assert!(pool.shutdown(Duration::from_secs(30)).is_complete());
    }

    #[test]
    fn abandon_lists_queued_and_running_tasks() {
        let pool = pool(1);
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let first = pool.tasks("r1");
        first.add(
            BackgroundTask::new(move || {
                started_tx.send(()).unwrap();
                release_rx.recv_timeout(Duration::from_secs(30)).ok();
            })
            .named("blocker"),
        );
        first.add(BackgroundTask::new(|| ()).named("after-blocker"));
        pool.dispatch(&first);
        started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let second = pool.tasks("r2");
        second.add(BackgroundTask::new(|| ()).named("queued"));
        pool.dispatch(&second);

        let report = pool.shutdown(Duration::from_millis(50));
        let names = |list: &[TaskInfo]| list.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&report.not_run), ["after-blocker", "queued"]);
        assert_eq!(names(&report.still_running), ["blocker"]);
        assert_eq!(report.not_run[1].request_id, "r2");

        release_tx.send(()).unwrap();
        assert!(pool.wait_idle(Duration::from_secs(30)));
        let stats = pool.stats();
        assert_eq!((stats.completed, stats.discarded, stats.queued), (1, 2, 0));
    }

    #[test]
    fn a_list_dropped_undispatched_or_dispatched_after_shutdown_is_discarded() {
        let pool = pool(1);
        let forgotten = pool.tasks("r1");
        forgotten.add_task(|| ());
        assert!(
            !pool.wait_idle(Duration::from_millis(10)),
            "an open list is work"
        );
        drop(forgotten);
        assert!(pool.wait_idle(Duration::from_secs(30)));
        assert!(pool.shutdown(Duration::from_secs(30)).is_complete());

        let late = pool.tasks("r2");
        late.add_task(|| ());
        pool.dispatch(&late);
        let stats = pool.stats();
        assert_eq!(
            (stats.scheduled, stats.discarded, stats.pending()),
            (2, 2, 0)
        );
    }

    #[test]
    fn caller_runs_when_the_queue_is_full() {
        let pool = BackgroundPool::builder()
            .workers(1)
            .queue_capacity(1)
            .on_full(OnFull::CallerRuns)
            .build()
            .unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let blocker = pool.tasks("r1");
        blocker.add_task(move || {
            started_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(30)).ok();
        });
        pool.dispatch(&blocker);
        started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let queued = pool.tasks("r2");
        queued.add_task(|| ());
        pool.dispatch(&queued); // fills the queue of one
        let caller = thread::current().id();
        let (ran_on_tx, ran_on_rx) = mpsc::channel();
        let third = pool.tasks("r3");
        third.add_task(move || ran_on_tx.send(thread::current().id()).unwrap());
        pool.dispatch(&third);
        assert_eq!(
            ran_on_rx.try_recv(),
            Ok(caller),
            "ran on the dispatching thread"
        );
        release_tx.send(()).unwrap();
        assert!(pool.shutdown(Duration::from_secs(30)).is_complete());
        assert_eq!(pool.stats().ran_by_caller, 1);
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Later;

    impl crate::Job for Later {
        const NAME: &'static str = "later";
        fn run(self, _: &crate::JobContext) -> crate::JobResult {
            Ok(())
        }
    }

    #[test]
    fn a_pool_dropped_without_shutdown_discards_its_waiting_jobs_counted() {
        let pool = BackgroundPool::builder()
            .workers(1)
            .job::<Later>()
            .build()
            .unwrap();
        let counters = pool.inner.state.counters.clone();
        let tasks = pool.tasks("r1");
        tasks.enqueue_in(Later, Duration::from_secs(3600)).unwrap();
        pool.dispatch(&tasks);
        assert!(counters.wait_until(Duration::from_secs(30), |c| c.snapshot().jobs_delayed == 1));
        drop(tasks); // it holds the job runner too
        drop(pool);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.jobs_enqueued,
                stats.jobs_discarded,
                stats.jobs_delayed
            ),
            (1, 1, 0)
        );
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Weird;

    impl crate::Job for Weird {
        const NAME: &'static str = "we\"ird\\";
        fn run(self, _: &crate::JobContext) -> crate::JobResult {
            Ok(())
        }
    }

    #[test]
    fn job_counts_by_name_escape_the_label() {
        let pool = BackgroundPool::builder()
            .workers(1)
            .job::<Weird>()
            .build()
            .unwrap();
        let tasks = pool.tasks("r1");
        tasks.enqueue(Weird).unwrap();
        pool.dispatch(&tasks);
        assert!(pool.wait_idle(Duration::from_secs(30)));
        let text = pool.jobs().unwrap().to_prometheus();
        let expected =
            "afterward_jobs_by_name_total{job=\"we\\\"ird\\\\\",outcome=\"succeeded\"} 1\n";
        assert!(text.contains(expected), "{text}");
        pool.shutdown(Duration::from_secs(30));
    }

    #[test]
    fn zero_workers_or_capacity_is_a_config_error() {
        assert!(matches!(
            BackgroundPool::builder().workers(0).build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            BackgroundPool::builder().queue_capacity(0).build(),
            Err(Error::Config(_))
        ));
    }
}
