//! Where the dashboard reads and steers the jobs: this server's own pool
//! ([`Jobs`]), or a Redis deployment ([`Admin`], feature `redis`). Both
//! give the pages the same views.

use std::collections::BTreeMap;

use super::history::History;

use crate::jobs::{CancelError, Cancellation, DeadLetter, JobStatus, Jobs, ScheduleInfo};

/// One queue's counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct QueueRow {
    pub(crate) queue: String,
    /// Waiting to start (over Redis: in the stream, not yet read).
    pub(crate) ready: u64,
    /// Running (over Redis: read by a worker, not yet acknowledged).
    pub(crate) running: u64,
    pub(crate) delayed: u64,
    /// In-process only: over Redis, retries wait among the delayed.
    pub(crate) retrying: u64,
    pub(crate) dead: u64,
}

impl QueueRow {
    /// `{"queue", "ready", "running", "delayed", "retrying", "dead"}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "queue": self.queue,
            "ready": self.ready,
            "running": self.running,
            "delayed": self.delayed,
            "retrying": self.retrying,
            "dead": self.dead,
        })
    }
}

/// A dead letter, as the pages show it.
pub(crate) struct DeadRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) attempts: u32,
    pub(crate) error: String,
    pub(crate) payload: String,
}

impl From<DeadLetter> for DeadRow {
    fn from(letter: DeadLetter) -> DeadRow {
        let envelope = letter.envelope;
        DeadRow {
            id: envelope.id.to_string(),
            name: envelope.name.into_owned(),
            queue: envelope.queue.into_owned(),
            attempts: envelope.attempts,
            error: letter.error,
            payload: envelope.payload,
        }
    }
}

/// Where the data comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// The pool of the server serving the page.
    InProcess,
    /// A Redis deployment.
    #[cfg(feature = "redis")]
    Redis(std::sync::Arc<crate::redis::Admin>),
}

/// What a page needs of the source, for one request (`jobs`: the server's
/// own, when it has any).
pub(crate) struct View<'a> {
    pub(crate) source: &'a Source,
    pub(crate) jobs: Option<Jobs>,
    /// This process's jobs per minute.
    pub(crate) history: &'a History,
}

/// How many dead letters a page may read from Redis, at most.
#[cfg(feature = "redis")]
const DEAD_READ: usize = 10_000;

impl View<'_> {
    /// `in-process` or `Redis`.
    pub(crate) fn mode(&self) -> &'static str {
        match self.source {
            Source::InProcess => "in-process",
            #[cfg(feature = "redis")]
            Source::Redis(_) => "Redis",
        }
    }

    pub(crate) fn queues(&self) -> Result<Vec<QueueRow>, String> {
        match self.source {
            Source::InProcess => Ok(self
                .jobs
                .as_ref()
                .map(in_process_queues)
                .unwrap_or_default()),
            #[cfg(feature = "redis")]
            Source::Redis(admin) => Ok(admin
                .queues()?
                .into_iter()
                .map(|(queue, c)| QueueRow {
                    queue,
                    ready: c.ready,
                    running: c.pending,
                    delayed: c.delayed,
                    retrying: 0,
                    dead: c.dead,
                })
                .collect()),
        }
    }

    /// Jobs succeeded and failed per minute over the last hour, oldest
    /// first: this process's, or over Redis, every worker's.
    pub(crate) fn per_minute(&self) -> Result<Vec<(u64, u64, u64)>, String> {
        match self.source {
            Source::InProcess => Ok(self.history.hour()),
            #[cfg(feature = "redis")]
            Source::Redis(admin) => admin.per_minute(super::history::MINUTES),
        }
    }

    /// Over Redis: the jobs workers hold (with the worker and how long
    /// since it renewed its hold, ms), and those delayed or waiting for a
    /// retry (with their due time), the first `limit` of each queue.
    #[cfg(feature = "redis")]
    #[allow(clippy::type_complexity)]
    pub(crate) fn redis_lists(
        &self,
        limit: usize,
    ) -> Result<
        (
            Vec<(crate::Envelope, String, u64)>,
            Vec<(crate::Envelope, u64)>,
        ),
        String,
    > {
        match self.source {
            Source::InProcess => Ok((Vec::new(), Vec::new())),
            Source::Redis(admin) => Ok((admin.held(limit)?, admin.delayed(limit)?)),
        }
    }

    /// Over Redis: per queue, the jobs done last (how many kept, and
    /// `take` statuses from the `skip`th on).
    #[cfg(feature = "redis")]
    #[allow(clippy::type_complexity)]
    pub(crate) fn recent_done(
        &self,
        skip: usize,
        take: usize,
    ) -> Result<Vec<(String, u64, Vec<JobStatus>)>, String> {
        match self.source {
            Source::InProcess => Ok(Vec::new()),
            Source::Redis(admin) => admin.recent_done(skip, take),
        }
    }

    /// The workers seen recently (over Redis; none in-process).
    #[cfg(feature = "redis")]
    pub(crate) fn workers(&self) -> Result<Vec<crate::redis::WorkerInfo>, String> {
        match self.source {
            Source::InProcess => Ok(Vec::new()),
            Source::Redis(admin) => admin.workers(),
        }
    }

    /// A page of the statuses kept in this process (over Redis: none; the
    /// pages then look jobs up by id): how many in all, and the page.
    pub(crate) fn statuses(
        &self,
        state: &str,
        q: &str,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<JobStatus>) {
        match (self.source, &self.jobs) {
            (Source::InProcess, Some(jobs)) => jobs.select_statuses(state, q, skip, take),
            _ => (0, Vec::new()),
        }
    }

    pub(crate) fn status(&self, id: &str) -> Result<Option<JobStatus>, String> {
        match self.source {
            Source::InProcess => match &self.jobs {
                Some(jobs) => jobs.lookup(id),
                None => Ok(None),
            },
            #[cfg(feature = "redis")]
            Source::Redis(admin) => admin.status(id),
        }
    }

    pub(crate) fn dead(&self) -> Result<Vec<DeadRow>, String> {
        match self.source {
            Source::InProcess => Ok(self
                .jobs
                .as_ref()
                .map(|jobs| {
                    jobs.dead_letters()
                        .into_iter()
                        .rev()
                        .map(DeadRow::from)
                        .collect()
                })
                .unwrap_or_default()),
            #[cfg(feature = "redis")]
            Source::Redis(admin) => Ok(admin
                .dead(DEAD_READ)?
                .into_iter()
                .map(|dead| {
                    DeadRow::from(DeadLetter {
                        envelope: dead.envelope,
                        error: dead.error,
                    })
                })
                .collect()),
        }
    }

    pub(crate) fn schedules(&self) -> Result<Vec<ScheduleInfo>, String> {
        match (self.source, &self.jobs) {
            (Source::InProcess, Some(jobs)) => jobs.schedules(),
            (Source::InProcess, None) => Ok(Vec::new()),
            #[cfg(feature = "redis")]
            (Source::Redis(admin), _) => admin.schedules(),
        }
    }

    pub(crate) fn cancel(&self, id: &str) -> Result<Cancellation, CancelError> {
        match self.source {
            Source::InProcess => match &self.jobs {
                Some(jobs) => jobs.cancel(id),
                None => Err(CancelError::NotFound),
            },
            #[cfg(feature = "redis")]
            Source::Redis(admin) => admin.cancel(id),
        }
    }

    /// Runs job `id` now if it is delayed or waiting for a retry: whether
    /// it was.
    pub(crate) fn run_now(&self, id: &str) -> Result<bool, String> {
        match self.source {
            Source::InProcess => Ok(self.jobs.as_ref().is_some_and(|j| j.run_now(id))),
            #[cfg(feature = "redis")]
            Source::Redis(admin) => admin.run_now(id),
        }
    }

    /// Requeues dead job `id`: whether there was one.
    pub(crate) fn requeue(&self, id: &str) -> Result<bool, String> {
        match self.source {
            Source::InProcess => Ok(self.jobs.as_ref().is_some_and(|j| j.requeue_dead(id))),
            #[cfg(feature = "redis")]
            Source::Redis(admin) => admin.requeue(id),
        }
    }

    /// Requeues every dead job of `queue`: how many.
    pub(crate) fn requeue_all(&self, queue: &str) -> Result<u64, String> {
        match self.source {
            Source::InProcess => Ok(self
                .jobs
                .as_ref()
                .map_or(0, |j| j.requeue_all_dead(Some(queue)) as u64)),
            #[cfg(feature = "redis")]
            Source::Redis(admin) => admin.requeue_all(Some(queue)),
        }
    }

    /// Drops dead job `id`'s letter: whether there was one.
    pub(crate) fn discard(&self, id: &str) -> Result<bool, String> {
        match self.source {
            Source::InProcess => Ok(self.jobs.as_ref().is_some_and(|j| j.discard_dead(id))),
            #[cfg(feature = "redis")]
            Source::Redis(admin) => admin.discard(id),
        }
    }

    /// Pauses or resumes schedule `name`: whether there is one.
    pub(crate) fn pause(&self, name: &str, paused: bool) -> Result<bool, String> {
        match self.source {
            Source::InProcess => match &self.jobs {
                Some(jobs) if paused => jobs.pause_schedule(name),
                Some(jobs) => jobs.resume_schedule(name),
                None => Ok(false),
            },
            #[cfg(feature = "redis")]
            Source::Redis(admin) => {
                let known = admin.schedules()?.iter().any(|s| s.name == name);
                if known {
                    admin.pause_schedule(name, paused)?;
                }
                Ok(known)
            }
        }
    }
}

/// The in-process queues' counts, from the statuses kept and the dead letters.
fn in_process_queues(jobs: &Jobs) -> Vec<QueueRow> {
    fn row<'a>(queues: &'a mut BTreeMap<String, QueueRow>, queue: &str) -> &'a mut QueueRow {
        queues.entry(queue.to_owned()).or_insert_with(|| QueueRow {
            queue: queue.to_owned(),
            ..QueueRow::default()
        })
    }
    let mut queues: BTreeMap<String, QueueRow> = BTreeMap::new();
    for (queue, [ready, running, delayed, retrying]) in jobs.queue_counts() {
        let counts = row(&mut queues, &queue);
        counts.ready += ready;
        counts.running += running;
        counts.delayed += delayed;
        counts.retrying += retrying;
    }
    for letter in jobs.dead_letters() {
        row(&mut queues, &letter.envelope.queue).dead += 1;
    }
    queues.into_values().collect()
}
