//! The worker: a consumer of the jobs in Redis (see [`crate::jobs::consumer`]
//! for what it does with them, and `backend.rs` for how it talks to Redis),
//! and the builder that sets it up.

use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use super::backend::RedisBackend;
use super::heartbeat::{Heartbeat, Identity};
use super::RedisConfig;
use crate::error::Error;
use crate::jobs::consumer::{Consumer, ConsumerOptions};
pub use crate::jobs::consumer::{WorkerReport, WorkerStats};
use crate::jobs::{Job, JobSettings, Queues, Registry};
use crate::routing::App;
use crate::state::StateMap;

/// Builds a [`Worker`].
///
/// | setting | default |
/// |---|---|
/// | [`concurrency`](Self::concurrency) | the available cores, at least 2 |
/// | [`queues`](Self::queues) | the registered job types' queues, weight 1 each |
/// | [`prefetch`](Self::prefetch) | 100 jobs held at most (at least `concurrency`) |
/// | [`prefetch_horizon`](Self::prefetch_horizon) | 20 ms: hold only jobs expected to start that soon |
/// | [`visibility_timeout`](Self::visibility_timeout) | 60 s |
/// | [`job_settings`](Self::job_settings) | [`JobSettings::default`] (5 attempts, 100 ms backoff doubling to 60 s, 30 s timeout) |
/// | [`consumer`](Self::consumer) | `HOST-PID` |
pub struct WorkerBuilder {
    config: RedisConfig,
    registry: Registry,
    state: StateMap,
    concurrency: usize,
    prefetch: usize,
    prefetch_horizon: Duration,
    queues: Option<Queues>,
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

    /// The queues this worker serves and how it chooses among them (see
    /// [`Queues`]): by default, the queues of the job types it registers,
    /// taking equal turns.
    pub fn queues(mut self, queues: Queues) -> WorkerBuilder {
        self.queues = Some(queues);
        self
    }

    /// How soon a job this worker holds, and has not started, is expected
    /// to start (default 20 ms): beyond one job per free thread, the worker
    /// holds only as many as its threads get through in this time at the
    /// mean time an attempt has taken of late, so that a job is never held
    /// here while another worker could start it sooner. Jobs of
    /// microseconds still come in batches (up to the
    /// [`prefetch`](Self::prefetch)); jobs of seconds come one per free
    /// thread. Zero holds none ahead.
    pub fn prefetch_horizon(mut self, horizon: Duration) -> WorkerBuilder {
        self.prefetch_horizon = horizon;
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
        if self.registry.is_empty() {
            return Err(Error::Config("the worker registers no job".into()));
        }
        let queues = match self.queues {
            Some(queues) => queues,
            // The queues of the job types registered, taking equal turns.
            None => Queues::weighted(self.registry.queues().into_iter().map(|q| (q, 1))),
        };
        queues.check()?;
        let queues = self.config.expand(queues);
        let names: Vec<&str> = queues.names().collect();
        let backend = RedisBackend::new(self.config.clone(), self.consumer.clone(), &names);
        let identity = Identity {
            name: self.consumer.clone(),
            queues: names.iter().map(|q| (*q).to_owned()).collect(),
            concurrency: self.concurrency,
        };
        let config = self.config.clone();
        let options = ConsumerOptions {
            registry: self.registry,
            state: self.state,
            settings: self.settings,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            horizon: self.prefetch_horizon,
            queues: queues.clone(),
            visibility: self.visibility_timeout,
            batch: self.config.batch,
            name: self.consumer,
        };
        let consumer = Consumer::start(backend, options)?;
        let heartbeat = Heartbeat::start(&config, identity, consumer.stats_source())?;
        Ok(Worker {
            consumer,
            heartbeat: Mutex::new(heartbeat),
        })
    }
}

/// Runs jobs from Redis (see [`crate::redis`]): in a binary of the user's,
/// which registers the job types the web server enqueues — all of them:
/// every worker of a prefix reads every job, and a job of a type it does not
/// know is a dead letter at once.
///
/// A worker keeps three connections to Redis: its I/O thread's (records,
/// renewals, reclaims, promotions), its fetching thread's (so that reading
/// the next batch overlaps recording the last) and its heartbeat's.
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
    consumer: Consumer,
    /// Says, every few seconds, that this worker is alive (for dashboards).
    heartbeat: Mutex<Heartbeat>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
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
            prefetch_horizon: Duration::from_millis(20),
            queues: None,
            visibility_timeout: Duration::from_secs(60),
            settings: JobSettings::default(),
            consumer: format!("{host}-{}", std::process::id()),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> WorkerStats {
        self.consumer.stats()
    }

    /// Blocks until `condition` holds for the counters, or `timeout` has
    /// passed; returns whether it held. For tests and health checks.
    pub fn wait_for(&self, timeout: Duration, condition: impl Fn(&WorkerStats) -> bool) -> bool {
        self.consumer.wait_for(timeout, condition)
    }

    /// Stops gracefully: reads no more jobs, lets the running ones finish
    /// until `timeout`, acknowledges what finished, and leaves the rest
    /// pending for other workers. Jobs still running at the deadline keep
    /// their threads until they return (Rust cannot stop a thread); their
    /// outcome is not recorded, so they run again elsewhere. Dropping the
    /// worker stops it with no time for running jobs.
    pub fn stop(&self, timeout: Duration) -> WorkerReport {
        let report = self.consumer.stop(timeout);
        self.heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
        report
    }
}
