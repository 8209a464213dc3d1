//! Operations on a deployment's queues (`afterward jobs`), and the
//! de-duplication helper for jobs that must not act twice.
//!
//! Its size: one documented method per operation an operator (or the
//! dashboard) runs, each a few Redis calls.

use std::time::Duration;

use redis::streams::StreamRangeReply;
use redis::Value;

use super::connection::Connection;
use super::keys::{known_queues, pending_count, Keys, QueueKeys};
use super::status::{read_status, read_statuses_in};
use super::write::{write_jobs, Outgoing};
use super::{LazyConnection, RedisConfig};
use crate::jobs::envelope::now_ms;
use crate::jobs::schedule::Spec;
use crate::jobs::{CancelError, Cancellation, Envelope, JobState, JobStatus, ScheduleInfo};

/// Reads and repairs a deployment's queues.
pub struct Admin {
    keys: Keys,
    connection: LazyConnection,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// How many jobs wait, and where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCounts {
    /// In the stream, not yet read by any worker.
    pub ready: u64,
    /// Read by a worker and not yet acknowledged (running, or held by a
    /// worker that died: taken over after the visibility timeout).
    pub pending: u64,
    /// Waiting for a retry's backoff or a delayed start.
    pub delayed: u64,
    /// Dead letters kept.
    pub dead: u64,
}

/// A dead letter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadJob {
    /// The job as last attempted.
    pub envelope: Envelope,
    /// The last attempt's error.
    pub error: String,
}

impl Admin {
    /// An admin of `config`'s deployment (connects on first use).
    pub fn new(config: RedisConfig) -> Admin {
        Admin {
            keys: config.keys(),
            connection: LazyConnection::new(config),
        }
    }

    fn with<T>(
        &self,
        call: impl FnOnce(&mut Connection, &Keys) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        self.connection.call(|con| call(con, &self.keys))
    }

    /// Every queue the deployment knows (written to or served), sorted,
    /// with its counts.
    pub fn queues(&self) -> Result<Vec<(String, QueueCounts)>, String> {
        self.with(|con, keys| {
            let mut out = Vec::new();
            for queue in known_queues(con, keys)? {
                let counts = queue_counts(con, &keys.queue(&queue))?;
                out.push((queue, counts));
            }
            Ok(out)
        })
    }

    /// The counts of jobs waiting, in all queues.
    pub fn counts(&self) -> Result<QueueCounts, String> {
        Ok(self
            .queues()?
            .into_iter()
            .fold(QueueCounts::default(), |all, (_, counts)| QueueCounts {
                ready: all.ready + counts.ready,
                pending: all.pending + counts.pending,
                delayed: all.delayed + counts.delayed,
                dead: all.dead + counts.dead,
            }))
    }

    /// The dead letters of every queue, oldest first within each queue (at
    /// most `limit` per queue).
    pub fn dead(&self, limit: usize) -> Result<Vec<DeadJob>, String> {
        let queues = self.with(known_queues)?;
        let mut out = Vec::new();
        for queue in queues {
            out.extend(
                self.dead_entries(&queue, limit)?
                    .into_iter()
                    .map(|(_, job)| job),
            );
        }
        Ok(out)
    }

    /// The jobs done last in each queue, newest first: per queue, how many
    /// its list keeps ([`RedisConfig::recent_done`]) and the statuses of
    /// `take` of them from the `skip`th on (those whose status has expired
    /// left out).
    pub fn recent_done(
        &self,
        skip: usize,
        take: usize,
    ) -> Result<Vec<(String, u64, Vec<JobStatus>)>, String> {
        let queues = self.with(known_queues)?;
        let mut out = Vec::new();
        for queue in queues {
            let keys = self.keys.queue(&queue);
            let (total, ids): (u64, Vec<String>) = self.with(|con, _| {
                let mut pipe = redis::pipe();
                pipe.cmd("LLEN").arg(keys.done());
                match take {
                    0 => pipe
                        .query::<(u64,)>(con)
                        .map(|(total,)| (total, Vec::new())),
                    _ => pipe
                        .cmd("LRANGE")
                        .arg(keys.done())
                        .arg(skip)
                        .arg(skip + take - 1)
                        .query(con),
                }
            })?;
            let statuses = self.with(|con, _| read_statuses_in(con, &keys, &ids))?;
            out.push((queue, total, statuses));
        }
        Ok(out)
    }

    /// Runs job `id` now if it waits in its queue's delayed set (a delay,
    /// a retry's backoff): its due time becomes now, so a worker's next
    /// promotion (within 50 ms) moves it to the stream. `Ok(false)` if it
    /// is not waiting there.
    pub fn run_now(&self, id: &str) -> Result<bool, String> {
        let Some(status) = self.status(id)? else {
            return Ok(false);
        };
        let next_run = match status.state {
            JobState::Delayed { next_run } | JobState::Retrying { next_run } => next_run,
            _ => return Ok(false),
        };
        let due = next_run
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let delayed = self.keys.queue(&status.queue).delayed;
        self.with(|con, _| {
            redis::cmd("EVAL")
                .arg(RUN_NOW)
                .arg(1)
                .arg(&delayed)
                .arg(id)
                .arg(due)
                .arg(now_ms())
                .query::<i64>(con)
                .map(|moved| moved == 1)
        })
    }

    /// Jobs waiting in the delayed sets (a delay, or a retry's backoff),
    /// the soonest first, at most `limit` per queue: each with its due time
    /// (Unix ms). Those with attempts made are retries (their envelope
    /// carries the last error).
    pub fn delayed(&self, limit: usize) -> Result<Vec<(Envelope, u64)>, String> {
        self.with(|con, keys| {
            let queues = known_queues(con, keys)?;
            let mut pipe = redis::pipe();
            for queue in &queues {
                pipe.cmd("ZRANGE")
                    .arg(keys.queue(queue).delayed)
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .arg("WITHSCORES");
            }
            let sets: Vec<Vec<(String, f64)>> = pipe.query(con)?;
            let mut out: Vec<(Envelope, u64)> = sets
                .into_iter()
                .flatten()
                .filter_map(|(text, due)| Some((Envelope::from_json_text(&text).ok()?, due as u64)))
                .collect();
            out.sort_by_key(|(_, due)| *due);
            Ok(out)
        })
    }

    /// Jobs read by a worker and not yet acknowledged (running, or held
    /// to start soon), at most `limit` per queue: each with the worker
    /// holding it and how long since it last renewed its hold (ms).
    pub fn held(&self, limit: usize) -> Result<Vec<(Envelope, String, u64)>, String> {
        self.with(|con, keys| {
            let queues = known_queues(con, keys)?;
            let mut out = Vec::new();
            for queue in &queues {
                let stream = keys.queue(queue).stream;
                let pending: Vec<(String, String, u64, u64)> = match redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg(super::keys::GROUP)
                    .arg("-")
                    .arg("+")
                    .arg(limit)
                    .query(con)
                {
                    Ok(pending) => pending,
                    Err(_) => continue, // no group yet: nothing held
                };
                if pending.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for (entry, ..) in &pending {
                    pipe.cmd("XRANGE").arg(&stream).arg(entry).arg(entry);
                }
                let entries: Vec<StreamRangeReply> = pipe.query(con)?;
                for ((_, consumer, idle, _), reply) in pending.into_iter().zip(entries) {
                    let text = reply.ids.first().and_then(|e| match e.map.get("envelope") {
                        Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                        _ => None,
                    });
                    if let Some(envelope) = text.and_then(|t| Envelope::from_json_text(&t).ok()) {
                        out.push((envelope, consumer, idle));
                    }
                }
            }
            Ok(out)
        })
    }

    /// The dead letters of `queue`, with their entry ids.
    fn dead_entries(&self, queue: &str, limit: usize) -> Result<Vec<(String, DeadJob)>, String> {
        self.with(|con, keys| {
            let reply: StreamRangeReply = redis::cmd("XRANGE")
                .arg(keys.queue(queue).dead)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(limit.min(i64::MAX as usize))
                .query(con)?;
            Ok(reply
                .ids
                .into_iter()
                .filter_map(|entry| {
                    let field = |name: &str| match entry.map.get(name) {
                        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                        _ => String::new(),
                    };
                    let envelope = Envelope::from_json_text(&field("envelope")).ok()?;
                    Some((
                        entry.id.clone(),
                        DeadJob {
                            envelope,
                            error: field("error"),
                        },
                    ))
                })
                .collect())
        })
    }

    /// Sends dead job `id` back to its queue with its attempts reset, and
    /// removes its dead letter, in one transaction. `Ok(false)` when no dead
    /// letter has that job id.
    pub fn requeue(&self, id: &str) -> Result<bool, String> {
        let queues = self.with(known_queues)?;
        let capacity = self.connection.config().dead_letter_capacity.max(1) * 2;
        for queue in queues {
            let entries = self.dead_entries(&queue, capacity)?;
            if let Some((entry, job)) = entries.into_iter().find(|(_, job)| &*job.envelope.id == id)
            {
                self.requeue_entry(&queue, &entry, job.envelope)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sends every dead job of `queue` (of every queue, for `None`) back to
    /// its queue, as [`requeue`](Self::requeue) does each; how many.
    pub fn requeue_all(&self, queue: Option<&str>) -> Result<u64, String> {
        let queues = match queue {
            Some(queue) => vec![queue.to_owned()],
            None => self.with(known_queues)?,
        };
        let capacity = self.connection.config().dead_letter_capacity.max(1) * 2;
        let mut requeued = 0;
        for queue in queues {
            for (entry, job) in self.dead_entries(&queue, capacity)? {
                self.requeue_entry(&queue, &entry, job.envelope)?;
                requeued += 1;
            }
        }
        Ok(requeued)
    }

    /// Removes dead job `id`'s letter for good (its status stays `dead`).
    /// `Ok(false)` when no dead letter has that job id.
    pub fn discard(&self, id: &str) -> Result<bool, String> {
        let queues = self.with(known_queues)?;
        let capacity = self.connection.config().dead_letter_capacity.max(1) * 2;
        for queue in queues {
            let entries = self.dead_entries(&queue, capacity)?;
            if let Some((entry, _)) = entries.into_iter().find(|(_, job)| &*job.envelope.id == id) {
                self.with(|con, keys| {
                    redis::cmd("XDEL")
                        .arg(keys.queue(&queue).dead)
                        .arg(&entry)
                        .query::<()>(con)
                })?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Cancels job `id`, as [`Jobs::cancel`](crate::Jobs::cancel) does over
    /// Redis (a job still in a web server's buffer is that server's to
    /// cancel: here it is not found).
    ///
    /// # Errors
    ///
    /// Those of [`Jobs::cancel`](crate::Jobs::cancel).
    pub fn cancel(&self, id: &str) -> Result<Cancellation, CancelError> {
        let config = self.connection.config();
        self.with(|con, keys| super::cancel::cancel(con, keys, config, id))
            .unwrap_or_else(|error| Err(CancelError::Unavailable(error)))
    }

    /// The workers seen recently (each writes a heartbeat every 5 s, kept
    /// 15 s), sorted by name. A worker whose heartbeat expired is forgotten.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>, String> {
        self.with(|con, keys| {
            let names: Vec<String> = redis::cmd("SMEMBERS")
                .arg(keys.workers("names"))
                .query(con)?;
            if names.is_empty() {
                return Ok(Vec::new());
            }
            let beats: Vec<Option<String>> = redis::cmd("MGET")
                .arg(
                    names
                        .iter()
                        .map(|n| keys.workers(&format!("w:{n}")))
                        .collect::<Vec<_>>(),
                )
                .query(con)?;
            let mut workers = Vec::new();
            for (name, beat) in names.iter().zip(beats) {
                match beat.and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok()) {
                    Some(v) => workers.push(WorkerInfo {
                        name: name.clone(),
                        host: v["host"].as_str().unwrap_or_default().to_owned(),
                        pid: v["pid"].as_u64().unwrap_or(0) as u32,
                        queues: v["queues"]
                            .as_array()
                            .map(|q| {
                                q.iter()
                                    .filter_map(|q| q.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        concurrency: v["concurrency"].as_u64().unwrap_or(0) as usize,
                        in_flight: v["in_flight"].as_u64().unwrap_or(0),
                        last_heartbeat_ms: v["last_heartbeat_ms"].as_u64().unwrap_or(0),
                    }),
                    None => {
                        redis::cmd("SREM")
                            .arg(keys.workers("names"))
                            .arg(name)
                            .query::<()>(con)?;
                    }
                }
            }
            workers.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(workers)
        })
    }

    /// Jobs succeeded and failed (attempts that failed) per minute over the
    /// last `minutes`, oldest first, every queue together: what the workers
    /// counted (`{P:Q}:stats:MINUTE`, kept two hours).
    pub fn per_minute(&self, minutes: u64) -> Result<Vec<(u64, u64, u64)>, String> {
        let now = now_ms() / 60_000;
        let first = now + 1 - minutes;
        self.with(|con, keys| {
            let queues = known_queues(con, keys)?;
            let mut pipe = redis::pipe();
            for queue in &queues {
                let queue = keys.queue(queue);
                for minute in first..=now {
                    pipe.cmd("HMGET")
                        .arg(queue.stats(minute))
                        .arg("succeeded")
                        .arg("failed");
                }
            }
            let counts: Vec<(Option<u64>, Option<u64>)> = pipe.query(con)?;
            let mut out: Vec<(u64, u64, u64)> = (first..=now).map(|m| (m, 0, 0)).collect();
            for (i, (succeeded, failed)) in counts.into_iter().enumerate() {
                let slot = &mut out[i % minutes as usize];
                slot.1 += succeeded.unwrap_or(0);
                slot.2 += failed.unwrap_or(0);
            }
            Ok(out)
        })
    }

    /// What Redis knows of job `id` (its status, in whichever queue).
    pub fn status(&self, id: &str) -> Result<Option<JobStatus>, String> {
        self.with(|con, keys| {
            let queues = known_queues(con, keys)?;
            read_status(con, keys, &queues, id)
        })
    }

    /// The deployment's schedules (those its servers have registered),
    /// sorted by name, with their last run, next run and pause.
    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>, String> {
        let (specs, last, paused): (Names<String>, Names<u64>, Vec<String>) =
            self.with(|con, keys| {
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(keys.schedules("spec"))
                    .cmd("HGETALL")
                    .arg(keys.schedules("last"))
                    .cmd("SMEMBERS")
                    .arg(keys.schedules("paused"))
                    .query(con)
            })?;
        let now = now_ms();
        let mut out: Vec<ScheduleInfo> = specs
            .into_iter()
            .map(|(name, spec)| ScheduleInfo {
                last_run_ms: last.iter().find(|(n, _)| *n == name).map(|(_, t)| *t),
                next_run_ms: Spec::parse(&spec).ok().and_then(|s| s.next_after(now)),
                paused: paused.contains(&name),
                name,
                spec,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Pauses (or resumes) schedule `name` for every server.
    pub fn pause_schedule(&self, name: &str, paused: bool) -> Result<(), String> {
        let command = if paused { "SADD" } else { "SREM" };
        self.with(|con, keys| {
            redis::cmd(command)
                .arg(keys.schedules("paused"))
                .arg(name)
                .query::<()>(con)
        })
    }

    /// Moves one dead letter (`entry` in `queue`'s dead stream) back to its
    /// job's queue, attempts reset, with its status `queued`.
    fn requeue_entry(
        &self,
        queue: &str,
        entry: &str,
        mut envelope: Envelope,
    ) -> Result<(), String> {
        envelope.attempts = 0;
        envelope.last_error = None;
        let config = self.connection.config();
        let job = [Outgoing::new(envelope, None)];
        self.with(|con, keys| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("XDEL")
                .arg(keys.queue(queue).dead)
                .arg(entry)
                .ignore();
            write_jobs(&mut pipe, keys, config, &job);
            pipe.query::<()>(con)
        })
    }
}

/// A worker seen recently, from its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its consumer name.
    pub name: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// Its runner threads.
    pub concurrency: usize,
    /// Jobs it holds now.
    pub in_flight: u64,
    /// When it last wrote, in Unix ms.
    pub last_heartbeat_ms: u64,
}

/// KEYS: a delayed set. ARGV: the job's id, its due time, now. Finds the
/// envelope due then (every envelope starts `{"v":1,"id":"ID"`) and makes
/// it due now: 1, or 0 if it is not there.
const RUN_NOW: &str = r#"
local head = '{"v":1,"id":"' .. ARGV[1] .. '"'
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])) do
  if string.sub(member, 1, #head) == head then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member)
    return 1
  end
end
return 0
"#;

/// A hash's fields, by name.
type Names<T> = Vec<(String, T)>;

/// The counts of one queue.
fn queue_counts(con: &mut Connection, queue: &QueueKeys) -> redis::RedisResult<QueueCounts> {
    let (length, delayed, dead): (u64, u64, u64) = redis::pipe()
        .cmd("XLEN")
        .arg(&queue.stream)
        .cmd("ZCARD")
        .arg(&queue.delayed)
        .cmd("XLEN")
        .arg(&queue.dead)
        .query(con)?;
    let pending = pending_count(con, queue)?;
    Ok(QueueCounts {
        ready: length.saturating_sub(pending),
        pending,
        delayed,
        dead,
    })
}

/// Remembers job ids in Redis for a while, so that a job that must not act
/// twice (charge a card, send a message) can ask before it acts:
///
/// ```no_run
/// # use afterward::{App, Job, JobContext, JobResult};
/// # use afterward::redis::{Dedupe, RedisConfig};
/// # use std::{sync::Arc, time::Duration};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { cents: u64 }
/// impl Job for Charge {
///     const NAME: &'static str = "charge";
///     fn run(self, job: &JobContext) -> JobResult {
///         let dedupe = job.state::<Arc<Dedupe>>().expect("App::state(Arc<Dedupe>)");
///         if !dedupe.first_time(job.id().as_str())? {
///             return Ok(()); // it ran already, on this or another worker
///         }
///         // charge self.cents …
///         Ok(())
///     }
/// }
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379")?;
/// let dedupe = Arc::new(Dedupe::new(config, Duration::from_secs(24 * 3600)));
/// let app = App::new().state(dedupe).job::<Charge>();
/// # Ok::<(), afterward::Error>(())
/// ```
///
/// The mark is set before the effect: a job that fails after asking will
/// not act on its retry. Mark only the step that must happen at most once,
/// and prefer effects that are idempotent by the job id where you can.
pub struct Dedupe {
    keys: Keys,
    ttl: Duration,
    connection: LazyConnection,
}

impl std::fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedupe")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Dedupe {
    /// Remembers ids for `ttl` (longer than a job can be retried or taken
    /// over: a day is typical).
    pub fn new(config: RedisConfig, ttl: Duration) -> Dedupe {
        Dedupe {
            keys: config.keys(),
            ttl,
            connection: LazyConnection::new(config),
        }
    }

    /// `true` the first time `id` is asked about within the TTL (and marks
    /// it); `false` after. `Err` when Redis cannot be asked: the job fails,
    /// and is retried.
    pub fn first_time(&self, id: &str) -> Result<bool, String> {
        let set: Option<String> = self.connection.call(|con| {
            redis::cmd("SET")
                .arg(self.keys.seen(id))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl.as_millis().max(1) as u64)
                .query(con)
        })?;
        Ok(set.is_some())
    }
}
