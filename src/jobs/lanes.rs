//! The in-process queues, when a server or pool chooses which queues it
//! serves ([`JobSettings::queues`](crate::JobSettings::queues)): jobs due to
//! run wait here, by queue, and each runs when the queues' order, weights
//! and limits choose it.
//!
//! A job enters when it is dispatched (the request worker does it, in
//! `Batch::hand_over_leading`) or when it comes due from the timer; each
//! entry puts one *turn* in the pool's queue (a `JobPick` task). A turn runs
//! the job the queues choose at that moment, which need not be the one it
//! came with: a `critical` job dispatched behind a thousand `low` ones runs
//! at the next turn. A turn that finds every waiting job held back by its
//! queue's limit is *deferred*: the next job of a limited queue to finish
//! takes it.
//!
//! Invariant: the jobs waiting here are as many as the turns not taken
//! (turns in the pool's queue, plus deferred turns), so every job waiting
//! gets a turn; the jobs left here at a shutdown's deadline are listed and
//! discarded by `JobRunner::close`.

use std::sync::Mutex;

use super::envelope::Envelope;
use super::queues::{QueueSet, Queues};
use crate::stats::Counters;

pub(crate) struct Lanes {
    state: Mutex<State>,
}

struct State {
    set: QueueSet<Envelope>,
    /// Turns that found nothing they could run (limits held every waiting
    /// job back).
    deferred: usize,
    /// Set at shutdown: no job enters any more.
    closed: bool,
}

impl Lanes {
    pub(crate) fn new(queues: &Queues) -> Lanes {
        Lanes {
            state: Mutex::new(State {
                set: QueueSet::new(queues),
                deferred: 0,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No user code runs under this lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job (its turn is the caller's to give), counting it as
    /// waiting in `counters` if given (a job from the timer is counted
    /// already); `Err` gives it back when the lanes are closed, or its queue
    /// is not one of them.
    ///
    /// Counted under the lock: whoever sees the count and then takes a turn
    /// finds the job here.
    pub(crate) fn push(
        &self,
        envelope: Envelope,
        count: Option<&Counters>,
    ) -> Result<(), Envelope> {
        let mut state = self.lock();
        match state.set.lane(&envelope.queue) {
            Some(lane) if !state.closed => {
                if let Some(counters) = count {
                    counters.job_delayed(1);
                }
                state.set.push(lane, envelope);
                Ok(())
            }
            _ => Err(envelope),
        }
    }

    /// A turn: the job to run now (running in its lane until
    /// [`finished`](Self::finished)), or `None`, the turn deferred.
    pub(crate) fn take(&self) -> Option<(usize, Envelope)> {
        let mut state = self.lock();
        let taken = state.set.pop();
        if taken.is_none() && state.set.waiting() > 0 {
            state.deferred += 1;
        }
        taken
    }

    /// A job of `lane` has finished: the next job a deferred turn can run
    /// now, if there is one (the caller runs it, in that turn's place).
    pub(crate) fn finished(&self, lane: usize) -> Option<(usize, Envelope)> {
        let mut state = self.lock();
        state.set.finished(lane);
        if state.deferred == 0 {
            return None;
        }
        let next = state.set.pop();
        if next.is_some() {
            state.deferred -= 1;
        }
        next
    }

    /// Shutdown: no job enters from now on; the jobs waiting are taken out.
    pub(crate) fn close(&self) -> Vec<Envelope> {
        let mut state = self.lock();
        state.closed = true;
        state.deferred = 0;
        state.set.drain().into_iter().map(|(_, job)| job).collect()
    }

    /// Jobs waiting.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().set.waiting()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn job(id: &str, queue: &'static str) -> Envelope {
        Envelope {
            id: id.into(),
            name: "j".into(),
            queue: Cow::Borrowed(queue),
            payload: "null".into(),
            attempts: 0,
            max_attempts: 1,
            enqueued_at_ms: 0,
            request_id: "r".into(),
            last_error: None,
            unique: None,
        }
    }

    #[test]
    fn a_turn_held_back_by_a_limit_is_taken_by_the_next_job_to_finish() {
        let lanes = Lanes::new(&Queues::strict(["slow"]).limit("slow", 1));
        lanes.push(job("a", "slow"), None).unwrap();
        lanes.push(job("b", "slow"), None).unwrap();
        let (lane, first) = lanes.take().unwrap();
        assert_eq!(&*first.id, "a");
        // The second turn: `slow` is at its limit.
        assert!(lanes.take().is_none());
        let (_, second) = lanes.finished(lane).expect("the deferred turn runs b");
        assert_eq!(&*second.id, "b");
        assert!(lanes.finished(lane).is_none(), "no turn left to take");
        assert_eq!(lanes.waiting(), 0);
    }

    #[test]
    fn a_turn_runs_the_job_the_order_chooses_not_the_one_it_came_with() {
        let lanes = Lanes::new(&Queues::strict(["critical", "low"]));
        lanes.push(job("low-1", "low"), None).unwrap();
        lanes.push(job("critical-1", "critical"), None).unwrap();
        assert_eq!(&*lanes.take().unwrap().1.id, "critical-1");
        assert_eq!(&*lanes.take().unwrap().1.id, "low-1");
    }

    #[test]
    fn closed_lanes_give_their_jobs_back_and_take_no_more() {
        let lanes = Lanes::new(&Queues::strict(["a"]));
        lanes.push(job("x", "a"), None).unwrap();
        assert!(
            lanes.push(job("y", "elsewhere"), None).is_err(),
            "not a lane"
        );
        let left = lanes.close();
        assert_eq!(left.len(), 1);
        assert!(lanes.push(job("z", "a"), None).is_err());
        assert!(lanes.take().is_none());
    }
}
