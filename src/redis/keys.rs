//! Where a deployment's jobs live in Redis: the keys of each queue, all
//! under one hash tag (`{PREFIX:QUEUE}`), so that every step that touches
//! several of a queue's keys at once (a `MULTI`, a script) stays on one
//! node of a Redis Cluster; and the few keys of the deployment as a whole.
//!
//! | key | type | what |
//! |---|---|---|
//! | `{P:Q}:jobs` | stream | jobs of queue Q to run (field `envelope`), read by the group `workers` |
//! | `{P:Q}:delayed` | sorted set | envelopes due later (a retry's backoff, a delayed enqueue), by due time in Unix ms |
//! | `{P:Q}:dead` | stream | dead letters (fields `envelope`, `error`), trimmed to the capacity |
//! | `{P:Q}:status:G` | hash | statuses of the jobs of group G of 4,096 ids, by id |
//! | `{P:Q}:stats:MINUTE` | hash | jobs `succeeded` and `failed` (attempts) in that Unix minute, kept two hours |
//! | `{P:Q}:cancels` | set | ids of jobs held or running asked to stop (TTL: the status TTL) |
//! | `{P:Q}:cancels:version` | string | bumped at each request: workers read the set when it changes |
//! | `{P:Q}:unique:NAME:KEY` | string | the id of the unique job holding the key, until it ends (TTL `unique_ttl`) |
//! | `P:queues` | set | every queue ever written to or served |
//! | `{P:schedules}:…` | | the schedules' specs, last runs, pauses and tick claims (`schedules.rs`) |
//! | `P:seen:ID` | string | [`Dedupe`](super::Dedupe)'s mark |

use super::connection::Connection;
use crate::jobs::queues::valid_queue_name;

/// The consumer group of every queue's stream.
pub(crate) const GROUP: &str = "workers";

/// The keys of one deployment (one prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    /// The queue's name.
    pub(crate) queue: String,
    /// The stream of jobs to run.
    pub(crate) stream: String,
    /// Jobs due later: envelopes scored by their due time.
    pub(crate) delayed: String,
    /// Dead letters.
    pub(crate) dead: String,
    /// `{P:Q}`, the hash tag all of them start with.
    tag: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The keys of `queue`.
    pub(crate) fn queue(&self, queue: &str) -> QueueKeys {
        let tag = format!("{{{}:{queue}}}", self.prefix);
        QueueKeys {
            queue: queue.to_owned(),
            stream: format!("{tag}:jobs"),
            delayed: format!("{tag}:delayed"),
            dead: format!("{tag}:dead"),
            tag,
        }
    }

    /// The set of every queue's name.
    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// A key of the schedules (`{P:schedules}:WHAT`, see `schedules.rs`).
    pub(crate) fn schedules(&self, what: &str) -> String {
        format!("{{{}:schedules}}:{what}", self.prefix)
    }

    /// A key of the workers' heartbeats (`{P:workers}:WHAT`, see `heartbeat.rs`).
    pub(crate) fn workers(&self, what: &str) -> String {
        format!("{{{}:workers}}:{what}", self.prefix)
    }

    /// The de-duplication mark of a job id ([`Dedupe`](super::Dedupe)).
    pub(crate) fn seen(&self, id: &str) -> String {
        format!("{}:seen:{id}", self.prefix)
    }
}

impl QueueKeys {
    /// The hash holding the statuses of a group of 4,096 job ids of this
    /// queue ([`IdSource::group`](crate::jobs::status::IdSource::group)).
    pub(crate) fn statuses(&self, group: u64) -> String {
        format!("{}:status:{group:x}", self.tag)
    }

    /// The ids of the jobs held or running asked to stop.
    pub(crate) fn cancels(&self) -> String {
        format!("{}:cancels", self.tag)
    }

    /// Bumped at each cancel request: workers read the set when it changes.
    pub(crate) fn cancels_version(&self) -> String {
        format!("{}:cancels:version", self.tag)
    }

    /// The ids of the jobs done last, the newest first (at most
    /// [`RedisConfig::recent_done`](super::RedisConfig::recent_done)).
    pub(crate) fn done(&self) -> String {
        format!("{}:done", self.tag)
    }

    /// Jobs succeeded and failed in `minute` (Unix minutes), counted by
    /// the workers as they record them.
    pub(crate) fn stats(&self, minute: u64) -> String {
        format!("{}:stats:{minute}", self.tag)
    }

    /// The key a unique job holds (`NAME:KEY`, [`Envelope::unique`](crate::jobs::Envelope::unique)).
    pub(crate) fn unique(&self, key: &str) -> String {
        format!("{}:unique:{key}", self.tag)
    }
}

/// The queues named in `P:queues` (names that could not be a queue are
/// left out), sorted.
pub(crate) fn known_queues(con: &mut Connection, keys: &Keys) -> redis::RedisResult<Vec<String>> {
    let mut queues: Vec<String> = redis::cmd("SMEMBERS").arg(keys.queues()).query(con)?;
    queues.retain(|q| valid_queue_name(q));
    queues.sort();
    Ok(queues)
}

/// Jobs read and not acknowledged in a queue's group (`XPENDING`'s
/// summary); 0 while the group does not exist yet.
pub(crate) fn pending_count(con: &mut Connection, keys: &QueueKeys) -> redis::RedisResult<u64> {
    let summary: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(&keys.stream)
        .arg(GROUP)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queues_keys_share_one_hash_tag() {
        let keys = Keys::new("afterward");
        let q = keys.queue("reports");
        assert_eq!(q.stream, "{afterward:reports}:jobs");
        assert_eq!(q.delayed, "{afterward:reports}:delayed");
        assert_eq!(q.dead, "{afterward:reports}:dead");
        assert_eq!(q.statuses(0xab), "{afterward:reports}:status:ab");
        assert_eq!(keys.queues(), "afterward:queues");
    }
}
