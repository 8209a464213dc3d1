//! [`JobOptions`]: how one job is enqueued, beyond its value.

use std::borrow::Cow;
use std::time::Duration;

/// How a job is enqueued: [`BackgroundTasks::enqueue_with`](crate::BackgroundTasks::enqueue_with).
/// The shorthands ([`enqueue`](crate::BackgroundTasks::enqueue),
/// [`enqueue_in`](crate::BackgroundTasks::enqueue_in),
/// [`enqueue_durable`](crate::BackgroundTasks::enqueue_durable)) are this
/// with one option set.
///
/// ```
/// # use afterward::JobOptions;
/// # use std::time::Duration;
/// let options = JobOptions::new().queue("reports").delay(Duration::from_secs(60));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct JobOptions {
    pub(crate) queue: Option<Cow<'static, str>>,
    pub(crate) delay: Option<Duration>,
    pub(crate) durable: bool,
    pub(crate) unique: Option<String>,
}

impl JobOptions {
    /// No option: the job's own queue, at once, after the response.
    pub fn new() -> JobOptions {
        JobOptions::default()
    }

    /// The queue to wait in, instead of the job type's
    /// ([`Job::QUEUE`](crate::Job::QUEUE)).
    pub fn queue(mut self, queue: impl Into<Cow<'static, str>>) -> JobOptions {
        self.queue = Some(queue.into());
        self
    }

    /// To start `delay` after the response (it waits in a timer, or in
    /// Redis's delayed set, not on a thread).
    pub fn delay(mut self, delay: Duration) -> JobOptions {
        self.delay = Some(delay);
        self
    }

    /// Unique by `key` among the jobs of its type: while a job of this type
    /// and key is queued, delayed, running or retrying, the enqueue returns
    /// that job's id and adds nothing (it overrides
    /// [`Job::unique_key`](crate::Job::unique_key)). Over Redis this holds
    /// across every server of the deployment: the key is claimed in Redis
    /// (`SET NX`) before the enqueue returns, and released when the job ends
    /// (with a TTL, `RedisConfig::unique_ttl`, against a crash). Not applied
    /// in [`JobMode::Capture`](crate::JobMode::Capture).
    pub fn unique(mut self, key: impl Into<String>) -> JobOptions {
        self.unique = Some(key.into());
        self
    }

    /// With a broker, handed to it before the enqueue returns (see
    /// [`enqueue_durable`](crate::BackgroundTasks::enqueue_durable)).
    pub fn durable(mut self) -> JobOptions {
        self.durable = true;
        self
    }
}
