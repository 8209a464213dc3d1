//! The consumer's [`Backend`] on Redis Streams: I/O only. Jobs are entries
//! of the stream (field `envelope`), read by a consumer group; a held job
//! is a pending entry; delayed jobs wait in a sorted set scored by their
//! due time; dead letters are a stream of their own.

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId};
use redis::Value;

use super::connection::Connection;
use super::keys::{known_queues, pending_count, Keys, QueueKeys, GROUP};
use super::status::{StatusWrite, StatusWrites};
use super::unique;
use super::write::{write_jobs, Outgoing};
use super::RedisConfig;
use crate::jobs::consumer::backend::{Action, Announce, Backend, Delivery, Record, Want};
use crate::jobs::envelope::now_ms;

/// Moves the jobs now due from the delayed set to the stream, atomically
/// (several workers may run it at once; a job moves once).
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'envelope', job)
  redis.call('ZREM', KEYS[1], job)
end
return #due
";

/// How long a minute's counts are kept (`{P:Q}:stats:MINUTE`).
const STATS_TTL_MS: u64 = 2 * 3600 * 1000;

/// Attempts of lane `lane` in `finished`: (succeeded, failed).
fn records_of(finished: &[Record<'_>], lane: usize) -> (u64, u64) {
    let mut counts = (0, 0);
    for record in finished.iter().filter(|r| r.lane == lane) {
        match record.action {
            Action::Done { .. } => counts.0 += 1,
            Action::Retry { .. } | Action::Dead { .. } => counts.1 += 1,
            Action::Cancelled { .. } | Action::Unreadable { .. } => {}
        }
    }
    counts
}

/// How long a fetch with nothing to do waits in Redis (`BLOCK`): the
/// delayed set and reclaims are looked at between waits.
const FETCH_BLOCK_MS: u64 = 100;

/// One worker's connection to the jobs of the queues it serves.
pub(super) struct RedisBackend {
    config: RedisConfig,
    keys: Keys,
    /// The queues served, by lane.
    queues: Vec<QueueKeys>,
    /// This worker's name in the groups.
    consumer: String,
    connection: Option<Connection>,
    /// Where each lane's last `XAUTOCLAIM` stopped.
    reclaim_cursors: Vec<String>,
    /// Each lane's cancel version, as last read.
    cancel_versions: Vec<Option<String>>,
    /// Over a cluster: whose node the waiting read waits on, in turn.
    turn: usize,
    /// The second handle, the consumer's fetching thread's: it leaves the
    /// warnings about the deployment to the first.
    fetch_only: bool,
    /// A fetch's read that failed after the same fetch's earlier reads had
    /// claimed jobs: those were returned (claimed, they would otherwise
    /// wait for a reclaim), and the failure is the next fetch's answer.
    failed_fetch: Option<String>,
}

impl RedisBackend {
    /// A backend for `queues` (the lanes, in order).
    pub(super) fn new(config: RedisConfig, consumer: String, queues: &[&str]) -> RedisBackend {
        let keys = config.keys();
        RedisBackend {
            queues: queues.iter().map(|q| keys.queue(q)).collect(),
            reclaim_cursors: vec!["0-0".to_owned(); queues.len()],
            cancel_versions: vec![None; queues.len()],
            turn: 0,
            keys,
            config,
            consumer,
            connection: None,
            fetch_only: false,
            failed_fetch: None,
        }
    }

    /// Adds a dead letter to `pipe`: the envelope's text and the error, in
    /// the queue's dead stream, trimmed (only it ever is) to the dead-letter
    /// capacity.
    fn add_dead_letter(
        &self,
        pipe: &mut redis::Pipeline,
        lane: usize,
        envelope: &str,
        error: &str,
    ) {
        pipe.cmd("XADD")
            .arg(&self.queues[lane].dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.dead_letter_capacity)
            .arg("*")
            .arg("envelope")
            .arg(envelope)
            .arg("error")
            .arg(error)
            .ignore();
    }

    /// The lane of a stream's key.
    fn lane_of(&self, stream: &str) -> Option<usize> {
        self.queues.iter().position(|q| q.stream == stream)
    }
}

impl RedisBackend {
    /// Says so when the deployment has partitions (`Q.0`, `Q.1`, …) of a
    /// queue this worker serves whole: producers split it
    /// ([`RedisConfig::partitions`]) and this worker was not told, so it
    /// would never read their jobs.
    fn warn_of_partitions_not_served(&self, connection: &mut Connection) {
        let Ok(known) = known_queues(connection, &self.keys) else {
            return;
        };
        for queue in &self.queues {
            let stranded: Vec<&String> = known
                .iter()
                .filter(|name| {
                    name.strip_prefix(queue.queue.as_str())
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
                })
                .filter(|name| !self.queues.iter().any(|q| q.queue == **name))
                .collect();
            if !stranded.is_empty() {
                log::warn!(
                    "queue {} has partitions this worker does not serve ({}): give it the producers' partitions (RedisConfig::partitions, --queue-partitions)",
                    queue.queue,
                    stranded.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
        }
    }
}

impl Backend for RedisBackend {
    const NAME: &'static str = "Redis";

    fn connect(&mut self) -> Result<(), String> {
        self.connection = None;
        // A failure kept for the next fetch is told by whatever made this
        // handle connect again.
        self.failed_fetch = None;
        let mut connection = self.config.connect().map_err(|e| e.to_string())?;
        // The groups are created on every connect: a Redis restarted without
        // its data has none, and reading would fail with NOGROUP forever.
        for queue in &self.queues {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&queue.stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query(&mut connection);
            if let Err(e) = created {
                if e.code() != Some("BUSYGROUP") {
                    return Err(e.to_string());
                }
            }
        }
        let mut named = redis::cmd("SADD");
        named.arg(self.keys.queues());
        for queue in &self.queues {
            named.arg(&queue.queue);
        }
        named
            .query::<()>(&mut connection)
            .map_err(|e| e.to_string())?;
        if !self.fetch_only {
            self.warn_of_partitions_not_served(&mut connection);
        }
        self.connection = Some(connection);
        Ok(())
    }

    /// Another connection, for the fetching thread: on one connection, a
    /// batch's read would wait behind the last batch's record.
    fn fetcher(&self) -> Option<RedisBackend> {
        Some(RedisBackend {
            config: self.config.clone(),
            keys: self.keys.clone(),
            queues: self.queues.clone(),
            consumer: self.consumer.clone(),
            connection: None,
            reclaim_cursors: self.reclaim_cursors.clone(),
            cancel_versions: self.cancel_versions.clone(),
            turn: 0,
            fetch_only: true,
            failed_fetch: None,
        })
    }

    fn fetch(
        &mut self,
        wants: &[Want],
        budget: usize,
        wait: bool,
    ) -> Result<Vec<Delivery>, String> {
        if let Some(error) = self.failed_fetch.take() {
            return Err(error);
        }
        let mut out = Vec::new();
        for want in wants {
            let left = budget.saturating_sub(out.len()).min(want.max);
            if left == 0 {
                continue;
            }
            let stream = &self.queues[want.lane].stream;
            let consumer = &self.consumer;
            let reply = on(&mut self.connection, |con| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(left)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(">")
                    .query(con)
            });
            let reply = match reply {
                Ok(reply) => reply,
                // The queues read before this one gave jobs, now this
                // consumer's in Redis: they go to the runners.
                Err(error) if !out.is_empty() => {
                    self.failed_fetch = Some(error);
                    return Ok(out);
                }
                Err(error) => return Err(error),
            };
            for (_, entries) in read_entries(reply) {
                out.extend(entries.into_iter().map(|(entry, text)| Delivery {
                    lane: want.lane,
                    entry,
                    text,
                }));
            }
        }
        if !out.is_empty() || !wait {
            return Ok(out);
        }
        // Nothing ready: wait in Redis, briefly, for any of the queues (one
        // job of each at most: within every queue's room and the budget).
        let mut streams: Vec<&str> = wants
            .iter()
            .take(budget.max(1))
            .map(|w| self.queues[w.lane].stream.as_str())
            .collect();
        if self.config.is_cluster() && streams.len() > 1 {
            // A cluster's command keeps to one slot, and each queue has its
            // own: the wait is on one queue, taken in turn (the others were
            // read just above, and are again after it, FETCH_BLOCK_MS later
            // at most).
            self.turn = self.turn.wrapping_add(1);
            streams = vec![streams[self.turn % streams.len()]];
        }
        let consumer = &self.consumer;
        let reply = on(&mut self.connection, |con| {
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(FETCH_BLOCK_MS)
                .arg("STREAMS");
            for stream in &streams {
                read.arg(*stream);
            }
            for _ in &streams {
                read.arg(">");
            }
            read.query(con)
        })?;
        for (stream, entries) in read_entries(reply) {
            let Some(lane) = self.lane_of(&stream) else {
                continue;
            };
            out.extend(
                entries
                    .into_iter()
                    .map(|(entry, text)| Delivery { lane, entry, text }),
            );
        }
        Ok(out)
    }

    fn reclaim(
        &mut self,
        lane: usize,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, String> {
        let (stream, consumer, cursor) = (
            &self.queues[lane].stream,
            &self.consumer,
            &self.reclaim_cursors[lane],
        );
        let reply: StreamAutoClaimReply = on(&mut self.connection, |con| {
            redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(GROUP)
                .arg(consumer)
                .arg(visibility.as_millis() as u64)
                .arg(cursor)
                .arg("COUNT")
                .arg(max)
                .query(con)
        })?;
        self.reclaim_cursors[lane] = reply.next_stream_id;
        Ok(reply
            .claimed
            .into_iter()
            .map(|entry| delivery(lane, entry))
            .collect())
    }

    /// Resets the idle time of the entries held; one another worker took
    /// recently (idle under a quarter of the timeout) is not taken back.
    fn renew(&mut self, held: &[(usize, &str)], visibility: Duration) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for (lane, queue) in self.queues.iter().enumerate() {
            let mut entries = held.iter().filter(|(l, _)| *l == lane).peekable();
            if entries.peek().is_none() {
                continue;
            }
            let claim = pipe
                .cmd("XCLAIM")
                .arg(&queue.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg((visibility / 4).as_millis() as u64);
            for (_, entry) in entries {
                claim.arg(*entry);
            }
            claim.arg("JUSTID").ignore();
        }
        on(&mut self.connection, |con| pipe.query::<()>(con))
    }

    /// One `MULTI` per queue: each entry acknowledged and deleted together
    /// with what follows it (a retry in the delayed set, a dead letter) and
    /// its status; one `XACK` and one `XDEL` take the queue's whole batch.
    fn record(&mut self, finished: &[Record<'_>]) -> Result<(), String> {
        for lane in 0..self.queues.len() {
            let mut records = finished.iter().filter(|r| r.lane == lane).peekable();
            if records.peek().is_none() {
                continue;
            }
            let queue = &self.queues[lane];
            let mut pipe = redis::pipe();
            pipe.atomic();
            let mut ack = redis::cmd("XACK");
            ack.arg(&queue.stream).arg(GROUP);
            let mut delete = redis::cmd("XDEL");
            delete.arg(&queue.stream);
            let mut statuses = StatusWrites::default();
            let mut children = Vec::new();
            let mut done = Vec::new();
            for record in records {
                ack.arg(record.entry);
                delete.arg(record.entry);
                let mut result = None;
                let mut child_ids = Vec::new();
                let (envelope, state, error, next_run_ms) = match &record.action {
                    Action::Unreadable { text, error } => {
                        self.add_dead_letter(&mut pipe, lane, text, error);
                        continue;
                    }
                    // Done: an earlier attempt's error is history, not status.
                    Action::Done {
                        envelope,
                        result: value,
                        children: follow_ups,
                    } => {
                        result = *value;
                        for (child, delay) in follow_ups.iter() {
                            child_ids.push(&*child.id);
                            children.push(Outgoing::new(child.clone(), *delay));
                        }
                        unique::release(&mut pipe, queue, envelope);
                        done.push(&*envelope.id);
                        (*envelope, "done", None, None)
                    }
                    Action::Cancelled { envelope, error } => {
                        pipe.cmd("SREM")
                            .arg(queue.cancels())
                            .arg(&*envelope.id)
                            .ignore();
                        unique::release(&mut pipe, queue, envelope);
                        (*envelope, "cancelled", *error, None)
                    }
                    Action::Retry { envelope, due_ms } => {
                        // Its own queue's delayed set (the envelope names it).
                        let own = self.config.queue_of(envelope);
                        let delayed = if *own == queue.queue {
                            queue.delayed.clone()
                        } else {
                            self.keys.queue(&own).delayed
                        };
                        pipe.cmd("ZADD")
                            .arg(delayed)
                            .arg(*due_ms)
                            .arg(envelope.to_json_text())
                            .ignore();
                        let error = envelope.last_error.as_deref();
                        (envelope, "retrying", error, Some(*due_ms))
                    }
                    Action::Dead { envelope, error } => {
                        self.add_dead_letter(&mut pipe, lane, &envelope.to_json_text(), error);
                        unique::release(&mut pipe, queue, envelope);
                        (*envelope, "dead", Some(*error), None)
                    }
                };
                let mut history = vec![("queued", envelope.enqueued_at_ms)];
                if record.started_ms > 0 {
                    history.push(("running", record.started_ms));
                }
                history.push((state, now_ms()));
                let status = StatusWrite {
                    error,
                    next_run_ms,
                    result,
                    children: child_ids,
                    history,
                    ..StatusWrite::new(&envelope.name, state, envelope.attempts)
                };
                statuses.push(queue, &envelope.id, &status);
            }
            // Per minute, for dashboards: what this batch did, with it.
            let (succeeded, failed) = records_of(finished, lane);
            if succeeded + failed > 0 {
                let stats = queue.stats(now_ms() / 60_000);
                pipe.cmd("HINCRBY")
                    .arg(&stats)
                    .arg("succeeded")
                    .arg(succeeded)
                    .ignore();
                pipe.cmd("HINCRBY")
                    .arg(&stats)
                    .arg("failed")
                    .arg(failed)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&stats).arg(STATS_TTL_MS).ignore();
            }
            statuses.add_to(&mut pipe, &self.config);
            // The dashboard's list of jobs done, newest first, trimmed.
            if self.config.recent_done > 0 && !done.is_empty() {
                pipe.cmd("LPUSH").arg(queue.done()).arg(&done).ignore();
                pipe.cmd("LTRIM")
                    .arg(queue.done())
                    .arg(0)
                    .arg(self.config.recent_done - 1)
                    .ignore();
            }
            // Follow-up jobs go out with their parent's acknowledgement, in
            // the same MULTI: both or neither.
            if !children.is_empty() {
                let cluster = self.config.is_cluster();
                // A cluster's transaction keeps to one node: there, the
                // names and the follow-ups of other queues go just before
                // it (a crash between can send them twice, never lose them).
                let mut before = redis::pipe();
                let outside = if cluster { &mut before } else { &mut pipe };
                let named = outside.cmd("SADD").arg(self.keys.queues());
                for child in &children {
                    named.arg(&*self.config.queue_of(&child.envelope));
                }
                named.ignore();
                let (here, elsewhere): (Vec<Outgoing>, Vec<Outgoing>) = children
                    .into_iter()
                    .partition(|c| !cluster || self.config.queue_of(&c.envelope) == queue.queue);
                if cluster {
                    write_jobs(&mut before, &self.keys, &self.config, &elsewhere);
                    on(&mut self.connection, |con| before.query::<()>(con))?;
                }
                write_jobs(&mut pipe, &self.keys, &self.config, &here);
            }
            pipe.add_command(ack).ignore();
            pipe.add_command(delete).ignore();
            on(&mut self.connection, |con| pipe.query::<()>(con))?;
        }
        Ok(())
    }

    /// One `GET` of each lane's version; the sets only when one changed.
    fn cancels(&mut self) -> Result<Option<Vec<String>>, String> {
        let mut pipe = redis::pipe();
        for queue in &self.queues {
            pipe.cmd("GET").arg(queue.cancels_version());
        }
        let versions: Vec<Option<String>> = on(&mut self.connection, |con| pipe.query(con))?;
        if versions == self.cancel_versions {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for queue in &self.queues {
            pipe.cmd("SMEMBERS").arg(queue.cancels());
        }
        let sets: Vec<Vec<String>> = on(&mut self.connection, |con| pipe.query(con))?;
        self.cancel_versions = versions;
        Ok(Some(sets.into_iter().flatten().collect()))
    }

    fn announce(&mut self, running: &[Announce<'_>]) -> Result<(), String> {
        let mut statuses = StatusWrites::default();
        for job in running {
            let status = StatusWrite {
                error: job.last_error,
                history: vec![("queued", job.enqueued_at_ms), ("running", job.started_ms)],
                ..StatusWrite::new(job.name, "running", job.attempt)
            };
            statuses.push(&self.queues[job.lane], job.envelope_id, &status);
        }
        let mut pipe = redis::pipe();
        statuses.add_to(&mut pipe, &self.config);
        on(&mut self.connection, |con| pipe.query::<()>(con))
    }

    fn promote(&mut self, max: usize) -> Result<u64, String> {
        let mut pipe = redis::pipe();
        let now = now_ms();
        for queue in &self.queues {
            pipe.cmd("EVAL")
                .arg(PROMOTE)
                .arg(2)
                .arg(&queue.delayed)
                .arg(&queue.stream)
                .arg(now)
                .arg(max);
        }
        let moved: Vec<u64> = on(&mut self.connection, |con| pipe.query(con))?;
        Ok(moved.into_iter().sum())
    }

    fn pending(&mut self) -> Result<u64, String> {
        let queues = &self.queues;
        on(&mut self.connection, |con| {
            let mut total = 0;
            for queue in queues {
                total += pending_count(con, queue)?;
            }
            Ok(total)
        })
    }
}

/// Runs `call` on the connection; an error drops the connection (it may be
/// mid-reply), and the consumer connects again.
fn on<T>(
    connection: &mut Option<Connection>,
    call: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
) -> Result<T, String> {
    let Some(con) = connection.as_mut() else {
        return Err("not connected".into());
    };
    call(con).map_err(|e| {
        *connection = None;
        e.to_string()
    })
}

/// A stream entry of `lane` as the consumer gets it: its id and its
/// `envelope` field's text (empty when it has none).
fn delivery(lane: usize, entry: StreamId) -> Delivery {
    let text = match entry.map.get("envelope") {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    Delivery {
        lane,
        entry: entry.id,
        text,
    }
}

/// The entries of an `XREADGROUP` reply, by stream, taken apart by hand
/// (the `redis` crate's `StreamReadReply` copies every field into a map of
/// its own, a third of the I/O thread's time at full speed):
/// `[[stream, [[id, [field, value, …]], …]], …]`, or nil when nothing came.
/// Each entry is its id and its `envelope` field's text.
fn read_entries(reply: Value) -> Vec<(String, Vec<(String, String)>)> {
    fn text(value: Value) -> Option<String> {
        match value {
            Value::BulkString(bytes) => Some(
                String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            Value::SimpleString(text) => Some(text),
            _ => None,
        }
    }
    fn items(value: Value) -> Vec<Value> {
        match value {
            Value::Array(items) | Value::Set(items) => items,
            // An entry's fields, in RESP3.
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        }
    }
    // Each stream: RESP2 has `[name, entries]` pairs, RESP3 a map.
    let streams: Vec<(Value, Value)> = match reply {
        Value::Map(pairs) => pairs,
        other => items(other)
            .into_iter()
            .filter_map(|stream| {
                let mut parts = items(stream).into_iter();
                Some((parts.next()?, parts.next()?))
            })
            .collect(),
    };
    let mut out = Vec::new();
    for (name, ids) in streams {
        let Some(name) = text(name) else {
            continue;
        };
        let mut entries = Vec::new();
        for entry in items(ids) {
            let mut parts = items(entry).into_iter();
            let Some(id) = parts.next().and_then(text) else {
                continue;
            };
            let mut fields = parts.next().map(items).unwrap_or_default().into_iter();
            let mut envelope = String::new();
            while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
                if matches!(&field, Value::BulkString(b) if b == b"envelope") {
                    envelope = text(value).unwrap_or_default();
                }
            }
            entries.push((id, envelope));
        }
        out.push((name, entries));
    }
    out
}
