//! The jobs' timer: jobs waiting for their time (a retry's backoff, a
//! delayed enqueue), by due time, and the deadlines of the attempts running
//! now; and, for the timer thread, what to do next ([`Timer::next`]).
//! Nothing here runs a job: the runner's thread acts on what it is told.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::envelope::Envelope;

/// Jobs waiting for their time, and the attempts running now.
#[derive(Default)]
pub(crate) struct Timer {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    waiting: BinaryHeap<Reverse<Waiting>>,
    next_seq: u64,
    /// The attempts running now (a few: one per pool thread at most, plus
    /// eager ones), each with its deadline. They are kept here, not in the
    /// heap, so that an attempt that ends in time leaves nothing behind.
    running: Vec<Running>,
    /// When the timer thread will look again.
    wake: Wake,
    closed: bool,
}

struct Waiting {
    due: Instant,
    seq: u64,
    /// A job to run again (a retry, a delayed enqueue).
    envelope: Envelope,
}

/// When the timer thread looks at its state again.
#[derive(Default, Clone, Copy)]
enum Wake {
    /// It is awake, and reads the state again before it sleeps.
    #[default]
    Awake,
    /// It sleeps until then.
    At(Instant),
    /// It sleeps until woken: nothing is due.
    Never,
}

/// An attempt running now.
#[derive(Clone)]
pub(crate) struct Running {
    pub(crate) id: Arc<str>,
    pub(crate) name: Cow<'static, str>,
    pub(crate) queue: Cow<'static, str>,
    pub(crate) attempt: u32,
    pub(crate) deadline: Instant,
    /// The pool slot of the thread running it, if a pool thread.
    pub(crate) slot: Option<usize>,
    pub(crate) overdue: bool,
}

/// What the timer thread does next.
pub(crate) enum Next {
    /// This job is due: run it.
    Due(Envelope),
    /// These attempts are running past their deadlines (each told once).
    Overdue(Vec<Running>),
    /// The timer is closed: the thread ends.
    Closed,
}

impl TimerState {
    /// The earliest time the timer thread has something to do.
    fn next_due(&self) -> Option<Instant> {
        let retry = self.waiting.peek().map(|Reverse(next)| next.due);
        let deadline = self
            .running
            .iter()
            .filter(|r| !r.overdue)
            .map(|r| r.deadline)
            .min();
        retry.into_iter().chain(deadline).min()
    }

    /// Whether something due at `due` comes before the timer looks again.
    fn wakes_too_late_for(&self, due: Instant) -> bool {
        match self.wake {
            Wake::Awake => false,
            Wake::At(wake) => due < wake,
            Wake::Never => true,
        }
    }
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, TimerState> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `envelope` until `due`; the timer thread is woken only if it
    /// would look too late. `Err` gives the job back when the timer is
    /// closed (checked under the same lock as the closing, so that no job
    /// is kept after [`close`](Self::close) has taken what waits).
    pub(crate) fn schedule(&self, due: Instant, envelope: Envelope) -> Result<(), Envelope> {
        let mut state = self.lock();
        if state.closed {
            return Err(envelope);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let wake = state.wakes_too_late_for(due);
        state.waiting.push(Reverse(Waiting { due, seq, envelope }));
        if wake {
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Makes job `id`, waiting here, due now (a dashboard's "run now");
    /// whether it was waiting.
    pub(crate) fn hurry(&self, id: &str) -> bool {
        let mut state = self.lock();
        let mut waiting = std::mem::take(&mut state.waiting).into_vec();
        let found = match waiting.iter_mut().find(|w| &*w.0.envelope.id == id) {
            Some(Reverse(job)) => {
                job.due = Instant::now();
                true
            }
            None => false,
        };
        state.waiting = waiting.into();
        if found {
            self.changed.notify_one();
        }
        found
    }

    /// An attempt starts: its deadline is watched, and the timer woken only
    /// if it would look too late (with one timeout for all, deadlines come
    /// in order, so it rarely is).
    pub(crate) fn started(&self, attempt: Running) {
        let mut state = self.lock();
        let wake = state.wakes_too_late_for(attempt.deadline);
        state.running.push(attempt);
        if wake {
            self.changed.notify_one();
        }
    }

    /// An attempt has returned; whether it had gone overdue.
    pub(crate) fn ended(&self, id: &Arc<str>, attempt: u32) -> bool {
        let mut state = self.lock();
        let position = state
            .running
            .iter()
            .position(|r| Arc::ptr_eq(&r.id, id) && r.attempt == attempt);
        position.is_some_and(|i| state.running.swap_remove(i).overdue)
    }

    /// Closes the timer (its thread ends) and gives back the jobs still
    /// waiting, each with when it was due.
    pub(crate) fn close(&self) -> Vec<(Envelope, Instant)> {
        let mut state = self.lock();
        state.closed = true;
        self.changed.notify_all();
        std::mem::take(&mut state.waiting)
            .into_iter()
            .map(|Reverse(waiting)| (waiting.envelope, waiting.due))
            .collect()
    }

    /// Waits until there is something to do, and says what.
    pub(crate) fn next(&self) -> Next {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Next::Closed;
            }
            let now = Instant::now();
            let overdue: Vec<Running> = state
                .running
                .iter_mut()
                .filter(|r| !r.overdue && r.deadline <= now)
                .map(|r| {
                    r.overdue = true;
                    r.clone()
                })
                .collect();
            if !overdue.is_empty() {
                return Next::Overdue(overdue);
            }
            let due = state
                .waiting
                .peek()
                .is_some_and(|Reverse(next)| next.due <= now);
            if due {
                if let Some(Reverse(due)) = state.waiting.pop() {
                    return Next::Due(due.envelope);
                }
            }
            state.wake = state.next_due().map_or(Wake::Never, Wake::At);
            state = match state.wake {
                Wake::At(wake) => {
                    let left = wake.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                _ => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
            state.wake = Wake::Awake;
        }
    }

    /// What it holds: jobs waiting, attempts running.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> (usize, usize) {
        let state = self.lock();
        (state.waiting.len(), state.running.len())
    }
}
