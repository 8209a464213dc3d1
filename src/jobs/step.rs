//! How a job's next step (`JobStep`, made by the runner) runs as a task:
//! an attempt, its wait in the timer, or its hand-over to a broker; what
//! the pool runs as an opaque `Step`.
//!
//! Architecture invariant: every job enqueued ends exactly once, as
//! succeeded, dead, discarded or (with a broker) sent. A job is in one place
//! at a time: in a task (a `JobStep`: its attempt, its wait, its send), in
//! the timer, or in the broker's buffer. A `JobStep` that will not run is
//! told so ([`Step::discarded`]) and discards (or spills) its job; the timer
//! hands a job back as a new batch, sealed before it stops counting as
//! delayed; `JobRunner::close` discards what still waits at the shutdown
//! deadline.

use std::time::Instant;

use super::broker::Refused;
use super::runner::JobStep;
use crate::tasks::{Step, TaskName};

impl Step for JobStep {
    fn name(&self) -> TaskName {
        TaskName::Labelled {
            kind: "job",
            name: self.envelope.name.clone(),
            id: self.envelope.id.clone(),
        }
    }

    /// Runs on a pool thread (the job's own panics are caught in its attempt).
    fn run(self: Box<Self>) {
        let JobStep {
            runner,
            envelope,
            delay,
            send,
        } = *self;
        match (runner.broker(), delay) {
            (Some(broker), _) if send => {
                runner.counters().job_buffered();
                if let Err(envelope) = broker.send(envelope, delay) {
                    runner.broker_stopped(&envelope);
                }
            }
            (_, None) => runner.run_attempt(envelope),
            (_, Some(delay)) => runner.wait(envelope, Instant::now() + delay),
        }
    }

    /// Its task was discarded: so is the job, counted (its task logs it and
    /// is listed); or, at the shutdown deadline in mixed mode, it is spilled
    /// to Redis (`true`).
    fn discarded(self: Box<Self>) -> bool {
        let JobStep {
            runner,
            envelope,
            delay,
            send,
        } = *self;
        if !send && runner.try_spill(&envelope, delay) {
            return true;
        }
        runner.count_discarded(&envelope.id, &envelope.name);
        false
    }

    /// Whether this step hands the job to a broker.
    fn hands_over(&self) -> bool {
        self.send && self.runner.broker().is_some()
    }

    /// A send step, done on this thread if the broker's buffer takes it
    /// without waiting; otherwise the step comes back (the buffer is full,
    /// or this is not a send step). A broker that has stopped discards the
    /// job, counted, as [`run`](Self::run) would.
    fn try_now(self: Box<Self>) -> Option<Box<dyn Step>> {
        let Some(broker) = self.runner.broker().filter(|_| self.send).cloned() else {
            return Some(self);
        };
        // Counted before the broker has it: its sender may count it sent at once.
        self.runner.counters().job_buffered();
        let JobStep {
            runner,
            envelope,
            delay,
            send,
        } = *self;
        match broker.try_send(envelope, delay) {
            Ok(()) => None,
            Err(Refused::Full(envelope)) => {
                runner.counters().jobs_unbuffered(1, false);
                Some(Box::new(JobStep {
                    runner,
                    envelope,
                    delay,
                    send,
                }))
            }
            Err(Refused::Stopped(envelope)) => {
                runner.broker_stopped(&envelope);
                None
            }
        }
    }
}
