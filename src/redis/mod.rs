//! Named jobs over Redis Streams (feature `redis`): the same [`Job`](crate::Job)s,
//! sent by the web server and run by [`Worker`]s in any number of processes.
//!
//! Set [`ServerBuilder::redis`](crate::ServerBuilder::redis) and every job a
//! handler enqueues goes to Redis instead of the local pool, still after the
//! response: a sender thread batches many requests' jobs into pipelined
//! `XADD`s. Closures (`add_task`) stay local. A [`Worker`], in a binary that
//! registers the same job types, reads them with a consumer group and runs
//! them with the same retry policy ([`JobSettings`](crate::JobSettings)).
//!
//! # What is guaranteed
//!
//! **At least once.** A job enqueued with
//! [`enqueue_durable`](crate::BackgroundTasks::enqueue_durable) is in Redis
//! before the handler returns; one enqueued with
//! [`enqueue`](crate::BackgroundTasks::enqueue) is in the server's bounded
//! buffer until Redis acknowledges it (a crash of the web server loses what
//! the buffer holds; a graceful stop sends it first, and reports what it
//! could not send). A job in Redis runs until an attempt succeeds, or until
//! its attempts run out (then it is a dead letter in its own stream).
//!
//! A job can run more than once:
//! - a worker stalls (paused, a long GC-like stop, a network partition) for
//!   longer than the visibility timeout: another worker reclaims the job and
//!   runs it, and the stalled one may finish it too (Redis's `XACK` does not
//!   check who owns the entry). The reclaim is counted
//!   ([`WorkerStats::reclaimed`]), and the attempt knows
//!   ([`JobContext::attempt`](crate::JobContext::attempt) is the same number);
//! - a send to Redis times out after Redis got the job: the sender sends it
//!   again, with the same id.
//!
//! Every job carries its id ([`JobContext::id`](crate::JobContext::id)): make
//! effects idempotent by that id, or ask a [`Dedupe`] before a side effect
//! that must not happen twice.

mod admin;
mod backend;
mod cancel;
mod cluster;
mod connection;
mod heartbeat;
mod keys;
mod producer;
mod schedules;
mod status;
mod target;
mod unique;
mod worker;
mod write;

/// The [`redis`](https://docs.rs/redis/1) crate (1.x, blocking API) this
/// module uses, for commands of your own on a [`RedisConfig::connect`]ion.
pub use ::redis as client;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::admin::{Admin, DeadJob, Dedupe, QueueCounts, WorkerInfo};
pub use self::connection::Connection;
use self::keys::Keys;
pub(crate) use self::producer::Producer;
pub use self::worker::{Worker, WorkerBuilder, WorkerReport, WorkerStats};

use crate::background::BackgroundPoolBuilder;
use crate::error::Error;
use crate::jobs::broker::BrokerFactory;
use crate::server::ServerBuilder;

/// Where Redis is and how the jobs are kept there.
///
/// | setting | default |
/// |---|---|
/// | [`prefix`](Self::prefix) | `afterward` (keys `{afterward:QUEUE}:jobs`, `{afterward:QUEUE}:dead`, …) |
/// | [`timeout`](Self::timeout) | 2 s, on every connect, read and write |
/// | [`buffer_capacity`](Self::buffer_capacity) | 10,000 jobs waiting to be sent |
/// | [`batch`](Self::batch) | 100 jobs per pipelined send or read |
/// | [`linger`](Self::linger) | 1 ms: how long a job waits for others to share its send |
/// | [`status_ttl`](Self::status_ttl) | 24 h |
/// | [`dead_letter_capacity`](Self::dead_letter_capacity) | 10,000 (oldest trimmed) |
/// | [`unique_ttl`](Self::unique_ttl) | 24 h (plus the job's delay) |
/// | [`status_payload_bytes`](Self::status_payload_bytes) | 1 KiB of each payload kept with its status |
/// | [`recent_done`](Self::recent_done) | 1,000 ids of jobs done kept per queue, for the dashboard |
/// | [`wait_replicas`](Self::wait_replicas) | 0: a send is done once the primary has it |
/// | [`partitions`](Self::partitions) | none: each queue is one stream |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    target: target::Target,
    /// The prefix of every key.
    pub prefix: String,
    /// The longest a connect, a read or a write may take; a call that times
    /// out is retried, and a send that timed out may have landed.
    pub timeout: Duration,
    /// Jobs the web server holds while Redis is slow or down. Request
    /// workers hand their jobs to it directly while it has room; when it is
    /// full, jobs go through the background pool, whose threads wait for
    /// room, and the server's [`OnFull`](crate::OnFull) policy applies as
    /// the pool's queue fills.
    pub buffer_capacity: usize,
    /// Jobs per pipelined `XADD` (sender) or `XREADGROUP` (worker).
    pub batch: usize,
    /// How long the sender waits, once a job comes, for others to join it
    /// (up to [`batch`](Self::batch)), so that many requests' jobs share one
    /// round trip to Redis, and request workers hand jobs over without
    /// waking the sender each time. Zero sends each job at once.
    pub linger: Duration,
    /// How long a job's status is kept in Redis after its last change, at
    /// least: statuses are kept in hashes of 4,096 ids, and a hash goes once
    /// none of its statuses has changed for this long.
    pub status_ttl: Duration,
    /// Dead letters kept in their stream (`XADD … MAXLEN ~`): only dead
    /// letters are ever trimmed, never jobs.
    pub dead_letter_capacity: usize,
    /// How long a unique job's key is held at most
    /// ([`JobOptions::unique`](crate::JobOptions::unique)), after its enqueue
    /// and its delay: the key is released when the job ends, and this bounds
    /// it when a crash means it never does. A unique job still waiting after
    /// this long no longer blocks another.
    pub unique_ttl: Duration,
    /// How much of each job's payload is kept with its status (as long as
    /// the status), for the dashboard's job page: the first 1 KiB, longer
    /// ones cut and ending ` …`. Zero keeps none: for payloads that carry
    /// what no operator should read. Written once, by the producer.
    pub status_payload_bytes: usize,
    /// How many of the jobs done last each queue lists
    /// (`{P:Q}:done`, ids only, trimmed as workers add to it), for the
    /// dashboard's "done" list: 1,000. Zero keeps no list (and saves the
    /// workers two commands per batch).
    pub recent_done: usize,
    /// Replicas that must have a job before its send counts as done (a
    /// `WAIT` after each pipelined send and each durable enqueue): 0, none.
    /// Redis replicates after it answers, so with 0 a failover (Sentinel's,
    /// a Cluster's) can lose jobs the old primary acknowledged; with 1, a
    /// job acknowledged is on a replica too, and a send that no replica
    /// confirmed in half the [`timeout`](Self::timeout) is sent again (to
    /// the new primary, after a failover): at the price of a round trip
    /// per batch, and of no sends at all while no replica is up.
    pub wait_replicas: usize,
    /// Queues split in partitions: `("hot", 4)` sends `hot`'s jobs to the
    /// queues `hot.0` … `hot.3` in turn (a unique job always to the same
    /// one, by its key), each a stream of its own under its own hash tag,
    /// so that on a cluster one queue's jobs spread over several primaries;
    /// a worker serving `hot` reads all four, with `hot`'s share of turns
    /// and its limit split among them. Give the same partitions to the web
    /// servers and the workers (`--queue-partitions hot=4`): a worker
    /// reads the partitions it is told of. None by default.
    pub partitions: Vec<(String, usize)>,
}

impl RedisConfig {
    /// Redis at `url`:
    ///
    /// - `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`: one server; an ACL
    ///   user and its password, or the password alone (`redis://:PASSWORD@…`),
    ///   percent-encoded where they hold `@ : / ? #`;
    /// - `rediss://…`: the same over TLS (feature `redis-tls`), the server
    ///   verified against the system's roots or [`ca_file`](Self::ca_file);
    /// - `redis+unix:///path/to/socket[?db=N&user=U&pass=P]`;
    /// - `redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB][?sentinel_password=P]`
    ///   (`rediss+sentinel://` for TLS): the primary that these Sentinels
    ///   (port 26379 by default) name for `SERVICE`, asked again at every
    ///   connect, so producers and workers follow a failover when their
    ///   connection fails. The user and password are the data nodes'; the
    ///   Sentinels' own password, if any, is `sentinel_password`;
    /// - `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]`
    ///   (`rediss+cluster://` for TLS): a Redis Cluster, its slot map read
    ///   from any of these nodes (see [`Connection`]).
    ///
    /// Messages never show the password ([`redacted_url`](Self::redacted_url)).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL that is not one of these, or `rediss`
    /// without the feature `redis-tls` (nothing is connected yet).
    pub fn new(url: &str) -> Result<RedisConfig, Error> {
        let target = target::Target::parse(url).map_err(Error::Config)?;
        Ok(RedisConfig {
            target,
            prefix: "afterward".into(),
            timeout: Duration::from_secs(2),
            buffer_capacity: 10_000,
            batch: 100,
            linger: Duration::from_millis(1),
            status_ttl: Duration::from_secs(24 * 3600),
            dead_letter_capacity: 10_000,
            unique_ttl: Duration::from_secs(24 * 3600),
            status_payload_bytes: crate::DEFAULT_STATUS_PAYLOAD_BYTES,
            recent_done: 1000,
            wait_replicas: 0,
            partitions: Vec::new(),
        })
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        let positive = [
            ("timeout", self.timeout.is_zero()),
            ("buffer_capacity", self.buffer_capacity == 0),
            ("batch", self.batch == 0),
            ("status_ttl", self.status_ttl.as_millis() == 0),
            ("unique_ttl", self.unique_ttl.as_millis() == 0),
        ];
        match positive.iter().find(|(_, zero)| *zero) {
            Some((name, _)) => Err(Error::Config(format!("Redis {name} must be above zero"))),
            None => Ok(()),
        }
    }

    /// A new connection, with the [`timeout`](Self::timeout) on connect,
    /// reads and writes, that has answered a `PING` (through Sentinel: to
    /// the primary named now).
    ///
    /// # Errors
    ///
    /// Redis's, when it cannot be reached in time or refuses the
    /// credentials.
    pub fn connect(&self) -> redis::RedisResult<Connection> {
        self.target.connect(self.timeout)
    }

    /// The URL with its password replaced by `***`: what every message of
    /// afterward shows.
    pub fn redacted_url(&self) -> &str {
        self.target.shown()
    }

    /// Connects once and says why that fails: for a start-up check, so a
    /// wrong password, a bad certificate or a plain connection to a TLS
    /// port is a clear error at once, not a retry loop later. Servers and
    /// workers do not need it to start (they connect, and reconnect, as
    /// they go); the binary calls it before anything else.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`]: the address (password hidden) and the cause.
    pub fn verify(&self) -> Result<(), Error> {
        match self.connect() {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Redis(format!(
                "cannot connect to Redis at {}: {}",
                self.redacted_url(),
                self.target.explain(&e)
            ))),
        }
    }

    /// Verifies servers against the CA certificates in PEM file `path`
    /// instead of the system's roots (feature `redis-tls`; `rediss` URLs).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file when it cannot be read or holds
    /// no certificate, or when the URL is not a TLS one.
    #[cfg(feature = "redis-tls")]
    pub fn ca_file(mut self, path: impl AsRef<std::path::Path>) -> Result<RedisConfig, Error> {
        let pem = read_pem(path.as_ref(), "CERTIFICATE", "Redis CA file")?;
        self.target.set_ca(pem).map_err(Error::Config)?;
        Ok(self)
    }

    /// Shows servers the client certificate in PEM file `cert`, with its
    /// private key in PEM file `key` (feature `redis-tls`; for servers that
    /// ask one, `tls-auth-clients yes`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file that cannot be read or holds no
    /// certificate (or key), or when the URL is not a TLS one.
    #[cfg(feature = "redis-tls")]
    pub fn client_cert(
        mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<RedisConfig, Error> {
        let cert = read_pem(cert.as_ref(), "CERTIFICATE", "Redis client certificate")?;
        let key = read_pem(key.as_ref(), "PRIVATE KEY", "Redis client key")?;
        self.target
            .set_client_cert(cert, key)
            .map_err(Error::Config)?;
        Ok(self)
    }

    /// The queue job `envelope` is kept in: its own, or for a queue split
    /// in partitions ([`partitions`](Self::partitions)), one of them, always
    /// the same for a job (by its unique key, or its id's counter).
    ///
    /// Architecture invariant: every key derived from a job's queue (its
    /// stream, delayed set, status, unique key, the queue's name in the
    /// deployment's set) comes from here, so that a job is written, claimed,
    /// retried, cancelled and released in one place.
    pub(crate) fn queue_of<'a>(&self, envelope: &'a crate::Envelope) -> std::borrow::Cow<'a, str> {
        let queue = &*envelope.queue;
        let Some(n) = self
            .partitions
            .iter()
            .find(|(name, n)| name == queue && *n > 1)
            .map(|(_, n)| *n as u64)
        else {
            return std::borrow::Cow::Borrowed(queue);
        };
        let fnv = |text: &str| {
            text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        let k = match (
            &envelope.unique,
            crate::jobs::status::IdSource::sequence(&envelope.id),
        ) {
            (Some(key), _) => fnv(key),
            (None, Some(sequence)) => sequence,
            (None, None) => fnv(&envelope.id),
        } % n;
        std::borrow::Cow::Owned(format!("{queue}.{k}"))
    }

    /// `queues` with each queue split in partitions served as its partitions.
    pub(crate) fn expand(&self, queues: crate::Queues) -> crate::Queues {
        self.partitions
            .iter()
            .fold(queues, |queues, (queue, n)| queues.split(queue, *n))
    }

    /// Whether the URL names a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }

    pub(crate) fn keys(&self) -> Keys {
        Keys::new(&self.prefix)
    }
}

/// The PEM file at `path`, which must hold a `-----BEGIN …{label}-----`
/// block (a file without one would only fail at the first handshake).
#[cfg(feature = "redis-tls")]
fn read_pem(path: &std::path::Path, label: &str, what: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    let found = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.ends_with(&format!("{label}-----")));
    if !found {
        return Err(Error::Config(format!(
            "the {what} {} holds no PEM {label}",
            path.display()
        )));
    }
    Ok(pem)
}

/// One connection to Redis, made on first use and made again after an
/// error (a connection that failed may be mid-reply: it is never reused).
/// Calls take turns. For commands of your own from a handler or a job:
///
/// ```no_run
/// # use afterward::redis::{client, LazyConnection, RedisConfig};
/// let redis = LazyConnection::new(RedisConfig::new("redis://127.0.0.1:6379")?);
/// let n: u64 = redis.call(|con| client::cmd("INCR").arg("visits").query(con))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LazyConnection {
    config: RedisConfig,
    connection: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for LazyConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyConnection").finish_non_exhaustive()
    }
}

impl LazyConnection {
    /// A connection to `config`'s Redis, not made yet.
    pub fn new(config: RedisConfig) -> LazyConnection {
        LazyConnection {
            config,
            connection: Mutex::default(),
        }
    }

    /// The configuration it connects with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Runs `call` on the connection, connecting first if needed.
    ///
    /// # Errors
    ///
    /// Redis's, as text, when it cannot be reached or the call fails (the
    /// next call connects again).
    pub fn call<T>(
        &self,
        call: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if connection.is_none() {
            *connection = Some(self.config.connect().map_err(|e| e.to_string())?);
        }
        call(connection.as_mut().expect("connected above")).map_err(|e| {
            *connection = None;
            e.to_string()
        })
    }
}

impl BackgroundPoolBuilder {
    /// Sends jobs to Redis (see [`crate::redis`]) instead of running them on
    /// this pool; closures still run here.
    pub fn redis(self, config: RedisConfig) -> BackgroundPoolBuilder {
        self.broker(Some(broker(config)))
    }

    /// Mixed mode: jobs run on this pool, and those that have not run when
    /// a shutdown's deadline passes (queued, or waiting for a retry or a
    /// delay) go to Redis for [`Worker`]s instead of being dropped. The
    /// shutdown report lists them in [`spilled`](crate::ShutdownReport::spilled).
    pub fn redis_spill(self, config: RedisConfig) -> BackgroundPoolBuilder {
        self.spill(Some(broker(config)))
    }
}

impl ServerBuilder {
    /// Sends the app's jobs to Redis (see [`crate::redis`]): a handler's
    /// `enqueue` hands the job to a sender thread after the response, and
    /// [`Worker`]s run it; `GET /jobs/{id}`
    /// ([`job_status_handler`](crate::job_status_handler)) reads its status
    /// from Redis. Closures (`add_task`) still run on this server's pool.
    pub fn redis(self, config: RedisConfig) -> ServerBuilder {
        self.broker(broker(config))
    }

    /// Mixed mode: the app's jobs run in this server, and those that have
    /// not run when the shutdown deadline passes (queued, or waiting for a
    /// retry or a delay) go to Redis for [`Worker`]s instead of being
    /// dropped; the shutdown report lists them in
    /// [`spilled`](crate::ShutdownReport::spilled), and they count as sent.
    pub fn redis_spill(self, config: RedisConfig) -> ServerBuilder {
        self.spill(broker(config))
    }
}

fn broker(config: RedisConfig) -> BrokerFactory {
    BrokerFactory(Arc::new(move |counters| {
        config.check()?;
        let producer: Arc<dyn crate::jobs::broker::Broker> =
            Producer::start(config.clone(), counters)?;
        Ok(producer)
    }))
}
