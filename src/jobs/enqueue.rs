//! Enqueueing a job from a request's task list: [`BackgroundTasks::enqueue`]
//! and its kin, and [`EnqueueError`]. They are methods of the task list
//! (as users reach them), written here, above it: `tasks.rs` knows nothing
//! of jobs, and finds the runner only as the context its pool gave the list.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::handle::Jobs;
use super::job::{EnqueueError, Job, JobId};
use super::options::JobOptions;
use super::runner::{JobRunner, Prepared};
use super::settings::JobMode;
use crate::tasks::BackgroundTasks;

impl BackgroundTasks {
    /// The jobs of the server (or pool) this list belongs to, if it has any.
    pub(crate) fn jobs(&self) -> Option<Jobs> {
        self.context::<JobRunner>().map(Jobs::new)
    }

    /// Enqueues the named job `job`, to start after the response like every
    /// task (and to be discarded with the other tasks if the handler fails),
    /// and returns its id. Its payload is serialized now; a failed attempt is
    /// retried with backoff; [`Jobs::status`] tells where it is.
    ///
    /// # Errors
    ///
    /// When `J` is not registered ([`App::job`](crate::App::job)) or its
    /// value does not serialize: a mistake found now, not when it would run.
    /// An [`EnqueueError`] converts into a `500` [`HttpError`](crate::HttpError).
    pub fn enqueue<J: Job>(&self, job: J) -> Result<JobId, EnqueueError> {
        self.enqueue_with(job, JobOptions::new())
    }

    /// [`enqueue`](Self::enqueue), to start `delay` after the response (it
    /// waits in a timer, not on a pool thread).
    pub fn enqueue_in<J: Job>(&self, job: J, delay: Duration) -> Result<JobId, EnqueueError> {
        self.enqueue_with(job, JobOptions::new().delay(delay))
    }

    /// [`enqueue`](Self::enqueue), to start at `when` (at once if it has
    /// passed): [`enqueue_in`](Self::enqueue_in) with the time left, on
    /// either backend. The wall clock decides: a clock stepped forward
    /// brings it sooner.
    pub fn enqueue_at<J: Job>(&self, job: J, when: SystemTime) -> Result<JobId, EnqueueError> {
        let delay = when.duration_since(SystemTime::now()).unwrap_or_default();
        self.enqueue_with(job, JobOptions::new().delay(delay))
    }

    /// [`enqueue`](Self::enqueue), for a `202 Accepted` that promises the
    /// job: with a broker (Redis), it returns only once the broker has the
    /// job, so a crash of this process after the response loses nothing.
    /// A crash of Redis loses nothing only with `appendonly yes` and
    /// `appendfsync always`: under `everysec`, Redis may acknowledge a write
    /// up to 2 s before it is in its AOF file.
    /// The job is sent now, before the response, and runs even if the
    /// handler fails afterwards. Without a broker it is
    /// [`enqueue`](Self::enqueue).
    ///
    /// # Errors
    ///
    /// Those of [`enqueue`](Self::enqueue), and
    /// [`EnqueueError::Unavailable`] when the broker could not be reached in
    /// time (a `503`): the job is then discarded, counted and logged. A
    /// broker that timed out may still have received it (a duplicate, if the
    /// client retries; see the job's id).
    pub fn enqueue_durable<J: Job>(&self, job: J) -> Result<JobId, EnqueueError> {
        self.enqueue_with(job, JobOptions::new().durable())
    }

    /// [`enqueue`](Self::enqueue) with [`JobOptions`]: another queue, a
    /// delay, a durable hand-over.
    ///
    /// # Errors
    ///
    /// Those of [`enqueue`](Self::enqueue) and
    /// [`enqueue_durable`](Self::enqueue_durable), and
    /// [`EnqueueError::Queue`] for a queue name that is not valid, or (in
    /// process, with queues chosen) not served.
    pub fn enqueue_with<J: Job>(&self, job: J, options: JobOptions) -> Result<JobId, EnqueueError> {
        let runner = self.runner::<J>()?;
        let envelope = match runner.envelope(&job, self.shared_request_id(), &options)? {
            Prepared::New(envelope) => envelope,
            Prepared::Existing(id) => return Ok(id),
        };
        let id = JobId::new(envelope.id.clone());
        let delay = options.delay;
        match (runner.mode(), delay) {
            (JobMode::Eager, _) => runner.run_now(envelope),
            (JobMode::Capture, _) => runner.capture(envelope),
            _ if options.durable && runner.has_broker() => {
                runner
                    .send_now(&envelope, delay)
                    .map_err(EnqueueError::Unavailable)?;
            }
            _ if runner.has_broker() => self.add(runner.send_task(envelope, delay)),
            (_, None) => self.add(runner.attempt_task(envelope)),
            (_, Some(delay)) => self.add(runner.delayed_task(envelope, delay)),
        }
        Ok(id)
    }

    /// The job runner, if the app registers jobs (else `J` is unregistered).
    fn runner<J: Job>(&self) -> Result<Arc<JobRunner>, EnqueueError> {
        self.context::<JobRunner>()
            .ok_or(EnqueueError::Unregistered(J::NAME))
    }
}
