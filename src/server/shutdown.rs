//! Graceful shutdown: stop taking requests, finish those in flight, drain the
//! background pool until the deadline, and report what did not run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::{worker, Running, ServerState, Stopper};
use crate::engine::Next;
use crate::pool::ShutdownReport;

impl Running {
    /// Shuts down within `timeout`; fires `stopper` once new requests are
    /// being refused.
    pub(super) fn shutdown(self, timeout: Duration, stopper: &Stopper) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + timeout;
        let shared = &self.shared;
        log::info!("shutting down: finishing requests and background tasks within {timeout:?}");
        // Every task not run from now on is logged, and kept for the report.
        shared.pool.keep_not_run();

        // Refuse new work at once: the engine answers new requests `503`
        // and closes connections after their response in flight...
        shared.listener.drain();
        // ...and each worker ends at its next wake-up, after the requests
        // read before it.
        shared.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            shared.listener.wake_one();
        }
        // Whoever waits on the stopper may rely on the refusals having begun.
        stopper.stop();
        let workers_done = matches!(
            self.done.recv_deadline(deadline),
            Err(RecvTimeoutError::Disconnected)
        );
        let refuser = if workers_done {
            for worker in self.workers {
                // A worker catches handler panics, so it cannot end by panicking.
                let _ = worker.join();
            }
            // Whatever reaches the request queue from now on is answered
            // `503` at once, not held until the drain ends.
            Refuser::start(shared.clone())
        } else {
            None
        };

        // The pool waits for the requests still in flight (they count
        // against idleness) and for their tasks, until the same deadline.
        let mut report = shared.pool.stop_by(deadline);
        if !workers_done {
            // Past the deadline, a worker waiting for room in the queue has
            // given up, and a handler that returns now is refused: give them
            // a moment to do so, so that the report counts their tasks too.
            let _ = self.done.recv_timeout(LATE_WORKERS);
        }
        if let Some(refuser) = refuser {
            refuser.stop();
        }
        report.elapsed = started.elapsed();
        shared.pool.finish_report(&mut report);
        report
    }
}

/// How long, past the deadline, shutdown waits for request workers still
/// busy to finish what they hold before it reports.
const LATE_WORKERS: Duration = Duration::from_millis(200);

/// A thread answering `503` to every request that reaches the request queue
/// while the pool drains: with tiny_http, requests that arrive after the
/// workers' wake-ups; with the builtin engine, one that raced the drain flag.
struct Refuser {
    thread: JoinHandle<()>,
    done: Arc<AtomicBool>,
    shared: Arc<ServerState>,
}

impl Refuser {
    fn start(shared: Arc<ServerState>) -> Option<Refuser> {
        let done = Arc::new(AtomicBool::new(false));
        let (for_thread, done_for_thread) = (shared.clone(), done.clone());
        let spawned = thread::Builder::new()
            .name("afterward-refuser".into())
            .spawn(move || loop {
                match for_thread.listener.next() {
                    Next::Request(exchange) => worker::refuse(&for_thread, exchange),
                    Next::Woken if done_for_thread.load(Ordering::SeqCst) => return,
                    Next::Woken => {}
                }
            });
        match spawned {
            Ok(thread) => Some(Refuser {
                thread,
                done,
                shared,
            }),
            Err(e) => {
                log::warn!("cannot start the refuser thread: {e}");
                None
            }
        }
    }

    /// Answers what is queued, then ends.
    fn stop(self) {
        self.done.store(true, Ordering::SeqCst);
        self.shared.listener.wake_one();
        let _ = self.thread.join();
    }
}
