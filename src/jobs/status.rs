//! What is known of each job: a bounded store, oldest entry evicted first.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The default number of job statuses kept: 10,000.
pub const DEFAULT_JOB_STATUS_CAPACITY: usize = 10_000;

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// Enqueued, not started (or delayed until later).
    Queued,
    /// An attempt is running.
    Running,
    /// An attempt failed; the next is due at `next_run`.
    Retrying {
        /// When the next attempt is due.
        next_run: SystemTime,
    },
    /// An attempt succeeded.
    Done,
    /// Every attempt failed (or the payload could not be read): it will not
    /// run again. Kept in the dead letters too.
    Dead,
    /// It never ran to the end: its request failed, or shutdown came first.
    Discarded,
}

impl JobState {
    /// `queued`, `running`, `retrying`, `done`, `dead` or `discarded`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying { .. } => "retrying",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Discarded => "discarded",
        }
    }
}

/// A job's status, as [`Jobs::status`](crate::Jobs::status) reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts made so far (the running one included).
    pub attempts: u32,
    /// The last attempt's error, once there is one.
    pub error: Option<String>,
}

impl JobStatus {
    /// The status as JSON: `{"id", "name", "status", "attempts", "error"?}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "status": self.state.as_str(),
            "attempts": self.attempts,
        });
        if let Some(error) = &self.error {
            value["error"] = error.as_str().into();
        }
        value
    }
}

/// At most `capacity` statuses; inserting one more evicts the oldest
/// inserted, whatever its state. Entries share the job's id and name with
/// its envelope: keeping one allocates little.
pub(crate) struct StatusStore {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<Arc<str>, Record>,
    order: VecDeque<Arc<str>>,
}

/// A status as the store keeps it.
pub(crate) struct Record {
    pub(crate) name: Cow<'static, str>,
    pub(crate) state: JobState,
    pub(crate) attempts: u32,
    pub(crate) error: Option<String>,
}

impl StatusStore {
    pub(crate) fn new(capacity: usize) -> StatusStore {
        StatusStore {
            capacity,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a new job's status, `queued`.
    pub(crate) fn insert(&self, id: &Arc<str>, name: Cow<'static, str>) {
        if self.capacity == 0 {
            return;
        }
        let record = Record {
            name,
            state: JobState::Queued,
            attempts: 0,
            error: None,
        };
        let mut entries = self.lock();
        while entries.order.len() >= self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.by_id.remove(&oldest);
            }
        }
        entries.order.push_back(id.clone());
        entries.by_id.insert(id.clone(), record);
    }

    /// Changes a status still in the store.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut Record)) {
        if let Some(record) = self.lock().by_id.get_mut(id) {
            change(record);
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<JobStatus> {
        let entries = self.lock();
        let (id, record) = entries.by_id.get_key_value(id)?;
        Some(JobStatus {
            id: id.to_string(),
            name: record.name.to_string(),
            state: record.state.clone(),
            attempts: record.attempts,
            error: record.error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_status_is_evicted_first() {
        let store = StatusStore::new(2);
        store.insert(&"a".into(), Cow::Borrowed("j"));
        store.insert(&"b".into(), Cow::Borrowed("j"));
        store.update("a", |s| s.state = JobState::Done);
        store.insert(&"c".into(), Cow::Borrowed("j"));
        assert_eq!(store.get("a"), None);
        assert!(store.get("b").is_some() && store.get("c").is_some());
    }
}
