//! The job types an app registers ([`App::job`](crate::App::job)), by name:
//! how to run each (its payload read back into its type), its attempts and
//! deadline, and its counts by outcome.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::job::{GiveUp, Job, JobContext};

/// How an attempt ended when it did not succeed.
pub(crate) struct Failure {
    pub(crate) message: String,
    /// Whether another attempt could succeed (a payload that does not
    /// deserialize never will).
    pub(crate) retry: bool,
}

type RunFn = fn(&str, &JobContext) -> Result<(), Failure>;

/// One registered job type.
#[derive(Clone)]
pub(crate) struct JobSpec {
    /// This type's jobs by queue and outcome, for the `job` and `queue`
    /// labels of the metrics.
    pub(crate) counts: Arc<QueueCounts>,
    /// The queue its jobs go to unless an enqueue names another.
    pub(crate) queue: &'static str,
    run: RunFn,
    max_attempts: Option<u32>,
    timeout: Option<std::time::Duration>,
    /// The job's type, to tell a second registration of it from a clash.
    type_id: TypeId,
}

/// The registered job types, by name.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    specs: HashMap<&'static str, JobSpec>,
}

impl JobSpec {
    /// Runs one attempt of a job of this type on this thread, catching a
    /// panic: `Err` says why it failed, and whether another attempt could help.
    pub(crate) fn attempt(&self, payload: &str, context: &JobContext) -> Result<(), Failure> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.run)(payload, context)
        }))
        .unwrap_or_else(|panic| {
            Err(Failure {
                message: format!("panicked: {}", crate::unwind::panic_message(panic.as_ref())),
                retry: true,
            })
        })
    }

    /// The attempts a job of this type has in all, `default` unless it sets its own.
    pub(crate) fn max_attempts(&self, default: u32) -> u32 {
        self.max_attempts.unwrap_or(default).max(1)
    }

    /// How long an attempt may run, `default` unless the type sets its own.
    pub(crate) fn timeout(&self, default: std::time::Duration) -> std::time::Duration {
        self.timeout.unwrap_or(default)
    }
}

impl Registry {
    /// Registers `J`; panics if another type has its name.
    pub(crate) fn register<J: Job>(&mut self) {
        assert!(
            super::queues::valid_queue_name(J::QUEUE),
            "job {:?}: invalid queue name {:?} (1 to 64 letters, digits, '_', '-' or '.')",
            J::NAME,
            J::QUEUE
        );
        let spec = JobSpec {
            counts: Arc::new(QueueCounts::new(J::QUEUE)),
            queue: J::QUEUE,
            run: run_erased::<J>,
            max_attempts: J::MAX_ATTEMPTS,
            timeout: J::TIMEOUT,
            type_id: TypeId::of::<J>(),
        };
        let type_id = spec.type_id;
        if let Some(other) = self.specs.insert(J::NAME, spec) {
            assert!(
                other.type_id == type_id,
                "two job types are registered as {:?}",
                J::NAME
            );
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&JobSpec> {
        self.specs.get(name)
    }

    /// Each job type's counts, by name and queue.
    pub(crate) fn counts(&self) -> Vec<(&'static str, Arc<str>, [u64; OUTCOMES.len()])> {
        let mut counts: Vec<_> = self
            .specs
            .iter()
            .flat_map(|(name, spec)| {
                spec.counts
                    .snapshot()
                    .into_iter()
                    .map(|(queue, counts)| (*name, queue, counts))
            })
            .collect();
        counts.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        counts
    }

    /// The queues of the registered job types, sorted, each once.
    pub(crate) fn queues(&self) -> Vec<&'static str> {
        let mut queues: Vec<_> = self.specs.values().map(|spec| spec.queue).collect();
        queues.sort_unstable();
        queues.dedup();
        queues
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Adds `other`'s jobs; panics on a name both register differently.
    pub(crate) fn merge(&mut self, other: Registry) {
        for (name, spec) in other.specs {
            let type_id = spec.type_id;
            if let Some(mine) = self.specs.insert(name, spec) {
                assert!(
                    mine.type_id == type_id,
                    "two job types are registered as {name:?}"
                );
            }
        }
    }
}

/// What happened to a job, as the `outcome` label of
/// `afterward_jobs_by_name_total` says.
pub(crate) const OUTCOMES: [&str; 7] = [
    "enqueued",
    "succeeded",
    "retried",
    "dead",
    "overdue",
    "discarded",
    "cancelled",
];

/// One job type's counts, by queue: its own queue's without a lock, the
/// others' (enqueues that named another queue) in a short list.
pub(crate) struct QueueCounts {
    queue: Arc<str>,
    own: JobCounts,
    others: Mutex<Vec<(Arc<str>, Arc<JobCounts>)>>,
}

impl QueueCounts {
    fn new(queue: &str) -> QueueCounts {
        QueueCounts {
            queue: queue.into(),
            own: JobCounts::default(),
            others: Mutex::default(),
        }
    }

    /// Counts `outcome` for a job of this type in `queue`.
    pub(crate) fn bump(&self, queue: &str, outcome: usize) {
        if queue == &*self.queue {
            return self.own.bump(outcome);
        }
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        match others.iter().find(|(q, _)| &**q == queue) {
            Some((_, counts)) => counts.bump(outcome),
            None => {
                let counts = Arc::new(JobCounts::default());
                counts.bump(outcome);
                others.push((queue.into(), counts));
            }
        }
    }

    /// The counts of the type's own queue (always), then of the others.
    fn snapshot(&self) -> Vec<(Arc<str>, [u64; OUTCOMES.len()])> {
        let mut out = vec![(self.queue.clone(), self.own.snapshot())];
        let others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(others.iter().map(|(q, c)| (q.clone(), c.snapshot())));
        out
    }
}

/// One job type's counts in one queue, in the order of [`OUTCOMES`].
#[derive(Default)]
pub(crate) struct JobCounts([std::sync::atomic::AtomicU64; OUTCOMES.len()]);

impl JobCounts {
    fn bump(&self, outcome: usize) {
        self.0[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; OUTCOMES.len()] {
        self.0
            .each_ref()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
    }
}

fn run_erased<J: Job>(payload: &str, context: &JobContext) -> Result<(), Failure> {
    let job: J = serde_json::from_str(payload).map_err(|e| Failure {
        message: format!("the payload does not deserialize as {}: {e}", J::NAME),
        retry: false,
    })?;
    job.run(context).map_err(|e| Failure {
        message: e.to_string(),
        retry: !e.is::<GiveUp>(),
    })
}
