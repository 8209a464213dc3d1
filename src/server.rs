//! The server: builder, request workers, respond-then-dispatch, and graceful
//! shutdown.

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::engine::{ConnectionLimits, Engine, Exchange, Next};
use crate::error::Error;
use crate::http_error::HttpError;
use crate::method::Method;
use crate::pool::{Dispatcher, Job, OnFull, Pool, TaskInfo};
use crate::request::{Request, RequestInit};
use crate::response::{IntoResponse, Response};
use crate::routing::{App, Routed};
use crate::stats::{Counters, Stats};
use crate::tasks::{panic_message, BackgroundTasks};

/// The default address: `127.0.0.1:8000`, as uvicorn's.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8000";
/// The default number of queued request task lists: 1024.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// The default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// The default time [`Server::run`] gives shutdown: 30 seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures and builds a [`Server`].
///
/// | setting | default |
/// |---|---|
/// | [`address`](Self::address) | [`DEFAULT_ADDRESS`] (`127.0.0.1:8000`) |
/// | [`workers`](Self::workers) | 4 × the available cores, at least 8 |
/// | [`background_workers`](Self::background_workers) | the available cores, at least 2 |
/// | [`queue_capacity`](Self::queue_capacity) | [`DEFAULT_QUEUE_CAPACITY`] (1024) |
/// | [`on_full`](Self::on_full) | [`OnFull::Block`] |
/// | [`shed_exempt`](Self::shed_exempt) | none |
/// | [`max_body_bytes`](Self::max_body_bytes) | [`DEFAULT_MAX_BODY_BYTES`] (1 MiB) |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | [`DEFAULT_SHUTDOWN_TIMEOUT`] (30 s) |
/// | [`header_timeout`](Self::header_timeout) | 10 s |
/// | [`idle_timeout`](Self::idle_timeout) | 5 s |
/// | [`body_read_timeout`](Self::body_read_timeout) | 30 s |
/// | [`write_timeout`](Self::write_timeout) | 30 s |
/// | [`max_connections`](Self::max_connections) | 1024 |
/// | [`max_header_bytes`](Self::max_header_bytes) | 16 KiB |
/// | [`max_headers`](Self::max_headers) | 64 |
/// | [`tcp_nodelay`](Self::tcp_nodelay) | on |
/// | [`listen_backlog`](Self::listen_backlog) | 1024 |
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    address: String,
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    workers: usize,
    background_workers: usize,
    queue_capacity: usize,
    on_full: OnFull,
    shed_exempt: Vec<String>,
    max_body_bytes: usize,
    shutdown_timeout: Duration,
    connection: ConnectionLimits,
}

impl Default for ServerBuilder {
    fn default() -> ServerBuilder {
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        ServerBuilder {
            address: DEFAULT_ADDRESS.to_owned(),
            config: Config {
                workers: (4 * cores).max(8),
                background_workers: cores.max(2),
                queue_capacity: DEFAULT_QUEUE_CAPACITY,
                on_full: OnFull::Block,
                shed_exempt: Vec::new(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                connection: ConnectionLimits::default(),
            },
        }
    }
}

impl ServerBuilder {
    /// A builder with the defaults in the table above.
    pub fn new() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The `host:port` to listen on; port 0 picks a free port (read it back
    /// with [`Server::local_addr`]).
    pub fn address(mut self, address: impl Into<String>) -> ServerBuilder {
        self.address = address.into();
        self
    }

    /// Request worker threads: how many handlers can run at once.
    pub fn workers(mut self, n: usize) -> ServerBuilder {
        self.config.workers = n;
        self
    }

    /// Background worker threads: how many requests' task lists can run at once.
    pub fn background_workers(mut self, n: usize) -> ServerBuilder {
        self.config.background_workers = n;
        self
    }

    /// How many requests' task lists may wait for a background worker. When
    /// the queue is full, a request worker waits for room after responding
    /// (backpressure: nothing is dropped).
    pub fn queue_capacity(mut self, n: usize) -> ServerBuilder {
        self.config.queue_capacity = n;
        self
    }

    /// What happens when the queue is full; see [`OnFull`].
    pub fn on_full(mut self, policy: OnFull) -> ServerBuilder {
        self.config.on_full = policy;
        self
    }

    /// Paths (exact, without the query string) served even while
    /// [`OnFull::Shed`] refuses requests: health checks and metrics, say.
    pub fn shed_exempt<I, S>(mut self, paths: I) -> ServerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.shed_exempt = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The largest request body read, in bytes; a larger one answers `413`.
    pub fn max_body_bytes(mut self, n: usize) -> ServerBuilder {
        self.config.max_body_bytes = n;
        self
    }

    /// How long [`Server::run`] gives shutdown to finish requests and drain
    /// background tasks once it is asked to stop.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// How long a client has to send a whole request head (request line and
    /// headers) once its first byte has arrived; a slower one is disconnected.
    pub fn header_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.connection.header_timeout = timeout;
        self
    }

    /// How long a connection may wait for its next request (or, new, for its
    /// first) before the server closes it.
    pub fn idle_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.connection.idle_timeout = timeout;
        self
    }

    /// How long one read of a request body may wait for data.
    pub fn body_read_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.connection.body_read_timeout = timeout;
        self
    }

    /// How long writing a response may block on a client that does not read
    /// it; the connection is then closed and the worker freed.
    pub fn write_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.connection.write_timeout = timeout;
        self
    }

    /// How many connections are served at once, each on its own thread. A
    /// connection beyond it is answered `503` and closed at once.
    pub fn max_connections(mut self, n: usize) -> ServerBuilder {
        self.config.connection.max_connections = n;
        self
    }

    /// The largest request head (request line and headers), in bytes; a
    /// larger one answers `431` and the connection is closed.
    pub fn max_header_bytes(mut self, n: usize) -> ServerBuilder {
        self.config.connection.max_header_bytes = n;
        self
    }

    /// The most header fields a request may have; more answer `431`.
    pub fn max_headers(mut self, n: usize) -> ServerBuilder {
        self.config.connection.max_headers = n;
        self
    }

    /// How many connections the kernel may hold for the accept thread before
    /// it takes them (capped by the system, `net.core.somaxconn` on Linux). Too
    /// small, and a burst of connections has some clients' handshakes dropped
    /// and retried a second later.
    pub fn listen_backlog(mut self, n: u32) -> ServerBuilder {
        self.config.connection.listen_backlog = n;
        self
    }

    /// Whether to set `TCP_NODELAY` on connections (on by default: responses
    /// are written in one piece, so Nagle's algorithm would only add delay).
    pub fn tcp_nodelay(mut self, on: bool) -> ServerBuilder {
        self.config.connection.tcp_nodelay = on;
        self
    }

    /// Checks the settings and binds the listening socket.
    pub fn build(self, app: App) -> Result<Server, Error> {
        let config = self.config;
        for (name, value) in [
            ("workers", config.workers),
            ("background_workers", config.background_workers),
            ("queue_capacity", config.queue_capacity),
            ("max_connections", config.connection.max_connections),
            ("max_headers", config.connection.max_headers),
            ("max_header_bytes", config.connection.max_header_bytes),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        let engine = Engine::bind(&self.address, config.connection.clone()).map_err(|source| {
            Error::Bind {
                address: self.address.clone(),
                source,
            }
        })?;
        Ok(Server {
            engine,
            app,
            config,
            stopper: Stopper::default(),
        })
    }
}

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
    engine: Engine,
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
        self.engine.local_addr()
    }

    /// A handle that asks [`run`](Self::run) to shut down, from any thread
    /// (a signal handler's, say).
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves until the [`Stopper`] is triggered, then shuts down gracefully
    /// within the configured [`shutdown_timeout`](ServerBuilder::shutdown_timeout).
    pub fn run(self) -> Result<ShutdownReport, Error> {
        let timeout = self.config.shutdown_timeout;
        let stopper = self.stopper.clone();
        let handle = self.spawn()?;
        stopper.wait();
        Ok(handle.shutdown(timeout))
    }

    /// Starts serving on background threads and returns at once.
    pub fn spawn(self) -> Result<ServerHandle, Error> {
        let Server {
            engine,
            app,
            config,
            stopper,
        } = self;
        let counters = Arc::new(Counters::new(config.queue_capacity));
        let (pool, dispatcher) = Pool::start(
            config.background_workers,
            config.queue_capacity,
            config.on_full,
            counters.clone(),
        )?;
        let shed = (config.on_full == OnFull::Shed).then(|| config.shed_exempt.clone());
        let shared = Arc::new(ServerState {
            engine,
            app,
            counters,
            max_body_bytes: config.max_body_bytes,
            shed,
            stopping: AtomicBool::new(false),
            ids: RequestIds::new(),
        });
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let mut workers = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let shared_for_worker = shared.clone();
            let dispatcher = dispatcher.clone();
            let done = done_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("afterward-http-{index}"))
                .spawn(move || {
                    serve(&shared_for_worker, &dispatcher);
                    drop(done);
                });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    shared.stopping.store(true, Ordering::SeqCst);
                    for _ in 0..workers.len() {
                        shared.engine.wake_one();
                    }
                    return Err(Error::Io(e));
                }
            }
        }
        log::info!(
            "listening on http://{} ({} request workers, {} background workers, queue of {})",
            shared.engine.local_addr(),
            config.workers,
            config.background_workers,
            config.queue_capacity
        );
        Ok(ServerHandle {
            local_addr: shared.engine.local_addr(),
            counters: shared.counters.clone(),
            stopper,
            running: Some(Running {
                shared,
                workers,
                done: done_rx,
                pool,
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
    pool: Pool,
}

/// What every request worker shares.
struct ServerState {
    engine: Engine,
    app: App,
    counters: Arc<Counters>,
    max_body_bytes: usize,
    /// Under [`OnFull::Shed`], the exempt paths.
    shed: Option<Vec<String>>,
    stopping: AtomicBool,
    ids: RequestIds,
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
        running.shutdown(timeout)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(self.shutdown_timeout);
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

/// What a graceful shutdown managed to do before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks that had not started by the deadline and never will.
    pub not_run: Vec<TaskInfo>,
    /// Tasks still running at the deadline, left to finish on their threads.
    pub still_running: Vec<TaskInfo>,
    /// Requests whose handler had not returned by the deadline. Tasks they add
    /// later are discarded, each logged and counted, but are not listed here.
    pub requests_in_flight: u64,
    /// The counters when the report was made.
    pub stats: Stats,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Whether every request finished and every task ran before the deadline.
    pub fn is_complete(&self) -> bool {
        self.not_run.is_empty() && self.still_running.is_empty() && self.requests_in_flight == 0
    }
}

impl Running {
    fn shutdown(self, timeout: Duration) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + timeout;
        let shared = &self.shared;
        log::info!("shutting down: finishing requests and background tasks within {timeout:?}");

        // Stop taking requests: each worker ends at its next wake-up, after
        // the requests queued before it.
        shared.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            shared.engine.wake_one();
        }
        let workers_done = matches!(
            self.done.recv_deadline(deadline),
            Err(RecvTimeoutError::Disconnected)
        );
        if workers_done {
            for worker in self.workers {
                // A worker catches handler panics, so it cannot end by panicking.
                let _ = worker.join();
            }
            // Requests that arrived after the wake-ups are answered, not dropped.
            while let Some(exchange) = shared.engine.try_next() {
                let refusal = HttpError::new(503, "the server is shutting down");
                let _ = exchange.respond(refusal.into_response());
            }
        }

        let idle = shared
            .counters
            .wait_idle(deadline.saturating_duration_since(Instant::now()));
        if idle && workers_done {
            // Every dispatcher is gone with its worker: the pool threads end.
            self.pool.join();
            let report = ShutdownReport {
                not_run: Vec::new(),
                still_running: Vec::new(),
                requests_in_flight: 0,
                stats: shared.counters.snapshot(),
                elapsed: started.elapsed(),
            };
            log::info!("shutdown complete: every background task ran");
            return report;
        }

        let (not_run, still_running) = self.pool.abandon();
        let stats = shared.counters.snapshot();
        let report = ShutdownReport {
            not_run,
            still_running,
            requests_in_flight: stats.requests_in_flight,
            stats,
            elapsed: started.elapsed(),
        };
        let names = |tasks: &[TaskInfo]| {
            tasks
                .iter()
                .map(|t| format!("{} (request {})", t.name, t.request_id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        log::warn!(
            "shutdown deadline passed: {} background tasks not run [{}]; {} still running [{}]; \
             {} requests still in flight",
            report.not_run.len(),
            names(&report.not_run),
            report.still_running.len(),
            names(&report.still_running),
            report.requests_in_flight
        );
        report
    }
}

/// A request worker: takes requests until shutdown wakes it.
fn serve(shared: &ServerState, dispatcher: &Dispatcher) {
    loop {
        match shared.engine.next() {
            Next::Request(exchange) => handle(shared, dispatcher, exchange),
            Next::Woken if shared.stopping.load(Ordering::SeqCst) => return,
            Next::Woken => {}
        }
    }
}

/// Handles one request: extract, run the handler, respond, then dispatch.
fn handle(shared: &ServerState, dispatcher: &Dispatcher, mut exchange: Exchange) {
    let started = Instant::now();
    shared.counters.request_started();
    let head = exchange.head();
    let request_id = shared.ids.for_request(head.headers.get("X-Request-Id"));
    let method = head.method.clone();
    let target = head.target.clone();
    let tasks = BackgroundTasks::new(request_id.clone(), shared.counters.clone());

    let mut response = if shared.must_shed(&target, dispatcher) {
        // Refused before anything else: the handler never runs, no task is added.
        shared.counters.rejected();
        HttpError::new(503, "the server is busy; retry later")
            .with_header("Retry-After", "1")
            .into_response()
    } else {
        run_handler(shared, &mut exchange, &method, &target, &request_id, &tasks)
    };
    let response_tasks = response.take_background();
    shared.counters.scheduled(response_tasks.len() as u64);
    response.headers_mut().insert("X-Request-Id", &*request_id);
    let status = response.status();

    shared.counters.responding(status);
    if let Err(e) = exchange.respond(response) {
        log::debug!("request {request_id}: the response could not be sent: {e}");
    }
    // Architecture invariant: a request's tasks reach the pool only after
    // `respond` has returned, that is once the response is written and flushed.
    let mut job = tasks.take();
    job.extend(response_tasks);
    let task_count = job.len();
    dispatcher.dispatch(Job {
        request_id: request_id.clone(),
        tasks: job,
    });
    log::info!(
        target: "afterward::access",
        "{method} {target} {status} {:.1}ms request_id={request_id} tasks={task_count}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    shared.counters.request_finished();
}

/// Builds the `Request`, routes it and runs its handler, catching a panic.
/// The tasks of a request whose handler never ran, or panicked, are discarded.
fn run_handler(
    shared: &ServerState,
    exchange: &mut Exchange,
    method: &Method,
    target: &str,
    request_id: &Arc<str>,
    tasks: &BackgroundTasks,
) -> Response {
    let (head, body) = exchange.parts();
    let mut request = Request::new(RequestInit {
        method: method.clone(),
        target,
        headers: std::mem::take(&mut head.headers),
        remote_addr: head.remote_addr,
        request_id: request_id.clone(),
        body,
        declared_length: head.content_length,
        body_limit: shared.max_body_bytes,
        tasks: tasks.clone(),
        state: shared.app.state_map(),
        counters: &shared.counters,
    });
    match panic::catch_unwind(AssertUnwindSafe(|| shared.app.handle(&mut request))) {
        Ok(Routed::Handled(response)) => response,
        Ok(Routed::Rejected(error)) => {
            tasks.discard("the request was rejected before its handler ran");
            error.into_response()
        }
        Err(payload) => {
            log::error!(
                "handler for {method} {target} (request {request_id}) panicked: {}",
                panic_message(payload.as_ref())
            );
            tasks.discard("its handler panicked");
            HttpError::new(500, "Internal Server Error").into_response()
        }
    }
}

impl ServerState {
    /// Under [`OnFull::Shed`]: the queue is full and `target` is not exempt.
    fn must_shed(&self, target: &str, dispatcher: &Dispatcher) -> bool {
        let Some(exempt) = &self.shed else {
            return false;
        };
        let path = target.split('?').next().unwrap_or(target);
        dispatcher.is_full() && !exempt.iter().any(|p| p == path)
    }
}

/// Request ids: the client's `X-Request-Id` when it is sane, else a new one.
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        // Distinct enough across restarts of one service to tell runs apart in logs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(std::process::id()) << 32);
        RequestIds {
            prefix: format!("{:08x}", seed as u32),
            next: AtomicU64::new(1),
        }
    }

    fn for_request(&self, client_id: Option<&str>) -> Arc<str> {
        match client_id {
            Some(id) if is_sane_id(id) => id.into(),
            _ => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                format!("{}-{n}", self.prefix).into()
            }
        }
    }
}

/// 1 to 200 visible ASCII characters: safe to log and to echo in a header.
fn is_sane_id(id: &str) -> bool {
    (1..=200).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::{is_sane_id, RequestIds};

    #[test]
    fn client_request_ids_are_kept_only_when_sane() {
        let ids = RequestIds::new();
        assert_eq!(&*ids.for_request(Some("abc-123")), "abc-123");
        let made = ids.for_request(Some("bad id\r\n"));
        assert!(is_sane_id(&made) && made.ends_with("-1"), "{made}");
        assert!(ids.for_request(None).ends_with("-2"));
        assert!(!is_sane_id(&"x".repeat(201)));
    }
}
