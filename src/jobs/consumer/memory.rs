//! An in-memory [`Backend`], the seam's proof: the consumer's own tests run
//! on it, with no Redis. It keeps what Redis Streams keep (ready jobs, jobs
//! held by each consumer with their last news, delayed jobs, dead letters,
//! statuses) and can be told to fail calls, as a store that is down would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::backend::{Action, Announce, Backend, Delivery, Record, Want};
use crate::jobs::envelope::{now_ms, Envelope};

/// The store, shared by the consumers (and the test) that use it.
#[derive(Default)]
pub(crate) struct MemoryStore {
    inner: Mutex<Inner>,
    /// Notified at every change.
    changed: Condvar,
}

#[derive(Default)]
pub(crate) struct Inner {
    next_entry: u64,
    /// Jobs not handed out yet: (queue, entry, text).
    pub(crate) ready: VecDeque<(String, String, String)>,
    /// Jobs handed out and not recorded, by entry.
    pub(crate) held: BTreeMap<String, Held>,
    /// Jobs due later: (due, text).
    pub(crate) delayed: Vec<(u64, String)>,
    /// Dead letters: (text, error).
    pub(crate) dead: Vec<(String, String)>,
    /// Each job's statuses, in the order written, by envelope id.
    pub(crate) statuses: HashMap<String, Vec<String>>,
    /// Results of jobs done, and their children's ids, by envelope id.
    pub(crate) results: HashMap<String, (Option<String>, Vec<String>)>,
    /// Calls to fail from now on, before any change (a store that is down).
    pub(crate) fail_calls: u32,
    /// Records to fail from now on, before any change.
    pub(crate) fail_records: u32,
    /// While set, a fetch waits before it takes anything (one out at the
    /// stop); how many wait so.
    pub(crate) hold_fetches: bool,
    pub(crate) fetches_held: u32,
    /// Fetches to panic from now on (a fetching thread that dies).
    pub(crate) panic_fetches: u32,
    /// Fetches begun so far.
    pub(crate) fetches: u32,
    /// While set, a record waits before it writes anything; how many wait
    /// so.
    pub(crate) hold_records: bool,
    pub(crate) records_held: u32,
    /// How long a fetch with nothing ready waits for a job (20 ms unless
    /// set).
    pub(crate) fetch_wait: Option<Duration>,
    /// `running` statuses written: (id, queue, name, attempt, last error).
    pub(crate) announced: Vec<(String, String, String, u32, Option<String>)>,
    /// Records made, each a list of entries.
    pub(crate) records: Vec<Vec<String>>,
    /// Jobs asked to stop, and the version of that set.
    pub(crate) cancels: (u64, Vec<String>),
    /// The version of the cancel set a consumer last read.
    pub(crate) cancels_read: u64,
    /// Jobs recorded cancelled: (id, the stopped attempt's error).
    pub(crate) cancelled: Vec<(String, Option<String>)>,
}

/// A job held by a consumer.
pub(crate) struct Held {
    pub(crate) queue: String,
    pub(crate) owner: String,
    pub(crate) since: Instant,
    pub(crate) text: String,
}

impl MemoryStore {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job to the `default` queue, ready.
    pub(crate) fn push(&self, text: String) {
        self.push_to("default", text);
    }

    /// Adds a job to `queue`, ready.
    pub(crate) fn push_to(&self, queue: &str, text: String) {
        let mut inner = self.lock();
        let entry = inner.entry();
        inner.ready.push_back((queue.to_owned(), entry, text));
        self.changed.notify_all();
    }

    /// Blocks until `condition` holds for the store, or `timeout` has
    /// passed; returns whether it held.
    pub(crate) fn wait_for(&self, timeout: Duration, condition: impl Fn(&Inner) -> bool) -> bool {
        let inner = self.lock();
        let waited = self
            .changed
            .wait_timeout_while(inner, timeout, |inner| !condition(inner));
        !waited.unwrap_or_else(|e| e.into_inner()).1.timed_out()
    }

    /// Lets the fetches held by [`Inner::hold_fetches`] go on.
    pub(crate) fn release_fetches(&self) {
        self.lock().hold_fetches = false;
        self.changed.notify_all();
    }

    /// Lets the records held by [`Inner::hold_records`] go on.
    pub(crate) fn release_records(&self) {
        self.lock().hold_records = false;
        self.changed.notify_all();
    }

    /// While `held` says so, waits (counted in `count`, for the test to
    /// see).
    fn hold(&self, held: fn(&Inner) -> bool, count: fn(&mut Inner) -> &mut u32) {
        let mut inner = self.lock();
        if !held(&inner) {
            return;
        }
        *count(&mut inner) += 1;
        self.changed.notify_all();
        drop(inner);
        self.wait_for(Duration::from_secs(10), |inner| !held(inner));
        *count(&mut self.lock()) -= 1;
    }

    /// Adds a job held by `owner` since `since` (a consumer that went quiet).
    pub(crate) fn push_held(&self, owner: &str, since: Instant, text: String) -> String {
        let mut inner = self.lock();
        let entry = inner.entry();
        inner.held.insert(
            entry.clone(),
            Held {
                queue: "default".into(),
                owner: owner.to_owned(),
                since,
                text,
            },
        );
        entry
    }

    /// Runs one call on the store: it fails while calls are to fail, and
    /// wakes whoever waits for a change.
    fn call<T>(&self, call: impl FnOnce(&mut Inner) -> Result<T, String>) -> Result<T, String> {
        let mut inner = self.lock();
        if inner.fail_calls > 0 {
            inner.fail_calls -= 1;
            return Err("the store is down".into());
        }
        let result = call(&mut inner);
        self.changed.notify_all();
        result
    }
}

impl Inner {
    fn entry(&mut self) -> String {
        self.next_entry += 1;
        format!("{}-0", self.next_entry)
    }

    fn status(&mut self, id: &str, state: &str) {
        self.statuses
            .entry(id.to_owned())
            .or_default()
            .push(state.to_owned());
    }
}

/// One consumer's side of a [`MemoryStore`], serving `queues` (its lanes,
/// in order).
pub(crate) struct MemoryBackend {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) name: String,
    pub(crate) queues: Vec<String>,
    /// The version of the cancel set last read.
    pub(crate) cancel_version: u64,
}

impl Backend for MemoryBackend {
    const NAME: &'static str = "memory store";

    fn connect(&mut self) -> Result<(), String> {
        self.store.call(|_| Ok(()))
    }

    fn fetcher(&self) -> Option<MemoryBackend> {
        Some(MemoryBackend {
            store: self.store.clone(),
            name: self.name.clone(),
            queues: self.queues.clone(),
            cancel_version: 0,
        })
    }

    fn fetch(
        &mut self,
        wants: &[Want],
        budget: usize,
        wait: bool,
    ) -> Result<Vec<Delivery>, String> {
        let served = |inner: &Inner| {
            inner
                .ready
                .iter()
                .any(|(q, ..)| wants.iter().any(|w| self.queues[w.lane] == *q))
        };
        self.store
            .hold(|inner| inner.hold_fetches, |inner| &mut inner.fetches_held);
        {
            let mut inner = self.store.lock();
            inner.fetches += 1;
            self.store.changed.notify_all();
            if inner.panic_fetches > 0 {
                inner.panic_fetches -= 1;
                drop(inner);
                panic!("a fetch panics, as the test asked");
            }
        }
        if wait {
            // A little, as Redis's `BLOCK` would.
            let wait = self.store.lock().fetch_wait;
            self.store
                .wait_for(wait.unwrap_or(Duration::from_millis(20)), served);
        }
        let (owner, queues) = (&self.name, &self.queues);
        self.store.call(|inner| {
            let since = Instant::now();
            let mut out = Vec::new();
            for want in wants {
                let mut taken = 0;
                let mut index = 0;
                while index < inner.ready.len() && taken < want.max && out.len() < budget {
                    if inner.ready[index].0 != queues[want.lane] {
                        index += 1;
                        continue;
                    }
                    let (queue, entry, text) = inner.ready.remove(index).expect("in range");
                    let held = Held {
                        queue,
                        owner: owner.clone(),
                        since,
                        text: text.clone(),
                    };
                    inner.held.insert(entry.clone(), held);
                    out.push(Delivery {
                        lane: want.lane,
                        entry,
                        text,
                    });
                    taken += 1;
                }
            }
            Ok(out)
        })
    }

    fn reclaim(
        &mut self,
        lane: usize,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, String> {
        let (owner, queue) = (&self.name, &self.queues[lane]);
        self.store.call(|inner| {
            let now = Instant::now();
            let mut taken = Vec::new();
            for (entry, held) in inner.held.iter_mut() {
                if taken.len() < max
                    && held.queue == *queue
                    && now.duration_since(held.since) >= visibility
                {
                    held.owner.clone_from(owner);
                    held.since = now;
                    taken.push(Delivery {
                        lane,
                        entry: entry.clone(),
                        text: held.text.clone(),
                    });
                }
            }
            Ok(taken)
        })
    }

    fn renew(&mut self, held: &[(usize, &str)], _visibility: Duration) -> Result<(), String> {
        let owner = &self.name;
        self.store.call(|inner| {
            let now = Instant::now();
            for (_, entry) in held {
                if let Some(job) = inner.held.get_mut(*entry).filter(|j| j.owner == *owner) {
                    job.since = now;
                }
            }
            Ok(())
        })
    }

    fn record(&mut self, finished: &[Record<'_>]) -> Result<(), String> {
        self.store
            .hold(|inner| inner.hold_records, |inner| &mut inner.records_held);
        let queues = &self.queues;
        self.store.call(|inner| {
            if inner.fail_records > 0 {
                inner.fail_records -= 1;
                return Err("the record failed".into());
            }
            for record in finished {
                assert!(
                    record.started_ms <= now_ms(),
                    "an attempt started in the future"
                );
                let held = inner.held.remove(record.entry);
                // A record names the job's queue as its delivery did.
                assert!(held.is_some_and(|h| h.queue == queues[record.lane]));
                match &record.action {
                    Action::Done {
                        envelope,
                        result,
                        children,
                    } => {
                        // Children first: they exist before the status naming them.
                        let mut ids = Vec::new();
                        for (child, delay) in children.iter() {
                            ids.push(child.id.to_string());
                            inner.status(&child.id, "queued");
                            let text = child.to_json_text();
                            match delay {
                                Some(delay) => {
                                    let due = now_ms() + delay.as_millis() as u64;
                                    inner.delayed.push((due, text));
                                }
                                None => {
                                    let entry = inner.entry();
                                    inner
                                        .ready
                                        .push_back((child.queue.to_string(), entry, text));
                                }
                            }
                        }
                        let value = (result.map(str::to_owned), ids);
                        inner.results.insert(envelope.id.to_string(), value);
                        inner.status(&envelope.id, "done");
                    }
                    Action::Cancelled { envelope, error } => {
                        inner.cancels.1.retain(|id| **id != *envelope.id);
                        let error = error.map(str::to_owned);
                        inner.cancelled.push((envelope.id.to_string(), error));
                        inner.status(&envelope.id, "cancelled");
                    }
                    Action::Retry { envelope, due_ms } => {
                        inner.delayed.push((*due_ms, envelope.to_json_text()));
                        inner.status(&envelope.id, "retrying");
                    }
                    Action::Dead { envelope, error } => {
                        let letter = (envelope.to_json_text(), (*error).to_owned());
                        inner.dead.push(letter);
                        inner.status(&envelope.id, "dead");
                    }
                    Action::Unreadable { text, error } => {
                        inner.dead.push(((*text).to_owned(), (*error).to_owned()));
                    }
                }
            }
            let entries = finished.iter().map(|r| r.entry.to_owned()).collect();
            inner.records.push(entries);
            Ok(())
        })
    }

    fn cancels(&mut self) -> Result<Option<Vec<String>>, String> {
        let seen = &mut self.cancel_version;
        self.store.call(|inner| {
            if inner.cancels.0 == *seen {
                return Ok(None);
            }
            *seen = inner.cancels.0;
            inner.cancels_read = inner.cancels.0;
            Ok(Some(inner.cancels.1.clone()))
        })
    }

    fn announce(&mut self, running: &[Announce<'_>]) -> Result<(), String> {
        let queues = &self.queues;
        self.store.call(|inner| {
            for job in running {
                inner.status(job.envelope_id, "running");
                let error = job.last_error.map(str::to_owned);
                // A store keeps what a status history needs: the attempt
                // started after the job was enqueued.
                assert!(job.started_ms >= job.enqueued_at_ms);
                let queue = queues[job.lane].clone();
                let announced = (
                    job.envelope_id.into(),
                    queue,
                    job.name.into(),
                    job.attempt,
                    error,
                );
                inner.announced.push(announced);
            }
            Ok(())
        })
    }

    fn promote(&mut self, max: usize) -> Result<u64, String> {
        self.store.call(|inner| {
            let now = now_ms();
            let mut moved = 0;
            let mut index = 0;
            while index < inner.delayed.len() && moved < max {
                if inner.delayed[index].0 <= now {
                    let (_, text) = inner.delayed.remove(index);
                    let entry = inner.entry();
                    let queue = Envelope::from_json_text(&text)
                        .map_or_else(|_| "default".into(), |e| e.queue.into_owned());
                    inner.ready.push_back((queue, entry, text));
                    moved += 1;
                } else {
                    index += 1;
                }
            }
            Ok(moved as u64)
        })
    }

    fn pending(&mut self) -> Result<u64, String> {
        self.store.call(|inner| Ok(inner.held.len() as u64))
    }
}
