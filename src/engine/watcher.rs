//! The watcher (`afterward-io`): the one thread that is not a request
//! worker. While a worker leads, it sleeps; while the lead is free and
//! every worker is busy (in a slow handler, say), it runs the event loop's
//! turns itself, without blocking, each `worker_wake_after` (1 ms at most:
//! `LEAD_AFTER_MAX`; see `WorkQueue` for when it looks), so that
//! connections are still accepted, read, refused at their limits and
//! closed at their deadlines. Once the engine stops, it closes every
//! connection the loop holds.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::conn::Shared;
use super::event_loop::EventLoop;
use super::queue::Watch;

/// Runs until the lead is closed (the engine stops).
pub(super) fn watch(shared: &Shared, event_loop: &Arc<Mutex<EventLoop>>) {
    while shared.queue.watch() == Watch::Lead {
        lock(event_loop).turn(false);
        shared.queue.release_lead(Instant::now(), false);
    }
    // After any turn under way: the lock is the loop's.
    lock(event_loop).close_all();
}

/// The event loop, for the thread that has the lead. Nothing panics while
/// holding it (a turn only reads, writes and queues).
pub(super) fn lock(event_loop: &Mutex<EventLoop>) -> MutexGuard<'_, EventLoop> {
    event_loop.lock().unwrap_or_else(|e| e.into_inner())
}
