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

    /// With a broker, handed to it before the enqueue returns (see
    /// [`enqueue_durable`](crate::BackgroundTasks::enqueue_durable)).
    pub fn durable(mut self) -> JobOptions {
        self.durable = true;
        self
    }
}
