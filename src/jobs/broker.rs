//! The seam between the job runner and a broker that takes jobs out of the
//! process (Redis Streams, with the `redis` feature): the runner hands it
//! each job after the response, instead of running it on the pool.

use std::sync::Arc;
use std::time::Duration;

use super::cancel::{CancelError, Cancellation};
use super::envelope::Envelope;
use super::schedule::Ticks;
use super::status::JobStatus;
use crate::error::Error;
use crate::stats::Counters;

/// Why [`Broker::try_send`] gave a job back.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Refused {
    /// Its buffer is full.
    Full(Envelope),
    /// It has stopped.
    Stopped(Envelope),
}

/// Where jobs go when they run elsewhere.
///
/// Architecture invariant: a job handed to [`send`](Broker::send) or
/// [`try_send`](Broker::try_send) is counted `jobs_buffered` until the broker
/// has it (then `jobs_sent`), or until [`close`](Broker::close) gives it back,
/// or it is refused; the runner counts the last two discarded (or, for a full
/// buffer, sends the job through the pool instead). A job taken is never
/// dropped: `close` returns every job not sent, including those handed over
/// while it ran.
pub(crate) trait Broker: Send + Sync + 'static {
    /// Takes the job (due `delay` from now, if any), to send it soon, in a
    /// batch with others. Waits while the broker's buffer is full. `Err`
    /// gives the job back when the broker has stopped.
    fn send(&self, envelope: Envelope, delay: Option<Duration>) -> Result<(), Envelope>;

    /// [`send`](Self::send) without waiting: `Err` gives the job back, when
    /// the buffer is full or the broker has stopped.
    fn try_send(&self, envelope: Envelope, delay: Option<Duration>) -> Result<(), Refused>;

    /// Sends the job now, on this thread: `Ok` once the broker has it.
    fn send_now(&self, envelope: &Envelope, delay: Option<Duration>) -> Result<(), String>;

    /// Claims the uniqueness key of `envelope` (a unique job, due `delay`
    /// from now) for its id, now, on this thread: `Ok(None)` when it was
    /// free, `Ok(Some(id))` for the job that holds it; `Err` when the
    /// broker cannot be asked.
    fn claim_unique(
        &self,
        envelope: &Envelope,
        delay: Option<Duration>,
    ) -> Result<Option<String>, String>;

    /// Releases the uniqueness key of `envelope`, a unique job that will not
    /// run (discarded before it reached the broker), if it still holds it.
    fn release_unique(&self, envelope: &Envelope);

    /// Cancels job `id` (see [`Jobs::cancel`](crate::Jobs::cancel));
    /// `ours`: the id was made by this process, so a job the broker does
    /// not know yet may be on its way to it (then it is dropped when it
    /// comes, counted cancelled, never sent). A job taken out of the broker
    /// here is counted cancelled in the server's counters.
    fn cancel(&self, id: &str, ours: bool) -> Result<Cancellation, CancelError>;

    /// Where schedules claim their ticks, when the broker is shared by
    /// several servers (`None`: each server claims its own).
    fn ticks(&self) -> Option<Arc<dyn Ticks>> {
        None
    }

    /// What the broker knows of job `id`; `Err` when it cannot be asked.
    fn status(&self, id: &str) -> Result<Option<JobStatus>, String>;

    /// Stops sending, and gives back the jobs not sent.
    fn close(&self) -> Vec<Envelope>;

    /// The broker's own metrics, in the Prometheus text format.
    fn to_prometheus(&self) -> String;
}

/// Starts a broker, given the counters it reports to (the web server's).
#[derive(Clone)]
pub(crate) struct BrokerFactory(pub(crate) Arc<StartBroker>);

type StartBroker = dyn Fn(Arc<Counters>) -> Result<Arc<dyn Broker>, Error> + Send + Sync;

impl std::fmt::Debug for BrokerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerFactory")
    }
}
