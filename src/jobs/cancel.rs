//! Cancellation: what [`Jobs::cancel`](crate::Jobs::cancel) answers, and
//! the running jobs asked to stop ([`Cancels`]), which an attempt reads
//! with [`JobContext::is_cancelled`](crate::JobContext::is_cancelled).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::status::JobState;

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancellation {
    /// The job had not started, and never will: its status is `cancelled`.
    Cancelled,
    /// An attempt is running (or a worker holds the job): it is told
    /// ([`JobContext::is_cancelled`](crate::JobContext::is_cancelled)); if
    /// it then fails, it is cancelled, not retried; if it succeeds, it is done.
    Cancelling,
}

impl Cancellation {
    /// `cancelled` or `cancelling`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cancellation::Cancelled => "cancelled",
            Cancellation::Cancelling => "cancelling",
        }
    }
}

/// Why a job could not be cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelError {
    /// No job of this id is known (or its status has expired).
    NotFound,
    /// It has ended already, as the state says.
    Ended(JobState),
    /// The broker could not be asked.
    Unavailable(String),
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelError::NotFound => f.write_str("no such job"),
            CancelError::Ended(state) => write!(f, "the job has ended: {}", state.as_str()),
            CancelError::Unavailable(error) => write!(f, "the job queue is unavailable: {error}"),
        }
    }
}

impl std::error::Error for CancelError {}

/// The ids of jobs asked to stop and not yet ended.
#[derive(Default)]
pub(crate) struct Cancels {
    asked: Mutex<HashSet<Arc<str>>>,
    /// How many: read first, so that a job start costs no lock while none is.
    count: AtomicUsize,
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<str>>> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks job `id` to stop.
    pub(crate) fn ask(&self, id: Arc<str>) {
        let mut asked = self.lock();
        asked.insert(id);
        self.count.store(asked.len(), Ordering::SeqCst);
    }

    /// Whether job `id` was asked to stop.
    pub(crate) fn is_asked(&self, id: &str) -> bool {
        self.count.load(Ordering::SeqCst) > 0 && self.lock().contains(id)
    }

    /// Forgets job `id` (it has ended); whether it was asked to stop.
    pub(crate) fn forget(&self, id: &str) -> bool {
        if self.count.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let mut asked = self.lock();
        let was = asked.remove(id);
        self.count.store(asked.len(), Ordering::SeqCst);
        was
    }

    /// Takes the store's set of requests as the whole truth (a worker's
    /// view of its shared store).
    #[cfg_attr(not(any(test, feature = "redis")), allow(dead_code))]
    pub(crate) fn replace(&self, ids: impl IntoIterator<Item = String>) {
        let mut asked = self.lock();
        *asked = ids.into_iter().map(Arc::from).collect();
        self.count.store(asked.len(), Ordering::SeqCst);
    }
}
