//! The accounting of the failover tests: durable enqueues sent until
//! enough are acknowledged, then every acknowledged job waited for.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use afterward::testing::TestServer;

use super::{runs, TEST_TIMEOUT};

/// POSTs `path(i)` (a durable enqueue) until `total` are acknowledged
/// (`202`), asking again after a refusal (`503`: no primary, or none with
/// a replica, for now); `before(acknowledged so far)` runs before each.
/// The ids acknowledged, and how many were refused.
pub fn acknowledge(
    server: &TestServer,
    total: usize,
    path: impl Fn(usize) -> String,
    mut before: impl FnMut(usize),
) -> (Vec<String>, usize) {
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let deadline = Instant::now() + TEST_TIMEOUT * 2;
    let mut i = 0;
    while acknowledged.len() < total {
        before(acknowledged.len());
        let response = server.post(&path(i)).send();
        i += 1;
        match response.status() {
            202 => acknowledged.push(response.json()["id"].as_str().unwrap().to_owned()),
            503 => refused += 1,
            other => panic!("{other}: {}", response.text()),
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged",
            acknowledged.len()
        );
    }
    (acknowledged, refused)
}

/// Waits until every job of `ids` has run (recorded under `key`, the line
/// ending with its id): none lost. How many ran once, twice…
pub fn every_one_runs(key: &str, ids: &[String]) -> HashMap<usize, usize> {
    let ran = |id: &String| {
        runs(key)
            .iter()
            .filter(|r| r.ends_with(id.as_str()))
            .count()
    };
    let started = Instant::now();
    while ids.iter().any(|id| ran(id) == 0) {
        assert!(
            started.elapsed() < TEST_TIMEOUT * 2,
            "lost: {:?}",
            ids.iter().filter(|id| ran(id) == 0).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for id in ids {
        *counts.entry(ran(id)).or_default() += 1;
    }
    counts
}
