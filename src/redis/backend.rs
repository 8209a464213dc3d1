//! The consumer's [`Backend`] on Redis Streams: I/O only. Jobs are entries
//! of the stream (field `envelope`), read by a consumer group; a held job
//! is a pending entry; delayed jobs wait in a sorted set scored by their
//! due time; dead letters are a stream of their own.

use redis::streams::{StreamAutoClaimReply, StreamId};
use redis::Value;

use super::{now_ms, pending_count, Keys, RedisConfig, StatusWrite, StatusWrites};
use crate::jobs::consumer::backend::{Action, Announce, Backend, Delivery, Record};
use std::time::Duration;

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

/// How long a fetch with nothing to do waits in Redis (`BLOCK`): the
/// delayed set and reclaims are looked at between waits.
const FETCH_BLOCK_MS: u64 = 100;

/// One worker's connection to the jobs of `config`'s prefix.
pub(super) struct RedisBackend {
    pub(super) config: RedisConfig,
    pub(super) keys: Keys,
    /// This worker's name in the group.
    pub(super) consumer: String,
    pub(super) connection: Option<redis::Connection>,
    /// Where the last `XAUTOCLAIM` stopped.
    pub(super) reclaim_cursor: String,
}

impl RedisBackend {
    pub(super) fn new(config: RedisConfig, consumer: String) -> RedisBackend {
        RedisBackend {
            keys: config.keys(),
            config,
            consumer,
            connection: None,
            reclaim_cursor: "0-0".to_owned(),
        }
    }

    /// Adds a dead letter to `pipe`: the envelope's text and the error, in
    /// the dead stream, trimmed (only it ever is) to the dead-letter
    /// capacity.
    fn add_dead_letter(&self, pipe: &mut redis::Pipeline, envelope: &str, error: &str) {
        pipe.cmd("XADD")
            .arg(&self.keys.dead)
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
}

impl Backend for RedisBackend {
    const NAME: &'static str = "Redis";

    fn connect(&mut self) -> Result<(), String> {
        self.connection = None;
        let mut connection = self.config.connect().map_err(|e| e.to_string())?;
        // The group is created on every connect: a Redis restarted without
        // its data has none, and reading would fail with NOGROUP forever.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(&self.keys.group)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut connection);
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.to_string()),
            _ => {
                self.connection = Some(connection);
                Ok(())
            }
        }
    }

    fn fetch(&mut self, max: usize, wait: bool) -> Result<Vec<Delivery>, String> {
        on(&mut self.connection, |con| {
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.keys.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(max);
            if wait {
                read.arg("BLOCK").arg(FETCH_BLOCK_MS);
            }
            read.arg("STREAMS").arg(&self.keys.stream).arg(">");
            Ok(read_entries(read.query(con)?))
        })
    }

    fn reclaim(&mut self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, String> {
        let reply: StreamAutoClaimReply = on(&mut self.connection, |con| {
            redis::cmd("XAUTOCLAIM")
                .arg(&self.keys.stream)
                .arg(&self.keys.group)
                .arg(&self.consumer)
                .arg(visibility.as_millis() as u64)
                .arg(&self.reclaim_cursor)
                .arg("COUNT")
                .arg(max)
                .query(con)
        })?;
        self.reclaim_cursor = reply.next_stream_id;
        Ok(reply.claimed.into_iter().map(delivery).collect())
    }

    /// Resets the idle time of the entries held; one another worker took
    /// recently (idle under a quarter of the timeout) is not taken back.
    fn renew(&mut self, held: &[&str], visibility: Duration) -> Result<(), String> {
        on(&mut self.connection, |con| {
            let mut claim = redis::cmd("XCLAIM");
            claim
                .arg(&self.keys.stream)
                .arg(&self.keys.group)
                .arg(&self.consumer)
                .arg((visibility / 4).as_millis() as u64);
            for entry in held {
                claim.arg(*entry);
            }
            claim.arg("JUSTID");
            claim.query::<()>(con)
        })
    }

    /// One `MULTI`: each entry acknowledged and deleted together with what
    /// follows it (a retry in the delayed set, a dead letter) and its
    /// status; one `XACK` and one `XDEL` take the whole batch.
    fn record(&mut self, finished: &[Record<'_>]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut ack = redis::cmd("XACK");
        ack.arg(&self.keys.stream).arg(&self.keys.group);
        let mut delete = redis::cmd("XDEL");
        delete.arg(&self.keys.stream);
        let mut statuses = StatusWrites::default();
        for record in finished {
            ack.arg(record.entry);
            delete.arg(record.entry);
            let (envelope, state, error, next_run_ms) = match &record.action {
                Action::Unreadable { text, error } => {
                    self.add_dead_letter(&mut pipe, text, error);
                    continue;
                }
                // Done: an earlier attempt's error is history, not status.
                Action::Done { envelope } => (*envelope, "done", None, None),
                Action::Retry { envelope, due_ms } => {
                    pipe.cmd("ZADD")
                        .arg(&self.keys.delayed)
                        .arg(*due_ms)
                        .arg(envelope.to_json_text())
                        .ignore();
                    let error = envelope.last_error.as_deref();
                    (envelope, "retrying", error, Some(*due_ms))
                }
                Action::Dead { envelope, error } => {
                    self.add_dead_letter(&mut pipe, &envelope.to_json_text(), error);
                    (*envelope, "dead", Some(*error), None)
                }
            };
            let status = StatusWrite {
                name: &envelope.name,
                state,
                attempts: envelope.attempts,
                error,
                next_run_ms,
            };
            statuses.push(&self.keys, &envelope.id, &status);
        }
        statuses.add_to(&mut pipe, &self.config);
        pipe.add_command(ack).ignore();
        pipe.add_command(delete).ignore();
        on(&mut self.connection, |con| pipe.query::<()>(con))
    }

    fn announce(&mut self, running: &[Announce<'_>]) -> Result<(), String> {
        let mut statuses = StatusWrites::default();
        for job in running {
            let status = StatusWrite {
                name: job.name,
                state: "running",
                attempts: job.attempt,
                error: job.last_error,
                next_run_ms: None,
            };
            statuses.push(&self.keys, job.envelope_id, &status);
        }
        let mut pipe = redis::pipe();
        statuses.add_to(&mut pipe, &self.config);
        on(&mut self.connection, |con| pipe.query::<()>(con))
    }

    fn promote(&mut self, max: usize) -> Result<u64, String> {
        on(&mut self.connection, |con| {
            redis::cmd("EVAL")
                .arg(PROMOTE)
                .arg(2)
                .arg(&self.keys.delayed)
                .arg(&self.keys.stream)
                .arg(now_ms())
                .arg(max)
                .query(con)
        })
    }

    fn pending(&mut self) -> Result<u64, String> {
        on(&mut self.connection, |con| pending_count(con, &self.keys))
    }
}

/// Runs `call` on the connection; an error drops the connection (it may be
/// mid-reply), and the consumer connects again.
fn on<T>(
    connection: &mut Option<redis::Connection>,
    call: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
) -> Result<T, String> {
    let Some(con) = connection.as_mut() else {
        return Err("not connected".into());
    };
    call(con).map_err(|e| {
        *connection = None;
        e.to_string()
    })
}

/// A stream entry as the consumer gets it: its id and its `envelope`
/// field's text (empty when it has none).
fn delivery(entry: StreamId) -> Delivery {
    let text = match entry.map.get("envelope") {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    Delivery {
        entry: entry.id,
        text,
    }
}

/// The entries of an `XREADGROUP` reply on one stream, taken apart by hand
/// (the `redis` crate's `StreamReadReply` copies every field into a map of
/// its own, a third of the I/O thread's time at full speed):
/// `[[stream, [[id, [field, value, …]], …]]]`, or nil when nothing came.
fn read_entries(reply: Value) -> Vec<Delivery> {
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
    // Each stream's entries: RESP2 has `[name, entries]` pairs, RESP3 a map.
    let streams: Vec<Value> = match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, ids)| ids).collect(),
        other => items(other)
            .into_iter()
            .filter_map(|stream| items(stream).into_iter().nth(1))
            .collect(),
    };
    let mut entries = Vec::new();
    for ids in streams {
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
            entries.push(Delivery {
                entry: id,
                text: envelope,
            });
        }
    }
    entries
}
