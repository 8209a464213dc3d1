//! The seam between the consumer (runner threads, deadlines, retries, dead
//! letters, queues, batching) and a store of jobs that workers anywhere
//! read (Redis Streams; an in-memory store for the consumer's own tests). A
//! backend does I/O only: every decision is the consumer's.
//!
//! A backend serves the queues it was made with, in that order; the
//! consumer names a queue by its place there (a *lane*).
//!
//! Architecture invariant: a job a backend hands out is held by this
//! consumer until it is recorded (acknowledged with what follows it) or
//! left pending at a stop; a job is recorded once, by one `record` call,
//! with everything that follows it, all or nothing per queue.

use std::time::Duration;

use crate::jobs::envelope::Envelope;

/// A job handed out by a backend: its queue's lane, its id in the store (to
/// acknowledge it with), and its envelope's text, read by a runner thread.
pub(crate) struct Delivery {
    pub(crate) lane: usize,
    pub(crate) entry: String,
    pub(crate) text: String,
}

/// What follows a finished attempt, for the backend to write.
pub(crate) enum Action<'a> {
    /// Succeeded: acknowledged, its status `done` with its result and its
    /// children's ids; its follow-up jobs (`children`, each with a delay)
    /// added to their queues, with the acknowledgement.
    Done {
        envelope: &'a Envelope,
        result: Option<&'a str>,
        children: &'a [(Envelope, Option<Duration>)],
    },
    /// Cancelled: not started, or stopped (with `error`) when told;
    /// acknowledged, its status `cancelled`, its cancel request and its
    /// uniqueness key gone.
    Cancelled {
        envelope: &'a Envelope,
        error: Option<&'a str>,
    },
    /// Failed with attempts left: back in the store, due at `due_ms` (Unix
    /// milliseconds), as `envelope` (its attempts so far, and the failure in
    /// its `last_error`) will run next; its status `retrying`.
    Retry { envelope: Envelope, due_ms: u64 },
    /// Failed for good: a dead letter with `error`; its status `dead`.
    Dead {
        envelope: &'a Envelope,
        error: &'a str,
    },
    /// Not a job at all (its text does not read as an envelope): a dead
    /// letter of the text as it was, with no status.
    Unreadable { text: &'a str, error: &'a str },
}

/// One finished attempt: which job, and what follows it.
pub(crate) struct Record<'a> {
    pub(crate) lane: usize,
    pub(crate) entry: &'a str,
    pub(crate) action: Action<'a>,
    /// When the attempt started, Unix ms (0 for a job not run).
    pub(crate) started_ms: u64,
}

/// A job running for a while, whose `running` status is written.
pub(crate) struct Announce<'a> {
    pub(crate) lane: usize,
    pub(crate) envelope_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) attempt: u32,
    pub(crate) last_error: Option<&'a str>,
    /// When it was enqueued, and when this attempt started (Unix ms).
    pub(crate) enqueued_at_ms: u64,
    pub(crate) started_ms: u64,
}

/// How many new jobs to take from one queue at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) lane: usize,
    pub(crate) max: usize,
}

/// A store of jobs that consumers read. Every call may fail (the store is
/// down or slow): the consumer then logs it, counts it, calls
/// [`connect`](Backend::connect) again with backoff, and retries.
pub(crate) trait Backend: Send + 'static {
    /// The store's name in log lines (`Redis call failed …`).
    const NAME: &'static str;

    /// (Re)connects: before the first call, and after any error.
    fn connect(&mut self) -> Result<(), String>;

    /// A second handle on the same store, not connected yet, for the
    /// consumer's fetching thread (which calls only `connect` and `fetch`
    /// on it): reading the next jobs then overlaps recording the last ones.
    /// `None` keeps every call on the I/O thread.
    fn fetcher(&self) -> Option<Self>
    where
        Self: Sized;

    /// New jobs, now held by this consumer: from each queue of `wants` in
    /// turn, up to its `max`, and `budget` in all. When `wait` and none is
    /// ready, waits a little (a tenth of a second) for one.
    fn fetch(&mut self, wants: &[Want], budget: usize, wait: bool)
        -> Result<Vec<Delivery>, String>;

    /// Jobs of `lane` another consumer has held past `visibility` without
    /// news (it crashed or stalled), up to `max`, now held by this one.
    fn reclaim(
        &mut self,
        lane: usize,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, String>;

    /// The jobs held here still run: no other consumer may take them over
    /// for another `visibility`.
    fn renew(&mut self, held: &[(usize, &str)], visibility: Duration) -> Result<(), String>;

    /// Records finished attempts: each acknowledged together with what
    /// follows it, atomically per queue.
    fn record(&mut self, finished: &[Record<'_>]) -> Result<(), String>;

    /// Writes the `running` status of jobs that have run for a while.
    /// The ids of the jobs asked to stop (a cancel of a job held or
    /// running), when they may have changed since the last call; `None`
    /// when they have not. Called every [`CANCELS_EVERY`](super::io) or so.
    fn cancels(&mut self) -> Result<Option<Vec<String>>, String>;

    fn announce(&mut self, running: &[Announce<'_>]) -> Result<(), String>;

    /// Moves delayed jobs now due (retries, delayed enqueues) where
    /// consumers read, at most `max` per queue; how many.
    fn promote(&mut self, max: usize) -> Result<u64, String>;

    /// Jobs held (handed out, not recorded) by every consumer of the store's
    /// queues.
    fn pending(&mut self) -> Result<u64, String>;
}
