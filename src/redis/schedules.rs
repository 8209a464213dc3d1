//! Schedules over Redis ([`Ticks`] for every server of a deployment): a
//! tick is claimed with one script, `SET NX` of the tick's own key (with a
//! TTL past any server's look at it), so exactly one server enqueues it;
//! the same script refuses a paused schedule and keeps the last run. All
//! the keys share the hash tag `{P:schedules}` (one Cluster slot).
//!
//! | key | type | what |
//! |---|---|---|
//! | `{P:schedules}:spec` | hash | each schedule's spec (`1s`, or a cron expression), by name |
//! | `{P:schedules}:last` | hash | each schedule's last tick claimed, Unix ms |
//! | `{P:schedules}:paused` | set | the names of the paused schedules |
//! | `{P:schedules}:tick:NAME:TICK` | string | the claim of one tick |

use std::time::Duration;

use super::keys::Keys;
use super::LazyConnection;
use crate::jobs::schedule::{Claim, Ticks};

/// KEYS: the paused set, the tick's key, the last-run hash. ARGV: the
/// name, the tick, the hold in ms. 2: paused; 1: won; 0: lost.
const CLAIM: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 2 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 0 end
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
return 1
";

/// The deployment's schedules, in Redis.
pub(crate) struct RedisTicks {
    keys: Keys,
    connection: LazyConnection,
}

impl RedisTicks {
    pub(crate) fn new(keys: Keys, connection: LazyConnection) -> RedisTicks {
        RedisTicks { keys, connection }
    }
}

impl Ticks for RedisTicks {
    fn register(&self, name: &str, spec: &str) -> Result<(), String> {
        let key = self.keys.schedules("spec");
        self.connection.call(|con| {
            redis::cmd("HSET")
                .arg(&key)
                .arg(name)
                .arg(spec)
                .query::<()>(con)
        })
    }

    fn claim(&self, name: &str, tick_ms: u64, hold: Duration) -> Result<Claim, String> {
        let tick_key = self.keys.schedules(&format!("tick:{name}:{tick_ms}"));
        let claimed: i64 = self.connection.call(|con| {
            redis::cmd("EVAL")
                .arg(CLAIM)
                .arg(3)
                .arg(self.keys.schedules("paused"))
                .arg(&tick_key)
                .arg(self.keys.schedules("last"))
                .arg(name)
                .arg(tick_ms)
                .arg(hold.as_millis().max(1) as u64)
                .query(con)
        })?;
        Ok(match claimed {
            1 => Claim::Won,
            2 => Claim::Paused,
            _ => Claim::Lost,
        })
    }

    fn last_runs(&self, names: &[&str]) -> Result<Vec<Option<u64>>, String> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.schedules("last");
        self.connection
            .call(|con| redis::cmd("HMGET").arg(&key).arg(names).query(con))
    }

    fn paused(&self, names: &[&str]) -> Result<Vec<bool>, String> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.schedules("paused");
        self.connection
            .call(|con| redis::cmd("SMISMEMBER").arg(&key).arg(names).query(con))
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<(), String> {
        let key = self.keys.schedules("paused");
        let command = if paused { "SADD" } else { "SREM" };
        self.connection
            .call(|con| redis::cmd(command).arg(&key).arg(name).query::<()>(con))
    }
}
