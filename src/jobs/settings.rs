//! How jobs are retried, timed and remembered ([`JobSettings`]), and how
//! they run ([`JobMode`]).

use std::time::Duration;

use super::queues::Queues;
use super::status::{DEFAULT_JOB_STATUS_CAPACITY, DEFAULT_STATUS_PAYLOAD_BYTES};

/// How jobs are retried and remembered, set on the
/// [`ServerBuilder`](crate::ServerBuilder) (or the
/// [`BackgroundPoolBuilder`](crate::BackgroundPoolBuilder)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobSettings {
    /// Attempts in all for a job that does not set its own: 5.
    pub max_attempts: u32,
    /// The delay before the first retry: 100 ms; it doubles at each retry.
    pub backoff: Duration,
    /// The longest delay between two attempts: 60 s.
    pub max_backoff: Duration,
    /// Job statuses kept: 10,000, the oldest evicted first.
    pub status_capacity: usize,
    /// How much of each job's payload its status keeps, for the
    /// dashboard's job page: the first 1 KiB (longer ones are cut and end
    /// ` …`). Zero keeps none: for payloads that carry what no operator
    /// should read. Memory: up to this much per status kept.
    pub status_payload_bytes: usize,
    /// Dead jobs kept: 1,000, the oldest evicted first.
    pub dead_letter_capacity: usize,
    /// How jobs run: normally, or, for tests, at once or not at all.
    pub mode: JobMode,
    /// How long an attempt may run before it is reported overdue and its
    /// thread replaced: 30 s (a job may set its own, `Job::TIMEOUT`).
    pub timeout: Duration,
    /// Replacement threads the pool may add for threads held by overdue
    /// jobs: 4. Rust cannot stop a running thread, so an overdue job keeps
    /// its thread until it returns; its replacement keeps the pool's
    /// capacity, and the held thread ends once it is free.
    pub max_replacement_threads: usize,
    /// The queues this server's (or pool's) in-process jobs run in, and how
    /// they take turns: `None` (the default) runs every job in its request's
    /// batch, in order with the request's other tasks, whatever its queue.
    /// With queues chosen, a job waits in its queue from its dispatch and
    /// runs when the queues' order, weights and limits give it a turn (a
    /// job of a queue not served is refused at enqueue). Jobs sent to Redis
    /// are not affected: workers choose their queues.
    pub queues: Option<Queues>,
    /// The largest result a job may keep with its status
    /// ([`JobContext::set_result`](crate::JobContext::set_result)), in bytes
    /// of JSON: 64 KiB.
    pub max_result_bytes: usize,
}

/// How enqueued jobs run. The modes other than `Normal` are for tests, in
/// the spirit of Celery's eager mode and Laravel's `Queue::fake()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobMode {
    /// After the response, on the pool, with retries in the timer.
    #[default]
    Normal,
    /// At once, in the handler, before the response: every attempt in a row,
    /// without the backoff. A test sees the job's effects as soon as it has
    /// the response.
    Eager,
    /// Not at all: [`Jobs::captured`](super::Jobs::captured) lists what was enqueued (name,
    /// payload, id), so a test asserts "this request enqueued `send_email`
    /// for ada". Captured jobs have no status and are not counted.
    Capture,
}

impl Default for JobSettings {
    fn default() -> JobSettings {
        JobSettings {
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(60),
            status_capacity: DEFAULT_JOB_STATUS_CAPACITY,
            status_payload_bytes: DEFAULT_STATUS_PAYLOAD_BYTES,
            dead_letter_capacity: 1000,
            mode: JobMode::Normal,
            timeout: Duration::from_secs(30),
            max_replacement_threads: 4,
            queues: None,
            max_result_bytes: super::scope::DEFAULT_MAX_RESULT_BYTES,
        }
    }
}
