//! Unique jobs in-process: which job holds each uniqueness key, from its
//! enqueue until it ends (done, dead, discarded or cancelled). Over Redis,
//! the same rule is kept by keys in Redis (`redis/unique.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The keys held, each by the id of the job holding it.
#[derive(Default)]
pub(crate) struct Uniques {
    held: Mutex<HashMap<String, Arc<str>>>,
}

impl Uniques {
    /// Claims `key` for job `id`: `None` when it was free (it is now
    /// `id`'s), or the id of the job holding it.
    pub(crate) fn claim(&self, key: &str, id: &Arc<str>) -> Option<Arc<str>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(holder) = held.get(key) {
            return Some(holder.clone());
        }
        held.insert(key.to_owned(), id.clone());
        None
    }

    /// Releases `key` if job `id` holds it (a job that ended).
    pub(crate) fn release(&self, key: &str, id: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.get(key).is_some_and(|holder| &**holder == id) {
            held.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_by_one_job_until_that_job_releases_it() {
        let uniques = Uniques::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert_eq!(uniques.claim("k", &a), None);
        assert_eq!(uniques.claim("k", &b).as_deref(), Some("a"));
        uniques.release("k", "b"); // not its holder: nothing changes
        assert_eq!(uniques.claim("k", &b).as_deref(), Some("a"));
        uniques.release("k", "a");
        assert_eq!(uniques.claim("k", &b), None);
    }
}
