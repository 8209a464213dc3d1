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
mod envelope;
mod runner;
mod status;

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "redis")]
pub(crate) use self::envelope::push_json_str;
pub use self::envelope::{Envelope, ENVELOPE_VERSION};
#[cfg(feature = "redis")]
pub(crate) use self::runner::backoff;
pub use self::runner::{DeadLetter, JobMode, JobSettings, Jobs};
pub(crate) use self::runner::{JobRunner, JobStep};
#[cfg(feature = "redis")]
pub(crate) use self::status::IdSource;
pub use self::status::{JobState, JobStatus, DEFAULT_JOB_STATUS_CAPACITY};

use crate::extract::Path;
use crate::http_error::HttpError;
use crate::request::{FromRequest, Request};
use crate::response::{IntoResponse, Response};
use crate::state::StateMap;

/// The server's jobs; a `500` if the app registers none.
impl FromRequest for Jobs {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        request.background_tasks().jobs().ok_or_else(|| {
            HttpError::internal("a handler asked for Jobs, but the app registers no job (App::job)")
        })
    }
}

/// `None` when the app registers no job.
impl crate::request::OptionalFromRequest for Jobs {
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
        Ok(request.background_tasks().jobs())
    }
}

/// A ready-made handler for `GET /jobs/{id}`: `200` with
/// [`JobStatus::to_json`] (`{"id", "name", "status", "attempts", "error"?}`),
/// or `404 {"detail"}` for an id the store does not know (never enqueued, or
/// evicted). Responses say `Cache-Control: no-store`.
///
/// ```
/// # use afterward::App;
/// let app = App::new().get("/jobs/{id}", afterward::job_status_handler);
/// # let _ = app;
/// ```
pub fn job_status_handler(Path(id): Path<String>, jobs: Jobs) -> Response {
    let response = match jobs.lookup(&id) {
        Ok(Some(status)) => Response::json(&status.to_json()),
        Ok(None) => HttpError::new(404, format!("no job with id {id}")).into_response(),
        Err(error) => {
            log::warn!("job {id}: its status could not be read: {error}");
            HttpError::new(503, "job statuses are unavailable, try again later").into_response()
        }
    };
    response.with_header("Cache-Control", "no-store")
}

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
        }
    }
}

impl std::error::Error for EnqueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnqueueError::Payload { source, .. } => Some(source),
            EnqueueError::Unregistered(_) | EnqueueError::Unavailable(_) => None,
        }
    }
}

/// A handler can `?` an enqueue: a `500` for a mistake of the program, with
/// the reason logged; a `503` when the broker is unavailable.
impl From<EnqueueError> for HttpError {
    fn from(error: EnqueueError) -> HttpError {
        match error {
            EnqueueError::Unavailable(_) => {
                log::warn!("{error}");
                HttpError::new(503, "the job queue is unavailable, try again later")
            }
            _ => HttpError::internal(error),
        }
    }
}

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
    /// This type's jobs by outcome, for the `job` label of the metrics.
    pub(crate) counts: Arc<JobCounts>,
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
        let spec = JobSpec {
            counts: Arc::default(),
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

    /// Each job type's counts, by name.
    pub(crate) fn counts(&self) -> Vec<(&'static str, [u64; OUTCOMES.len()])> {
        let mut counts: Vec<_> = self
            .specs
            .iter()
            .map(|(name, spec)| (*name, spec.counts.snapshot()))
            .collect();
        counts.sort_unstable_by_key(|(name, _)| *name);
        counts
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
pub(crate) const OUTCOMES: [&str; 6] = [
    "enqueued",
    "succeeded",
    "retried",
    "dead",
    "overdue",
    "discarded",
];

/// One job type's counts, in the order of [`OUTCOMES`].
#[derive(Default)]
pub(crate) struct JobCounts([std::sync::atomic::AtomicU64; OUTCOMES.len()]);

impl JobCounts {
    pub(crate) fn bump(&self, outcome: usize) {
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
