//! [`Jobs`]: a server's (or pool's) jobs as an application reads them:
//! statuses, dead letters, counts by type, captured jobs.

use std::sync::Arc;

use super::cancel::{CancelError, Cancellation};
use super::envelope::{DeadLetter, Envelope};
use super::registry::OUTCOMES;
use super::runner::JobRunner;
use super::schedule::ScheduleInfo;
use super::status::JobStatus;
use crate::prometheus::label_value;

/// The jobs of a server: their statuses and dead letters. Take it as a
/// handler argument (it is an extractor) to read them.
#[derive(Clone)]
pub struct Jobs {
    pub(super) runner: Arc<JobRunner>,
}

impl Jobs {
    pub(crate) fn new(runner: Arc<JobRunner>) -> Jobs {
        Jobs { runner }
    }

    /// What is known of job `id` (statuses are kept for the last
    /// [`status_capacity`](super::JobSettings::status_capacity) jobs; with Redis,
    /// in Redis). `None` too when Redis cannot be asked (logged); see
    /// [`lookup`](Self::lookup).
    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.lookup(id).unwrap_or_else(|error| {
            log::warn!("job {id}: its status could not be read: {error}");
            None
        })
    }

    /// [`status`](Self::status), telling "unknown" (`Ok(None)`) from "could
    /// not ask" (`Err`, the broker's error).
    pub fn lookup(&self, id: &str) -> Result<Option<JobStatus>, String> {
        match self.runner.broker() {
            Some(broker) => broker.status(id),
            None => Ok(self.runner.status(id)),
        }
    }

    /// Cancels job `id`, on this server's pool or, with Redis, wherever it
    /// is: a job that has not started (queued, delayed, retrying) never
    /// will ([`Cancellation::Cancelled`]); a running one is told, through
    /// [`JobContext::is_cancelled`](crate::JobContext::is_cancelled)
    /// ([`Cancellation::Cancelling`]). Every job still ends once: a cancelled
    /// one is counted `cancelled` (`afterward_jobs_cancelled_total`), not
    /// discarded, dead or done.
    ///
    /// # Errors
    ///
    /// [`CancelError::NotFound`] for an unknown id (or an expired status),
    /// [`CancelError::Ended`] for a job that has ended, and
    /// [`CancelError::Unavailable`] when Redis cannot be asked.
    pub fn cancel(&self, id: &str) -> Result<Cancellation, CancelError> {
        match self.runner.broker() {
            // The broker counts what it takes out; a worker what it stops.
            Some(broker) => broker.cancel(id, self.runner.made_here(id)),
            None => self.runner.cancel(id),
        }
    }

    /// A page of the statuses kept here, the newest first, of a state
    /// (empty: any) and an id or part of a name (empty: any): how many in
    /// all, and the page (in-process jobs; over Redis, none).
    pub(crate) fn select_statuses(
        &self,
        state: &str,
        q: &str,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<JobStatus>) {
        match self.runner.broker() {
            Some(_) => (0, Vec::new()),
            None => self.runner.select(state, q, skip, take),
        }
    }

    /// Per queue, the jobs kept here queued, running, delayed and retrying.
    pub(crate) fn queue_counts(&self) -> Vec<(String, [u64; 4])> {
        match self.runner.broker() {
            Some(_) => Vec::new(),
            None => self.runner.queue_counts(),
        }
    }

    /// The dead jobs kept, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.runner.dead_letters()
    }

    /// Runs job `id` now if it is delayed or waiting for a retry here (a
    /// dashboard's "run now"); `false` if it is not waiting. In-process
    /// only: over Redis, `afterward::redis::Admin::run_now`.
    pub fn run_now(&self, id: &str) -> bool {
        self.runner.broker().is_none() && self.runner.hurry(id)
    }

    /// Sends dead job `id` back to run, its attempts reset (it is counted
    /// enqueued again); `false` if no dead letter kept here has that id.
    /// In-process dead letters only: over Redis, use
    /// `afterward::redis::Admin::requeue` (or `afterward jobs requeue`).
    pub fn requeue_dead(&self, id: &str) -> bool {
        self.runner
            .take_dead(|letter| &*letter.envelope.id == id, true)
            == 1
    }

    /// Sends every dead job kept here (of `queue` only, if given) back to
    /// run, as [`requeue_dead`](Self::requeue_dead) does each; how many.
    pub fn requeue_all_dead(&self, queue: Option<&str>) -> usize {
        let pick = |letter: &DeadLetter| queue.is_none_or(|q| letter.envelope.queue == q);
        self.runner.take_dead(pick, true)
    }

    /// Drops dead job `id`'s letter for good (its status stays `dead`);
    /// `false` if no dead letter kept here has that id.
    pub fn discard_dead(&self, id: &str) -> bool {
        self.runner
            .take_dead(|letter| &*letter.envelope.id == id, false)
            == 1
    }

    /// The schedules ([`App::every`](crate::App::every),
    /// [`App::cron`](crate::App::cron)): their last and next run, and
    /// whether each is paused. Over Redis, the last run and the pause are
    /// the deployment's (every server's).
    ///
    /// # Errors
    ///
    /// When Redis cannot be asked.
    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>, String> {
        match self.runner.schedules() {
            Some(schedules) => schedules.list(),
            None => Ok(Vec::new()),
        }
    }

    /// Pauses schedule `name`: its ticks are not enqueued until it is
    /// resumed (over Redis, on every server at once). `Ok(false)` for a name
    /// no schedule has.
    ///
    /// # Errors
    ///
    /// When Redis cannot be asked.
    pub fn pause_schedule(&self, name: &str) -> Result<bool, String> {
        self.set_paused(name, true)
    }

    /// Resumes schedule `name` ([`pause_schedule`](Self::pause_schedule)).
    ///
    /// # Errors
    ///
    /// When Redis cannot be asked.
    pub fn resume_schedule(&self, name: &str) -> Result<bool, String> {
        self.set_paused(name, false)
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<bool, String> {
        match self.runner.schedules() {
            Some(schedules) => schedules.set_paused(name, paused),
            None => Ok(false),
        }
    }

    /// Each registered job type's counts by outcome, as
    /// `afterward_jobs_by_name_total{job, queue, outcome}` in the Prometheus text
    /// format (the metrics handler appends it to the server's).
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let name = "afterward_jobs_by_name_total";
        let mut out = self
            .runner
            .broker()
            .map(|broker| broker.to_prometheus())
            .unwrap_or_default();
        let _ = write!(
            out,
            "# HELP {name} Jobs by type, queue and outcome (enqueued, succeeded, retried, dead, overdue, discarded, cancelled).\n# TYPE {name} counter\n"
        );
        if let Some(schedules) = self.runner.schedules() {
            out.push_str(&schedules.to_prometheus());
        }
        for (job, queue, counts) in self.runner.registry().counts() {
            let job = label_value(job);
            for (outcome, n) in OUTCOMES.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "{name}{{job=\"{job}\",queue=\"{queue}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out
    }

    /// The jobs enqueued so far in [`JobMode::Capture`](super::JobMode::Capture), in order.
    pub fn captured(&self) -> Vec<Envelope> {
        self.runner.captured()
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}
