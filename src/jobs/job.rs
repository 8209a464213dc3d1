//! What a job is: the [`Job`] trait, what an attempt knows of its job
//! ([`JobContext`]), its id, and the error that ends it at once ([`GiveUp`]).

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::envelope::Envelope;
use super::scope::{JobScope, Outbox, ResultError};
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

    /// This job's uniqueness key, if jobs of its type are unique by some of
    /// their fields (`Some(format!("{}", self.user_id))`): see
    /// [`JobOptions::unique`](crate::JobOptions::unique), which overrides it.
    /// `None` (the default): every enqueue adds a job.
    fn unique_key(&self) -> Option<String> {
        None
    }
}

/// What an attempt knows of its job, and what it may leave behind: a
/// result ([`set_result`](Self::set_result)) and follow-up jobs
/// ([`enqueue`](Self::enqueue)), both kept only if the attempt succeeds.
pub struct JobContext {
    id: JobId,
    attempt: u32,
    max_attempts: u32,
    request_id: Arc<str>,
    state: Arc<StateMap>,
    scope: Arc<JobScope>,
    /// Made at the first result or follow-up (most attempts leave none:
    /// no allocation for them); shared by clones.
    outbox: OnceLock<Arc<Mutex<Outbox>>>,
}

impl JobContext {
    /// The context of attempt `attempt` of `envelope`'s job.
    pub(crate) fn for_attempt(
        envelope: &Envelope,
        attempt: u32,
        state: Arc<StateMap>,
        scope: Arc<JobScope>,
    ) -> JobContext {
        JobContext {
            id: JobId::new(envelope.id.clone()),
            attempt,
            max_attempts: envelope.max_attempts,
            request_id: envelope.request_id.clone(),
            state,
            scope,
            outbox: OnceLock::new(),
        }
    }

    /// What the attempt left behind (taken once it has returned).
    pub(crate) fn take_outbox(&self) -> Outbox {
        match self.outbox.get() {
            Some(outbox) => std::mem::take(&mut *outbox.lock().unwrap_or_else(|e| e.into_inner())),
            None => Outbox::default(),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        let outbox = self.outbox.get_or_init(Arc::default);
        outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clone for JobContext {
    /// A clone shares the attempt's result and follow-ups.
    fn clone(&self) -> JobContext {
        let outbox = self.outbox.get_or_init(Arc::default).clone();
        JobContext {
            id: self.id.clone(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            request_id: self.request_id.clone(),
            state: self.state.clone(),
            scope: self.scope.clone(),
            outbox: OnceLock::from(outbox),
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

    /// Whether this job was cancelled while it ran
    /// ([`Jobs::cancel`](crate::Jobs::cancel)): a long job looks now and then
    /// and, if so, stops by returning an error (its outcome is then
    /// `cancelled`, not retried). Rust cannot stop a thread: a job that never
    /// looks runs to its end (then `done` if it succeeds). Over Redis, a
    /// worker learns of a cancel within about 100 ms.
    pub fn is_cancelled(&self) -> bool {
        self.scope.cancels.is_asked(self.id.as_str())
    }

    /// Keeps `value` as the job's result, shown with its status
    /// (`"result"` in `GET /jobs/{id}`) once this attempt succeeds; a failed
    /// attempt's result is dropped. Set again, the last value counts.
    ///
    /// # Errors
    ///
    /// [`ResultError`] when the value does not serialize, or its JSON is
    /// larger than [`JobSettings::max_result_bytes`](crate::JobSettings::max_result_bytes)
    /// (64 KiB by default: results are kept with statuses, in memory or in
    /// Redis, for the status TTL; keep larger outputs in a store of their
    /// own, and the key here).
    pub fn set_result<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ResultError> {
        let text = serde_json::to_string(value).map_err(ResultError::Serialize)?;
        let limit = self.scope.max_result_bytes;
        if text.len() > limit {
            return Err(ResultError::TooLarge {
                bytes: text.len(),
                limit,
            });
        }
        self.outbox().result = Some(text);
        Ok(())
    }

    /// Enqueues a follow-up job, to go out only if this attempt succeeds
    /// (a failed attempt discards it, as a failed request discards its
    /// jobs); this job's status then names it among its `children`. Its id
    /// is known now. Chains are built this way; see the README, "Follow-up
    /// jobs", for groups.
    ///
    /// # Errors
    ///
    /// [`EnqueueError::Payload`] when its value does not serialize.
    pub fn enqueue<J: Job>(&self, job: J) -> Result<JobId, EnqueueError> {
        self.enqueue_with(job, crate::JobOptions::new())
    }

    /// [`enqueue`](Self::enqueue) with [`JobOptions`](crate::JobOptions) (a
    /// queue, a delay; a follow-up is always handed over with its parent's
    /// outcome, so `durable` changes nothing here).
    ///
    /// # Errors
    ///
    /// Those of [`enqueue`](Self::enqueue), [`EnqueueError::Queue`] for
    /// a queue name that is not valid (or, in-process, not served), and
    /// [`EnqueueError::NotSupported`] for a unique follow-up
    /// ([`JobOptions::unique`](crate::JobOptions::unique) or
    /// [`Job::unique_key`]): its key could only be claimed after this
    /// enqueue returns, so the enqueue could not say which job holds it.
    pub fn enqueue_with<J: Job>(
        &self,
        job: J,
        options: crate::JobOptions,
    ) -> Result<JobId, EnqueueError> {
        let payload = serde_json::to_string(&job).map_err(|source| EnqueueError::Payload {
            name: J::NAME,
            source,
        })?;
        let queue = options
            .queue
            .unwrap_or(std::borrow::Cow::Borrowed(J::QUEUE));
        if let Err(reason) = self.scope.check_queue(&queue) {
            return Err(EnqueueError::Queue {
                queue: queue.into_owned(),
                reason,
            });
        }
        let envelope = self.scope.envelope(
            J::NAME,
            payload,
            queue,
            J::MAX_ATTEMPTS,
            self.request_id.clone(),
        );
        let id = JobId::new(envelope.id.clone());
        self.outbox().children.push((envelope, options.delay));
        Ok(id)
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
    /// An option this enqueue does not take (e.g. a unique follow-up job).
    NotSupported(&'static str),
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
            EnqueueError::NotSupported(what) => write!(f, "not supported: {what}"),
        }
    }
}

impl std::error::Error for EnqueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnqueueError::Payload { source, .. } => Some(source),
            EnqueueError::Unregistered(_)
            | EnqueueError::Unavailable(_)
            | EnqueueError::Queue { .. }
            | EnqueueError::NotSupported(_) => None,
        }
    }
}
