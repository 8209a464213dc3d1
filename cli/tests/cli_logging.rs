//! Logging never blocks serving: with stderr a pipe nobody reads, the binary
//! goes on answering (its own access lines and the engine's `400`s
//! included), drops the lines stderr cannot take, and counts them.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use afterward::testing::TestRequest;
use support::cli::BIN;
use support::raw::{get, Raw};
use support::TempDir;

/// Far longer than a request takes on a loaded machine; a server stalled on
/// its log never answers at all.
const PROMPT: Duration = Duration::from_secs(5);

#[test]
fn a_stalled_stderr_drops_log_lines_and_serving_goes_on() {
    let dir = TempDir::new();
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--log-buffer-lines", "64", "--log-file"])
        .arg(dir.file("log.txt"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // A pipe nobody reads: once its 64 KiB are full, writes to it block.
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the afterward binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();

    // 8,000 requests, an access line of ~100 bytes each: far more than
    // the pipe holds.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let mut client = Raw::connect(addr);
                for _ in 0..1000 {
                    client.send(&get("/health")).unwrap();
                    let response = client.response_within(PROMPT).expect("an answer");
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    // The engine's own answers log too, and are not held either.
    let mut malformed = Raw::connect(addr);
    malformed.send(b"NOT HTTP\r\n\r\n").unwrap();
    let refused = malformed.response_within(PROMPT).expect("an answer");
    assert_eq!(refused.status(), 400);

    let metrics = TestRequest::new(addr, "GET", "/metrics").send().text();
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("afterward_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no dropped-lines metric in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(dropped > 0.0, "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
}
