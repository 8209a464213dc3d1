//! The retry policy, one for jobs run in-process and on workers: what
//! follows an attempt (done, a retry after a backoff, dead), the backoff,
//! and the log lines that say so.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::envelope::Envelope;
use super::registry::Failure;
use super::settings::JobSettings;

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Done,
    /// Another attempt after this delay.
    Retry(Duration),
    /// No attempt again: it failed for good, or its attempts ran out.
    Dead,
}

/// What follows attempt `envelope.attempts` of `envelope`'s job, which
/// ended with `result`: done when it succeeded; a retry after the backoff
/// when it failed with attempts left and another could help; dead
/// otherwise. Logs a retry and a death.
pub(crate) fn after(
    result: &Result<(), Failure>,
    envelope: &Envelope,
    settings: &JobSettings,
) -> After {
    match result {
        Ok(()) => After::Done,
        Err(failure) if failure.retry && envelope.attempts < envelope.max_attempts => {
            let delay = backoff(settings, envelope);
            log::warn!(
                "job {} ({}) attempt {} of {} failed: {}; retrying in {delay:?}",
                envelope.name,
                envelope.id,
                envelope.attempts,
                envelope.max_attempts,
                failure.message
            );
            After::Retry(delay)
        }
        Err(failure) => {
            log_dead(envelope, &failure.message);
            After::Dead
        }
    }
}

/// Logs that `envelope`'s job is dead, with why.
pub(crate) fn log_dead(envelope: &Envelope, error: &str) {
    log::error!(
        "job {} ({}) is dead after {} attempts: {error}",
        envelope.name,
        envelope.id,
        envelope.attempts
    );
}

/// Exponential backoff with jitter, after `envelope`'s attempts so far:
/// `backoff × 2^(attempts-1)`, capped at `max_backoff`, then a random point
/// in its upper half.
pub(crate) fn backoff(settings: &JobSettings, envelope: &Envelope) -> Duration {
    let exponent = envelope.attempts.saturating_sub(1).min(30);
    let full = settings
        .backoff
        .saturating_mul(1 << exponent)
        .min(settings.max_backoff);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(envelope.id.as_bytes());
    hasher.write_u32(envelope.attempts);
    let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
    full.mul_f64(0.5 + fraction / 2.0)
}
