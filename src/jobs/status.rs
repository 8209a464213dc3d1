//! What is known of each job: a bounded store, oldest entry evicted first.
//!
//! Its size: a quarter is unit tests; the rest is the public status types,
//! the store with its paged walk, and the id source the store is indexed by.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The default number of job statuses kept: 10,000.
pub const DEFAULT_JOB_STATUS_CAPACITY: usize = 10_000;

/// How much of a job's payload its status keeps by default, for the
/// dashboard's job page: its first 1 KiB.
pub const DEFAULT_STATUS_PAYLOAD_BYTES: usize = 1024;

/// The part of `payload` a status keeps: `None` with a `limit` of 0; the
/// whole text when it fits; otherwise its first `limit` bytes (cut on a
/// character's boundary) and ` …`, so a reader knows it is not all of it.
pub(crate) fn clip_payload(payload: &str, limit: usize) -> Option<Cow<'_, str>> {
    if limit == 0 {
        return None;
    }
    if payload.len() <= limit {
        return Some(Cow::Borrowed(payload));
    }
    let mut end = limit;
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    Some(Cow::Owned(format!("{} …", &payload[..end])))
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// Enqueued, not started.
    Queued,
    /// Enqueued to start later ([`enqueue_in`](crate::BackgroundTasks::enqueue_in),
    /// [`enqueue_at`](crate::BackgroundTasks::enqueue_at)): due at `next_run`.
    Delayed {
        /// When it is due.
        next_run: SystemTime,
    },
    /// An attempt is running.
    Running,
    /// An attempt failed; the next is due at `next_run`.
    Retrying {
        /// When the next attempt is due.
        next_run: SystemTime,
    },
    /// An attempt succeeded.
    Done,
    /// Every attempt failed (or the payload could not be read): it will not
    /// run again. Kept in the dead letters too.
    Dead,
    /// It never ran to the end: its request failed, or shutdown came first.
    Discarded,
    /// Cancelled ([`Jobs::cancel`](crate::Jobs::cancel)): it never started,
    /// or its running attempt stopped when told.
    Cancelled,
}

impl JobState {
    /// `queued`, `delayed`, `running`, `retrying`, `done`, `dead`, `discarded` or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Delayed { .. } => "delayed",
            JobState::Running => "running",
            JobState::Retrying { .. } => "retrying",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended: it will not run again.
    pub fn has_ended(&self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Dead | JobState::Discarded | JobState::Cancelled
        )
    }
}

/// A job's status, as [`Jobs::status`](crate::Jobs::status) reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// The queue it waits in.
    pub queue: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts made so far (the running one included).
    pub attempts: u32,
    /// The last failed attempt's error while the job is retrying, or why it
    /// is dead; `None` once it is done (an earlier attempt's error is history).
    pub error: Option<String>,
    /// The job's result, as JSON text, once done
    /// ([`JobContext::set_result`](crate::JobContext::set_result)).
    pub result: Option<String>,
    /// The follow-up jobs its successful attempt enqueued
    /// ([`JobContext::enqueue`](crate::JobContext::enqueue)).
    pub children: Vec<String>,
    /// When its last attempt started (kept in-process; over Redis, `None`).
    pub started_at: Option<SystemTime>,
    /// Its states and when each began, oldest first: in-process every
    /// change (the first and the last 5); over Redis what the last writer knew (enqueued,
    /// the last attempt's start, its outcome).
    pub history: Vec<(&'static str, SystemTime)>,
    /// Its payload's JSON text as the status keeps it: the first
    /// [`JobSettings::status_payload_bytes`](crate::JobSettings::status_payload_bytes)
    /// (over Redis, `RedisConfig::status_payload_bytes`)
    /// bytes, ending ` …` when cut; `None` when none is kept. Shown on the
    /// dashboard's job page, never in the status route's JSON
    /// ([`to_json`](Self::to_json)), which the job's client may read.
    pub payload: Option<String>,
}

impl JobStatus {
    /// The status as JSON: `{"id", "name", "queue", "status", "attempts",
    /// "error", "result"}` (`error` and `result` null when there is none),
    /// `"children"` (their ids) when its attempt enqueued follow-up jobs, and
    /// `"next_run_ms"` (Unix ms) while it is delayed or retrying, and
    /// `"started_at_ms"` while it runs (in-process).
    pub fn to_json(&self) -> serde_json::Value {
        let result = self
            .result
            .as_deref()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
        let mut value = serde_json::json!({
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "status": self.state.as_str(),
            "attempts": self.attempts,
            "error": self.error,
            "result": result,
        });
        if !self.children.is_empty() {
            value["children"] = self.children.clone().into();
        }
        if let (JobState::Running, Some(started)) = (&self.state, self.started_at) {
            let ms = started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            value["started_at_ms"] = ms.into();
        }
        if let JobState::Delayed { next_run } | JobState::Retrying { next_run } = &self.state {
            let ms = next_run
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            value["next_run_ms"] = ms.into();
        }
        value
    }
}

/// At most `capacity` statuses, the oldest evicted first: a job's status
/// lives in slot `sequence % capacity`, where `sequence` is the counter its
/// id ends with ([`IdSource`]), so a new job's status takes the place of the
/// one enqueued `capacity` jobs earlier. No hashing and no eviction list:
/// a lookup reads the slot and compares the whole id. Slots are allocated as
/// they are first used.
pub(crate) struct StatusStore {
    capacity: usize,
    /// How much of each payload is kept ([`clip_payload`]).
    payload_bytes: usize,
    /// The counter of the first id: it takes slot 0.
    origin: u64,
    slots: Mutex<Vec<Option<Slot>>>,
}

struct Slot {
    id: Arc<str>,
    record: Record,
}

impl Slot {
    fn status(&self) -> JobStatus {
        let Slot { id, record } = self;
        JobStatus {
            id: id.to_string(),
            name: record.name.to_string(),
            queue: record.queue.to_string(),
            state: record.state.clone(),
            attempts: record.attempts,
            error: record.error.clone(),
            result: record.result.clone(),
            children: record.children.iter().map(|c| c.to_string()).collect(),
            started_at: record.started,
            history: record.history.to_vec(),
            payload: record.payload.as_deref().map(str::to_owned),
        }
    }
}

/// A status as the store keeps it.
pub(crate) struct Record {
    pub(crate) name: Cow<'static, str>,
    pub(crate) queue: Cow<'static, str>,
    pub(crate) state: JobState,
    pub(crate) attempts: u32,
    pub(crate) error: Option<String>,
    pub(crate) result: Option<String>,
    pub(crate) children: Vec<Arc<str>>,
    /// A unique job's key, released if it is cancelled before it starts.
    pub(crate) unique: Option<String>,
    /// When its last attempt started.
    pub(crate) started: Option<SystemTime>,
    /// Its states and when each began.
    pub(crate) history: Transitions,
    /// The part of its payload kept ([`clip_payload`]).
    pub(crate) payload: Option<Box<str>>,
}

/// A job's last [`Transitions::KEPT`] states and when each began, inline
/// and compact (40 bytes: the store keeps thousands): the first time in
/// Unix ms, the others as milliseconds after it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Transitions {
    first_ms: u64,
    codes: [u8; Transitions::KEPT],
    after_ms: [u32; Transitions::KEPT],
    len: u8,
}
/// Every state's name ([`JobState::as_str`]), and `?`: a transition's code
/// is its place here.
pub(crate) const STATES: [&str; 9] = [
    "queued",
    "delayed",
    "running",
    "retrying",
    "done",
    "dead",
    "discarded",
    "cancelled",
    "?",
];

impl Transitions {
    const KEPT: usize = 6;

    /// Notes `state` now, unless it is the state already noted last.
    fn note(&mut self, state: &JobState) {
        self.note_at(state, None);
    }

    /// Notes `state` at `at_ms` (Unix ms; `None`: now).
    fn note_at(&mut self, state: &JobState, at_ms: Option<u64>) {
        let code = STATES
            .iter()
            .position(|s| *s == state.as_str())
            .unwrap_or(STATES.len() - 1) as u8;
        let len = usize::from(self.len);
        if len > 0 && self.codes[len - 1] == code {
            return;
        }
        let now = at_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
        if len == 0 {
            self.first_ms = now;
        }
        let after = u32::try_from(now.saturating_sub(self.first_ms)).unwrap_or(u32::MAX);
        if len == Self::KEPT {
            // The first state stays (when the job began); the middle ones go.
            self.codes.copy_within(2.., 1);
            self.after_ms.copy_within(2.., 1);
            self.codes[Self::KEPT - 1] = code;
            self.after_ms[Self::KEPT - 1] = after;
        } else {
            self.codes[len] = code;
            self.after_ms[len] = after;
            self.len += 1;
        }
    }

    fn to_vec(self) -> Vec<(&'static str, SystemTime)> {
        (0..usize::from(self.len))
            .map(|i| {
                let ms = self.first_ms + u64::from(self.after_ms[i]);
                let state = STATES[usize::from(self.codes[i])];
                (
                    state,
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                )
            })
            .collect()
    }
}

impl StatusStore {
    /// A store for the ids of a source whose counter starts at `origin`
    /// ([`IdSource::origin`]): the first id takes the first slot.
    pub(crate) fn new(capacity: usize, origin: u64) -> StatusStore {
        StatusStore {
            capacity,
            payload_bytes: DEFAULT_STATUS_PAYLOAD_BYTES,
            origin,
            slots: Mutex::default(),
        }
    }

    /// Keeps the first `bytes` of each payload (0: none).
    pub(crate) fn keeping_payloads(mut self, bytes: usize) -> StatusStore {
        self.payload_bytes = bytes;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of `id`, if it is an id of ours.
    fn slot_of(&self, id: &str) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        let sequence = IdSource::sequence(id)?.wrapping_sub(self.origin);
        usize::try_from(sequence % self.capacity as u64).ok()
    }

    /// Keeps a new job's status, `queued` since `enqueued_ms` (its
    /// envelope's time: no clock read here), with the part of its
    /// `payload` kept.
    pub(crate) fn insert(
        &self,
        id: &Arc<str>,
        name: Cow<'static, str>,
        queue: Cow<'static, str>,
        enqueued_ms: u64,
        payload: &str,
    ) {
        let Some(index) = self.slot_of(id) else {
            return;
        };
        let payload = clip_payload(payload, self.payload_bytes).map(Box::from);
        let slot = Slot {
            id: id.clone(),
            record: Record {
                name,
                queue,
                state: JobState::Queued,
                attempts: 0,
                error: None,
                result: None,
                children: Vec::new(),
                unique: None,
                started: None,
                history: Transitions::default(),
                payload,
            },
        };
        let mut slot = slot;
        slot.record
            .history
            .note_at(&JobState::Queued, Some(enqueued_ms));
        let mut slots = self.lock();
        if slots.len() <= index {
            slots.resize_with(index + 1, || None);
        }
        let evicted = slots[index].replace(slot);
        drop(slots);
        drop(evicted);
    }

    /// Changes a status still in the store.
    pub(crate) fn update(&self, id: &str, change: impl FnOnce(&mut Record)) {
        self.update_with(id, change);
    }

    /// Changes a status still in the store, under the store's lock (so a
    /// look and a change are one step), returning what `change` says;
    /// `None` for a status not in the store.
    pub(crate) fn update_with<R>(
        &self,
        id: &str,
        change: impl FnOnce(&mut Record) -> R,
    ) -> Option<R> {
        let index = self.slot_of(id)?;
        match self.lock().get_mut(index) {
            Some(Some(slot)) if *slot.id == *id => {
                let changed = change(&mut slot.record);
                let record = &mut slot.record;
                record.history.note(&record.state);
                Some(changed)
            }
            _ => None,
        }
    }

    /// The statuses kept whose state is `state` (any: empty) and whose id
    /// is `q` or whose name contains it (any: empty), the newest first: how
    /// many in all, and `take` of them from the `skip`th on. Only those are
    /// copied: a page of a dashboard's list, with `newest` the counter of
    /// the last id made (slots fill in the counter's order, so walking back
    /// from its slot is walking back in time).
    pub(crate) fn select(
        &self,
        newest: u64,
        state: &str,
        q: &str,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<JobStatus>) {
        if self.capacity == 0 {
            return (0, Vec::new());
        }
        let slots = self.lock();
        let start = (newest.wrapping_sub(self.origin) % self.capacity as u64) as usize;
        let mut total = 0;
        let mut page = Vec::new();
        for step in 0..slots.len().min(self.capacity) {
            let index = (start + self.capacity - step % self.capacity) % self.capacity;
            let Some(Some(slot)) = slots.get(index) else {
                continue;
            };
            let record = &slot.record;
            let wanted = (state.is_empty() || record.state.as_str() == state)
                && (q.is_empty() || *slot.id == *q || record.name.contains(q));
            if wanted {
                if total >= skip && page.len() < take {
                    page.push(slot.status());
                }
                total += 1;
            }
        }
        (total, page)
    }

    /// Per queue, the jobs kept that are queued, running, delayed and
    /// retrying, counted in place.
    pub(crate) fn queue_counts(&self) -> Vec<(String, [u64; 4])> {
        let mut counts: Vec<(String, [u64; 4])> = Vec::new();
        for slot in self.lock().iter().flatten() {
            let at = match slot.record.state {
                JobState::Queued => 0,
                JobState::Running => 1,
                JobState::Delayed { .. } => 2,
                JobState::Retrying { .. } => 3,
                _ => continue,
            };
            let queue = &*slot.record.queue;
            match counts.iter_mut().find(|(q, _)| q == queue) {
                Some((_, row)) => row[at] += 1,
                None => {
                    let mut row = [0; 4];
                    row[at] = 1;
                    counts.push((queue.to_owned(), row));
                }
            }
        }
        counts
    }

    pub(crate) fn get(&self, id: &str) -> Option<JobStatus> {
        let index = self.slot_of(id)?;
        let slots = self.lock();
        let slot = slots.get(index)?.as_ref().filter(|s| *s.id == *id)?;
        Some(slot.status())
    }
}

/// Job ids: 16 hex digits of a secret (the standard library's randomly keyed
/// hasher over a counter), which makes them unguessable, then the counter in
/// hex, which makes them unique and gives the status store its slot.
///
/// The counter starts at a random origin (below 2^62), so that the ids of
/// two processes, or of one process and the same process restarted, fall in
/// different ranges: a Redis deployment keeps the statuses of each 4,096
/// consecutive ids in one hash ([`IdSource::group`]), and a range used again
/// would keep an old group alive.
pub(crate) struct IdSource {
    keys: std::collections::hash_map::RandomState,
    origin: u64,
    next: AtomicU64,
}

impl Default for IdSource {
    fn default() -> IdSource {
        let keys = std::collections::hash_map::RandomState::new();
        let origin = keys.build_hasher().finish() >> 2;
        IdSource {
            keys,
            origin,
            next: AtomicU64::new(origin),
        }
    }
}

impl IdSource {
    pub(crate) fn next(&self) -> Arc<str> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Written on the stack, then one allocation: the shared id.
        let mut buf = [0u8; 32];
        let digits = 16 + (64 - n.leading_zeros() as usize).div_ceil(4).max(1);
        let hex = |v: u64, at: usize| b"0123456789abcdef"[(v >> (4 * at) & 0xf) as usize];
        let secret = self.secret(n);
        for (i, byte) in buf[..16].iter_mut().enumerate() {
            *byte = hex(secret, 15 - i);
        }
        for (i, byte) in buf[16..digits].iter_mut().enumerate() {
            *byte = hex(n, digits - 17 - i);
        }
        Arc::from(std::str::from_utf8(&buf[..digits]).unwrap_or_default())
    }

    /// Whether `id` was made by this source.
    pub(crate) fn made(&self, id: &str) -> bool {
        let Some(n) = IdSource::sequence(id) else {
            return false;
        };
        let issued = n.wrapping_sub(self.origin)
            < self.next.load(Ordering::Relaxed).wrapping_sub(self.origin);
        issued && id.get(..16) == Some(&format!("{:016x}", self.secret(n))[..])
    }

    /// The counter of the last id made (or just before the first).
    pub(crate) fn last(&self) -> u64 {
        self.next.load(Ordering::Relaxed).wrapping_sub(1)
    }

    /// Where this source's counter started.
    pub(crate) fn origin(&self) -> u64 {
        self.origin
    }

    fn secret(&self, n: u64) -> u64 {
        let mut hasher = self.keys.build_hasher();
        hasher.write_u64(n);
        hasher.finish()
    }

    /// The counter an id of this form ends with.
    pub(crate) fn sequence(id: &str) -> Option<u64> {
        let counter = id.get(16..).filter(|c| {
            !c.is_empty() && c.len() <= 16 && c.bytes().all(|b| b.is_ascii_hexdigit())
        })?;
        u64::from_str_radix(counter, 16).ok()
    }

    /// The group of 4,096 consecutive ids `id` belongs to (`None` for an id
    /// not of this form): where a Redis deployment keeps its status.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn group(id: &str) -> Option<u64> {
        IdSource::sequence(id).map(|n| n >> 12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_status_is_evicted_first() {
        let ids = IdSource::default();
        let store = StatusStore::new(2, ids.origin());
        let [a, b, c] = [(); 3].map(|()| ids.next());
        store.insert(&a, Cow::Borrowed("j"), Cow::Borrowed("q"), 0, "null");
        store.insert(&b, Cow::Borrowed("j"), Cow::Borrowed("q"), 0, "null");
        store.update(&a, |s| s.state = JobState::Done);
        assert_eq!(store.get(&a).map(|s| s.state), Some(JobState::Done));
        store.insert(&c, Cow::Borrowed("j"), Cow::Borrowed("q"), 0, "null");
        assert_eq!(store.get(&a), None);
        assert!(store.get(&b).is_some() && store.get(&c).is_some());
    }

    #[test]
    fn a_page_of_statuses_comes_newest_first_and_only_it_is_copied() {
        let ids = IdSource::default();
        let store = StatusStore::new(4, ids.origin());
        let made: Vec<Arc<str>> = (0..6).map(|_| ids.next()).collect();
        for (i, id) in made.iter().enumerate() {
            let name = if i % 2 == 0 { "even" } else { "odd" };
            store.insert(id, Cow::Borrowed(name), Cow::Borrowed("q"), 0, "null");
        }
        store.update(&made[5], |s| s.state = JobState::Done);
        let ids_of = |page: Vec<JobStatus>| page.into_iter().map(|s| s.id).collect::<Vec<_>>();
        // The four kept (2..=5), the newest first, wrapping around the slots.
        let (total, page) = store.select(ids.last(), "", "", 0, 10);
        assert_eq!(total, 4);
        assert_eq!(ids_of(page), [&*made[5], &*made[4], &*made[3], &*made[2]]);
        let (total, page) = store.select(ids.last(), "", "", 1, 2);
        assert_eq!(
            (total, ids_of(page)),
            (4, vec![made[4].to_string(), made[3].to_string()])
        );
        let (total, page) = store.select(ids.last(), "queued", "even", 0, 10);
        assert_eq!(
            (total, ids_of(page)),
            (2, vec![made[4].to_string(), made[2].to_string()])
        );
        assert_eq!(store.select(ids.last(), "", &made[3], 0, 10).0, 1);
        assert_eq!(store.queue_counts(), [("q".to_owned(), [3, 0, 0, 0])]);
    }

    #[test]
    fn a_status_keeps_the_payload_up_to_its_limit_cut_on_a_character() {
        assert_eq!(clip_payload("{\"a\":1}", 0), None);
        assert_eq!(clip_payload("{\"a\":1}", 7).as_deref(), Some("{\"a\":1}"));
        assert_eq!(clip_payload("{\"a\":1}", 4).as_deref(), Some("{\"a\" …"));
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(clip_payload("\"é\"", 2).as_deref(), Some("\" …"));
        let ids = IdSource::default();
        let store = StatusStore::new(2, ids.origin()).keeping_payloads(3);
        let id = ids.next();
        store.insert(&id, Cow::Borrowed("j"), Cow::Borrowed("q"), 0, "[1,2,3]");
        assert_eq!(store.get(&id).unwrap().payload.as_deref(), Some("[1, …"));
    }

    #[test]
    fn only_the_whole_id_finds_a_status() {
        let ids = IdSource::default();
        let store = StatusStore::new(8, ids.origin());
        let id = ids.next();
        store.insert(&id, Cow::Borrowed("j"), Cow::Borrowed("q"), 0, "null");
        // Same slot (same counter), another secret: a guessed id.
        let guessed = format!("{:016x}{}", 0u64, &id[16..]);
        for other in [&guessed[..], &id[..16], &id[..id.len() - 1], "", "é", "zz"] {
            assert_eq!(store.get(other), None, "{other:?}");
            store.update(other, |s| s.state = JobState::Dead);
        }
        assert_eq!(store.get(&id).map(|s| s.state), Some(JobState::Queued));
    }

    #[test]
    fn ids_are_sixteen_secret_hex_digits_then_the_counter_in_hex() {
        let ids = IdSource::default();
        let mut seen = std::collections::HashSet::new();
        for n in [0u64, 1, 15, 16, 255, 256, 0xabc_def, u64::MAX] {
            ids.next.store(n, Ordering::Relaxed);
            let id = ids.next();
            assert_eq!(&*id, format!("{:016x}{n:x}", ids.secret(n)));
            assert_eq!(IdSource::sequence(&id), Some(n));
            assert_eq!(IdSource::group(&id), Some(n >> 12));
            assert!(seen.insert(id));
        }
        assert_eq!(IdSource::group("not an id of ours"), None);
        assert_eq!(IdSource::group("0123456789abcdef+1f"), None);
    }

    #[test]
    fn each_source_counts_from_its_own_random_origin() {
        let (a, b) = (IdSource::default(), IdSource::default());
        assert_ne!(a.origin(), b.origin());
        assert!(a.origin() < 1 << 62 && b.origin() < 1 << 62);
        let first = a.next();
        assert_eq!(IdSource::sequence(&first), Some(a.origin()));
        assert_eq!(IdSource::sequence(&a.next()), Some(a.origin() + 1));
        // The first id takes the store's first slot: the store grows from
        // the start, wherever the counter began.
        let store = StatusStore::new(10, a.origin());
        store.insert(&first, Cow::Borrowed("j"), Cow::Borrowed("q"), 0, "null");
        assert_eq!(store.lock().len(), 1);
    }
}
