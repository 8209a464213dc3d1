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
//! has begun) is not held, and is returned to be counted. The `in_flight`
//! gauge is written under this map's lock, by whichever thread changed it
//! last, so it never keeps an older count than the map's.
//! Lock order: this map, then the counters (`Shared`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::backend::Delivery;
use super::ready::Ready;
use super::stats::{Shared, WorkerStats};

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

    /// Writes how many jobs are held to `shared`'s `in_flight`, then
    /// `more` (other counters changed with it).
    pub(super) fn publish(&self, shared: &Shared, more: impl FnOnce(&mut WorkerStats)) {
        let jobs = self.lock();
        shared.update(|s| {
            s.in_flight = jobs.len() as u64;
            more(s);
        });
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
        if refused.is_empty() {
            self.publish(shared, |_| {});
        } else {
            // The stop has begun: the I/O thread owns the gauge from now on.
            self.remove(refused.iter().map(|d| d.entry.as_str()));
        }
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
