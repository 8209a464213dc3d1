//! The jobs a consumer holds: handed out to its runners and not yet
//! recorded, with their queues' lanes, by stream entry. The fetching thread
//! hands out what it fetches, so that the runners start a batch while the
//! I/O thread still records the last one; the I/O thread hands out what it
//! reclaims (or fetches itself), removes a job once recorded or returned
//! unrun, renews what is held and counts it.
//!
//! Architecture invariant: a job is held before any runner can take it
//! ([`Held::hand_out`] adds it, then gives it to the runners), so a result
//! never comes for a job that is not held; one the runners refuse (the stop
//! has begun) is not held, and is returned to be counted.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::backend::Delivery;
use super::ready::Ready;
use super::stats::Shared;

#[derive(Default)]
pub(super) struct Held {
    jobs: Mutex<HashMap<String, usize>>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // No user code runs under this lock.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Gives `deliveries` to the runners (through `ready`), held from
    /// before any runner can take one; returns those refused (the stop has
    /// begun), which are not held.
    pub(super) fn hand_out(
        &self,
        deliveries: Vec<Delivery>,
        ready: &Ready,
        shared: &Shared,
    ) -> Vec<Delivery> {
        let mut jobs = self.lock();
        for delivery in &deliveries {
            jobs.insert(delivery.entry.clone(), delivery.lane);
        }
        drop(jobs);
        let refused = ready.push(deliveries);
        let mut jobs = self.lock();
        for delivery in &refused {
            jobs.remove(&delivery.entry);
        }
        let in_flight = jobs.len() as u64;
        drop(jobs);
        shared.update(|s| s.in_flight = in_flight);
        refused
    }

    /// No longer held (recorded, or returned unrun).
    pub(super) fn remove<'a>(&self, entries: impl IntoIterator<Item = &'a str>) {
        let mut jobs = self.lock();
        for entry in entries {
            jobs.remove(entry);
        }
    }

    /// The jobs held: (lane, entry) each.
    pub(super) fn entries(&self) -> Vec<(usize, String)> {
        self.lock()
            .iter()
            .map(|(entry, lane)| (*lane, entry.clone()))
            .collect()
    }
}
