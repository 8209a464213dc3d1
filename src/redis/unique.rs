//! Unique jobs over Redis: a key per held uniqueness key
//! ([`QueueKeys::unique`]), holding the id of the job that holds it, set
//! with `SET NX` before the enqueue returns and deleted (if still that
//! job's) when the job ends, in the same `MULTI` as its end. Both are one
//! atomic step in Redis, so two servers racing to enqueue the same key get
//! one job and the same id, with no window between a look and a write.

use std::time::Duration;

use super::keys::QueueKeys;
use crate::jobs::Envelope;

/// Claims `KEYS[1]` for the id `ARGV[1]` for `ARGV[2]` ms: nil when it was
/// free, else the id holding it.
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
";

/// Deletes `KEYS[1]` if the id `ARGV[1]` still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The command that claims `envelope`'s key (it must have one) for `ttl`
/// after `delay`: its reply is nil, or the id of the job holding it.
pub(crate) fn claim(
    queue: &QueueKeys,
    envelope: &Envelope,
    ttl: Duration,
    delay: Option<Duration>,
) -> redis::Cmd {
    let hold = ttl + delay.unwrap_or_default();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CLAIM)
        .arg(1)
        .arg(queue.unique(envelope.unique.as_deref().unwrap_or_default()))
        .arg(&*envelope.id)
        .arg(hold.as_millis().max(1) as u64);
    cmd
}

/// Adds to `pipe` the release of `envelope`'s key, if it has one.
pub(crate) fn release(pipe: &mut redis::Pipeline, queue: &QueueKeys, envelope: &Envelope) {
    if let Some(key) = &envelope.unique {
        pipe.cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(queue.unique(key))
            .arg(&*envelope.id)
            .ignore();
    }
}
