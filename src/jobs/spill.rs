//! Mixed mode (`redis_spill`): jobs run in this process, and those that
//! would be dropped at the shutdown deadline (queued, or waiting for a retry
//! or a delay) go to Redis instead, for workers to run. The first failed
//! send stops the spilling: the rest are discarded without waiting on Redis
//! again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::broker::Broker;
use super::envelope::Envelope;

/// Where jobs go at the shutdown deadline, if anywhere.
pub(super) struct Spill {
    broker: Option<Arc<dyn Broker>>,
    /// The shutdown deadline has passed: jobs dropped from now on are spilled.
    closing: AtomicBool,
    /// A spill failed: the rest are discarded without waiting on Redis again.
    failed: AtomicBool,
}

impl Spill {
    pub(super) fn new(broker: Option<Arc<dyn Broker>>) -> Spill {
        Spill {
            broker,
            closing: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        }
    }

    /// The shutdown deadline has passed.
    pub(super) fn deadline_passed(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Sends a job that would be dropped now to the broker, due `delay` from
    /// now; whether it went (logged either way).
    pub(super) fn send(&self, envelope: &Envelope, delay: Option<Duration>) -> bool {
        let Some(broker) = &self.broker else {
            return false;
        };
        if !self.closing.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst) {
            return false;
        }
        match broker.send_now(envelope, delay) {
            Ok(()) => {
                log::warn!(
                    "job {} ({}) spilled to Redis at the shutdown deadline, for a worker to run",
                    envelope.name,
                    envelope.id
                );
                true
            }
            Err(error) => {
                self.failed.store(true, Ordering::SeqCst);
                log::error!("jobs could not be spilled to Redis ({error}): they are discarded");
                false
            }
        }
    }
}
