//! Graceful shutdown: stop taking requests, finish those in flight, drain the
//! background pool until the deadline, and report what did not run.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::Running;
use crate::http_error::HttpError;
use crate::pool::ShutdownReport;
use crate::response::IntoResponse;

impl Running {
    pub(super) fn shutdown(self, timeout: Duration) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + timeout;
        let shared = &self.shared;
        log::info!("shutting down: finishing requests and background tasks within {timeout:?}");

        // Stop taking requests: each worker ends at its next wake-up, after
        // the requests queued before it.
        shared.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            shared.listener.wake_one();
        }
        let workers_done = matches!(
            self.done.recv_deadline(deadline),
            Err(RecvTimeoutError::Disconnected)
        );
        if workers_done {
            for worker in self.workers {
                // A worker catches handler panics, so it cannot end by panicking.
                let _ = worker.join();
            }
            // Requests that arrived after the wake-ups are answered, not dropped.
            while let Some(exchange) = shared.listener.try_next() {
                let refusal = HttpError::new(503, "the server is shutting down");
                let _ = exchange.respond(refusal.into_response());
            }
        }

        // The pool waits for the requests still in flight (they count
        // against idleness) and for their tasks, until the same deadline.
        let mut report = shared.pool.shutdown_by(deadline);
        report.elapsed = started.elapsed();
        report
    }
}
