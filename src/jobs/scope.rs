//! What an attempt may leave behind besides its effects: a result, kept
//! with its job's status, and follow-up jobs, enqueued only if the attempt
//! succeeds ([`Outbox`]); and what the runner gives an attempt to make them
//! ([`JobScope`]: the id source of its store, the defaults).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::cancel::Cancels;
use super::envelope::{now_ms, Envelope};
use super::queues::{valid_queue_name, Queues};
use super::status::IdSource;

/// The largest result kept by default: 64 KiB of JSON.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 * 1024;

/// What the runner of an attempt lends it.
pub(crate) struct JobScope {
    /// Where new jobs' ids come from: the status store's (in-process) or
    /// the worker's.
    pub(crate) ids: Arc<IdSource>,
    /// Attempts in all for a follow-up job whose type does not set its own.
    pub(crate) max_attempts: u32,
    /// The largest result kept.
    pub(crate) max_result_bytes: usize,
    /// The running jobs asked to stop, for
    /// [`JobContext::is_cancelled`](crate::JobContext::is_cancelled).
    pub(crate) cancels: Arc<Cancels>,
    /// The queues a follow-up may go to (an in-process pool's lanes), or
    /// `None` for any (Redis: some worker may serve it).
    pub(crate) served: Option<Queues>,
}

impl JobScope {
    /// A new job's envelope: `name` with `payload` (JSON text), in `queue`,
    /// for the request `request_id` enqueued first.
    pub(crate) fn envelope(
        &self,
        name: &'static str,
        payload: String,
        queue: Cow<'static, str>,
        max_attempts: Option<u32>,
        request_id: Arc<str>,
    ) -> Envelope {
        Envelope {
            id: self.ids.next(),
            name: Cow::Borrowed(name),
            queue,
            payload,
            attempts: 0,
            max_attempts: max_attempts.unwrap_or(self.max_attempts).max(1),
            enqueued_at_ms: now_ms(),
            request_id,
            last_error: None,
            unique: None,
        }
    }
}

/// What an attempt has left behind so far.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Its result, as JSON text.
    pub(crate) result: Option<String>,
    /// Follow-up jobs, each with its delay.
    pub(crate) children: Vec<(Envelope, Option<Duration>)>,
}

impl Outbox {
    /// The children's ids, in the order enqueued.
    pub(crate) fn child_ids(&self) -> Vec<Arc<str>> {
        self.children.iter().map(|(e, _)| e.id.clone()).collect()
    }
}

impl JobScope {
    /// Checks the queue of a follow-up job: why it cannot go there, if not.
    pub(crate) fn check_queue(&self, queue: &str) -> Result<(), &'static str> {
        if !valid_queue_name(queue) {
            return Err("not a valid queue name (1 to 64 letters, digits, '_', '-' or '.')");
        }
        match &self.served {
            Some(queues) if !queues.serves(queue) => {
                Err("not served here (ServerBuilder::queues): its job would never run")
            }
            _ => Ok(()),
        }
    }
}

/// Why a job's result could not be kept.
#[derive(Debug)]
#[non_exhaustive]
pub enum ResultError {
    /// The value does not serialize as JSON.
    Serialize(serde_json::Error),
    /// Its JSON is larger than the limit
    /// ([`JobSettings::max_result_bytes`](crate::JobSettings::max_result_bytes)).
    TooLarge {
        /// The size of its JSON.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for ResultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultError::Serialize(e) => write!(f, "the job's result does not serialize: {e}"),
            ResultError::TooLarge { bytes, limit } => write!(
                f,
                "the job's result is {bytes} bytes of JSON, over the limit of {limit}"
            ),
        }
    }
}

impl std::error::Error for ResultError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResultError::Serialize(e) => Some(e),
            ResultError::TooLarge { .. } => None,
        }
    }
}
