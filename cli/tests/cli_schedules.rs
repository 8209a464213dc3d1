//! The binary's periodic job (`--heartbeat SPEC`), in-process: one line per
//! tick in the log file; a server paused (SIGSTOP) and resumed fires no
//! burst of the ticks it slept through; a bad spec is a usage error.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::cli::{run, Afterward};
use support::TEST_TIMEOUT;

/// The ticks of the `heartbeat TICK` lines in `server`'s log file.
fn heartbeats(server: &Afterward) -> Vec<u64> {
    std::fs::read_to_string(server.log_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix("heartbeat ")?.parse().ok())
        .collect()
}

/// Waits until the log has at least `n` heartbeats.
fn wait_for_heartbeats(server: &Afterward, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let ticks = heartbeats(server);
        if ticks.len() >= n {
            return ticks;
        }
        assert!(
            Instant::now() < deadline,
            "{} heartbeats of {n}",
            ticks.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_server_paused_and_resumed_fires_no_burst() {
    let server = Afterward::start(&["--heartbeat", "100ms"]);
    wait_for_heartbeats(&server, 3);
    server.signal("STOP");
    let stopped_at = now_ms();
    // The scenario: ten ticks pass while the process cannot run.
    std::thread::sleep(Duration::from_millis(1000));
    let resumed_at = now_ms();
    server.signal("CONT");
    let before = heartbeats(&server).len();
    let ticks = wait_for_heartbeats(&server, before + 3);
    let mut sorted = ticks.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ticks.len(), "a tick twice: {ticks:?}");
    assert!(ticks.iter().all(|t| t % 100 == 0), "{ticks:?}");
    // Of the ticks slept through, at most one fired (late, at resume).
    let slept = ticks
        .iter()
        .filter(|t| **t > stopped_at + 100 && **t < resumed_at)
        .count();
    assert!(slept <= 1, "a burst of {slept}: {ticks:?}");
    let missed = server
        .get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("afterward_schedule_missed_total{schedule=\"heartbeat\"} "))
        .map(|v| v.parse::<f64>().unwrap())
        .unwrap();
    assert!(missed >= 8.0, "{missed} missed");
}

#[test]
fn a_bad_heartbeat_is_a_usage_error_naming_the_flag() {
    let (status, _, err) = run(&["--heartbeat", "61 * * * *"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--heartbeat") && err.contains("invalid minute field"),
        "{err}"
    );
    let (status, _, err) = run(&[], &[("AFTERWARD_HEARTBEAT", "soon")]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("AFTERWARD_HEARTBEAT"), "{err}");
}
