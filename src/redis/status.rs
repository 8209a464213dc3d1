//! Job statuses in Redis: one JSON value per job
//! (`{"name", "queue", "status", "attempts", "error"?, "next_run_ms"?}`), a
//! field of the hash of its id's group in its queue ([`QueueKeys::statuses`]);
//! beside it, field `ID:payload`, the part of its payload kept, written once.

use std::time::{Duration, SystemTime};

use super::connection::Connection;
use super::keys::{Keys, QueueKeys};
use super::RedisConfig;
use crate::jobs::envelope::push_json_str;
use crate::jobs::status::{clip_payload, IdSource};
use crate::jobs::{JobState, JobStatus};

/// A job's status as it is written.
pub(crate) struct StatusWrite<'a> {
    pub(crate) name: &'a str,
    pub(crate) state: &'a str,
    pub(crate) attempts: u32,
    pub(crate) error: Option<&'a str>,
    pub(crate) next_run_ms: Option<u64>,
    /// The result, as the JSON text it is.
    pub(crate) result: Option<&'a str>,
    /// The follow-up jobs' ids.
    pub(crate) children: Vec<&'a str>,
    /// What the writer knows of its states: (state, Unix ms), oldest first.
    pub(crate) history: Vec<(&'a str, u64)>,
}

impl<'a> StatusWrite<'a> {
    /// A status with no result and no children.
    pub(crate) fn new(name: &'a str, state: &'a str, attempts: u32) -> StatusWrite<'a> {
        StatusWrite {
            name,
            state,
            attempts,
            error: None,
            next_run_ms: None,
            result: None,
            children: Vec::new(),
            history: Vec::new(),
        }
    }
}

impl StatusWrite<'_> {
    /// The status's JSON text, in `queue`.
    fn to_json_text(&self, queue: &str) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(80 + self.name.len());
        out.push_str("{\"name\":");
        push_json_str(&mut out, self.name);
        out.push_str(",\"queue\":");
        push_json_str(&mut out, queue);
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
        if let Some(result) = self.result {
            out.push_str(",\"result\":");
            out.push_str(result);
        }
        if !self.history.is_empty() {
            out.push_str(",\"history\":[");
            for (i, (state, ms)) in self.history.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                push_json_str(&mut out, state);
                let _ = write!(out, ",{ms}]");
            }
            out.push(']');
        }
        if !self.children.is_empty() {
            out.push_str(",\"children\":[");
            for (i, child) in self.children.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(&mut out, child);
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// Status writes, grouped by hash: one `HSET` of many fields and one
/// `PEXPIRE` per hash, where a key per job costs Redis a `SET … PX` each and
/// a key with its own expiry in the keyspace (measured: a third of the CPU
/// per status; BENCHMARKS.md, "Jobs over Redis").
///
/// A hash holds the statuses of 4,096 consecutive ids of one process in one
/// queue (see `IdSource`), and lives until no status in it has changed for
/// the status TTL: each status lives at least that long after its last
/// change.
#[derive(Default)]
pub(crate) struct StatusWrites {
    groups: Vec<StatusGroup>,
}

/// The statuses written to one group's hash.
struct StatusGroup {
    key: String,
    /// (id, status JSON), in the order written.
    fields: Vec<(String, String)>,
}

impl StatusWrites {
    /// Adds job `id`'s status in `queue`; none for an id not of ours (a job
    /// another producer wrote to the stream): it could never be read back.
    pub(crate) fn push(&mut self, queue: &QueueKeys, id: &str, status: &StatusWrite<'_>) {
        let Some(group) = IdSource::group(id) else {
            return;
        };
        let field = (id.to_owned(), status.to_json_text(&queue.queue));
        self.add_field(queue.statuses(group), field);
    }

    /// Adds a field to hash `key`'s writes.
    fn add_field(&mut self, key: String, field: (String, String)) {
        // Jobs come in runs from one process: the last group is the likely one.
        match self.groups.iter_mut().rev().find(|g| g.key == key) {
            Some(known) => known.fields.push(field),
            None => self.groups.push(StatusGroup {
                key,
                fields: vec![field],
            }),
        }
    }

    /// Adds job `id`'s payload, the part a status keeps ([`clip_payload`],
    /// `limit` bytes; none with 0), as field `ID:payload` of its status's
    /// hash: written once, with the job's first status, and never again
    /// (status writes replace field `ID` only), so a running or finished
    /// job's page still shows it, at no cost to the workers.
    pub(crate) fn push_payload(
        &mut self,
        queue: &QueueKeys,
        id: &str,
        payload: &str,
        limit: usize,
    ) {
        let (Some(group), Some(kept)) = (IdSource::group(id), clip_payload(payload, limit)) else {
            return;
        };
        let field = (payload_field(id), kept.into_owned());
        self.add_field(queue.statuses(group), field);
    }

    /// Adds the writes to `pipe`.
    pub(crate) fn add_to(&self, pipe: &mut redis::Pipeline, config: &RedisConfig) {
        for StatusGroup { key, fields } in &self.groups {
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
}

/// The field of a status hash keeping job `id`'s payload.
pub(crate) fn payload_field(id: &str) -> String {
    format!("{id}:payload")
}

/// The static name of a state named in a status (`None` for another).
pub(crate) fn state_name(name: &str) -> Option<&'static str> {
    crate::jobs::status::STATES[..8]
        .iter()
        .copied()
        .find(|s| *s == name)
}

/// The state a status names (`retrying` without its time).
pub(crate) fn state_of(name: &str) -> JobState {
    match name {
        "running" => JobState::Running,
        "delayed" => JobState::Delayed {
            next_run: SystemTime::UNIX_EPOCH,
        },
        "retrying" => JobState::Retrying {
            next_run: SystemTime::UNIX_EPOCH,
        },
        "done" => JobState::Done,
        "dead" => JobState::Dead,
        "discarded" => JobState::Discarded,
        "cancelled" => JobState::Cancelled,
        _ => JobState::Queued,
    }
}

/// Reads a job's status, looking in each of `queues` (in one round trip);
/// `None` for a missing (or expired) one.
pub(crate) fn read_status(
    connection: &mut Connection,
    keys: &Keys,
    queues: &[String],
    id: &str,
) -> redis::RedisResult<Option<JobStatus>> {
    let Some(group) = IdSource::group(id) else {
        return Ok(None); // not an id of ours: no status anywhere
    };
    if queues.is_empty() {
        return Ok(None);
    }
    let mut pipe = redis::pipe();
    for queue in queues {
        pipe.cmd("HMGET")
            .arg(keys.queue(queue).statuses(group))
            .arg(id)
            .arg(payload_field(id));
    }
    let texts: Vec<(Option<String>, Option<String>)> = pipe.query(connection)?;
    let Some((queue, (text, payload))) = queues
        .iter()
        .zip(texts)
        .find_map(|(queue, (text, payload))| Some((queue, (text?, payload))))
    else {
        return Ok(None);
    };
    Ok(parse_status(id, queue, &text, payload))
}

/// The statuses of jobs `ids` of `queue` (in one round trip), in their
/// order; those missing (expired) left out.
pub(crate) fn read_statuses_in(
    connection: &mut Connection,
    queue: &QueueKeys,
    ids: &[String],
) -> redis::RedisResult<Vec<JobStatus>> {
    let ours: Vec<(&String, u64)> = ids
        .iter()
        .filter_map(|id| Some((id, IdSource::group(id)?)))
        .collect();
    if ours.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (id, group) in &ours {
        pipe.cmd("HMGET")
            .arg(queue.statuses(*group))
            .arg(id.as_str())
            .arg(payload_field(id));
    }
    let texts: Vec<(Option<String>, Option<String>)> = pipe.query(connection)?;
    Ok(ours
        .iter()
        .zip(texts)
        .filter_map(|((id, _), (text, payload))| parse_status(id, &queue.queue, &text?, payload))
        .collect())
}

/// A status from its JSON text (`None` if it is not one).
fn parse_status(id: &str, queue: &str, text: &str, payload: Option<String>) -> Option<JobStatus> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return None;
    };
    let next_run =
        SystemTime::UNIX_EPOCH + Duration::from_millis(value["next_run_ms"].as_u64().unwrap_or(0));
    let state = match value["status"].as_str() {
        Some("retrying") => JobState::Retrying { next_run },
        Some("delayed") => JobState::Delayed { next_run },
        other => state_of(other.unwrap_or_default()),
    };
    Some(JobStatus {
        id: id.to_owned(),
        name: value["name"].as_str().unwrap_or_default().to_owned(),
        queue: queue.to_owned(),
        state,
        attempts: value["attempts"].as_u64().unwrap_or(0) as u32,
        error: value["error"].as_str().map(str::to_owned),
        result: value
            .get("result")
            .filter(|r| !r.is_null())
            .map(|r| r.to_string()),
        children: value["children"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        started_at: None,
        history: value["history"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| {
                        let state = super::status::state_name(e.get(0)?.as_str()?)?;
                        let ms = e.get(1)?.as_u64()?;
                        Some((state, SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        payload,
    })
}
