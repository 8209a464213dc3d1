//! What is known of each job: a bounded store, oldest entry evicted first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
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
/// inserted, whatever its state.
pub(crate) struct StatusStore {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, JobStatus>,
    order: VecDeque<String>,
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

    pub(crate) fn insert(&self, status: JobStatus) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        while entries.order.len() >= self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.by_id.remove(&oldest);
            }
        }
        entries.order.push_back(status.id.clone());
        entries.by_id.insert(status.id.clone(), status);
    }

    /// Changes a status still in the store.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut JobStatus)) {
        if let Some(status) = self.lock().by_id.get_mut(id) {
            change(status);
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<JobStatus> {
        self.lock().by_id.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str) -> JobStatus {
        JobStatus {
            id: id.into(),
            name: "j".into(),
            state: JobState::Queued,
            attempts: 0,
            error: None,
        }
    }

    #[test]
    fn the_oldest_status_is_evicted_first() {
        let store = StatusStore::new(2);
        store.insert(status("a"));
        store.insert(status("b"));
        store.update("a", |s| s.state = JobState::Done);
        store.insert(status("c"));
        assert_eq!(store.get("a"), None);
        assert!(store.get("b").is_some() && store.get("c").is_some());
    }
}
