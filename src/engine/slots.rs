//! The connection table: one slot per open connection, indexed by its
//! `mio` token, over the connection type `C` (this file knows nothing of
//! connections but that they are boxed). A connection lives in its slot while the event loop waits on
//! it, and is taken out while a request worker serves it; the worker puts it
//! back and re-arms it itself, so a kept-alive connection needs no message to
//! the loop.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Slots are allocated in chunks of this many, when first needed: an empty
/// server holds none.
const CHUNK: usize = 1024;

/// What a slot holds.
pub(super) enum Slot<C> {
    Vacant,
    /// Waiting on the event loop.
    Here(Box<C>),
    /// With a request worker (or in the queue to one): its generation, and
    /// when the loop's live timer entry for it fires (`None`: it has fired,
    /// and the worker that puts the connection back asks for a new one).
    Away {
        generation: u64,
        timer_at: Option<Instant>,
        /// Whether the loop had an event for it meanwhile: the worker that
        /// puts it back must then register it again, for the event's
        /// readiness to be reported (edge-triggered, it would not be).
        ready: bool,
    },
}

/// [`CHUNK`] slots.
type Chunk<C> = Box<[Mutex<Slot<C>>]>;

/// Every slot, and which are free.
pub(super) struct Slots<C> {
    chunks: Box<[OnceLock<Chunk<C>>]>,
    free: Mutex<Free>,
}

#[derive(Default)]
struct Free {
    released: Vec<usize>,
    /// Slots from here on have never been used.
    unused: usize,
}

impl<C> Slots<C> {
    /// Room for `capacity` connections at once.
    pub(super) fn new(capacity: usize) -> Slots<C> {
        let chunks = capacity.div_ceil(CHUNK).max(1);
        Slots {
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            free: Mutex::default(),
        }
    }

    /// A free slot, if any is left.
    pub(super) fn allocate(&self) -> Option<usize> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = free.released.pop() {
            return Some(slot);
        }
        let slot = free.unused;
        let chunk = self.chunks.get(slot / CHUNK)?;
        chunk.get_or_init(|| (0..CHUNK).map(|_| Mutex::new(Slot::Vacant)).collect());
        free.unused += 1;
        Some(slot)
    }

    /// Makes `slot` free again: its connection has been dropped.
    pub(super) fn release(&self, slot: usize) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.released.push(slot);
    }

    /// The slot at `index`, locked; `None` for one never allocated.
    pub(super) fn lock(&self, index: usize) -> Option<MutexGuard<'_, Slot<C>>> {
        let chunk = self.chunks.get(index / CHUNK)?.get()?;
        Some(
            chunk[index % CHUNK]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Empties every slot whose connection waits on the loop (closing it).
    pub(super) fn clear(&self) {
        for chunk in self.chunks.iter().filter_map(OnceLock::get) {
            for slot in chunk.iter() {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(*slot, Slot::Here(_)) {
                    *slot = Slot::Vacant;
                }
            }
        }
    }
}
