//! [`ServerBuilder`]: every setting of the server, checked before binding.

use std::thread;
use std::time::Duration;

use super::{Server, Stopper};
use std::sync::Arc;

use crate::access::RequestIds;
use crate::engine::{ConnectionLimits, Engine, Listener};
use crate::error::Error;
use crate::jobs::JobSettings;
use crate::method::Method;
use crate::pool::{OnFull, DEFAULT_QUEUE_CAPACITY};
use crate::routing::App;
use crate::stats::Counters;

/// The default address: `127.0.0.1:8000`, as uvicorn's.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8000";
/// The default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// The default time [`Server::run`] gives shutdown: 30 seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures and builds a [`Server`].
///
/// | setting | default |
/// |---|---|
/// | [`address`](Self::address) | [`DEFAULT_ADDRESS`] (`127.0.0.1:8000`) |
/// | [`engine`](Self::engine) | [`Engine::Builtin`] |
/// | [`workers`](Self::workers) | 4 × the available cores, at least 8 |
/// | [`background_workers`](Self::background_workers) | the available cores, at least 2 |
/// | [`queue_capacity`](Self::queue_capacity) | [`DEFAULT_QUEUE_CAPACITY`] (1024) |
/// | [`on_full`](Self::on_full) | [`OnFull::Block`] |
/// | [`shed_exempt`](Self::shed_exempt) | none |
/// | [`shed_exempt_methods`](Self::shed_exempt_methods) | `GET`, `HEAD` |
/// | [`max_body_bytes`](Self::max_body_bytes) | [`DEFAULT_MAX_BODY_BYTES`] (1 MiB) |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | [`DEFAULT_SHUTDOWN_TIMEOUT`] (30 s) |
/// | [`header_timeout`](Self::header_timeout) | 10 s |
/// | [`idle_timeout`](Self::idle_timeout) | 5 s |
/// | [`body_timeout`](Self::body_timeout) | 30 s |
/// | [`min_body_rate`](Self::min_body_rate) | 1 KiB/s |
/// | [`max_body_buffer_bytes`](Self::max_body_buffer_bytes) | 64 MiB |
/// | [`max_pending_requests`](Self::max_pending_requests) | 4096 |
/// | [`queue_timeout`](Self::queue_timeout) | 10 s |
/// | [`client_gone_check_after`](Self::client_gone_check_after) | 10 ms |
/// | [`worker_wake_after`](Self::worker_wake_after) | 200 µs |
/// | [`write_timeout`](Self::write_timeout) | 30 s |
/// | [`min_write_rate`](Self::min_write_rate) | 1 KiB/s |
/// | [`max_connections`](Self::max_connections) | the descriptor limit, less a reserve |
/// | [`max_connections_per_client`](Self::max_connections_per_client) | no limit |
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
pub(super) struct Config {
    pub(super) workers: usize,
    pub(super) background_workers: usize,
    pub(super) queue_capacity: usize,
    pub(super) on_full: OnFull,
    pub(super) shed_exempt: Vec<String>,
    pub(super) shed_exempt_methods: Vec<Method>,
    pub(super) max_body_bytes: usize,
    pub(super) shutdown_timeout: Duration,
    pub(super) connection: ConnectionLimits,
    /// `None`: not chosen, the default (and `TestServer` may pick one).
    pub(super) engine: Option<Engine>,
    /// Print why a response is a `500` to standard error: `TestServer` sets it.
    pub(super) echo_errors: bool,
    pub(super) jobs: JobSettings,
    /// Where jobs go instead of the pool (`ServerBuilder::redis`).
    pub(super) broker: Option<crate::jobs::broker::BrokerFactory>,
    /// Where jobs go at the shutdown deadline (`ServerBuilder::redis_spill`).
    pub(super) spill: Option<crate::jobs::broker::BrokerFactory>,
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
                shed_exempt_methods: vec![Method::Get, Method::Head],
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                connection: ConnectionLimits::default(),
                engine: None,
                echo_errors: false,
                jobs: JobSettings::default(),
                broker: None,
                spill: None,
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

    /// Methods served even while [`OnFull::Shed`] refuses requests: those
    /// whose handlers add no background work. `GET` and `HEAD` by default,
    /// so that clients can still poll the status of work accepted earlier.
    pub fn shed_exempt_methods<I>(mut self, methods: I) -> ServerBuilder
    where
        I: IntoIterator<Item = Method>,
    {
        self.config.shed_exempt_methods = methods.into_iter().collect();
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

    /// How long a client has to send a whole request body, from the end of
    /// its head; a slower one is answered `408` and disconnected. The event
    /// loop reads every body (up to [`max_body_bytes`](Self::max_body_bytes))
    /// before a request worker sees the request, so a slow upload holds no
    /// worker, only its share of [`max_body_buffer_bytes`](Self::max_body_buffer_bytes).
    pub fn body_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.connection.body_timeout = timeout;
        self
    }

    /// The former name of [`body_timeout`](Self::body_timeout), when a body
    /// was read by the handler's worker and the timeout was per read. It now
    /// sets the whole body's deadline.
    #[deprecated(note = "use `body_timeout`: a body now has one deadline for the whole of it")]
    pub fn body_read_timeout(self, timeout: Duration) -> ServerBuilder {
        self.body_timeout(timeout)
    }

    /// The least a client must send of a request body, in bytes per second
    /// on average, once 2 s have passed since its head; a slower one is
    /// answered `408` and disconnected before the
    /// [`body_timeout`](Self::body_timeout). 0 turns it off.
    pub fn min_body_rate(mut self, bytes_per_second: u64) -> ServerBuilder {
        self.config.connection.min_body_rate = bytes_per_second;
        self
    }

    /// How many bytes of request bodies the engine holds at most, every
    /// connection together: bodies being received, waiting for a worker, or
    /// with their handler. A body's declared length is reserved when its head
    /// arrives (a chunked body's as it grows); a request whose body does not
    /// fit is answered `503` with `Retry-After` before its handler runs,
    /// counted in [`Stats::refused_body_budget`](crate::Stats::refused_body_budget).
    pub fn max_body_buffer_bytes(mut self, n: u64) -> ServerBuilder {
        self.config.connection.max_body_buffer_bytes = n;
        self
    }

    /// How many complete requests may wait for a free request worker. One
    /// more is answered `503` with `Retry-After` at once, counted in
    /// [`Stats::refused_queue_full`](crate::Stats::refused_queue_full).
    pub fn max_pending_requests(mut self, n: usize) -> ServerBuilder {
        self.config.connection.max_pending_requests = n;
        self
    }

    /// How long a complete request may wait for a free request worker; one
    /// that waited longer is answered `503` with `Retry-After` instead of
    /// being handled, counted in
    /// [`Stats::refused_queue_timeout`](crate::Stats::refused_queue_timeout).
    /// (A request whose client has closed the connection meanwhile is
    /// dropped unanswered instead, counted in
    /// [`Stats::client_gone`](crate::Stats::client_gone).)
    pub fn queue_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.connection.queue_timeout = timeout;
        self
    }

    /// How long a complete request must have waited for a request worker
    /// before the worker checks (with one `peek` of the socket) whether its
    /// client has closed the connection meanwhile; such a request is dropped
    /// unanswered, its handler never run (logged with status 499, counted in
    /// [`Stats::client_gone`](crate::Stats::client_gone)). A request taken at
    /// once is not checked, which saves a system call per request when the
    /// server keeps up; requests piled up behind busy workers are. Zero
    /// checks every request.
    pub fn client_gone_check_after(mut self, wait: Duration) -> ServerBuilder {
        self.config.connection.gone_check_after = wait;
        self
    }

    /// How long a complete request waits for a busy request worker (one
    /// serving a request) to come back for it before a sleeping worker is
    /// woken to take it. The builtin engine wakes a sleeping worker at once
    /// when no worker is awake, or when none has come back from a request
    /// within this time (the busy ones may be in slow handlers); while
    /// workers come and go, the next requests wait for them, so that quick
    /// requests are served by the workers already running, without a
    /// wake-up and a context switch each. A handler that turns slow thus
    /// holds a request queued behind it this long at most before another
    /// worker takes it; a request waiting longer wakes nobody only while as
    /// many workers as cores are busy and coming back (the server is short
    /// of CPU, not of workers). Zero wakes a sleeping worker for every
    /// request queued while the others are busy. A worker with nothing to
    /// serve runs the event loop; while every worker is busy, a thread of
    /// the engine's own runs it, once it has seen it left unturned this
    /// long (1 ms at most), and it looks each millisecond: so the loop goes
    /// unturned 2 ms at most, and a request queued by a worker that then
    /// turns slow may wait up to a millisecond longer than this wait.
    /// (tiny_http has its own queue.)
    pub fn worker_wake_after(mut self, wait: Duration) -> ServerBuilder {
        self.config.connection.worker_wake_after = wait;
        self
    }

    /// How long a client has to take a whole response. A request worker
    /// never waits on the client: what the socket does not take at once is
    /// sent by the event loop, and the connection reads no further request
    /// until it is sent. A client still not done by then is disconnected.
    /// Raise it if you send large responses to slow clients.
    pub fn write_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.connection.write_timeout = timeout;
        self
    }

    /// The least a client must take of a response's rest, in bytes per
    /// second on average, once the rest has waited 2 s; a slower one is
    /// disconnected before the [`write_timeout`](Self::write_timeout).
    /// 0 turns it off.
    pub fn min_write_rate(mut self, bytes_per_second: u64) -> ServerBuilder {
        self.config.connection.min_write_rate = bytes_per_second;
        self
    }

    /// How many connections are open at once. A connection beyond it is
    /// answered `503` and closed at once. An idle connection costs no
    /// thread, only its socket and a few hundred bytes. By default: the
    /// process's descriptor limit less an eighth of it (16 to 1,024
    /// descriptors) for everything else the process opens. Either way, our
    /// engine raises the process's soft descriptor limit to its hard limit
    /// as it starts, where the system allows.
    pub fn max_connections(mut self, n: usize) -> ServerBuilder {
        self.config.connection.max_connections = Some(n);
        self
    }

    /// How many connections one client address may hold at once; a
    /// connection beyond it is answered `503` and closed at once, so that one
    /// client cannot take every connection of [`max_connections`](Self::max_connections).
    /// An IPv6 client is counted by its /64 (one client usually holds a
    /// whole /64). No limit by default: behind a reverse proxy every client
    /// has the proxy's address. Our engine only (not tiny_http).
    pub fn max_connections_per_client(mut self, n: usize) -> ServerBuilder {
        self.config.connection.max_connections_per_client = Some(n);
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

    /// How many connections the kernel may hold for the event loop before it
    /// accepts them (capped by the system, `net.core.somaxconn` on Linux). Too
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

    /// The HTTP/1.1 engine: [`Engine::Builtin`] (the default), or `tiny_http`
    /// with the cargo feature `tiny-http`. The connection settings below
    /// (timeouts, limits, the connection cap) apply to the builtin engine only.
    pub fn engine(mut self, engine: Engine) -> ServerBuilder {
        self.config.engine = Some(engine);
        self
    }

    /// Prints why a response is a `500` (missing state, dependency cycle,
    /// handler panic) to standard error, where the test harness shows it
    /// beside a failing test.
    pub(crate) fn echo_errors(mut self, on: bool) -> ServerBuilder {
        self.config.echo_errors = on;
        self
    }

    /// Attempts in all for a [`Job`](crate::Job) that does not set its own
    /// (default 5).
    pub fn job_max_attempts(mut self, n: u32) -> ServerBuilder {
        self.config.jobs.max_attempts = n;
        self
    }

    /// The delay before a job's first retry (default 100 ms); it doubles at
    /// each retry, up to [`job_max_backoff`](Self::job_max_backoff), with
    /// jitter in its upper half.
    pub fn job_backoff(mut self, delay: Duration) -> ServerBuilder {
        self.config.jobs.backoff = delay;
        self
    }

    /// The longest delay between two attempts of a job (default 60 s).
    pub fn job_max_backoff(mut self, delay: Duration) -> ServerBuilder {
        self.config.jobs.max_backoff = delay;
        self
    }

    /// Sends jobs to `broker` instead of the pool (`ServerBuilder::redis`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn broker(mut self, broker: crate::jobs::broker::BrokerFactory) -> ServerBuilder {
        self.config.broker = Some(broker);
        self
    }

    /// Spills jobs to `spill` at the shutdown deadline (`ServerBuilder::redis_spill`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn spill(mut self, spill: crate::jobs::broker::BrokerFactory) -> ServerBuilder {
        self.config.spill = Some(spill);
        self
    }

    /// How many job statuses are kept for [`Jobs::status`](crate::Jobs::status)
    /// (default 10,000; the oldest is evicted first).
    pub fn job_status_capacity(mut self, n: usize) -> ServerBuilder {
        self.config.jobs.status_capacity = n;
        self
    }

    /// How many dead jobs are kept (default 1,000; the oldest is evicted first).
    pub fn dead_letter_capacity(mut self, n: usize) -> ServerBuilder {
        self.config.jobs.dead_letter_capacity = n;
        self
    }

    /// How long a job's attempt may run before it is reported overdue and
    /// its background thread replaced (default 30 s). The attempt is not
    /// stopped (Rust cannot kill a thread): when it returns, its outcome is
    /// counted as usual.
    pub fn job_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.jobs.timeout = timeout;
        self
    }

    /// The largest result a job may keep with its status, in bytes of JSON
    /// (default 64 KiB; [`JobContext::set_result`](crate::JobContext::set_result)
    /// refuses a larger one).
    pub fn job_max_result_bytes(mut self, n: usize) -> ServerBuilder {
        self.config.jobs.max_result_bytes = n;
        self
    }

    /// How much of each job's payload its status keeps for the dashboard's
    /// job page, in bytes (default 1 KiB, longer ones cut; 0 keeps none,
    /// for payloads no operator should read).
    pub fn job_status_payload_bytes(mut self, n: usize) -> ServerBuilder {
        self.config.jobs.status_payload_bytes = n;
        self
    }

    /// How many replacement threads the background pool may add for threads
    /// held by overdue jobs (default 4).
    pub fn job_replacement_threads(mut self, n: usize) -> ServerBuilder {
        self.config.jobs.max_replacement_threads = n;
        self
    }

    /// The queues the in-process jobs run in, and how they take turns
    /// (default: none chosen; every job runs in its request's batch). See
    /// [`JobSettings::queues`](crate::JobSettings::queues). Without Redis,
    /// every registered job type's queue must be among them.
    pub fn queues(mut self, queues: crate::jobs::Queues) -> ServerBuilder {
        self.config.jobs.queues = Some(queues);
        self
    }

    /// How enqueued jobs run: [`JobMode::Normal`](crate::JobMode::Normal)
    /// (the default), or, in tests, at once
    /// ([`Eager`](crate::JobMode::Eager)) or not at all
    /// ([`Capture`](crate::JobMode::Capture)).
    pub fn job_mode(mut self, mode: crate::jobs::JobMode) -> ServerBuilder {
        self.config.jobs.mode = mode;
        self
    }

    /// Whether [`engine`](Self::engine) was called.
    pub(crate) fn engine_is_set(&self) -> bool {
        self.config.engine.is_some()
    }

    /// Checks the settings and binds the listening socket.
    pub fn build(self, app: App) -> Result<Server, Error> {
        let mut config = self.config;
        for (name, value) in [
            ("workers", config.workers),
            ("background_workers", config.background_workers),
            ("queue_capacity", config.queue_capacity),
            (
                "max_connections",
                config.connection.max_connections.unwrap_or(1),
            ),
            (
                "max_connections_per_client",
                config.connection.max_connections_per_client.unwrap_or(1),
            ),
            ("max_headers", config.connection.max_headers),
            (
                "max_pending_requests",
                config.connection.max_pending_requests,
            ),
            ("max_header_bytes", config.connection.max_header_bytes),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        crate::background::check_queues(
            &config.jobs,
            &app.job_registry(),
            config.broker.is_some(),
        )?;
        crate::background::check_schedules(&app.schedules())?;
        config.connection.max_body_bytes = config.max_body_bytes;
        let counters = Arc::new(Counters::new(config.queue_capacity));
        let ids = Arc::new(RequestIds::new());
        let listener = Listener::bind(
            config.engine.unwrap_or_default(),
            &self.address,
            config.connection.clone(),
            counters.clone(),
            ids.clone(),
        )
        .map_err(|source| Error::Bind {
            address: self.address.clone(),
            source,
        })?;
        Ok(Server {
            listener,
            counters,
            ids,
            app,
            config,
            stopper: Stopper::default(),
        })
    }
}
