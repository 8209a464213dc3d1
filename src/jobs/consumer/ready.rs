//! The jobs a consumer holds and has not started, by queue: the I/O thread
//! puts them here, and each runner thread takes the next one the queues'
//! order and weights choose (a queue's limit is kept by fetching no more of
//! its jobs than it may run: see `io.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::backend::Delivery;
use crate::jobs::queues::{QueueSet, Queues};

pub(super) struct Ready {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    set: QueueSet<Delivery>,
    /// Set at the stop: runners take nothing more.
    closed: bool,
    /// Runners waiting for a job.
    sleepers: usize,
}

impl Ready {
    pub(super) fn new(queues: &Queues) -> Ready {
        Ready {
            state: Mutex::new(State {
                set: QueueSet::new(queues),
                closed: false,
                sleepers: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs to run, each in its queue; once closed, none is taken: they
    /// are returned.
    pub(super) fn push(&self, deliveries: Vec<Delivery>) -> Vec<Delivery> {
        let mut state = self.lock();
        if state.closed {
            return deliveries;
        }
        let n = deliveries.len();
        for delivery in deliveries {
            state.set.push(delivery.lane, delivery);
        }
        let wake = state.sleepers.min(n);
        drop(state);
        for _ in 0..wake {
            self.changed.notify_one();
        }
        Vec::new()
    }

    /// The next job to run, by the queues' order; waits for one. `None` once
    /// closed or the consumer is stopping.
    pub(super) fn take(&self, stopping: &AtomicBool) -> Option<Delivery> {
        let mut state = self.lock();
        loop {
            if state.closed || stopping.load(Ordering::SeqCst) {
                return None;
            }
            if let Some((_, delivery)) = state.set.pop() {
                return Some(delivery);
            }
            state.sleepers += 1;
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            state.sleepers -= 1;
        }
    }

    /// [`take`](Self::take) without waiting.
    pub(super) fn try_take(&self, stopping: &AtomicBool) -> Option<Delivery> {
        let mut state = self.lock();
        if state.closed || stopping.load(Ordering::SeqCst) {
            return None;
        }
        state.set.pop().map(|(_, delivery)| delivery)
    }

    /// Whether a runner waits for a job now.
    pub(super) fn has_idle_runner(&self) -> bool {
        let state = self.lock();
        state.sleepers > 0 && state.set.waiting() == 0
    }

    /// A job of `lane` has finished running.
    pub(super) fn finished(&self, lane: usize) {
        self.lock().set.finished(lane);
    }

    /// How many more jobs of `lane` may be held (waiting here or running)
    /// under its limit.
    pub(super) fn room(&self, lane: usize) -> usize {
        self.lock().set.room(lane)
    }

    /// The lanes in the order to fetch from now.
    pub(super) fn fetch_order(&self) -> Vec<usize> {
        self.lock().set.fetch_order()
    }

    /// The stop: runners take nothing more, and the jobs not started are
    /// taken out (they stay pending in the store).
    pub(super) fn close(&self) -> Vec<Delivery> {
        let mut state = self.lock();
        state.closed = true;
        let left = state.set.drain().into_iter().map(|(_, d)| d).collect();
        drop(state);
        self.changed.notify_all();
        left
    }
}
