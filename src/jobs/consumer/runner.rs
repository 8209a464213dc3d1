//! A consumer's runner threads: each reads the envelopes of the jobs it is
//! given (off the I/O thread: reading envelopes was half its time), runs
//! one attempt at a time, and hands the results over in batches.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::backend::Delivery;
use super::stats::Shared;
use crate::jobs::envelope::Envelope;
use crate::jobs::job::JobContext;
use crate::jobs::registry::{Failure, Registry};
use crate::state::StateMap;

/// A runner's result, for the I/O thread to record.
pub(super) struct Finished {
    pub(super) entry: String,
    pub(super) outcome: Outcome,
}

pub(super) enum Outcome {
    /// Not run (the consumer is stopping): it stays pending.
    NotRun,
    /// The entry is not a job: a dead letter.
    Unreadable { text: String, error: String },
    /// An attempt ended.
    Ran {
        envelope: Envelope,
        result: Result<(), Failure>,
    },
}

/// The job a runner thread is running, for the I/O thread to announce
/// (`running`) and to watch for its deadline.
pub(super) struct Running {
    pub(super) entry: String,
    pub(super) id: Arc<str>,
    pub(super) name: Cow<'static, str>,
    /// The attempt running.
    pub(super) attempt: u32,
    pub(super) last_error: Option<String>,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    /// Whether its `running` status is written: only for a job still
    /// running a moment after it started (a short job goes from `queued` to
    /// its outcome, and costs the store one status write, not two).
    pub(super) announced: bool,
    pub(super) overdue: bool,
}

/// One slot per runner thread: what it runs now. A runner empties its slot
/// before it hands the result over, so the I/O thread never announces a job
/// whose outcome it has recorded.
pub(super) type Slots = Arc<[Mutex<Option<Running>>]>;

pub(super) fn lock_slot(slot: &Mutex<Option<Running>>) -> MutexGuard<'_, Option<Running>> {
    // Jobs run outside the lock: no job's panic can poison it mid-update.
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// A runner thread: runs the jobs it is given, and sends their results in
/// batches (whenever no other job is waiting for it), so that the I/O thread
/// is woken once per batch rather than once per job.
pub(super) struct Runner {
    pub(super) registry: Arc<Registry>,
    pub(super) state: Arc<StateMap>,
    pub(super) shared: Arc<Shared>,
    pub(super) slots: Slots,
    pub(super) index: usize,
    pub(super) default_timeout: Duration,
}

impl Runner {
    pub(super) fn run(&self, to_run: &Receiver<Delivery>, finished: &Sender<Vec<Finished>>) {
        let mut results = Vec::new();
        while let Ok(first) = to_run.recv() {
            let mut next = Some(first);
            while let Some(delivery) = next {
                results.push(self.run_one(delivery));
                next = to_run.try_recv().ok();
            }
            if finished.send(std::mem::take(&mut results)).is_err() {
                return;
            }
        }
    }

    /// Runs one job (unless the consumer is stopping: then it goes back unrun).
    fn run_one(&self, delivery: Delivery) -> Finished {
        let Delivery { entry, text } = delivery;
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Finished {
                entry,
                outcome: Outcome::NotRun,
            };
        }
        let mut envelope = match Envelope::from_json_text(&text) {
            Ok(envelope) => envelope,
            Err(error) => {
                return Finished {
                    entry,
                    outcome: Outcome::Unreadable { text, error },
                }
            }
        };
        envelope.attempts += 1;
        let spec = self.registry.get(&envelope.name);
        let timeout = spec.map_or(self.default_timeout, |spec| {
            spec.timeout(self.default_timeout)
        });
        let now = Instant::now();
        let slot = &self.slots[self.index];
        *lock_slot(slot) = Some(Running {
            entry: entry.clone(),
            id: envelope.id.clone(),
            name: envelope.name.clone(),
            attempt: envelope.attempts,
            last_error: envelope.last_error.clone(),
            started: now,
            deadline: now + timeout,
            announced: false,
            overdue: false,
        });
        let result = match spec {
            Some(spec) => {
                let context =
                    JobContext::for_attempt(&envelope, envelope.attempts, self.state.clone());
                spec.attempt(&envelope.payload, &context)
            }
            None => Err(Failure {
                message: format!(
                    "no job named {:?} is registered in this worker",
                    envelope.name
                ),
                retry: false,
            }),
        };
        *lock_slot(slot) = None;
        Finished {
            entry,
            outcome: Outcome::Ran { envelope, result },
        }
    }
}
