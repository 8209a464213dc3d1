//! The request workers' queue, over whatever it carries (the engine's
//! `Incoming`: connections with a whole request, what runs after a response,
//! wake-ups). It knows nothing of connections: some items are *counted*
//! (bounded, and reported in `requests_queued`), the others never refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::stats::Counters;

/// A queue that request workers take items from.
///
/// Who is woken, and when: a worker that finds the queue empty looks
/// again before it sleeps, but only one at a time (the "searcher"): it
/// spins for [`SPIN`], then yields the core until [`SEARCH`] has passed.
/// A counted item (a request) the event loop queues wakes a sleeper only
/// when no worker will look at the queue soon: none is searching, and
/// none is *busy* (serving a request it took) or none has come back from
/// one within `wake_after` (the busy ones may all be in slow handlers).
/// Otherwise it waits for a busy worker to come back; if it has waited
/// `wake_after` and a worker still sleeps, one is woken for it, by
/// [`spread`](Self::spread), which the event loop calls at every turn and
/// whose time it keeps, or by the worker that takes the item before it.
/// Once as many workers are busy as there are cores and they are coming
/// back, a request waiting longer wakes nobody: the server is short of
/// CPU, which more running workers would not give it. So under a stream of
/// quick requests each worker running goes from one to the next without
/// sleeping, a request behind a handler that has run long wakes a sleeper
/// at once, and one that turns slow holds the requests behind it
/// `wake_after` at most. A wake-up is counted when it is sent, so that
/// two threads do not both wake the one sleeper. Other items (what runs
/// after a response, a wake-up) and requests queued by workers (a
/// pipelined one) wake a sleeper unless one searches and it is the only
/// item.
///
/// Why: with a crossbeam channel every idle worker spun and yielded before
/// it slept (a quarter of the server's context switches were those yields);
/// with no search at all, every request woke a sleeping worker; a searcher
/// that only spun took a core the event loop and clients needed (p99 at two
/// connections, 0.12 to 3 ms); waking a sleeper for every request queued
/// behind a busy worker made half a context switch per request.
/// Measurements: BENCHMARKS.md.
///
/// Counted items (connections with a whole request) are bounded: one more
/// than `capacity` is given back, for the caller to refuse. The others
/// (what runs after a response, wake-ups) are never refused.
///
/// The lead (leader/followers, made by [`with_lead`](Self::with_lead)):
/// a queue may also hand out, to one thread at a time, the right to poll
/// an event loop and run its turn. A worker that finds no item takes the
/// lead when it is free, and polls; the requests its turn reads are
/// queued, and it takes the first of them itself once it gives the lead
/// back ([`release_lead`](Self::release_lead)). So under a stream of
/// requests the thread that read a request serves it, on the same core,
/// with no other thread woken. A worker coming back takes a lead left free
/// `lead_after / 2` (`wake_after`, at most [`LEAD_AFTER_MAX`]) before the
/// items queued. While every worker is busy, nobody would poll: the
/// *watcher* (a thread of its own, in [`watch`](Self::watch)), which looks
/// each [`HELD_LOOK`] while a worker leads, then acts on a lead it sees
/// free `lead_after`: with nothing queued, it wakes a sleeping worker for
/// it; with items queued (the workers are busy with them) or none asleep,
/// it takes the lead itself for a turn that does not block. So the loop
/// goes unturned `HELD_LOOK + lead_after` at most. A worker blocked in the
/// poll (with nothing queued when it began) is roused by whoever queues an
/// item that no other worker will take.
pub(crate) struct WorkQueue<T> {
    state: Mutex<Waiting<T>>,
    ready: Condvar,
    /// Where the watcher waits.
    watching: Condvar,
    /// `state.items.len()`, for the searcher to watch without the lock.
    len: AtomicUsize,
    /// Whether the lead is free, for the searcher to watch without the lock.
    lead_free: AtomicBool,
    /// Wakes the thread blocked in the event loop's poll.
    rouse: Box<dyn Fn() + Send + Sync>,
    /// The most counted items it holds.
    capacity: usize,
    /// How long a counted item waits for a busy worker before a sleeping
    /// one is woken for it.
    wake_after: Duration,
    /// How long the lead stays free before the watcher acts.
    lead_after: Duration,
    /// Where counted items are reported (`requests_queued`).
    counters: Arc<Counters>,
    /// The cores this process may run on: more busy workers than that do
    /// not make a server short of CPU faster.
    cores: usize,
}

struct Waiting<T> {
    /// Each item, whether it is counted, and when it was queued.
    items: VecDeque<(T, bool, Instant)>,
    /// How many of `items` are counted.
    counted: usize,
    /// Workers asleep on `ready` and not yet woken.
    sleeping: usize,
    /// Wake-ups sent that no sleeper has taken yet (a sleeper that wakes
    /// takes one, or, woken spuriously, counts itself out of `sleeping`).
    notified: usize,
    /// Workers serving a counted item they took (until [`WorkQueue::finished`]).
    busy: usize,
    /// When a worker last finished a counted item (`None`: never).
    finished_at: Option<Instant>,
    /// Whether a worker is searching.
    searching: bool,
    /// Who may poll the event loop.
    lead: Lead,
    /// How many times the lead was taken: the watcher tells a leader that
    /// has polled since it last looked from one still in the same poll.
    turns: u64,
    /// Whether the leader is blocked in the poll, to be roused for an item.
    polling: bool,
    /// Whether the watcher waits with no timeout, to be woken when the
    /// lead is given back.
    watcher_parked: bool,
}

/// Who may poll the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    /// A thread has it: a request worker (`worker`), or the watcher.
    Held { worker: bool },
    /// Nobody has had it since then.
    Free(Instant),
    /// Nobody may take it: there is no loop, or it has stopped.
    Closed,
}

/// What [`WorkQueue::pop`] gives a worker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Popped<T> {
    /// The first item.
    Item(T),
    /// The lead: run a turn of the event loop, then
    /// [`release_lead`](WorkQueue::release_lead).
    Lead,
}

/// What [`WorkQueue::watch`] tells the watcher.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Watch {
    /// It has taken the lead: run a turn that does not block, then
    /// [`release_lead`](WorkQueue::release_lead).
    Lead,
    /// The lead is closed: the loop has stopped.
    Closed,
}

impl<T> Waiting<T> {
    /// Whether the first item has waited `wake_after` with a worker asleep,
    /// and fewer workers are busy than there are cores, or none of them has
    /// come back lately (more running would not help a server short of CPU
    /// whose workers are coming back).
    fn overdue(&self, now: Instant, wake_after: Duration, cores: usize) -> bool {
        self.sleeping > 0
            && (self.busy < cores || !self.coming_back(now, wake_after))
            && self
                .items
                .front()
                .is_some_and(|(_, _, at)| now.saturating_duration_since(*at) >= wake_after)
    }

    /// Whether a busy worker is likely to come back soon: one came back from
    /// a request within `wake_after`.
    fn coming_back(&self, now: Instant, wake_after: Duration) -> bool {
        self.busy > 0
            && self
                .finished_at
                .is_some_and(|at| now.saturating_duration_since(at) < wake_after)
    }

    /// A busy worker is done, at `now`, with what it took (an item or the
    /// lead).
    fn came_back(&mut self, now: Instant) {
        self.busy = self.busy.saturating_sub(1);
        self.finished_at = Some(now);
    }

    /// Counts a sleeper woken (by [`WorkQueue::wake_if`]).
    fn wake(&mut self) {
        self.sleeping -= 1;
        self.notified += 1;
    }

    /// Whether a counted item `by` just queued, at `now`, wakes a sleeper.
    fn wakes_for_request(
        &self,
        by: Pusher,
        now: Instant,
        wake_after: Duration,
        cores: usize,
    ) -> bool {
        self.sleeping > 0
            && match by {
                // A worker that leads takes the first request of its turn
                // itself, once it gives the lead back.
                Pusher::Loop
                    if self.lead == (Lead::Held { worker: true }) && self.items.len() == 1 =>
                {
                    false
                }
                // Nobody will look soon, or the first waits too long.
                Pusher::Loop => {
                    (!self.searching && !self.coming_back(now, wake_after))
                        || self.overdue(now, wake_after, cores)
                }
                Pusher::Other => !self.searching || self.items.len() > 1,
            }
    }
}

/// How long the searcher spins before it yields.
const SPIN: Duration = Duration::from_micros(2);
/// How long the searcher looks before it sleeps.
const SEARCH: Duration = Duration::from_micros(20);
/// The longest the lead stays free before the watcher acts, whatever
/// `wake_after` is: the loop's deadlines and accepts wait that long at most
/// while every worker is busy.
const LEAD_AFTER_MAX: Duration = Duration::from_millis(1);
/// How often the watcher looks while a worker leads and polls again and
/// again (a busy server): each look costs a wake-up, and a worker that
/// comes back takes a lead left free `lead_after / 2` first.
const HELD_LOOK: Duration = LEAD_AFTER_MAX;
/// The shortest wait between two looks of the watcher (with a `wake_after`
/// of zero, it would spin).
const WATCH_MIN: Duration = Duration::from_micros(50);

/// Who queues an item, which decides whether it may wait for a busy worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pusher {
    /// A turn of the event loop: every turn calls [`WorkQueue::spread`],
    /// and the watcher does while nobody leads.
    Loop,
    /// Any other thread: nothing would wake a worker for it later.
    Other,
}

impl<T> WorkQueue<T> {
    pub(crate) fn new(
        capacity: usize,
        wake_after: Duration,
        counters: Arc<Counters>,
    ) -> WorkQueue<T> {
        WorkQueue {
            state: Mutex::new(Waiting {
                items: VecDeque::new(),
                counted: 0,
                sleeping: 0,
                notified: 0,
                busy: 0,
                finished_at: None,
                searching: false,
                lead: Lead::Closed,
                turns: 0,
                polling: false,
                watcher_parked: false,
            }),
            ready: Condvar::new(),
            watching: Condvar::new(),
            len: AtomicUsize::new(0),
            lead_free: AtomicBool::new(false),
            rouse: Box::new(|| {}),
            capacity,
            wake_after,
            lead_after: wake_after.min(LEAD_AFTER_MAX),
            counters,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Hands out the lead of an event loop too (see the type's doc), free
    /// from now; `rouse` wakes a thread blocked in its poll.
    pub(crate) fn with_lead(mut self, rouse: impl Fn() + Send + Sync + 'static) -> WorkQueue<T> {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        state.lead = Lead::Free(Instant::now());
        self.lead_free.store(true, Ordering::SeqCst);
        self.rouse = Box::new(rouse);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Waiting<T>> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a counted item, unless `capacity` of them are queued already:
    /// then it comes back.
    pub(crate) fn push_counted(&self, item: T, by: Pusher, now: Instant) -> Result<(), T> {
        let mut state = self.lock();
        if state.counted >= self.capacity {
            return Err(item);
        }
        state.counted += 1;
        self.counters.request_queued(true);
        state.items.push_back((item, true, now));
        self.len.store(state.items.len(), Ordering::SeqCst);
        let wake = state.wakes_for_request(by, now, self.wake_after, self.cores);
        self.wake_if(state, wake, by == Pusher::Other);
        Ok(())
    }

    /// Queues an item that is never refused.
    pub(crate) fn push(&self, item: T) {
        let mut state = self.lock();
        state.items.push_back((item, false, Instant::now()));
        self.len.store(state.items.len(), Ordering::SeqCst);
        let wake = state.sleeping > 0 && (!state.searching || state.items.len() > 1);
        self.wake_if(state, wake, true);
    }

    /// Wakes a sleeper if `wake`: counted under the lock, so that no other
    /// thread wakes the same one, and notified once the lock is dropped.
    /// `or_poller`: if no worker is woken and none searches, the leader
    /// blocked in the poll is roused to take the item.
    fn wake_if(&self, mut state: MutexGuard<'_, Waiting<T>>, wake: bool, or_poller: bool) {
        if wake {
            state.wake();
        }
        let rouse = or_poller && !wake && !state.searching && state.polling;
        if rouse {
            state.polling = false;
        }
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        if rouse {
            (self.rouse)();
        }
    }

    /// Wakes a sleeping worker when the first item has waited `wake_after`;
    /// returns when to look again (`None`: nothing waits that a sleeper
    /// could take). Every turn of the event loop calls it, and the watcher
    /// while nobody leads.
    pub(crate) fn spread(&self, now: Instant) -> Option<Instant> {
        if self.len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let state = self.lock();
        let (next, wake) = self.spread_locked(&state, now);
        self.wake_if(state, wake, false);
        next
    }

    /// [`spread`](Self::spread), with the lock held: when to look again,
    /// and whether to wake a sleeper now (the caller does).
    fn spread_locked(&self, state: &Waiting<T>, now: Instant) -> (Option<Instant>, bool) {
        if state.sleeping == 0 {
            // Every worker is awake: one that comes back takes it.
            return (None, false);
        }
        let Some(&(_, _, at)) = state.items.front() else {
            return (None, false);
        };
        if state.overdue(now, self.wake_after, self.cores) {
            return (Some(now + self.wake_after), true);
        }
        // Not overdue: not old enough yet, or the busy workers are coming
        // back (then look again when the last one back is not recent).
        let next = match state.finished_at {
            Some(back) if state.coming_back(now, self.wake_after) => at.max(back),
            _ => at,
        };
        (Some(next + self.wake_after), false)
    }

    /// A worker is done, at `now`, with the counted item it took: it is no
    /// longer counted busy.
    pub(crate) fn finished(&self, now: Instant) {
        self.lock().came_back(now);
    }

    /// The first item, waiting for one, or, with none, the lead when it is
    /// free. A counted item makes the worker busy until it calls
    /// [`finished`](Self::finished); so does the lead, until
    /// [`release_lead`](Self::release_lead).
    pub(crate) fn pop(&self) -> Popped<T> {
        let mut state = self.lock();
        let mut searched = false;
        loop {
            if let Lead::Free(since) = state.lead {
                // Left free a while with items queued (the workers are busy
                // serving them): the loop's next turn comes first.
                if !state.items.is_empty() && since.elapsed() >= self.lead_after / 2 {
                    self.take_lead(&mut state, true);
                    return Popped::Lead;
                }
            }
            if let Some((item, counted, _)) = state.items.pop_front() {
                self.len.store(state.items.len(), Ordering::SeqCst);
                if counted {
                    state.counted -= 1;
                    state.busy += 1;
                    self.counters.request_queued(false);
                }
                // The next item has waited long enough: it is not left to
                // the busy workers. (The clock is read only if one waits.)
                let wake = state.sleeping > 0
                    && !state.items.is_empty()
                    && state.overdue(Instant::now(), self.wake_after, self.cores);
                self.wake_if(state, wake, false);
                return Popped::Item(item);
            }
            if let Lead::Free(_) = state.lead {
                self.take_lead(&mut state, true);
                return Popped::Lead;
            }
            if !state.searching && !searched {
                state.searching = true;
                searched = true;
                drop(state);
                let started = Instant::now();
                while self.len.load(Ordering::SeqCst) == 0
                    && !self.lead_free.load(Ordering::SeqCst)
                    && started.elapsed() < SEARCH
                {
                    if started.elapsed() < SPIN {
                        for _ in 0..16 {
                            std::hint::spin_loop();
                        }
                    } else {
                        std::thread::yield_now();
                    }
                }
                state = self.lock();
                state.searching = false;
                continue;
            }
            state.sleeping += 1;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            if state.notified > 0 {
                state.notified -= 1;
            } else {
                // Woken spuriously: still counted asleep.
                state.sleeping -= 1;
            }
            searched = false;
        }
    }

    fn take_lead(&self, state: &mut Waiting<T>, worker: bool) {
        state.lead = Lead::Held { worker };
        state.turns += 1;
        self.lead_free.store(false, Ordering::SeqCst);
        if worker {
            state.busy += 1;
        }
    }

    /// The leader is about to poll: whether it may block (nothing is
    /// queued; then an item queued that no worker takes rouses it). Ended
    /// by [`poll_ended`](Self::poll_ended).
    pub(crate) fn poll_begins(&self) -> bool {
        let mut state = self.lock();
        state.polling = state.items.is_empty();
        state.polling
    }

    /// The leader's poll has returned.
    pub(crate) fn poll_ended(&self) {
        self.lock().polling = false;
    }

    /// The thread that took the lead (a worker: `worker`) has run its turn,
    /// at `now`: the lead is free for the next.
    pub(crate) fn release_lead(&self, now: Instant, worker: bool) {
        let mut state = self.lock();
        if let Lead::Held { .. } = state.lead {
            state.lead = Lead::Free(now);
            self.lead_free.store(true, Ordering::SeqCst);
        }
        if worker {
            state.came_back(now);
        }
        let parked = std::mem::take(&mut state.watcher_parked);
        drop(state);
        if parked {
            self.watching.notify_one();
        }
    }

    /// Nobody takes the lead from now on (the turn under way ends); the
    /// watcher is told.
    pub(crate) fn close_lead(&self) {
        let mut state = self.lock();
        state.lead = Lead::Closed;
        self.lead_free.store(false, Ordering::SeqCst);
        drop(state);
        self.watching.notify_all();
    }

    /// The watcher's wait: returns once it has taken the lead, free for
    /// `lead_after` with no worker asleep to wake for it, or once the lead
    /// is closed. Meanwhile it wakes a sleeping worker for a lead free that
    /// long, and for a request that has waited `wake_after`
    /// ([`spread`](Self::spread)), and sleeps with no timeout while a
    /// leader is in the same poll as at its last look and nothing is
    /// queued (an idle server): giving the lead back wakes it.
    pub(crate) fn watch(&self) -> Watch {
        let mut state = self.lock();
        let mut seen = None;
        loop {
            let now = Instant::now();
            let lead_at = match state.lead {
                Lead::Closed => return Watch::Closed,
                Lead::Free(since) if now.saturating_duration_since(since) >= self.lead_after => {
                    if state.items.is_empty() && state.sleeping > 0 {
                        // Every worker awake is in a handler: a sleeper
                        // woken takes the lead (nothing else is queued).
                        state.wake();
                        self.ready.notify_one();
                    } else if state.notified == 0 || !state.items.is_empty() {
                        // Every worker is busy (with the items queued, or in
                        // handlers), and none is on its way: a turn that
                        // does not block, here.
                        self.take_lead(&mut state, false);
                        return Watch::Lead;
                    }
                    Some(now + self.lead_after)
                }
                Lead::Free(since) => Some(since + self.lead_after),
                Lead::Held { .. } if seen == Some(state.turns) && state.items.is_empty() => None,
                Lead::Held { .. } => {
                    // Only to see the lead given back: a worker that comes
                    // back takes it, so the watcher looks seldom.
                    seen = Some(state.turns);
                    Some(now + HELD_LOOK)
                }
            };
            let (spread_at, wake) = self.spread_locked(&state, now);
            if wake {
                state.wake();
                self.ready.notify_one();
            }
            let next = match (spread_at, lead_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = next.map(|at| at.max(now + WATCH_MIN));
            state.watcher_parked = next.is_none();
            state = match next {
                None => self.watching.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    let waited = self.watching.wait_timeout(state, wait);
                    waited.unwrap_or_else(|e| e.into_inner()).0
                }
            };
            state.watcher_parked = false;
        }
    }

    /// Takes every item queued, without waiting.
    pub(crate) fn take_all(&self) -> Vec<T> {
        let mut state = self.lock();
        for _ in 0..std::mem::take(&mut state.counted) {
            self.counters.request_queued(false);
        }
        self.len.store(0, Ordering::SeqCst);
        std::mem::take(&mut state.items)
            .into_iter()
            .map(|(item, _, _)| item)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Lead, Popped, Pusher, Watch, WorkQueue};
    use crate::stats::Counters;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// A queue with a lead, and how many times it roused the poller.
    fn with_lead(wake_after: Duration) -> (Arc<WorkQueue<u32>>, Arc<AtomicUsize>) {
        let roused = Arc::new(AtomicUsize::new(0));
        let count = roused.clone();
        let queue = WorkQueue::new(8, wake_after, Arc::default()).with_lead(move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        (Arc::new(queue), roused)
    }

    /// Waits until `done` holds of the queue's state (30 s at most).
    fn wait_until(queue: &WorkQueue<u32>, what: &str, done: impl Fn(&super::Waiting<u32>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&queue.lock()) {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_worker_with_nothing_queued_takes_the_lead_and_serves_its_turns_first_request() {
        let (queue, roused) = with_lead(Duration::from_secs(3600));
        // Items before the lead: what was read is served first.
        queue.push(1);
        assert_eq!(queue.pop(), Popped::Item(1));
        assert_eq!(queue.pop(), Popped::Lead);
        assert_eq!(queue.lock().lead, Lead::Held { worker: true });
        assert_eq!(queue.lock().busy, 1, "a leader counts as busy");
        // Its turn's first request wakes no sleeper: it takes it itself.
        let now = Instant::now();
        queue.lock().sleeping = 1;
        queue.push_counted(2, Pusher::Loop, now).unwrap();
        assert_eq!(queue.lock().sleeping, 1, "nobody woken for the first");
        queue.lock().sleeping = 0;
        queue.release_lead(now, true);
        let state = queue.lock();
        assert_eq!(state.lead, Lead::Free(now));
        assert_eq!((state.busy, state.finished_at), (0, Some(now)));
        drop(state);
        assert_eq!(queue.pop(), Popped::Item(2));
        assert_eq!(roused.load(Ordering::SeqCst), 0);
        // A queue without a lead never hands it out.
        let plain = WorkQueue::<u32>::new(8, Duration::ZERO, Arc::default());
        assert_eq!(plain.lock().lead, Lead::Closed);
    }

    #[test]
    fn a_lead_left_free_while_workers_serve_what_is_queued_is_taken_before_the_items() {
        let (queue, _) = with_lead(Duration::from_secs(3600));
        let lead_after = queue.lead_after;
        assert_eq!(lead_after, super::LEAD_AFTER_MAX, "capped");
        assert_eq!(queue.pop(), Popped::Lead);
        queue.push(1);
        // Given back just now (a time to come: never overdue here): the
        // worker coming back serves what is queued.
        queue.release_lead(Instant::now() + Duration::from_secs(3600), true);
        assert_eq!(queue.pop(), Popped::Item(1));
        // Given back `lead_after / 2` ago, with items queued: the loop's
        // next turn comes first.
        queue.push(2);
        queue.lock().lead = Lead::Free(Instant::now() - lead_after / 2);
        assert_eq!(queue.pop(), Popped::Lead);
        // Left free `lead_after` with items queued and a worker asleep: the
        // watcher runs a turn itself (the sleeper would take an item).
        queue.release_lead(Instant::now() - lead_after, true);
        queue.lock().sleeping = 1;
        assert_eq!(queue.watch(), Watch::Lead);
        let state = queue.lock();
        assert_eq!(state.lead, Lead::Held { worker: false });
        assert_eq!((state.sleeping, state.notified), (1, 0), "nobody woken");
    }

    #[test]
    fn a_leader_blocked_in_the_poll_is_roused_for_an_item_no_worker_takes() {
        let (queue, roused) = with_lead(Duration::from_secs(3600));
        assert_eq!(queue.pop(), Popped::Lead);
        assert!(queue.poll_begins(), "nothing queued: it may block");
        // A sleeper takes the first item; nobody takes the second but the
        // leader.
        queue.lock().sleeping = 1;
        queue.push(1);
        assert_eq!(roused.load(Ordering::SeqCst), 0, "a sleeper was woken");
        queue.push(2);
        assert_eq!(roused.load(Ordering::SeqCst), 1);
        assert!(!queue.lock().polling, "roused once");
        queue.push(3);
        assert_eq!(roused.load(Ordering::SeqCst), 1);
        queue.poll_ended();
        assert!(!queue.poll_begins(), "items queued: it only looks");
    }

    #[test]
    fn the_watcher_wakes_a_sleeper_for_a_free_lead_or_runs_a_turn_when_every_worker_is_busy() {
        let (queue, _) = with_lead(Duration::from_millis(1));
        assert_eq!(queue.pop(), Popped::Lead);
        let watcher = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.watch())
        };
        // A leader in the same poll, nothing queued: an idle server, for
        // which the watcher sleeps with no timeout.
        wait_until(&queue, "the watcher parks", |state| state.watcher_parked);
        // A worker goes to sleep; the lead is given back and nobody takes
        // it: the watcher, woken, wakes the sleeper for it.
        let worker = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.pop())
        };
        wait_until(&queue, "the worker sleeps", |state| state.sleeping == 1);
        queue.release_lead(Instant::now(), true);
        assert_eq!(worker.join().unwrap(), Popped::Lead);
        // That worker is busy now, and none sleeps: once the lead is given
        // back and left free, the watcher takes it itself.
        queue.release_lead(Instant::now(), true);
        assert_eq!(watcher.join().unwrap(), Watch::Lead);
        assert_eq!(queue.lock().lead, Lead::Held { worker: false });
        queue.release_lead(Instant::now(), false);
        assert_eq!(queue.lock().busy, 0, "the watcher is no worker");
        queue.close_lead();
        assert_eq!(queue.watch(), Watch::Closed);
        assert!(!queue.lead_free.load(Ordering::SeqCst), "nobody takes it");
    }

    #[test]
    fn a_burst_pushed_while_a_worker_searches_reaches_every_sleeping_worker() {
        const WORKERS: usize = 4;
        let queue = Arc::new(WorkQueue::new(64, Duration::ZERO, Arc::default()));
        // How many items were taken, and whether the workers may finish:
        // each holds its item (a slow handler) until all are taken.
        let taken = Arc::new((Mutex::new(0), Condvar::new()));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (queue, taken) = (queue.clone(), taken.clone());
                std::thread::spawn(move || {
                    let _item: Popped<u32> = queue.pop();
                    let (count, changed) = &*taken;
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    changed.notify_all();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while *count < WORKERS && Instant::now() < deadline {
                        count = changed
                            .wait_timeout(count, Duration::from_secs(1))
                            .unwrap()
                            .0;
                    }
                })
            })
            .collect();
        // Every worker asleep (each searches first, one at a time)...
        let deadline = Instant::now() + Duration::from_secs(30);
        while queue.lock().sleeping < WORKERS {
            assert!(Instant::now() < deadline, "the workers never slept");
            std::thread::yield_now();
        }
        // ...and one more searching (this thread, standing in for a worker):
        // it will take one item of the burst, at most, once it stops.
        queue.lock().searching = true;
        for item in 0..=WORKERS as u32 {
            queue.push(item);
        }
        let (count, changed) = &*taken;
        let count = changed
            .wait_timeout_while(count.lock().unwrap(), Duration::from_secs(30), |n| {
                *n < WORKERS
            })
            .unwrap()
            .0;
        assert_eq!(*count, WORKERS, "items left waiting while workers sleep");
        drop(count);
        let mut state = queue.lock();
        state.searching = false;
        assert_eq!(state.items.len(), 1, "what is left for the searcher");
        drop(state);
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn counted_items_are_bounded_and_reported_the_others_never_refused() {
        let counters = Arc::new(Counters::default());
        let queue = WorkQueue::new(2, Duration::ZERO, counters.clone());
        let now = Instant::now();
        assert_eq!(queue.push_counted(1, Pusher::Loop, now), Ok(()));
        assert_eq!(queue.push_counted(2, Pusher::Other, now), Ok(()));
        assert_eq!(
            queue.push_counted(3, Pusher::Loop, now),
            Err(3),
            "over the capacity"
        );
        queue.push(4);
        assert_eq!(counters.snapshot().requests_queued, 2);
        assert_eq!(queue.pop(), Popped::Item(1));
        assert_eq!(counters.snapshot().requests_queued, 1);
        assert_eq!(
            queue.push_counted(5, Pusher::Loop, now),
            Ok(()),
            "room again"
        );
        assert_eq!(queue.take_all(), [2, 4, 5]);
        assert_eq!(counters.snapshot().requests_queued, 0);
    }

    #[test]
    fn a_request_waits_for_busy_workers_only_while_they_come_back_and_wake_after_at_most() {
        const WAKE_AFTER: Duration = Duration::from_millis(1);
        let mut queue = WorkQueue::new(8, WAKE_AFTER, Arc::default());
        queue.cores = 2;
        let t0 = Instant::now();
        let wakes = |by, at| queue.lock().wakes_for_request(by, at, WAKE_AFTER, 2);
        queue.push_counted(1, Pusher::Loop, t0).unwrap();
        // Nobody asleep: nobody to wake, and nothing for `spread` to do.
        assert!(!wakes(Pusher::Loop, t0));
        assert_eq!(queue.spread(t0 + WAKE_AFTER), None);
        // Every worker asleep: the request wakes one at once.
        queue.lock().sleeping = 2;
        assert!(
            wakes(Pusher::Loop, t0),
            "a request with every worker asleep"
        );
        // One searching: it takes the request; one pushed by a worker that
        // is the only item waits for it too, a second wakes a sleeper.
        queue.lock().searching = true;
        assert!(!wakes(Pusher::Loop, t0));
        assert!(!wakes(Pusher::Other, t0));
        queue.push_counted(2, Pusher::Other, t0).unwrap();
        assert!(wakes(Pusher::Other, t0), "two items, one searcher");
        // One busy, none searching, none back from a request lately: the
        // busy one may be in a slow handler.
        let mut state = queue.lock();
        (state.searching, state.busy) = (false, 1);
        drop(state);
        assert!(wakes(Pusher::Loop, t0), "none has come back lately");
        queue.lock().finished_at = Some(t0 - WAKE_AFTER);
        assert!(wakes(Pusher::Loop, t0), "none has come back lately");
        // One came back lately: the loop's requests wait for a busy one...
        queue.lock().finished_at = Some(t0);
        assert!(!wakes(Pusher::Loop, t0), "a busy worker comes back for it");
        assert!(wakes(Pusher::Other, t0), "nothing would wake one later");
        // ...until the first has waited WAKE_AFTER: `spread` tells the loop
        // when to look, and wakes a sleeper then.
        assert_eq!(queue.spread(t0), Some(t0 + WAKE_AFTER));
        assert!(wakes(Pusher::Loop, t0 + WAKE_AFTER));
        let later = t0 + 2 * WAKE_AFTER;
        assert_eq!(queue.spread(later), Some(later + WAKE_AFTER), "woken");
        let mut state = queue.lock();
        // Each wake-up counted once (the second push's and this one), until
        // a sleeper takes it.
        assert_eq!((state.sleeping, state.notified), (0, 2));
        // As many busy as cores, coming back: a server short of CPU, which
        // more workers would not help: no wake-up however long it waits...
        (state.sleeping, state.notified) = (1, 0);
        (state.busy, state.finished_at) = (2, Some(later));
        drop(state);
        assert!(!wakes(Pusher::Loop, later + WAKE_AFTER / 2));
        assert_eq!(
            queue.spread(later),
            Some(later + WAKE_AFTER),
            "not woken: looked at again when the last one back is not recent"
        );
        // ...unless none has come back for WAKE_AFTER: they may be stuck.
        assert!(wakes(Pusher::Loop, later + WAKE_AFTER));
        queue.lock().busy = 1;
        // A worker that takes a request is busy until it is finished with it.
        queue.lock().sleeping = 0;
        assert_eq!(queue.pop(), Popped::Item(1));
        assert_eq!(queue.lock().busy, 2);
        queue.finished(Instant::now());
        queue.finished(Instant::now());
        let state = queue.lock();
        assert_eq!(state.busy, 0);
        assert!(state.finished_at.is_some_and(|at| at >= t0));
    }
}
