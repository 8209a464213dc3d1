//! The request workers' queue, over whatever it carries (the engine's
//! `Incoming`: connections with a whole request, what runs after a response,
//! wake-ups). It knows nothing of connections: some items are *counted*
//! (bounded, and reported in `requests_queued`), the others never refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
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
pub(crate) struct WorkQueue<T> {
    state: Mutex<Waiting<T>>,
    ready: Condvar,
    /// `state.items.len()`, for the searcher to watch without the lock.
    len: AtomicUsize,
    /// The most counted items it holds.
    capacity: usize,
    /// How long a counted item waits for a busy worker before a sleeping
    /// one is woken for it.
    wake_after: Duration,
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

/// Who queues an item, which decides whether it may wait for a busy worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pusher {
    /// The event loop, which calls [`WorkQueue::spread`] at every turn.
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
            }),
            ready: Condvar::new(),
            len: AtomicUsize::new(0),
            capacity,
            wake_after,
            counters,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
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
        self.wake_if(state, wake);
        Ok(())
    }

    /// Queues an item that is never refused.
    pub(crate) fn push(&self, item: T) {
        let mut state = self.lock();
        state.items.push_back((item, false, Instant::now()));
        self.len.store(state.items.len(), Ordering::SeqCst);
        let wake = state.sleeping > 0 && (!state.searching || state.items.len() > 1);
        self.wake_if(state, wake);
    }

    /// Wakes a sleeper if `wake`: counted under the lock, so that no other
    /// thread wakes the same one, and notified once the lock is dropped.
    fn wake_if(&self, mut state: MutexGuard<'_, Waiting<T>>, wake: bool) {
        if wake {
            state.wake();
        }
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Wakes a sleeping worker when the first item has waited `wake_after`;
    /// returns when to look again (`None`: nothing waits that a sleeper
    /// could take). The event loop calls it at every turn.
    pub(crate) fn spread(&self, now: Instant) -> Option<Instant> {
        if self.len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let state = self.lock();
        if state.sleeping == 0 {
            // Every worker is awake: one that comes back takes it.
            return None;
        }
        let (_, _, at) = state.items.front()?;
        let at = *at;
        if state.overdue(now, self.wake_after, self.cores) {
            self.wake_if(state, true);
            return Some(now + self.wake_after);
        }
        // Not overdue: not old enough yet, or the busy workers are coming
        // back (then look again when the last one back is not recent).
        let next = match state.finished_at {
            Some(back) if state.coming_back(now, self.wake_after) => at.max(back),
            _ => at,
        };
        Some(next + self.wake_after)
    }

    /// A worker is done, at `now`, with the counted item it took: it is no
    /// longer counted busy.
    pub(crate) fn finished(&self, now: Instant) {
        let mut state = self.lock();
        state.busy = state.busy.saturating_sub(1);
        state.finished_at = Some(now);
    }

    /// The first item, waiting for one. A counted item makes the worker
    /// busy until it calls [`finished`](Self::finished).
    pub(crate) fn pop(&self) -> T {
        let mut state = self.lock();
        let mut searched = false;
        loop {
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
                self.wake_if(state, wake);
                return item;
            }
            if !state.searching && !searched {
                state.searching = true;
                searched = true;
                drop(state);
                let started = Instant::now();
                while self.len.load(Ordering::SeqCst) == 0 && started.elapsed() < SEARCH {
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
    use super::{Pusher, WorkQueue};
    use crate::stats::Counters;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

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
                    let _item: u32 = queue.pop();
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
        assert_eq!(queue.pop(), 1);
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
        assert_eq!(queue.pop(), 1);
        assert_eq!(queue.lock().busy, 2);
        queue.finished(Instant::now());
        queue.finished(Instant::now());
        let state = queue.lock();
        assert_eq!(state.busy, 0);
        assert!(state.finished_at.is_some_and(|at| at >= t0));
    }
}
