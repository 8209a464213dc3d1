//! The server: [`Server`], [`ServerHandle`] and [`Stopper`]. The settings are
//! in `builder.rs`, the request workers (where "respond, then dispatch" lives)
//! in `worker.rs`, and graceful shutdown in `shutdown.rs`.

mod builder;
mod shutdown;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use self::builder::{
    ServerBuilder, DEFAULT_ADDRESS, DEFAULT_MAX_BODY_BYTES, DEFAULT_SHUTDOWN_TIMEOUT,
};

use self::builder::Config;
use crate::access::RequestIds;
use crate::background::BackgroundPool;
use crate::engine::{Engine, Listener};
use crate::error::Error;
use crate::method::Method;
use crate::pool::{OnFull, ShutdownReport};
use crate::routing::App;
use crate::stats::{Counters, Stats};

/// A server bound to its address, not yet serving.
///
/// ```no_run
/// use afterward::{App, Server};
///
/// let app = App::new().get("/", || "hello");
/// let server = Server::builder().address("127.0.0.1:8000").build(app)?;
/// println!("listening on http://{}", server.local_addr());
/// server.run()?; // until a Stopper is triggered
/// # Ok::<(), afterward::Error>(())
/// ```
pub struct Server {
    listener: Listener,
    counters: Arc<Counters>,
    ids: Arc<RequestIds>,
    app: App,
    config: Config,
    stopper: Stopper,
}

impl Server {
    /// A [`ServerBuilder`] with the default settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// A handle that asks [`run`](Self::run) to shut down, from any thread
    /// (a signal handler's, say).
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves until the [`Stopper`] is triggered, then shuts down gracefully
    /// within the configured [`shutdown_timeout`](ServerBuilder::shutdown_timeout).
    ///
    /// It does not listen for signals: by itself, Ctrl-C or a deploy's
    /// SIGTERM kills the process with its queued tasks. To drain on them,
    /// call `run_until_signal` instead, or `Stopper::stop_on_signals`
    /// first; both need the cargo feature `signals` (`cargo add afterward
    /// --features signals`), and without it do not exist ("no method named
    /// `run_until_signal`").
    pub fn run(self) -> Result<ShutdownReport, Error> {
        let timeout = self.config.shutdown_timeout;
        let stopper = self.stopper.clone();
        let handle = self.spawn()?;
        stopper.wait();
        Ok(handle.shutdown(timeout))
    }

    /// Serves until SIGINT or SIGTERM (or the [`Stopper`]), then shuts down
    /// gracefully within the configured
    /// [`shutdown_timeout`](ServerBuilder::shutdown_timeout): new requests are
    /// refused, those in flight finish, the queued tasks run. A second signal
    /// exits at once, with status 130. (Feature `signals`, Unix; see
    /// [`Stopper::stop_on_signals`].)
    ///
    /// ```no_run
    /// use afterward::{App, Server};
    ///
    /// let app = App::new().get("/", || "hello");
    /// let server = Server::builder().address("127.0.0.1:8000").build(app)?;
    /// let report = server.run_until_signal()?; // Ctrl-C drains, then returns
    /// std::process::exit(if report.is_complete() { 0 } else { 1 });
    /// # Ok::<(), afterward::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// When the signal handlers cannot be installed, or the server cannot start.
    #[cfg(feature = "signals")]
    pub fn run_until_signal(self) -> Result<ShutdownReport, Error> {
        self.stopper.stop_on_signals()?;
        self.run()
    }

    /// Starts serving on background threads and returns at once.
    pub fn spawn(self) -> Result<ServerHandle, Error> {
        let Server {
            listener,
            counters,
            ids,
            app,
            config,
            stopper,
        } = self;
        let pool = BackgroundPool::builder()
            .workers(config.background_workers)
            .queue_capacity(config.queue_capacity)
            .on_full(config.on_full)
            .jobs(app.job_registry(), app.state_map().clone())
            .schedules(app.schedules())
            .job_settings(config.jobs.clone())
            .broker(config.broker.clone())
            .spill(config.spill.clone())
            .build_with(counters.clone())?;
        let shed = (config.on_full == OnFull::Shed).then(|| Shedding {
            paths: config.shed_exempt.clone(),
            methods: config.shed_exempt_methods.clone(),
        });
        let shared = Arc::new(ServerState {
            listener,
            app,
            counters,
            pool,
            max_body_bytes: config.max_body_bytes,
            echo_errors: config.echo_errors,
            shed,
            stopping: AtomicBool::new(false),
            ids,
        });
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let mut workers = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let shared_for_worker = shared.clone();
            let done = done_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("afterward-http-{index}"))
                .spawn(move || {
                    worker::serve(&shared_for_worker);
                    drop(done);
                });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    shared
                        .stopping
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    for _ in 0..workers.len() {
                        shared.listener.wake_one();
                    }
                    return Err(Error::Io(e));
                }
            }
        }
        log::info!(
            "listening on http://{} ({} engine, {} request workers, {} background workers, \
             queue of {})",
            shared.listener.local_addr(),
            config.engine.unwrap_or_default().name(),
            config.workers,
            config.background_workers,
            config.queue_capacity
        );
        let engine = config.engine.unwrap_or_default();
        if engine != Engine::Builtin {
            log::warn!(
                "the {} engine has no timeouts, size limits or connection cap: the connection \
                 settings do not apply, and slow or hostile clients can hold its threads; \
                 put it behind a reverse proxy (see SECURITY.md)",
                engine.name()
            );
        }
        Ok(ServerHandle {
            local_addr: shared.listener.local_addr(),
            counters: shared.counters.clone(),
            stopper,
            running: Some(Running {
                shared,
                workers,
                done: done_rx,
            }),
            shutdown_timeout: config.shutdown_timeout,
        })
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Asks a running server to shut down; cheap to clone and `Send`.
///
/// To stop on SIGINT or SIGTERM, `stop_on_signals` (cargo feature
/// `signals`) calls [`stop`](Self::stop) on the first of them.
///
/// It also tells that shutdown has begun: [`ServerHandle::shutdown`] (and
/// so [`Server::run`]) stops it once new requests are being refused, so
/// [`wait`](Self::wait) returns then even when nobody called
/// [`stop`](Self::stop).
#[derive(Debug, Clone, Default)]
pub struct Stopper {
    stopped: Arc<(Mutex<bool>, Condvar)>,
}

impl Stopper {
    /// Asks the server to shut down. Calling it again has no further effect.
    pub fn stop(&self) {
        let (stopped, changed) = &*self.stopped;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops this on the first SIGINT or SIGTERM, for a graceful shutdown;
    /// a second one exits the process at once, with status 130. (Feature
    /// `signals`, Unix.)
    ///
    /// The signals are watched by a thread of their own
    /// (`afterward-signals`), through `signal-hook`, for the rest of the
    /// process's life: the default action (terminate) no longer applies.
    ///
    /// # Errors
    ///
    /// When the handlers cannot be installed.
    #[cfg(feature = "signals")]
    pub fn stop_on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let stopper = self.clone();
        thread::Builder::new()
            .name("afterward-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if stopper.is_stopped() {
                        log::warn!(
                            "{name} again: exiting now, without waiting for background tasks"
                        );
                        std::process::exit(130);
                    }
                    log::info!("{name} received: shutting down gracefully");
                    stopper.stop();
                }
            })?;
        Ok(())
    }

    /// Blocks until [`stop`](Self::stop) is called.
    pub fn wait(&self) {
        let (stopped, changed) = &*self.stopped;
        let mut stopped = stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            stopped = changed.wait(stopped).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A running server: its address, counters, idle signal and shutdown.
///
/// Dropping the handle shuts the server down within the configured
/// [`shutdown_timeout`](ServerBuilder::shutdown_timeout) and logs the report.
pub struct ServerHandle {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    stopper: Stopper,
    running: Option<Running>,
    shutdown_timeout: Duration,
}

struct Running {
    shared: Arc<ServerState>,
    workers: Vec<JoinHandle<()>>,
    /// Disconnects when every request worker has ended.
    done: crossbeam_channel::Receiver<()>,
}

/// Under [`OnFull::Shed`], the requests served even while the queue is full.
struct Shedding {
    paths: Vec<String>,
    methods: Vec<Method>,
}

/// What every request worker shares.
struct ServerState {
    listener: Listener,
    app: App,
    counters: Arc<Counters>,
    pool: BackgroundPool,
    max_body_bytes: usize,
    /// Print why a response is a `500` to standard error (test servers).
    echo_errors: bool,
    /// Under [`OnFull::Shed`], what is never shed.
    shed: Option<Shedding>,
    stopping: AtomicBool,
    ids: Arc<RequestIds>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// The jobs' statuses, dead letters and captured jobs, when the app
    /// registers jobs.
    pub fn jobs(&self) -> Option<crate::jobs::Jobs> {
        self.running
            .as_ref()
            .and_then(|running| running.shared.pool.jobs())
    }

    /// The live counters (for the test harness's waiting requests).
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Blocks until no request is being handled and every background task
    /// added so far has finished (or been discarded), or until `timeout` has
    /// passed. Returns whether the server became idle.
    ///
    /// A client that has read its response can call this to wait for the
    /// tasks that request added: they were added before the response was sent.
    /// Requests still waiting for a free request worker are not counted yet:
    /// with concurrent clients, wait for what they started, not for silence.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.counters.wait_idle(timeout)
    }

    /// Blocks until `condition` holds for the counters, or until `timeout`
    /// has passed; returns whether it held. The condition is checked now and
    /// again each time a request finishes, a task ends or is discarded, a
    /// request's task list is sealed, a connection opens or closes, a request
    /// enters or leaves the queue to the workers, request body bytes are
    /// reserved or released, the engine refuses or drops a request, or a job
    /// counter changes: wait on those fields (`connections_open`,
    /// `requests_in_flight`, `requests_queued`, `body_bytes_buffered`, the
    /// `refused_*` counters, `client_gone`, the task outcomes, the `jobs_*`
    /// counters), not on counters that change at other moments.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn f(handle: &afterward::ServerHandle) {
    /// // Every client connection has been closed.
    /// assert!(handle.wait_for(Duration::from_secs(30), |stats| stats.connections_open == 0));
    /// # }
    /// ```
    pub fn wait_for(&self, timeout: Duration, condition: impl Fn(&Stats) -> bool) -> bool {
        self.counters
            .wait_until(timeout, |counters| condition(&counters.snapshot()))
    }

    /// A [`Stopper`] for this server (the one [`Server::stopper`] returned).
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Shuts down gracefully: stops taking requests, lets the requests in
    /// flight finish and dispatch their tasks, and runs the queued tasks,
    /// all within `timeout`.
    ///
    /// Whatever has not started by then is not run: the report lists it (and
    /// the tasks still running, which are left to finish on their own
    /// threads), each is logged, and the counters count it as discarded.
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        let running = self.running.take().expect("a handle shuts down once");
        running.shutdown(timeout, &self.stopper)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(self.shutdown_timeout, &self.stopper);
        }
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
