//! A periodic job for the schedule tests: [`Tick`] records its tick's time
//! in the app's [`Seen`], which a test waits on.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use afterward::testing::TEST_TIMEOUT;
use afterward::{Job, JobContext, JobResult};
use serde::{Deserialize, Serialize};

/// The ticks run, in the order they ran.
#[derive(Default)]
pub struct Seen {
    ticks: Mutex<Vec<u64>>,
    /// When each ran, in Unix ms.
    ran_at: Mutex<Vec<u64>>,
    changed: Condvar,
}

impl Seen {
    /// Waits until `condition` holds for the ticks run.
    pub fn wait_until(&self, condition: impl Fn(&[u64]) -> bool) -> MutexGuard<'_, Vec<u64>> {
        let (ticks, waited) = self
            .changed
            .wait_timeout_while(self.ticks.lock().unwrap(), TEST_TIMEOUT, |t| !condition(t))
            .unwrap();
        assert!(!waited.timed_out(), "never happened: {:?}", *ticks);
        ticks
    }

    pub fn ran_at(&self) -> Vec<u64> {
        self.ran_at.lock().unwrap().clone()
    }

    pub fn ticks(&self) -> Vec<u64> {
        self.ticks.lock().unwrap().clone()
    }
}

/// One tick's job.
#[derive(Serialize, Deserialize, Clone)]
pub struct Tick {
    pub at: u64,
}

impl Job for Tick {
    const NAME: &'static str = "tick";
    fn run(self, job: &JobContext) -> JobResult {
        let seen = job.state::<Arc<Seen>>().expect("the ticks seen");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        seen.ran_at.lock().unwrap().push(now);
        seen.ticks.lock().unwrap().push(self.at);
        seen.changed.notify_all();
        Ok(())
    }
}

/// Asserts `ticks` are distinct multiples of `every_ms`, each once; returns
/// them sorted.
pub fn each_once(ticks: &[u64], every_ms: u64) -> Vec<u64> {
    let mut sorted = ticks.to_vec();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "tick {} enqueued twice: {sorted:?}",
            pair[0]
        );
    }
    assert!(sorted.iter().all(|t| t % every_ms == 0), "{sorted:?}");
    sorted
}
