//! Counters: shared atomics written by the server and the pool, read as a [`Stats`]
//! snapshot, plus the "idle" signal that [`wait_idle`](crate::ServerHandle::wait_idle)
//! blocks on.
//!
//! Its size: most of it is the documented fields of [`Stats`], one per
//! counter, and the rules that keep the counters consistent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A snapshot of the server's counters, read with
/// [`ServerHandle::stats`](crate::ServerHandle::stats).
///
/// `requests_in_flight`, `queued` and `running` are gauges; the others only ever
/// grow. Every task that is added ends up in exactly one of `completed`, `failed`,
/// `panicked` or `discarded`, so once the server is idle:
/// `scheduled == completed + failed + panicked + discarded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests answered so far (any status), counted as the response is sent.
    pub requests: u64,
    /// Requests answered so far by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub requests_by_class: [u64; 5],
    /// Requests refused with `503` because the queue was full, under
    /// [`OnFull::Shed`](crate::OnFull::Shed). Their handlers did not run.
    pub rejected: u64,
    /// Requests being handled right now (read, handled, answered, tasks dispatched).
    pub requests_in_flight: u64,
    /// Client connections open right now (on the builtin engine; the
    /// tiny_http engine does not report its connections, so it stays 0).
    pub connections_open: u64,
    /// Tasks added by handlers, dependencies or responses (including discarded ones).
    pub scheduled: u64,
    /// Tasks handed to the pool that have not started yet (including those whose
    /// request worker is waiting for room in a full queue).
    pub queued: u64,
    /// Tasks running right now.
    pub running: u64,
    /// Tasks run by their request worker because the queue was full, under
    /// [`OnFull::CallerRuns`](crate::OnFull::CallerRuns) (also counted in
    /// `completed`, `failed` or `panicked`).
    pub ran_by_caller: u64,
    /// How many request task lists the queue holds at most.
    pub queue_capacity: u64,
    /// Tasks that returned `()` or `Ok(())`.
    pub completed: u64,
    /// Tasks that returned `Err(_)`.
    pub failed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks that will never run: their handler panicked, their request was
    /// rejected before the handler ran, they were added after the request's list
    /// was dispatched, or the shutdown deadline passed before they started.
    /// Each one is logged with its name and request id.
    pub discarded: u64,
    /// How long the tasks that started took.
    pub task_durations: DurationHistogram,
    /// Jobs enqueued (each ends as succeeded, dead, discarded or cancelled here, or
    /// sent to a broker).
    pub jobs_enqueued: u64,
    /// Jobs whose last attempt succeeded.
    pub jobs_succeeded: u64,
    /// Failed attempts followed by a retry.
    pub jobs_retried: u64,
    /// Jobs that will not run again: every attempt failed.
    pub jobs_dead: u64,
    /// Jobs that never ran to the end: their request failed, or shutdown came first.
    pub jobs_discarded: u64,
    /// Jobs cancelled ([`Jobs::cancel`](crate::Jobs::cancel)): before they
    /// started, or stopping when told.
    pub jobs_cancelled: u64,
    /// Jobs waiting in the timer (a retry's backoff, a delayed enqueue) or,
    /// with in-process queues ([`ServerBuilder::queues`](crate::ServerBuilder::queues)),
    /// in their queue for a turn: a gauge.
    pub jobs_delayed: u64,
    /// Job attempts that ran past their deadline (each also ends in one of
    /// the outcomes above, when it returns).
    pub jobs_overdue: u64,
    /// Jobs a broker (Redis, feature `redis`) has acknowledged: they run
    /// elsewhere, and their outcomes are counted there.
    pub jobs_sent: u64,
    /// Jobs handed to the broker's buffer and not yet acknowledged: a gauge.
    pub jobs_buffered: u64,
    /// Complete requests waiting for a request worker (builtin engine): a
    /// gauge, at most [`ServerBuilder::max_pending_requests`](crate::ServerBuilder::max_pending_requests).
    pub requests_queued: u64,
    /// Bytes of request bodies held by the engine (being received, waiting
    /// for a worker, or with their handler): a gauge, at most
    /// [`ServerBuilder::max_body_buffer_bytes`](crate::ServerBuilder::max_body_buffer_bytes).
    pub body_bytes_buffered: u64,
    /// Requests answered `503` at once because the queue to the request
    /// workers was full (builtin engine). Their handlers did not run.
    pub refused_queue_full: u64,
    /// Requests answered `503` because they waited for a request worker
    /// longer than [`ServerBuilder::queue_timeout`](crate::ServerBuilder::queue_timeout).
    /// Their handlers did not run.
    pub refused_queue_timeout: u64,
    /// Requests with a body answered `503` because the engine's body budget
    /// was full. Their handlers did not run.
    pub refused_body_budget: u64,
    /// Requests dropped unanswered because their client had closed the
    /// connection before a request worker took them (nginx's 499). Their
    /// handlers did not run.
    pub client_gone: u64,
    /// Log lines dropped because the log's sink could not keep up (every
    /// [`NonBlockingWriter`](crate::logging::NonBlockingWriter) of the process).
    pub log_lines_dropped: u64,
}

/// Why the engine refused a request before its handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    QueueFull,
    QueueTimeout,
    BodyBudget,
}

/// A task that did not run, or had not finished, when a shutdown deadline
/// passed, as listed in a [`ShutdownReport`](crate::ShutdownReport).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's name (see [`BackgroundTask::named`](crate::BackgroundTask::named)).
    pub name: String,
    /// The id of the request that added it.
    pub request_id: String,
    /// For a job: whether it went to Redis instead of being dropped
    /// (`redis_spill`, feature `redis`), for a worker to run.
    pub spilled: bool,
}

/// Upper bounds of the [`DurationHistogram`] buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of task durations, in the buckets of [`DURATION_BUCKETS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Tasks per bucket (not cumulative); the last entry counts tasks over
    /// the largest bound.
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum_micros: u64,
}

impl DurationHistogram {
    /// `(upper bound in seconds, tasks at or under it)`, cumulative, ending
    /// with `f64::INFINITY` and the total count, as Prometheus expects.
    pub fn cumulative_buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.counts.iter().scan(0, |total, n| {
            *total += n;
            Some(*total)
        }))
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of the recorded durations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }
}

impl Stats {
    /// Tasks that were scheduled and have neither finished nor been discarded.
    pub fn pending(&self) -> u64 {
        self.scheduled - (self.completed + self.failed + self.panicked + self.discarded)
    }
}

/// How a task that started came to an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskOutcome {
    Completed,
    Failed,
    Panicked,
}

/// The live counters behind [`Stats`].
///
/// Updates are lock-free. The only lock is taken by a change that may make the
/// server idle *and* only while someone waits in [`Counters::wait_idle`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    requests_by_class: [AtomicU64; 5],
    rejected: AtomicU64,
    ran_by_caller: AtomicU64,
    queue_capacity: u64,
    duration_counts: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_micros: AtomicU64,
    requests_in_flight: AtomicU64,
    /// Task lists made and not yet sealed (each request has one).
    lists_open: AtomicU64,
    connections_open: AtomicU64,
    jobs: [AtomicU64; 8],
    jobs_delayed: AtomicU64,
    jobs_buffered: AtomicU64,
    requests_queued: AtomicU64,
    body_bytes_buffered: AtomicU64,
    /// By [`Refusal`], in its order.
    refused: [AtomicU64; 3],
    client_gone: AtomicU64,
    /// Every task or job not run since a shutdown began (`None` before),
    /// as each was logged: what the shutdown report lists.
    not_run: Mutex<Option<Vec<TaskInfo>>>,
    scheduled: AtomicU64,
    queued: AtomicU64,
    running: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    discarded: AtomicU64,
    /// Threads inside `wait_idle`.
    waiters: AtomicUsize,
    idle_lock: Mutex<()>,
    idle_changed: Condvar,
}

impl Counters {
    pub(crate) fn new(queue_capacity: usize) -> Counters {
        Counters {
            queue_capacity: queue_capacity as u64,
            ..Counters::default()
        }
    }

    pub(crate) fn request_started(&self) {
        self.requests_in_flight.fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    /// Counts an answer as it is about to be sent, so that a client that has
    /// its response sees it counted.
    pub(crate) fn responding(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests_by_class[class].fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The request's worker is done with it, tasks dispatched.
    pub(crate) fn request_finished(&self) {
        self.requests_in_flight.fetch_sub(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn job_enqueued(&self) {
        self.jobs[0].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn job_succeeded(&self) {
        self.jobs[1].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn job_retried(&self) {
        self.jobs[2].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn job_dead(&self) {
        self.jobs[3].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn job_discarded(&self) {
        self.jobs[4].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn job_cancelled(&self) {
        self.jobs[7].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn job_overdue(&self) {
        self.jobs[5].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    /// Jobs handed to a broker's buffer (it has not got them yet).
    pub(crate) fn job_buffered(&self) {
        self.jobs_buffered.fetch_add(1, Ordering::SeqCst);
    }

    /// A job sent to a broker directly, without its buffer.
    pub(crate) fn jobs_sent_now(&self) {
        self.jobs[6].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    /// Jobs out of a broker's buffer: `sent` of them it has, the others
    /// are discarded (counted by the runner first).
    pub(crate) fn jobs_unbuffered(&self, n: u64, sent: bool) {
        if sent {
            self.jobs[6].fetch_add(n, Ordering::SeqCst);
        }
        self.jobs_buffered.fetch_sub(n, Ordering::SeqCst);
        self.notify();
    }

    /// Jobs entering (`1`) or leaving (`-1`) the timer.
    pub(crate) fn job_delayed(&self, change: i64) {
        if change >= 0 {
            self.jobs_delayed.fetch_add(change as u64, Ordering::SeqCst);
        } else {
            self.jobs_delayed
                .fetch_sub(change.unsigned_abs(), Ordering::SeqCst);
        }
        // Both ways: a test may wait for jobs to be waiting in their queues.
        self.notify();
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::SeqCst)
    }

    /// A complete request enters (`true`) or leaves the queue to the request workers.
    pub(crate) fn request_queued(&self, entered: bool) {
        if entered {
            self.requests_queued.fetch_add(1, Ordering::SeqCst);
        } else {
            self.requests_queued.fetch_sub(1, Ordering::SeqCst);
        }
        self.notify();
    }

    /// Reserves `n` bytes of request body if the buffered bytes stay within
    /// `budget`; whether they did.
    pub(crate) fn body_reserve(&self, n: u64, budget: u64) -> bool {
        let reserved = self
            .body_bytes_buffered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(n).filter(|&total| total <= budget)
            })
            .is_ok();
        if reserved {
            self.notify();
        }
        reserved
    }

    /// Gives back `n` reserved bytes of request body.
    pub(crate) fn body_release(&self, n: u64) {
        self.body_bytes_buffered.fetch_sub(n, Ordering::SeqCst);
        self.notify();
    }

    /// The engine refused a request before its handler ran (it was also
    /// answered, and counted in `requests`).
    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    /// A request was dropped unanswered: its client had gone.
    pub(crate) fn client_gone(&self) {
        self.client_gone.fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    /// From now on, keeps every task or job reported not run (a shutdown
    /// has begun). Calling it again keeps what was kept.
    pub(crate) fn keep_not_run(&self) {
        let mut kept = self.not_run.lock().unwrap_or_else(|e| e.into_inner());
        kept.get_or_insert_with(Vec::new);
    }

    /// A task or job that will not run here: logged (one line each; a job
    /// spilled to Redis was logged as such where it was spilled), and kept
    /// for the report while a shutdown is under way, under one lock, so
    /// that a report's summary line, logged under it too
    /// ([`with_not_run`](Self::with_not_run)), counts exactly the lines
    /// logged before it.
    pub(crate) fn not_run(&self, level: log::Level, task: &TaskInfo, reason: &str) {
        let mut kept = self.not_run.lock().unwrap_or_else(|e| e.into_inner());
        if !task.spilled {
            log::log!(
                level,
                "background task {} (request {}) discarded: {reason}",
                task.name,
                task.request_id
            );
        }
        if let Some(kept) = kept.as_mut() {
            kept.push(task.clone());
        }
    }

    /// Calls `report` with what was kept since
    /// [`keep_not_run`](Self::keep_not_run), in the order it was logged,
    /// while no other can be logged.
    pub(crate) fn with_not_run<T>(&self, report: impl FnOnce(&[TaskInfo]) -> T) -> T {
        let kept = self.not_run.lock().unwrap_or_else(|e| e.into_inner());
        report(kept.as_deref().unwrap_or_default())
    }

    pub(crate) fn list_opened(&self) {
        self.lists_open.fetch_add(1, Ordering::SeqCst);
    }

    /// A task list was sealed, its tasks counted as scheduled first.
    pub(crate) fn list_closed(&self) {
        self.lists_open.fetch_sub(1, Ordering::SeqCst);
        self.notify();
    }

    /// Task lists made and not yet sealed.
    pub(crate) fn lists_open(&self) -> u64 {
        self.lists_open.load(Ordering::SeqCst)
    }

    pub(crate) fn scheduled(&self, n: u64) {
        self.scheduled.fetch_add(n, Ordering::SeqCst);
    }

    pub(crate) fn queued(&self, n: u64) {
        self.queued.fetch_add(n, Ordering::Relaxed);
    }

    /// Queued tasks that leave the queue without running (shutdown deadline).
    pub(crate) fn unqueued(&self, n: u64) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// A task starts; `was_queued` when it was counted in `queued`.
    pub(crate) fn started(&self, was_queued: bool) {
        if was_queued {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ran_by_caller(&self, n: u64) {
        self.ran_by_caller.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, outcome: TaskOutcome, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
        let counter = match outcome {
            TaskOutcome::Completed => &self.completed,
            TaskOutcome::Failed => &self.failed,
            TaskOutcome::Panicked => &self.panicked,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.notify();
    }

    pub(crate) fn discarded(&self, n: u64) {
        self.discarded.fetch_add(n, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn snapshot(&self) -> Stats {
        // Read the outcomes before `scheduled`, so a concurrent task never makes
        // `pending()` underflow: a task is scheduled before it can finish.
        let completed = self.completed.load(Ordering::SeqCst);
        let failed = self.failed.load(Ordering::SeqCst);
        let panicked = self.panicked.load(Ordering::SeqCst);
        let discarded = self.discarded.load(Ordering::SeqCst);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            requests_by_class: self.requests_by_class.each_ref().map(load),
            rejected: load(&self.rejected),
            ran_by_caller: load(&self.ran_by_caller),
            queue_capacity: self.queue_capacity,
            task_durations: DurationHistogram {
                counts: self.duration_counts.each_ref().map(load),
                sum_micros: load(&self.duration_sum_micros),
            },
            requests_in_flight: self.requests_in_flight.load(Ordering::SeqCst),
            connections_open: self.connections_open(),
            jobs_enqueued: self.jobs[0].load(Ordering::SeqCst),
            jobs_succeeded: self.jobs[1].load(Ordering::SeqCst),
            jobs_retried: self.jobs[2].load(Ordering::SeqCst),
            jobs_dead: self.jobs[3].load(Ordering::SeqCst),
            jobs_discarded: self.jobs[4].load(Ordering::SeqCst),
            jobs_cancelled: self.jobs[7].load(Ordering::SeqCst),
            jobs_delayed: self.jobs_delayed.load(Ordering::SeqCst),
            jobs_overdue: self.jobs[5].load(Ordering::SeqCst),
            jobs_sent: self.jobs[6].load(Ordering::SeqCst),
            jobs_buffered: self.jobs_buffered.load(Ordering::SeqCst),
            requests_queued: self.requests_queued.load(Ordering::SeqCst),
            body_bytes_buffered: self.body_bytes_buffered.load(Ordering::SeqCst),
            refused_queue_full: self.refused[Refusal::QueueFull as usize].load(Ordering::SeqCst),
            refused_queue_timeout: self.refused[Refusal::QueueTimeout as usize]
                .load(Ordering::SeqCst),
            refused_body_budget: self.refused[Refusal::BodyBudget as usize].load(Ordering::SeqCst),
            client_gone: self.client_gone.load(Ordering::SeqCst),
            log_lines_dropped: crate::logging::dropped_lines(),
            scheduled: self.scheduled.load(Ordering::SeqCst),
            queued: self.queued.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            completed,
            failed,
            panicked,
            discarded,
        }
    }

    /// No request is being handled, no task list is open, and every
    /// scheduled task has finished or been discarded.
    fn is_idle(&self) -> bool {
        // The list count first: a list is sealed (its tasks scheduled) before
        // it stops counting as open.
        let lists_open = self.lists_open();
        let stats = self.snapshot();
        lists_open == 0
            && stats.requests_in_flight == 0
            && stats.pending() == 0
            && stats.jobs_delayed == 0
            && stats.jobs_buffered == 0
    }

    /// Blocks until [`is_idle`](Self::is_idle) or until `timeout` has passed;
    /// returns whether the server became idle.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, Counters::is_idle)
    }

    /// Blocks until `condition` holds or until `timeout` has passed; returns
    /// whether it held. `condition` is checked again at each change that
    /// [notifies](Self::notify): a request finished, a task ended or was
    /// discarded, a task list sealed, a connection opened or closed.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&Counters) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.idle_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let idle = loop {
            if condition(self) {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = self
                .idle_changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        idle
    }

    /// Wakes the threads in `wait_until` after a change that may make the
    /// server idle, or that a waiter may wait for (a connection, a job's
    /// outcome).
    ///
    /// Sound without a lost wake-up: a waiter registers in `waiters` and checks
    /// its condition while holding `idle_lock`; the changes above are `SeqCst`, so
    /// either the waiter's check sees the change or this load sees the waiter,
    /// and then taking the lock waits until the waiter is parked in the condvar.
    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            drop(self.idle_lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.idle_changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Counters, TaskOutcome};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn a_finished_task_wakes_a_waiter() {
        let counters = Arc::new(Counters::default());
        counters.scheduled(1);
        counters.queued(1);
        let waiter = {
            let counters = counters.clone();
            thread::spawn(move || counters.wait_idle(Duration::from_secs(30)))
        };
        counters.started(true);
        counters.finished(TaskOutcome::Completed, Duration::from_millis(3));
        assert!(
            waiter.join().unwrap(),
            "wait_idle must return true once idle"
        );
        let stats = counters.snapshot();
        assert_eq!((stats.pending(), stats.completed), (0, 1));
        let buckets: Vec<_> = stats.task_durations.cumulative_buckets().collect();
        assert_eq!(buckets[1], (0.005, 1), "3 ms falls in the 5 ms bucket");
        assert_eq!(buckets[0], (0.001, 0));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((stats.task_durations.sum_seconds() - 0.003).abs() < 1e-9);
    }

    #[test]
    fn wait_idle_times_out_while_a_task_is_pending() {
        let counters = Counters::default();
        counters.scheduled(1);
        assert!(!counters.wait_idle(Duration::from_millis(20)));
        counters.discarded(1);
        assert!(counters.wait_idle(Duration::from_millis(20)));
    }

    #[test]
    fn a_request_in_flight_is_not_idle() {
        let counters = Counters::default();
        counters.request_started();
        assert!(!counters.wait_idle(Duration::from_millis(20)));
        counters.responding(404);
        counters.request_finished();
        assert!(counters.wait_idle(Duration::from_millis(20)));
        let stats = counters.snapshot();
        assert_eq!(
            (stats.requests, stats.requests_by_class),
            (1, [0, 0, 0, 1, 0])
        );
    }
}
