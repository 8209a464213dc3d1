//! The consumer: jobs read from a store that workers anywhere share, run on
//! runner threads, and their outcomes recorded in batches. It decides
//! everything (retries and their backoff, dead letters, deadlines, when to
//! renew, reclaim and promote); a [`Backend`] only does the I/O.
//!
//! Threads: `afterward-worker-io` (every call to the backend, so that all of
//! them go in batches), `afterward-worker-fetch` (the fetches, on a second
//! handle on the store, where the backend has one) and `afterward-worker-N`
//! (runners).
//!
//! Architecture invariant: a job handed out to this consumer ends in one of
//! two ways, recorded once with what follows it (done, a retry, a dead
//! letter), or left pending in the store for another consumer, counted in
//! [`WorkerReport::left_pending`] and logged. Nothing is acknowledged that
//! has not finished (enforced in `io.rs`, `IoLoop::record` and `finish`).

pub(crate) mod backend;
mod fetcher;
mod held;
mod io;
#[cfg(test)]
mod memory;
mod ready;
mod runner;
mod stats;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use self::stats::{WorkerReport, WorkerStats};

use self::backend::Backend;
use self::fetcher::{Fetcher, Runners};
use self::held::Held;
use self::io::IoLoop;
use self::ready::Ready;
use self::runner::{Finished, Runner, Slots};
use self::stats::Shared;
use crate::error::Error;
use crate::jobs::queues::Queues;
use crate::jobs::registry::Registry;
use crate::jobs::scope::JobScope;
use crate::jobs::settings::JobSettings;
use crate::jobs::status::IdSource;
use crate::state::StateMap;

/// How a consumer runs.
pub(crate) struct ConsumerOptions {
    pub(crate) registry: Registry,
    pub(crate) state: StateMap,
    pub(crate) settings: JobSettings,
    /// Runner threads.
    pub(crate) concurrency: usize,
    /// Jobs held at most (read, not recorded); at least `concurrency`.
    pub(crate) prefetch: usize,
    /// A job held and not started is expected to start within this, at
    /// the mean time an attempt has taken of late (see `io.rs`).
    pub(crate) horizon: Duration,
    /// The queues served, in the backend's lane order.
    pub(crate) queues: Queues,
    /// How long a held job may go without news before another consumer
    /// takes it over; renewed every third of it while the job runs.
    pub(crate) visibility: Duration,
    /// Jobs per fetch, promotion and record.
    pub(crate) batch: usize,
    /// This consumer's name, in logs and in the store.
    pub(crate) name: String,
}

/// A running consumer; stopped by [`stop`](Consumer::stop) or on drop.
pub(crate) struct Consumer {
    shared: Arc<Shared>,
    io: Mutex<Option<JoinHandle<WorkerReport>>>,
    runners: Mutex<Vec<JoinHandle<()>>>,
}

impl Consumer {
    /// Starts the consumer's threads on `backend` (which need not be
    /// reachable yet).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a setting out of range or no job registered;
    /// [`Error::Io`] when a thread cannot be started.
    pub(crate) fn start<B: Backend>(
        backend: B,
        options: ConsumerOptions,
    ) -> Result<Consumer, Error> {
        if options.concurrency == 0 {
            return Err(Error::Config(
                "worker concurrency must be above zero".into(),
            ));
        }
        if options.visibility < Duration::from_millis(100) {
            return Err(Error::Config(
                "the visibility timeout must be at least 100 ms".into(),
            ));
        }
        if options.registry.is_empty() {
            return Err(Error::Config("the worker registers no job".into()));
        }
        options.queues.check()?;
        let shared = Arc::new(Shared::default());
        let capacity = options.prefetch.max(options.concurrency);
        let ready = Arc::new(Ready::new(&options.queues));
        let held = Arc::new(Held::default());
        let fetcher = backend
            .fetcher()
            .map(|second| {
                let runners = Runners {
                    ready: ready.clone(),
                    held: held.clone(),
                    shared: shared.clone(),
                    worker: options.name.clone(),
                };
                Fetcher::start(second, runners)
            })
            .transpose()?;
        let (finished, results) = crossbeam_channel::unbounded::<Vec<Finished>>();
        let registry = Arc::new(options.registry);
        let state = Arc::new(options.state);
        let slots: Slots = (0..options.concurrency).map(|_| Mutex::new(None)).collect();
        let scope = Arc::new(JobScope {
            ids: Arc::new(IdSource::default()),
            max_attempts: options.settings.max_attempts,
            max_result_bytes: options.settings.max_result_bytes,
            served: None,
            cancels: Arc::default(),
        });
        let mut runners = Vec::with_capacity(options.concurrency);
        for index in 0..options.concurrency {
            let runner = Runner {
                registry: registry.clone(),
                state: state.clone(),
                shared: shared.clone(),
                slots: slots.clone(),
                index,
                default_timeout: options.settings.timeout,
                scope: scope.clone(),
            };
            let (ready_, finished) = (ready.clone(), finished.clone());
            let spawned = thread::Builder::new()
                .name(format!("afterward-worker-{index}"))
                .spawn(move || runner.run(&ready_, &finished));
            match spawned {
                Ok(thread) => runners.push(thread),
                Err(e) => {
                    // The runners started end once the jobs are closed.
                    ready.close();
                    return Err(e.into());
                }
            }
        }
        drop(finished);
        let io = IoLoop {
            backend,
            name: options.name,
            capacity,
            concurrency: options.concurrency,
            horizon: options.horizon,
            lanes: options.queues.names().count(),
            ready,
            held,
            batch: options.batch.max(1),
            visibility: options.visibility,
            settings: options.settings,
            slots,
            shared: shared.clone(),
            cancels: scope.cancels.clone(),
            fetcher,
        };
        let io = thread::Builder::new()
            .name("afterward-worker-io".into())
            .spawn(move || io.run(&results))?;
        Ok(Consumer {
            shared,
            io: Mutex::new(Some(io)),
            runners: Mutex::new(runners),
        })
    }

    /// The counters now.
    /// The counters as they go, for another thread (a heartbeat).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn stats_source(&self) -> impl Fn() -> WorkerStats + Send + 'static {
        let shared = self.shared.clone();
        move || shared.stats()
    }

    pub(crate) fn stats(&self) -> WorkerStats {
        self.shared.stats()
    }

    /// Blocks until `condition` holds for the counters, or `timeout` has
    /// passed; returns whether it held.
    pub(crate) fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&WorkerStats) -> bool,
    ) -> bool {
        let stats = self.shared.stats.lock().unwrap_or_else(|e| e.into_inner());
        let waited = self
            .shared
            .changed
            .wait_timeout_while(stats, timeout, |stats| !condition(stats));
        !waited.unwrap_or_else(|e| e.into_inner()).1.timed_out()
    }

    /// Stops: fetches no more, lets the running jobs finish until `timeout`,
    /// records what finished, and leaves the rest pending in the store.
    /// Jobs still running at the deadline keep their threads until they
    /// return (Rust cannot stop a thread); their outcome is not recorded.
    pub(crate) fn stop(&self, timeout: Duration) -> WorkerReport {
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

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.io.lock().map(|io| io.is_some()).unwrap_or(false) {
            self.stop(Duration::ZERO);
        }
    }
}
