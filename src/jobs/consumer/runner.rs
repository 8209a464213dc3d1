//! A consumer's runner threads: each takes the next job the queues choose,
//! reads its envelope (off the I/O thread: reading envelopes was half its
//! time), runs one attempt, and hands the result over.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::backend::Delivery;
use super::ready::Ready;
use super::stats::Shared;
use crate::jobs::envelope::Envelope;
use crate::jobs::job::JobContext;
use crate::jobs::registry::{Failure, Registry};
use crate::jobs::scope::{JobScope, Outbox};
use crate::state::StateMap;

/// A runner's result, for the I/O thread to record.
pub(super) struct Finished {
    pub(super) lane: usize,
    pub(super) entry: String,
    pub(super) outcome: Outcome,
    /// How long the attempt ran (zero when it did not run).
    pub(super) ran_for: Duration,
}

pub(super) enum Outcome {
    /// Not run (the consumer is stopping): it stays pending.
    NotRun,
    /// The entry is not a job: a dead letter.
    Unreadable { text: String, error: String },
    /// The job was cancelled before it started.
    Cancelled { envelope: Envelope },
    /// An attempt ended, leaving `outbox` behind (kept if it succeeded).
    Ran {
        envelope: Envelope,
        result: Result<(), Failure>,
        outbox: Outbox,
    },
}

/// The job a runner thread is running, for the I/O thread to announce
/// (`running`) and to watch for its deadline.
pub(super) struct Running {
    pub(super) lane: usize,
    pub(super) entry: String,
    pub(super) id: Arc<str>,
    pub(super) name: Cow<'static, str>,
    /// The attempt running.
    pub(super) attempt: u32,
    pub(super) last_error: Option<String>,
    pub(super) enqueued_at_ms: u64,
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
    pub(super) scope: Arc<JobScope>,
}

impl Runner {
    /// Runs the jobs `ready` gives it until the consumer stops, and hands
    /// the results over in batches: whenever no other job is ready for it,
    /// so that the I/O thread is woken once per batch rather than per job.
    pub(super) fn run(&self, ready: &Ready, finished: &Sender<Vec<Finished>>) {
        let stopping = &self.shared.stopping;
        let mut results = Vec::new();
        loop {
            let next = match ready.try_take(stopping) {
                Some(delivery) => Some(delivery),
                None => {
                    if !results.is_empty() && finished.send(std::mem::take(&mut results)).is_err() {
                        return;
                    }
                    ready.take(stopping)
                }
            };
            let Some(delivery) = next else {
                break;
            };
            let lane = delivery.lane;
            results.push(self.run_one(delivery));
            ready.finished(lane);
        }
        if !results.is_empty() {
            let _ = finished.send(results);
        }
    }

    /// Runs one job (unless the consumer is stopping: then it goes back unrun).
    fn run_one(&self, delivery: Delivery) -> Finished {
        let Delivery { lane, entry, text } = delivery;
        let not_run = |outcome| Finished {
            lane,
            entry: entry.clone(),
            outcome,
            ran_for: Duration::ZERO,
        };
        if self.shared.stopping.load(Ordering::SeqCst) {
            return not_run(Outcome::NotRun);
        }
        let mut envelope = match Envelope::from_json_text(&text) {
            Ok(envelope) => envelope,
            Err(error) => return not_run(Outcome::Unreadable { text, error }),
        };
        if self.scope.cancels.is_asked(&envelope.id) {
            return not_run(Outcome::Cancelled { envelope });
        }
        envelope.attempts += 1;
        let spec = self.registry.get(&envelope.name);
        let timeout = spec.map_or(self.default_timeout, |spec| {
            spec.timeout(self.default_timeout)
        });
        let now = Instant::now();
        let slot = &self.slots[self.index];
        *lock_slot(slot) = Some(Running {
            lane,
            entry: entry.clone(),
            id: envelope.id.clone(),
            name: envelope.name.clone(),
            attempt: envelope.attempts,
            last_error: envelope.last_error.clone(),
            enqueued_at_ms: envelope.enqueued_at_ms,
            started: now,
            deadline: now + timeout,
            announced: false,
            overdue: false,
        });
        let context = JobContext::for_attempt(
            &envelope,
            envelope.attempts,
            self.state.clone(),
            self.scope.clone(),
        );
        let result = match spec {
            Some(spec) => spec.attempt(&envelope.payload, &context),
            None => Err(Failure {
                message: format!(
                    "no job named {:?} is registered in this worker",
                    envelope.name
                ),
                retry: false,
            }),
        };
        let outbox = context.take_outbox();
        *lock_slot(slot) = None;
        Finished {
            lane,
            entry,
            outcome: Outcome::Ran {
                envelope,
                result,
                outbox,
            },
            ran_for: now.elapsed(),
        }
    }
}
