//! What a job is: the [`Job`] trait, what an attempt knows of its job
//! ([`JobContext`]), its id, and the error that ends it at once ([`GiveUp`]).

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::envelope::Envelope;
use crate::state::StateMap;

/// What a job's attempt returns: `Err` is retried (with backoff, up to the
/// job's attempts), then the job is dead.
pub type JobResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A named, serializable unit of background work.
///
/// The name is a constant of the type, so a handler cannot enqueue a job
/// that does not exist under a misspelt name: the compiler checks the type,
/// and [`App::job`](crate::App::job) registers the name once. The value is
/// the payload, serialized with serde at enqueue.
///
/// ```
/// use afterward::{App, BackgroundTasks, HttpError, Job, JobContext, JobResult, Json};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { to: String }
///
/// impl Job for SendEmail {
///     const NAME: &'static str = "send_email";
///     fn run(self, job: &JobContext) -> JobResult {
///         println!("attempt {} of job {}: mail to {}", job.attempt(), job.id(), self.to);
///         Ok(())
///     }
/// }
///
/// fn signup(tasks: BackgroundTasks) -> Result<Json<serde_json::Value>, HttpError> {
///     let id = tasks.enqueue(SendEmail { to: "ada@example.com".into() })?;
///     Ok(Json(serde_json::json!({"job": id.as_str()})))
/// }
///
/// let app = App::new().job::<SendEmail>().post("/signup", signup);
/// # let _ = app;
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The stable name the job is registered, stored and reported under.
    const NAME: &'static str;
    /// The queue its jobs wait in unless an enqueue names another
    /// ([`JobOptions::queue`](crate::JobOptions::queue)): workers serve chosen
    /// queues ([`Queues`](crate::Queues)), so slow jobs need not wait in
    /// front of fast ones. 1 to 64 letters, digits, `_`, `-` or `.`.
    const QUEUE: &'static str = super::queues::DEFAULT_QUEUE;
    /// How many attempts in all; `None` takes the server's default
    /// ([`ServerBuilder::job_max_attempts`](crate::ServerBuilder::job_max_attempts)).
    const MAX_ATTEMPTS: Option<u32> = None;
    /// How long an attempt may run before it is reported overdue (and its
    /// pool thread replaced); `None` takes the server's default
    /// ([`ServerBuilder::job_timeout`](crate::ServerBuilder::job_timeout)).
    /// An overdue attempt is not stopped: Rust cannot kill a thread.
    const TIMEOUT: Option<std::time::Duration> = None;

    /// Runs one attempt. An `Err` or a panic is retried after a backoff,
    /// until the attempts run out.
    fn run(self, job: &JobContext) -> JobResult;
}

/// What an attempt knows of its job.
#[derive(Clone)]
pub struct JobContext {
    id: JobId,
    attempt: u32,
    max_attempts: u32,
    request_id: Arc<str>,
    state: Arc<StateMap>,
}

impl JobContext {
    /// The context of attempt `attempt` of `envelope`'s job (a worker's).
    pub(crate) fn for_attempt(
        envelope: &Envelope,
        attempt: u32,
        state: Arc<StateMap>,
    ) -> JobContext {
        JobContext {
            id: JobId::new(envelope.id.clone()),
            attempt,
            max_attempts: envelope.max_attempts,
            request_id: envelope.request_id.clone(),
            state,
        }
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// The job's id: the same for every attempt, to de-duplicate effects.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The attempts allowed in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The request that enqueued the job.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The application state of type `T` ([`App::state`](crate::App::state)),
    /// as handlers read it with [`State<T>`](crate::State): a job carries
    /// its data in its payload and reaches shared resources (a store, a
    /// client) here.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }
}

/// A job's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(Arc<str>);

impl JobId {
    pub(crate) fn new(id: Arc<str>) -> JobId {
        JobId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An error that no retry can fix: returned by a job, it makes the job dead
/// at once, without the remaining attempts.
///
/// ```
/// # use afterward::{GiveUp, JobResult};
/// fn parse(text: &[u8]) -> JobResult {
///     std::str::from_utf8(text).map_err(|e| GiveUp::new(format!("not UTF-8: {e}")))?;
///     Ok(())
/// }
/// # let _ = parse;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUp(String);

impl GiveUp {
    /// The error, with its message.
    pub fn new(message: impl Into<String>) -> GiveUp {
        GiveUp(message.into())
    }
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GiveUp {}

/// Why a job could not be enqueued: a mistake of the program, found at
/// enqueue rather than when the job would run.
#[derive(Debug)]
#[non_exhaustive]
pub enum EnqueueError {
    /// No job of this name is registered with [`App::job`](crate::App::job).
    Unregistered(&'static str),
    /// The job's value does not serialize.
    Payload {
        /// The job's name.
        name: &'static str,
        /// What serde said.
        source: serde_json::Error,
    },
    /// The broker could not be reached in time by a durable enqueue
    /// ([`enqueue_durable`](crate::BackgroundTasks::enqueue_durable)).
    Unavailable(String),
    /// The queue named is not a valid name, or (in-process, with
    /// [`ServerBuilder::queues`](crate::ServerBuilder::queues)) not one
    /// this server serves: its job would never run.
    Queue {
        /// The queue named.
        queue: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
}

impl fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Unregistered(name) => {
                write!(f, "no job named {name:?} is registered (App::job)")
            }
            EnqueueError::Payload { name, source } => {
                write!(
                    f,
                    "the payload of job {name:?} does not serialize: {source}"
                )
            }
            EnqueueError::Unavailable(error) => {
                write!(f, "the job could not be handed to the broker: {error}")
            }
            EnqueueError::Queue { queue, reason } => write!(f, "queue {queue:?}: {reason}"),
        }
    }
}

impl std::error::Error for EnqueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnqueueError::Payload { source, .. } => Some(source),
            EnqueueError::Unregistered(_)
            | EnqueueError::Unavailable(_)
            | EnqueueError::Queue { .. } => None,
        }
    }
}
