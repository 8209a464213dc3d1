//! Named jobs: typed, serializable background work with an id, a status,
//! retries with backoff and a dead-letter list, run on the background pool.
//!
//! A job is a value of a type implementing [`Job`], registered on the
//! [`App`](crate::App) with [`App::job`](crate::App::job). A handler enqueues
//! one through the request's [`BackgroundTasks`](crate::BackgroundTasks)
//! ([`enqueue`](crate::BackgroundTasks::enqueue)) and gets its [`JobId`]
//! back; the job starts after the response, like every task. Its payload is
//! serialized at enqueue and deserialized at run, in-process too, so that
//! sending jobs to a broker changes no handler.

pub(crate) mod broker;
pub(crate) mod cancel;
#[cfg(any(feature = "redis", test))]
pub(crate) mod consumer;
pub(crate) mod cron;
mod enqueue;
pub(crate) mod envelope;
mod handle;
mod http;
mod job;
mod lanes;
mod options;
mod policy;
pub(crate) mod queues;
mod registry;
mod runner;
pub(crate) mod schedule;
pub(crate) mod scheduler;
pub(crate) mod scope;
mod settings;
mod spill;
pub(crate) mod status;
mod step;
mod timer;
mod unique;

pub use self::cancel::{CancelError, Cancellation};
pub use self::envelope::{DeadLetter, Envelope, ENVELOPE_VERSION};
pub use self::handle::Jobs;
pub use self::http::{job_cancel_handler, job_status_handler};
pub use self::job::{EnqueueError, GiveUp, Job, JobContext, JobId, JobResult};
pub use self::options::JobOptions;
pub use self::queues::{QueueOrder, Queues, DEFAULT_QUEUE};
pub(crate) use self::registry::Registry;
pub(crate) use self::runner::JobRunner;
pub use self::schedule::{Missed, Schedule, ScheduleInfo};
pub use self::scope::{ResultError, DEFAULT_MAX_RESULT_BYTES};
pub use self::settings::{JobMode, JobSettings};
pub use self::status::{
    JobState, JobStatus, DEFAULT_JOB_STATUS_CAPACITY, DEFAULT_STATUS_PAYLOAD_BYTES,
};
