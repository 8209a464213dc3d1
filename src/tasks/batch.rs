//! [`Batch`]: one request's tasks, sealed, as the pool runs them; where
//! every task is counted scheduled once and discarded at most once.

use std::sync::Arc;
use std::time::Instant;

use super::queue::TaskQueue;
use super::{BackgroundTask, HandOver, Work};
use crate::stats::{Counters, TaskInfo, TaskOutcome};

/// One request's tasks, sealed: what the pool runs, in order, on one thread.
///
/// Architecture invariant: every task is counted as `scheduled` exactly once,
/// here in [`Batch::seal`], and as `discarded` only in [`Batch::discard`]
/// (which a `Batch` dropped with tasks left also calls), so each task added
/// ends in exactly one outcome.
pub(crate) struct Batch {
    request_id: Arc<str>,
    tasks: TaskQueue,
    counters: Arc<Counters>,
    /// Whether the tasks left are counted in the `queued` gauge.
    queued: bool,
}

impl Batch {
    pub(crate) fn seal(request_id: &Arc<str>, tasks: TaskQueue, counters: &Arc<Counters>) -> Batch {
        counters.scheduled(tasks.len() as u64);
        Batch {
            request_id: request_id.clone(),
            tasks,
            counters: counters.clone(),
            queued: false,
        }
    }

    pub(crate) fn request_id(&self) -> &Arc<str> {
        &self.request_id
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Counts the tasks left in the `queued` gauge, once they are handed to the pool.
    pub(crate) fn mark_queued(&mut self) {
        if !self.queued {
            self.queued = true;
            self.counters.queued(self.tasks.len() as u64);
        }
    }

    /// The next task to run, counted as running (and no longer queued).
    pub(crate) fn start_next(&mut self) -> Option<BackgroundTask> {
        let task = self.tasks.pop_front()?;
        self.counters.started(self.queued);
        Some(task)
    }

    /// Does the list's leading hand-overs (a job's send to its broker) on
    /// this thread, while each takes no waiting: no pool thread to wake for
    /// work that is only a hand-off. What is left (a closure, a hand-over
    /// behind one, or one that would wait) goes to the pool as before, in
    /// order, under its [`OnFull`](crate::OnFull) policy.
    pub(crate) fn hand_over_leading(&mut self) {
        // Steps that took a hand-over's place, kept in order, in front.
        let mut instead = Vec::new();
        while self
            .tasks
            .front()
            .is_some_and(|task| matches!(&task.work, Work::Step(step) if step.hands_over()))
        {
            let Some(BackgroundTask {
                name,
                work: Work::Step(step),
            }) = self.tasks.pop_front()
            else {
                unreachable!("the front task is a hand-over");
            };
            let started = Instant::now();
            match step.try_now() {
                HandOver::Done => {
                    self.counters.started(self.queued);
                    self.counters
                        .finished(TaskOutcome::Completed, started.elapsed());
                }
                HandOver::Instead(step) => instead.push(BackgroundTask {
                    name,
                    work: Work::Step(step),
                }),
                HandOver::NotNow(step) => {
                    self.tasks.push_front(BackgroundTask {
                        name,
                        work: Work::Step(step),
                    });
                    break;
                }
            }
        }
        for task in instead.into_iter().rev() {
            self.tasks.push_front(task);
        }
    }

    /// Runs every task left, in order, on this thread.
    pub(crate) fn run_all(mut self) {
        while let Some(task) = self.start_next() {
            task.run_counted(&self.request_id, &self.counters);
        }
    }

    /// Logs each task left as not run, with `reason`, counts them as
    /// discarded, and lists them.
    pub(crate) fn discard(self, reason: &str) -> Vec<TaskInfo> {
        self.discard_at(log::Level::Warn, reason)
    }

    /// [`discard`](Self::discard), logging at `level`.
    pub(crate) fn discard_at(mut self, level: log::Level, reason: &str) -> Vec<TaskInfo> {
        self.discard_rest(level, reason)
    }

    fn discard_rest(&mut self, level: log::Level, reason: &str) -> Vec<TaskInfo> {
        // Each job hears of it before the tasks stop counting as pending:
        // no observer sees the server idle with a job's outcome missing.
        let tasks = std::mem::take(&mut self.tasks);
        let n = tasks.len() as u64;
        let discarded: Vec<TaskInfo> = tasks
            .into_iter()
            .filter_map(|task| task.discard(level, &self.request_id, reason, &self.counters))
            .collect();
        if self.queued {
            self.counters.unqueued(n);
        }
        self.counters.discarded(n);
        discarded
    }
}

impl Drop for Batch {
    /// A batch is run or discarded on purpose; one dropped with tasks left
    /// (a channel torn down mid-shutdown, say) still accounts for them.
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.discard_rest(log::Level::Warn, "it was dropped before it could run");
        }
    }
}
