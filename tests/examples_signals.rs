//! Ctrl-C on an example drains its queued tasks: the examples serve with
//! `Server::run_until_signal` (or, without our server, `Stopper::stop_on_signals`)
//! and exit 0 once their tasks have run. Runs the example binaries that
//! `cargo test` builds.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use afterward::testing::TestRequest;
use support::{read, TempDir};

/// `target/<profile>/examples/<name>`, beside this test's own executable.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    dir.join("examples").join(name)
}

/// Starts `name` in `dir` on a free port, sends one notification, then SIGINT;
/// returns the exit code and what it printed.
fn notify_then_interrupt(name: &str, dir: &TempDir) -> (Option<i32>, String) {
    let mut child = Command::new(example(name))
        .current_dir(dir.path())
        .env("ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", example(name).display()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let response = TestRequest::new(addr, "POST", "/send-notification/ada@example.com").send();
    assert_eq!(response.status(), 200);
    let status = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    (child.wait().unwrap().code(), rest)
}

/// Interrupting `example` after one notification exits 0 once its task ran,
/// having written `expected` to its log file.
fn drains_on_ctrl_c(example: &str, expected: &str) {
    let dir = TempDir::new();
    let (code, printed) = notify_then_interrupt(example, &dir);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("stopped: 1 tasks completed, 0 not run"),
        "{printed}"
    );
    assert_eq!(read(&dir.file("log.txt")), expected);
}

#[test]
fn ctrl_c_on_an_example_drains_and_exits_0() {
    drains_on_ctrl_c(
        "send_notification",
        "notification for ada@example.com: some notification",
    );
}

#[test]
fn ctrl_c_on_the_tiny_http_loop_drains_and_exits_0() {
    drains_on_ctrl_c(
        "tiny_http_loop",
        "notification for ada@example.com: some notification\n",
    );
}

#[cfg(feature = "redis")]
#[test]
fn sigterm_stops_the_jobs_example_worker_gracefully() {
    let redis = support::redis::RedisServer::start();
    let mut child = Command::new(example("jobs"))
        .args(["worker", "--redis", &redis.url()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", example("jobs").display()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "worker running");
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let mut logged = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logged)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{logged}");
    assert!(logged.contains("SIGTERM received"), "{logged}");
    assert!(logged.contains("worker stopped: 0 succeeded"), "{logged}");
}
