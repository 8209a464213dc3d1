//! The request workers' queue, over whatever it carries (the engine's
//! `Incoming`: connections with a whole request, what runs after a response,
//! wake-ups). It knows nothing of connections: some items are *counted*
//! (bounded, and reported in `requests_queued`), the others never refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::stats::Counters;

/// A queue that request workers take items from. A worker that finds it
/// empty looks again before it sleeps, but only one at a time (the
/// "searcher"): it spins for [`SPIN`], then yields the core until [`SEARCH`]
/// has passed. The first item pushed while one searches wakes nobody, any
/// more do, and a worker that takes an item with more behind it wakes a
/// sleeper too, so that a burst is spread over the workers. Sleeping is a
/// condition variable.
///
/// Why: with a crossbeam channel every idle worker spun and yielded before
/// it slept (a quarter of the server's context switches were those yields);
/// with no search at all, every request woke a sleeping worker; a searcher
/// that only spun took a core the event loop and clients needed (p99 at two
/// connections, 0.12 to 3 ms). Measurements: BENCHMARKS.md.
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
    /// Where counted items are reported (`requests_queued`).
    counters: Arc<Counters>,
}

struct Waiting<T> {
    /// Each item, and whether it is counted.
    items: VecDeque<(T, bool)>,
    /// How many of `items` are counted.
    counted: usize,
    /// Workers asleep on `ready`.
    sleeping: usize,
    /// Whether a worker is searching.
    searching: bool,
}

/// How long the searcher spins before it yields.
const SPIN: Duration = Duration::from_micros(2);
/// How long the searcher looks before it sleeps.
const SEARCH: Duration = Duration::from_micros(20);

impl<T> WorkQueue<T> {
    pub(crate) fn new(capacity: usize, counters: Arc<Counters>) -> WorkQueue<T> {
        WorkQueue {
            state: Mutex::new(Waiting {
                items: VecDeque::new(),
                counted: 0,
                sleeping: 0,
                searching: false,
            }),
            ready: Condvar::new(),
            len: AtomicUsize::new(0),
            capacity,
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting<T>> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a counted item, unless `capacity` of them are queued already:
    /// then it comes back.
    pub(crate) fn push_counted(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.counted >= self.capacity {
            return Err(item);
        }
        state.counted += 1;
        self.counters.request_queued(true);
        self.push_locked(state, item, true);
        Ok(())
    }

    /// Queues an item that is never refused.
    pub(crate) fn push(&self, item: T) {
        let state = self.lock();
        self.push_locked(state, item, false);
    }

    fn push_locked(&self, mut state: MutexGuard<'_, Waiting<T>>, item: T, counted: bool) {
        state.items.push_back((item, counted));
        self.len.store(state.items.len(), Ordering::SeqCst);
        let wake = state.sleeping > 0 && (!state.searching || state.items.len() > 1);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// The first item, waiting for one.
    pub(crate) fn pop(&self) -> T {
        let mut state = self.lock();
        let mut searched = false;
        loop {
            if let Some((item, counted)) = state.items.pop_front() {
                self.len.store(state.items.len(), Ordering::SeqCst);
                if counted {
                    state.counted -= 1;
                    self.counters.request_queued(false);
                }
                let wake = !state.items.is_empty() && state.sleeping > 0;
                drop(state);
                if wake {
                    self.ready.notify_one();
                }
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
            state.sleeping -= 1;
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
            .map(|(item, _)| item)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::WorkQueue;
    use crate::stats::Counters;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_pushed_while_a_worker_searches_reaches_every_sleeping_worker() {
        const WORKERS: usize = 4;
        let queue = Arc::new(WorkQueue::new(64, Arc::default()));
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
        let queue = WorkQueue::new(2, counters.clone());
        assert_eq!(queue.push_counted(1), Ok(()));
        assert_eq!(queue.push_counted(2), Ok(()));
        assert_eq!(queue.push_counted(3), Err(3), "over the capacity");
        queue.push(4);
        assert_eq!(counters.snapshot().requests_queued, 2);
        assert_eq!(queue.pop(), 1);
        assert_eq!(counters.snapshot().requests_queued, 1);
        assert_eq!(queue.push_counted(5), Ok(()), "room again");
        assert_eq!(queue.take_all(), [2, 4, 5]);
        assert_eq!(counters.snapshot().requests_queued, 0);
    }
}
