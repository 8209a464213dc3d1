//! The background pool's machinery: named threads fed by a bounded channel
//! of sealed task lists ([`Batch`]es), with panic isolation, replacement
//! threads for work that overstays, and a shutdown that abandons what it
//! cannot run by its deadline and reports exactly what was not run.
//!
//! It runs opaque work: it knows tasks, never what is built on them (the
//! jobs, in `jobs/`, use it through [`PoolSubmitter`] and
//! [`current_slot`]). The public [`BackgroundPool`](crate::BackgroundPool)
//! (`background.rs`) puts the two together.
//!
//! Its size: the shutdown's accounting (what ran, what was abandoned, by
//! whom) and the replacement threads share the pool's state and locks, and
//! splitting them would spread one set of invariants over several files.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::Error;
use crate::stats::{Counters, Stats, TaskInfo};
use crate::tasks::{BackgroundTask, Batch, TaskName};

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
    /// with `Block`. (A [`BackgroundPool`](crate::BackgroundPool) used on its own waits as with
    /// `Block`; its caller refuses requests while
    /// [`is_full`](crate::BackgroundPool::is_full).)
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
    /// [`BackgroundPool`](crate::BackgroundPool) on its own: task lists not yet dispatched). Tasks
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

/// The pool's machinery; cloning it is cheap (every clone drives the same
/// threads).
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

/// How a [`Pool`] is started.
pub(crate) struct PoolConfig {
    pub(crate) workers: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) on_full: OnFull,
    /// Threads it may add, at most, for threads held by work past its
    /// deadline ([`PoolSubmitter::replace`]).
    pub(crate) spare_threads: usize,
}

struct PoolInner {
    sender: Sender<Delivery>,
    /// A receiver of our own, so that shutdown can empty the queue at its deadline.
    receiver: Receiver<Delivery>,
    state: Arc<PoolState>,
    on_full: OnFull,
    /// The worker threads; taken by the first shutdown.
    threads: Mutex<Option<Vec<JoinHandle<()>>>>,
}

/// A way for what is built on the pool (the jobs' timer) to hand it batches
/// and replace its threads without keeping it alive.
#[derive(Clone)]
pub(crate) struct PoolSubmitter(Weak<PoolInner>);

impl PoolSubmitter {
    /// Submits `batch`; if the pool is gone, dropping it discards its tasks,
    /// logged and counted.
    pub(crate) fn submit(&self, batch: Batch) {
        if let Some(inner) = self.0.upgrade() {
            Pool { inner }.submit(batch);
        }
    }

    /// The thread of slot `overdue` is held by work past its deadline:
    /// start a replacement thread, so that the pool keeps its capacity; the
    /// held thread ends once its batch is done. Replacements are bounded;
    /// `false` when none is left (or the pool has shut down).
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

impl Pool {
    /// Starts the worker threads (`afterward-bg-N`), reporting to `counters`.
    pub(crate) fn start(config: PoolConfig, counters: Arc<Counters>) -> Result<Pool, Error> {
        if config.workers == 0 {
            return Err(Error::Config(
                "background_workers must be at least 1".into(),
            ));
        }
        if config.queue_capacity == 0 {
            return Err(Error::Config("queue_capacity must be at least 1".into()));
        }
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity);
        let (give_up, given_up) = crossbeam_channel::bounded(0);
        let slots = config.workers + config.spare_threads;
        let state = Arc::new(PoolState {
            counters,
            stopped: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            abandon: Mutex::new(Some(give_up)),
            given_up,
            slots: (0..slots).map(|_| Mutex::default()).collect(),
            free_slots: Mutex::new((config.workers..slots).rev().collect()),
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
        Ok(Pool {
            inner: Arc::new(PoolInner {
                sender,
                receiver,
                state,
                on_full: config.on_full,
                threads: Mutex::new(Some(threads)),
            }),
        })
    }

    /// A handle for what is built on the pool, that does not keep it alive.
    pub(crate) fn submitter(&self) -> PoolSubmitter {
        PoolSubmitter(Arc::downgrade(&self.inner))
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.inner.state.counters
    }

    pub(crate) fn on_full(&self) -> OnFull {
        self.inner.on_full
    }

    /// The worker threads' slots, replacements included.
    pub(crate) fn slots(&self) -> usize {
        self.inner.state.slots.len()
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
        if !state.abandoned.load(Ordering::SeqCst) {
            // Hand-overs at the head of the list (a job's send to its
            // broker) are done here, without waking a pool thread.
            batch.hand_over_leading();
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
    pub(crate) fn is_full(&self) -> bool {
        self.inner.sender.is_full()
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

    /// The worker threads, taken for a shutdown (`None` after the first).
    pub(crate) fn take_threads(&self) -> Vec<JoinHandle<()>> {
        lock(&self.inner.threads).take().unwrap_or_default()
    }

    /// The shutdown deadline has passed: start nothing more; discard what
    /// will not run (queued, or waiting behind a running task of the same
    /// request: each logged, and kept for the report), and list what is
    /// still running. A sender waiting for room in the queue gives up at
    /// once, discarding its batch.
    ///
    /// A batch in flight between the channel and a worker's slot at this
    /// moment is discarded (logged, kept) by the worker when it sees it.
    pub(crate) fn abandon(&self) -> Vec<TaskInfo> {
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

    /// Stops the pool: whatever is dispatched from now on is discarded, and
    /// each worker thread ends (when `idle`, at once, joined; otherwise once
    /// its running task returns).
    pub(crate) fn stop(&self, threads: Vec<JoinHandle<()>>, idle: bool) {
        let state = &self.inner.state;
        state.stopped.store(true, Ordering::SeqCst);
        drop(lock(&state.abandon).take());
        let sender = &self.inner.sender;
        if idle {
            // The queue is empty and the workers wait on it: each takes one
            // `Stop` at once.
            for _ in &threads {
                let _ = sender.send(Delivery::Stop);
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
                let _ = sender.try_send(Delivery::Stop);
            }
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
