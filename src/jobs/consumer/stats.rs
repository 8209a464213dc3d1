//! What a consumer has done, as counters ([`WorkerStats`], also in the
//! Prometheus text format), and how its stop went ([`WorkerReport`]); the
//! state its threads share.

use std::sync::atomic::AtomicBool;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::prometheus::metric;

/// What a worker has done, as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Jobs read from the stream, new.
    pub claimed: u64,
    /// Jobs taken over from another consumer that held them past the
    /// visibility timeout (each may run a second time: a duplicate).
    pub reclaimed: u64,
    /// Jobs whose attempt succeeded (acknowledged and deleted).
    pub succeeded: u64,
    /// Failed attempts sent back to wait for a retry.
    pub retried: u64,
    /// Jobs whose attempts ran out, moved to the dead letters.
    pub dead: u64,
    /// Jobs cancelled: not started, or stopped when told.
    pub cancelled: u64,
    /// Attempts still running past their deadline (reported, not stopped).
    pub overdue: u64,
    /// Calls to the broker (Redis) that failed (each retried).
    pub redis_errors: u64,
    /// Jobs this worker holds now: read, not yet acknowledged.
    pub in_flight: u64,
    /// Jobs moved from the delayed set to the stream by this worker.
    pub promoted: u64,
    /// Jobs read and not acknowledged, by every worker of the group (Redis's
    /// `XPENDING`), as of the last look (every second).
    pub group_pending: u64,
}

impl WorkerStats {
    /// The counters in the Prometheus text format (a worker's `/metrics`).
    // Public API since before the consumer moved here (by reference, as
    // `Stats::to_prometheus`); clippy cannot tell it is exported.
    #[allow(clippy::wrong_self_convention)]
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let outcomes = [
            ("outcome=\"claimed\"", self.claimed),
            ("outcome=\"reclaimed\"", self.reclaimed),
            ("outcome=\"succeeded\"", self.succeeded),
            ("outcome=\"retried\"", self.retried),
            ("outcome=\"dead\"", self.dead),
            ("outcome=\"cancelled\"", self.cancelled),
            ("outcome=\"overdue\"", self.overdue),
            ("outcome=\"promoted\"", self.promoted),
        ];
        metric(
            &mut out,
            "afterward_worker_jobs_total",
            "counter",
            "Jobs by what this worker did with them (claimed: read new; reclaimed: taken over from a silent worker, may run twice; promoted: moved from the delayed set when due).",
            &outcomes,
        );
        metric(
            &mut out,
            "afterward_worker_redis_errors_total",
            "counter",
            "Calls to Redis that failed (each retried).",
            &[("", self.redis_errors)],
        );
        metric(
            &mut out,
            "afterward_worker_jobs_in_flight",
            "gauge",
            "Jobs this worker holds: read, not yet acknowledged.",
            &[("", self.in_flight)],
        );
        metric(
            &mut out,
            "afterward_worker_group_pending",
            "gauge",
            "Jobs read and not acknowledged by every worker of the group (XPENDING).",
            &[("", self.group_pending)],
        );
        out
    }
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) stats: Mutex<WorkerStats>,
    pub(super) changed: Condvar,
    pub(super) stopping: AtomicBool,
    pub(super) deadline: Mutex<Option<Instant>>,
}

impl Shared {
    pub(super) fn stats(&self) -> WorkerStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut WorkerStats)) {
        change(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }
}

/// How a worker's stop went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// The counters at the end.
    pub stats: WorkerStats,
    /// Jobs read and not finished by the deadline: left unacknowledged, for
    /// another worker to take over after the visibility timeout.
    pub left_pending: u64,
}

impl WorkerReport {
    /// Whether every job the worker held was finished.
    pub fn is_complete(&self) -> bool {
        self.left_pending == 0
    }
}
