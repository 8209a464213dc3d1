//! Cancellation over Redis: one script decides, atomically with every
//! worker's fetch, what a cancel can do.
//!
//! - A job waiting in its queue's stream and not yet delivered to any worker
//!   (after the group's last-delivered id) is deleted from the stream
//!   (`XDEL`): no worker can ever read it. `cancelled`.
//! - A job waiting in the delayed set (a delay, a retry's backoff) is
//!   removed from it. `cancelled`.
//! - A job a worker holds (delivered, maybe not started) or runs is asked to
//!   stop: its id joins the queue's cancel set (`{P:Q}:cancels`, whose
//!   version key every worker reads every 100 ms), and the worker holding it
//!   does not start it, or tells the running attempt. `cancelling`.
//!
//! The first two write the status `cancelled` and free a unique job's key
//! in the same script. A job deep in a backlog (more than [`SCAN_LIMIT`]
//! undelivered entries before it) is treated as the third case: its worker
//! drops it when it comes.

use super::connection::Connection;
use super::keys::{known_queues, Keys};
use super::status::read_status;
use super::RedisConfig;
use crate::jobs::status::IdSource;
use crate::jobs::{CancelError, Cancellation};

/// Undelivered entries a cancel looks through at most.
const SCAN_LIMIT: u64 = 10_000;

/// KEYS: the status hash, the stream, the delayed set, the cancel set, its
/// version. ARGV: the id, the scan limit, the prefix of the queue's unique
/// keys, the status TTL in ms. Returns `{'missing'}`, `{'ended', state}`,
/// `{'cancelled'}` or `{'cancelling'}`.
const CANCEL: &str = r#"
local text = redis.call('HGET', KEYS[1], ARGV[1])
if not text then return {'missing'} end
local status = cjson.decode(text)
local state = status['status']
if state == 'done' or state == 'dead' or state == 'cancelled' or state == 'discarded' then
  return {'ended', state}
end
-- Every envelope starts with these bytes (Envelope::to_json_text).
local head = '{"v":1,"id":"' .. ARGV[1] .. '"'
local function is_it(envelope)
  return string.sub(envelope, 1, #head) == head
end
local function cancelled(envelope)
  status['status'] = 'cancelled'
  status['next_run_ms'] = nil
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(status))
  local ok, job = pcall(cjson.decode, envelope)
  if ok and type(job['unique']) == 'string' then
    local key = ARGV[3] .. job['unique']
    if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
  end
  return {'cancelled'}
end
if state ~= 'running' then
  local due = status['next_run_ms']
  if due then
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], due, due)) do
      if is_it(member) then
        redis.call('ZREM', KEYS[3], member)
        return cancelled(member)
      end
    end
  end
  if redis.call('EXISTS', KEYS[2]) == 1 then
    local last = '0-0'
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
      local fields = {}
      for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
      if fields['name'] == 'workers' then last = fields['last-delivered-id'] end
    end
    local cursor = '(' .. last
    local scanned = 0
    while scanned < tonumber(ARGV[2]) do
      local entries = redis.call('XRANGE', KEYS[2], cursor, '+', 'COUNT', 200)
      if #entries == 0 then break end
      for _, entry in ipairs(entries) do
        local fields = entry[2]
        for i = 1, #fields, 2 do
          if fields[i] == 'envelope' and is_it(fields[i + 1]) then
            redis.call('XDEL', KEYS[2], entry[1])
            return cancelled(fields[i + 1])
          end
        end
      end
      scanned = scanned + #entries
      cursor = '(' .. entries[#entries][1]
    end
  end
end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
return {'cancelling'}
"#;

/// Cancels job `id`, in whichever queue its status is; the outer `Err`
/// when Redis could not be asked.
pub(crate) fn cancel(
    connection: &mut Connection,
    keys: &Keys,
    config: &RedisConfig,
    id: &str,
) -> redis::RedisResult<Result<Cancellation, CancelError>> {
    let queues = known_queues(connection, keys)?;
    let status = read_status(connection, keys, &queues, id)?;
    let (Some(status), Some(group)) = (status, IdSource::group(id)) else {
        return Ok(Err(CancelError::NotFound));
    };
    let queue = keys.queue(&status.queue);
    let reply: Vec<String> = redis::cmd("EVAL")
        .arg(CANCEL)
        .arg(5)
        .arg(queue.statuses(group))
        .arg(&queue.stream)
        .arg(&queue.delayed)
        .arg(queue.cancels())
        .arg(queue.cancels_version())
        .arg(id)
        .arg(SCAN_LIMIT)
        .arg(queue.unique(""))
        .arg(config.status_ttl.as_millis().max(1) as u64)
        .query(connection)?;
    Ok(match reply.first().map(String::as_str) {
        Some("cancelled") => Ok(Cancellation::Cancelled),
        Some("cancelling") => Ok(Cancellation::Cancelling),
        Some("ended") => {
            let state = reply.get(1).map_or("", String::as_str);
            Err(CancelError::Ended(super::status::state_of(state)))
        }
        _ => Err(CancelError::NotFound),
    })
}
