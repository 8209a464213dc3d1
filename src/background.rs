//! [`BackgroundPool`]: the background pool as users hold it, on its own or
//! under a [`Server`](crate::Server): the pool's machinery (`pool.rs`) and,
//! when jobs are registered, the job runner built on it (`jobs/`), put
//! together. Shutdown is sequenced here, so that the pool never calls into
//! the jobs.
//!
//! Its size: a third of it is tests of the public pool; the rest is the
//! builder's documented settings.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::jobs::broker::BrokerFactory;
use crate::jobs::schedule::ScheduleEntry;
use crate::jobs::scheduler::Scheduler;
use crate::jobs::{Job, JobRunner, JobSettings, Jobs, Queues, Registry};
use crate::pool::{OnFull, Pool, PoolConfig, ShutdownReport, DEFAULT_QUEUE_CAPACITY};
use crate::state::StateMap;
use crate::stats::{Counters, Stats};
use crate::tasks::{BackgroundTasks, Batch};

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
    /// Periodic jobs, fired by the pool's scheduler.
    schedules: Vec<ScheduleEntry>,
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
            schedules: Vec::new(),
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

    /// The queues jobs run in here, and how they take turns; see
    /// [`JobSettings::queues`].
    pub fn queues(mut self, queues: Queues) -> BackgroundPoolBuilder {
        self.job_settings.queues = Some(queues);
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
    /// The app's periodic jobs (`App::every`, `App::cron`).
    pub(crate) fn schedules(mut self, schedules: Vec<ScheduleEntry>) -> BackgroundPoolBuilder {
        self.schedules = schedules;
        self
    }

    pub(crate) fn jobs(mut self, registry: Registry, state: StateMap) -> BackgroundPoolBuilder {
        self.jobs.merge(registry);
        self.job_state = state;
        self
    }

    /// Checks the settings and starts the worker threads (and, when jobs
    /// are registered, the job runner and its timer thread).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for zero workers or a zero capacity, or queues
    /// that are not valid or leave a registered job type's queue unserved
    /// (without a broker); [`Error::Io`] when a thread cannot be started.
    pub fn build(self) -> Result<BackgroundPool, Error> {
        let counters = Arc::new(Counters::new(self.queue_capacity));
        self.build_with(counters)
    }

    /// Builds the pool on counters shared with a server.
    pub(crate) fn build_with(self, counters: Arc<Counters>) -> Result<BackgroundPool, Error> {
        check_queues(&self.job_settings, &self.jobs, self.broker.is_some())?;
        check_schedules(&self.schedules)?;
        let config = PoolConfig {
            workers: self.workers,
            queue_capacity: self.queue_capacity,
            on_full: self.on_full,
            spare_threads: self.job_settings.max_replacement_threads,
        };
        let pool = Pool::start(config, counters.clone())?;
        let jobs = if self.jobs.is_empty() {
            None
        } else {
            let start = |factory: &Option<BrokerFactory>| match factory {
                Some(start) => (start.0)(counters.clone()).map(Some),
                None => Ok(None),
            };
            let broker = start(&self.broker)?;
            let spill = start(&self.spill)?;
            let ticks = broker.as_ref().and_then(|broker| broker.ticks());
            let runner = JobRunner::start(
                self.jobs,
                self.job_state,
                self.job_settings,
                counters.clone(),
                pool.submitter(),
                broker,
                spill,
            )
            .map_err(Error::Io)?;
            Some((runner, ticks))
        };
        let scheduler = match &jobs {
            Some((runner, ticks)) if !self.schedules.is_empty() => {
                let scheduler = Scheduler::start(
                    self.schedules,
                    ticks.clone(),
                    runner.clone(),
                    pool.submitter(),
                    counters,
                )
                .map_err(Error::Io)?;
                runner.set_schedules(scheduler.clone());
                Some(scheduler)
            }
            _ => None,
        };
        let jobs = jobs.map(|(runner, _)| runner);
        Ok(BackgroundPool {
            pool,
            jobs,
            scheduler,
        })
    }
}

/// Checks the schedules: each spec valid, each name once.
pub(crate) fn check_schedules(schedules: &[ScheduleEntry]) -> Result<(), Error> {
    let mut names = std::collections::HashSet::new();
    for schedule in schedules {
        if let Err(error) = &schedule.spec {
            return Err(Error::Config(format!(
                "schedule {:?}: {error}",
                schedule.name
            )));
        }
        if !names.insert(&schedule.name) {
            return Err(Error::Config(format!(
                "two schedules are named {:?} (Schedule::named tells them apart)",
                schedule.name
            )));
        }
    }
    Ok(())
}

/// Checks the in-process queues of `settings`, if chosen: valid, and,
/// without a broker, serving every registered job type's queue (or its jobs
/// could never run).
pub(crate) fn check_queues(
    settings: &JobSettings,
    registry: &Registry,
    has_broker: bool,
) -> Result<(), Error> {
    let Some(queues) = &settings.queues else {
        return Ok(());
    };
    queues.check()?;
    let unserved = registry.queues().into_iter().find(|q| !queues.serves(q));
    match unserved {
        Some(queue) if !has_broker => Err(Error::Config(format!(
            "queue {queue:?} of a registered job is not among the queues served ({queues})"
        ))),
        _ => Ok(()),
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
    pool: Pool,
    /// The job runner, when jobs are registered.
    jobs: Option<Arc<JobRunner>>,
    /// The scheduler, when the app has periodic jobs.
    scheduler: Option<Arc<Scheduler>>,
}

impl BackgroundPool {
    /// A [`BackgroundPoolBuilder`] with the default settings.
    pub fn builder() -> BackgroundPoolBuilder {
        BackgroundPoolBuilder::default()
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
        let tasks = BackgroundTasks::new(request_id, self.pool.counters().clone());
        match &self.jobs {
            Some(runner) => tasks.with_context(runner.clone()),
            None => tasks,
        }
    }

    /// The jobs' statuses and dead letters, when jobs are registered.
    pub fn jobs(&self) -> Option<Jobs> {
        self.jobs.clone().map(Jobs::new)
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
    pub(crate) fn submit(&self, batch: Batch) {
        self.pool.submit(batch);
    }

    /// Whether the queue is full right now (for a caller that sheds load).
    pub fn is_full(&self) -> bool {
        self.pool.is_full()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.pool.counters().snapshot()
    }

    /// Blocks until every task list has been dispatched and every task has
    /// finished (or been discarded), or until `timeout` has passed. Returns
    /// whether the pool became idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.pool.counters().wait_idle(timeout)
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
        // No tick is claimed once the stop has begun.
        if let Some(scheduler) = &self.scheduler {
            scheduler.stop();
        }
        let pool = &self.pool;
        // Everything not run from now on is logged, and kept for the report.
        pool.keep_not_run();
        let threads = pool.take_threads();
        let idle = pool
            .counters()
            .wait_idle(deadline.saturating_duration_since(Instant::now()));
        let still_running = if idle {
            Vec::new()
        } else {
            // Jobs dropped from now on may be spilled (mixed mode).
            if let Some(runner) = &self.jobs {
                runner.deadline_passed();
            }
            pool.abandon()
        };
        // Jobs waiting in the timer will not run now (none when idle).
        if let Some(runner) = &self.jobs {
            runner.close();
        }
        pool.stop(threads, idle);
        ShutdownReport {
            spilled: Vec::new(),
            not_run: Vec::new(),
            still_running,
            requests_in_flight: 0,
            stats: Stats::default(),
            elapsed: started.elapsed(),
        }
    }

    /// Completes `report` and logs its summary line (see `Pool::finish_report`).
    pub(crate) fn finish_report(&self, report: &mut ShutdownReport) {
        self.pool.finish_report(report);
    }

    /// From now on, every task or job not run is kept for the shutdown's
    /// report (as it is logged).
    pub(crate) fn keep_not_run(&self) {
        self.pool.keep_not_run();
    }

    /// Whether a shutdown's deadline has passed: a task list dispatched from
    /// now on is discarded.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.pool.is_abandoned()
    }
}

impl std::fmt::Debug for BackgroundPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundPool")
            .field("workers", &self.pool.slots())
            .field("on_full", &self.pool.on_full())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::TaskInfo;
    use crate::tasks::BackgroundTask;
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
        let counters = pool.pool.counters().clone();
        let tasks = pool.tasks("r1");
        tasks.enqueue_in(Later, Duration::from_secs(3600)).unwrap();
        pool.dispatch(&tasks);
        // The job waits in the timer, and the task that put it there (and
        // held the job runner) has ended.
        let waiting = |c: &Counters| {
            let stats = c.snapshot();
            stats.jobs_delayed == 1 && stats.completed == 1
        };
        assert!(counters.wait_until(Duration::from_secs(30), waiting));
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
            "afterward_jobs_by_name_total{job=\"we\\\"ird\\\\\",queue=\"default\",outcome=\"succeeded\"} 1\n";
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
