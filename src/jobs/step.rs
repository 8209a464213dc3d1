//! How a job's next step (`JobStep`, made by the runner) runs as a task:
//! an attempt, its wait in the timer, or its hand-over to a broker; and a
//! turn of the in-process queues (`JobPick`). What the pool runs as opaque
//! `Step`s.
//!
//! Architecture invariant: every job enqueued ends exactly once, as
//! succeeded, dead, discarded or (with a broker) sent. A job is in one place
//! at a time: in a task (a `JobStep`: its attempt, its wait, its send), in
//! the timer, in the in-process queues (`lanes.rs`), or in the broker's
//! buffer. A `JobStep` that will not run is told so ([`Step::discarded`])
//! and discards (or spills) its job; a `JobPick` stands for a turn, not a
//! job, and the job it would have run stays in the queues; the timer hands a
//! job back sealed in a new batch (or put in the queues) before it stops
//! counting as delayed; `JobRunner::close` discards what still waits in the
//! timer, the queues or the buffer at the shutdown deadline.

use super::broker::Refused;
use super::runner::{JobPick, JobStep};
use crate::tasks::{Discarded, HandOver, Step, TaskName};

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
            // In-process queues: the job takes its place, and this task
            // takes a turn (which runs whichever job the queues choose).
            (_, None) if runner.has_lanes() => match runner.enter_lane(envelope) {
                Ok(()) => runner.take_turn(),
                Err(envelope) => runner.discard_closed(&envelope),
            },
            (_, None) => runner.run_attempt(envelope),
            (_, Some(delay)) => runner.delay(envelope, delay),
        }
    }

    /// Its task was discarded: so is the job, counted (its task logs it and
    /// is listed); or, at the shutdown deadline in mixed mode, it is spilled
    /// to Redis.
    fn discarded(self: Box<Self>) -> Discarded {
        let JobStep {
            runner,
            envelope,
            delay,
            send,
        } = *self;
        if !send && runner.try_spill(&envelope, delay) {
            return Discarded::Spilled;
        }
        runner.count_discarded(&envelope);
        Discarded::NotRun
    }

    /// A send to a broker, or, with in-process queues, a job due now: both
    /// are done by the thread that submits the batch.
    fn hands_over(&self) -> bool {
        if self.send {
            self.runner.broker().is_some()
        } else {
            self.delay.is_none() && self.runner.has_lanes()
        }
    }

    /// A send step, done on this thread if the broker's buffer takes it
    /// without waiting; otherwise the step comes back (the buffer is full).
    /// A broker that has stopped discards the job, counted, as
    /// [`run`](Self::run) would. A job due now, with in-process queues,
    /// takes its place in its queue, and a turn takes the step's place.
    fn try_now(self: Box<Self>) -> HandOver {
        if !self.send {
            if !self.hands_over() {
                return HandOver::NotNow(self);
            }
            let JobStep {
                runner, envelope, ..
            } = *self;
            return match runner.enter_lane(envelope) {
                Ok(()) => HandOver::Instead(Box::new(JobPick { runner })),
                Err(envelope) => {
                    runner.discard_closed(&envelope);
                    HandOver::Done
                }
            };
        }
        let Some(broker) = self.runner.broker().cloned() else {
            return HandOver::NotNow(self);
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
            Ok(()) => HandOver::Done,
            Err(Refused::Full(envelope)) => {
                runner.counters().jobs_unbuffered(1, false);
                HandOver::NotNow(Box::new(JobStep {
                    runner,
                    envelope,
                    delay,
                    send,
                }))
            }
            Err(Refused::Stopped(envelope)) => {
                runner.broker_stopped(&envelope);
                HandOver::Done
            }
        }
    }
}

impl Step for JobPick {
    fn name(&self) -> TaskName {
        TaskName::Text("job queue turn".into())
    }

    fn run(self: Box<Self>) {
        self.runner.take_turn();
    }

    /// The job this turn would have run waits in the queues, which account
    /// for it (listed and discarded at the shutdown deadline).
    fn discarded(self: Box<Self>) -> Discarded {
        Discarded::Elsewhere
    }

    fn try_now(self: Box<Self>) -> HandOver {
        HandOver::NotNow(self)
    }
}
