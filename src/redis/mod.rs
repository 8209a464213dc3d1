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
mod producer;
mod worker;

/// The [`redis`](https://docs.rs/redis/1) crate (1.x, blocking API) this
/// module uses, for commands of your own on a [`RedisConfig::connect`]ion.
pub use ::redis as client;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use self::admin::{Admin, DeadJob, Dedupe, QueueCounts};
pub(crate) use self::producer::Producer;
pub use self::worker::{Worker, WorkerBuilder, WorkerReport, WorkerStats};

use crate::background::BackgroundPoolBuilder;
use crate::error::Error;
use crate::jobs::broker::BrokerFactory;
pub(crate) use crate::jobs::envelope::now_ms;
use crate::jobs::envelope::push_json_str;
use crate::jobs::status::IdSource;
use crate::jobs::{JobState, JobStatus};
use crate::server::ServerBuilder;

/// Where Redis is and how the jobs are kept there.
///
/// | setting | default |
/// |---|---|
/// | [`prefix`](Self::prefix) | `afterward` (keys `afterward:jobs`, `afterward:dead`, …) |
/// | [`timeout`](Self::timeout) | 2 s, on every connect, read and write |
/// | [`buffer_capacity`](Self::buffer_capacity) | 10,000 jobs waiting to be sent |
/// | [`batch`](Self::batch) | 100 jobs per pipelined send or read |
/// | [`linger`](Self::linger) | 1 ms: how long a job waits for others to share its send |
/// | [`status_ttl`](Self::status_ttl) | 24 h |
/// | [`dead_letter_capacity`](Self::dead_letter_capacity) | 10,000 (oldest trimmed) |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    client: redis::Client,
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
}

impl RedisConfig {
    /// Redis at `url`: `redis://host:port[/db]` or `redis+unix:///path/to/socket`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL Redis's client does not accept (nothing is
    /// connected yet).
    pub fn new(url: &str) -> Result<RedisConfig, Error> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Config(format!("invalid Redis URL {url:?}: {e}")))?;
        Ok(RedisConfig {
            client,
            prefix: "afterward".into(),
            timeout: Duration::from_secs(2),
            buffer_capacity: 10_000,
            batch: 100,
            linger: Duration::from_millis(1),
            status_ttl: Duration::from_secs(24 * 3600),
            dead_letter_capacity: 10_000,
        })
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        let positive = [
            ("timeout", self.timeout.is_zero()),
            ("buffer_capacity", self.buffer_capacity == 0),
            ("batch", self.batch == 0),
            ("status_ttl", self.status_ttl.as_millis() == 0),
        ];
        match positive.iter().find(|(_, zero)| *zero) {
            Some((name, _)) => Err(Error::Config(format!("Redis {name} must be above zero"))),
            None => Ok(()),
        }
    }

    /// A new connection, with the [`timeout`](Self::timeout) on connect,
    /// reads and writes.
    ///
    /// # Errors
    ///
    /// Redis's, when it cannot be reached in time.
    pub fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }

    pub(crate) fn keys(&self) -> Keys {
        Keys {
            stream: format!("{}:jobs", self.prefix),
            group: "workers".into(),
            delayed: format!("{}:delayed", self.prefix),
            dead: format!("{}:dead", self.prefix),
            prefix: self.prefix.clone(),
        }
    }
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
    connection: Mutex<Option<redis::Connection>>,
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
        call: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
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

/// Jobs read and not acknowledged in the group (`XPENDING`'s summary);
/// 0 while the group does not exist yet.
pub(crate) fn pending_count(con: &mut redis::Connection, keys: &Keys) -> redis::RedisResult<u64> {
    let summary: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(&keys.stream)
        .arg(&keys.group)
        .query(con);
    Ok(match summary {
        Ok(redis::Value::Array(items)) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        Ok(_) => 0,
        Err(e) if e.code() == Some("NOGROUP") => 0,
        Err(e) => return Err(e),
    })
}

/// The keys of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The stream of jobs to run (field `envelope`).
    pub(crate) stream: String,
    /// The workers' consumer group on it.
    pub(crate) group: String,
    /// Jobs due later (a retry's backoff, a delayed enqueue): a sorted set of
    /// envelopes scored by their due time in Unix milliseconds.
    pub(crate) delayed: String,
    /// Dead letters: a stream (fields `envelope`, `error`).
    pub(crate) dead: String,
    prefix: String,
}

impl Keys {
    /// The hash holding the statuses of a group of 4,096 job ids
    /// ([`IdSource::group`], [`StatusWrites`]).
    pub(crate) fn statuses(&self, group: u64) -> String {
        format!("{}:status:{group:x}", self.prefix)
    }

    /// The de-duplication mark of a job id ([`Dedupe`]).
    pub(crate) fn seen(&self, id: &str) -> String {
        format!("{}:seen:{id}", self.prefix)
    }
}

/// A job's status as it is written to Redis: one JSON value
/// (`{"name", "status", "attempts", "error"?, "next_run_ms"?}`), a field of
/// the hash of its id's group ([`Keys::statuses`]).
pub(crate) struct StatusWrite<'a> {
    pub(crate) name: &'a str,
    pub(crate) state: &'a str,
    pub(crate) attempts: u32,
    pub(crate) error: Option<&'a str>,
    pub(crate) next_run_ms: Option<u64>,
}

impl StatusWrite<'_> {
    /// The status's JSON text.
    fn to_json_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(64 + self.name.len());
        out.push_str("{\"name\":");
        push_json_str(&mut out, self.name);
        out.push_str(",\"status\":");
        push_json_str(&mut out, self.state);
        let _ = write!(out, ",\"attempts\":{}", self.attempts);
        if let Some(error) = self.error {
            out.push_str(",\"error\":");
            push_json_str(&mut out, error);
        }
        if let Some(next) = self.next_run_ms {
            let _ = write!(out, ",\"next_run_ms\":{next}");
        }
        out.push('}');
        out
    }
}

/// Status writes, grouped by hash: one `HSET` of many fields and one
/// `PEXPIRE` per hash, where a key per job costs Redis a `SET … PX` each and
/// a key with its own expiry in the keyspace. Measured on this machine kind
/// (100k statuses in batches of 100, Redis CPU from `INFO cpu`): 1.6 µs per
/// status against 4.7 µs; in issue #7's HTTP benchmark (Redis on the web
/// server's core), 0.51–0.55× of the in-process requests/s with a key per
/// status, 0.74–0.80× with these hashes (0.84–0.95× writing none at all).
///
/// A hash holds the statuses of 4,096 consecutive ids of one process (see
/// `IdSource`), and lives until no status in it has changed for the status
/// TTL: each status lives at least that long after its last change.
#[derive(Default)]
pub(crate) struct StatusWrites {
    groups: Vec<StatusGroup>,
}

/// The statuses written to one group's hash.
struct StatusGroup {
    group: u64,
    key: String,
    /// (id, status JSON), in the order written.
    fields: Vec<(String, String)>,
}

impl StatusWrites {
    /// Adds job `id`'s status; none for an id not of ours (a job another
    /// producer wrote to the stream): it could never be read back.
    pub(crate) fn push(&mut self, keys: &Keys, id: &str, status: &StatusWrite<'_>) {
        let Some(group) = IdSource::group(id) else {
            return;
        };
        let field = (id.to_owned(), status.to_json_text());
        // Jobs come in runs from one process: the last group is the likely one.
        match self.groups.iter_mut().rev().find(|g| g.group == group) {
            Some(known) => known.fields.push(field),
            None => self.groups.push(StatusGroup {
                group,
                key: keys.statuses(group),
                fields: vec![field],
            }),
        }
    }

    /// Adds the writes to `pipe`.
    pub(crate) fn add_to(&self, pipe: &mut redis::Pipeline, config: &RedisConfig) {
        for StatusGroup { key, fields, .. } in &self.groups {
            let set = pipe.cmd("HSET").arg(key);
            for (id, status) in fields {
                set.arg(id).arg(status);
            }
            set.ignore();
            pipe.cmd("PEXPIRE")
                .arg(key)
                .arg(config.status_ttl.as_millis().max(1) as u64)
                .ignore();
        }
    }

    /// One status, added to `pipe`.
    pub(crate) fn one(
        pipe: &mut redis::Pipeline,
        keys: &Keys,
        config: &RedisConfig,
        id: &str,
        status: &StatusWrite<'_>,
    ) {
        let mut writes = StatusWrites::default();
        writes.push(keys, id, status);
        writes.add_to(pipe, config);
    }
}

/// Reads a job's status; `None` for a missing (or expired) one.
pub(crate) fn read_status(
    connection: &mut redis::Connection,
    keys: &Keys,
    id: &str,
) -> redis::RedisResult<Option<JobStatus>> {
    let Some(group) = IdSource::group(id) else {
        return Ok(None); // not an id of ours: no status anywhere
    };
    let text: Option<String> = redis::cmd("HGET")
        .arg(keys.statuses(group))
        .arg(id)
        .query(connection)?;
    let Some(value) = text.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) else {
        return Ok(None);
    };
    let state = match value["status"].as_str() {
        Some("running") => JobState::Running,
        Some("retrying") => JobState::Retrying {
            next_run: SystemTime::UNIX_EPOCH
                + Duration::from_millis(value["next_run_ms"].as_u64().unwrap_or(0)),
        },
        Some("done") => JobState::Done,
        Some("dead") => JobState::Dead,
        Some("discarded") => JobState::Discarded,
        _ => JobState::Queued,
    };
    Ok(Some(JobStatus {
        id: id.to_owned(),
        name: value["name"].as_str().unwrap_or_default().to_owned(),
        state,
        attempts: value["attempts"].as_u64().unwrap_or(0) as u32,
        error: value["error"].as_str().map(str::to_owned),
    }))
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
