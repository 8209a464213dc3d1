//! What the peer servers share: their arguments and the background work.

use std::io::Write;

/// Where a peer runs bg-write's background work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On the runtime's blocking pool (`spawn_blocking`): the file append
    /// leaves the async worker threads, one hand-off per request.
    SpawnBlocking,
    /// A task on the runtime itself (`actix_rt::spawn`, `tokio::spawn`) doing
    /// a plain std file append: how most users write it, and the fastest form.
    Inline,
}

/// `PORT LOG_FILE [spawn-blocking|inline]` from the command line (defaults:
/// `default_port`, `peers-log.txt`, `spawn-blocking`). Exits with status 2 on
/// anything else.
pub fn args(default_port: u16) -> (u16, String, Mode) {
    let mut args = std::env::args().skip(1);
    let port = args
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_port);
    let log = args.next().unwrap_or_else(|| "peers-log.txt".into());
    let mode = match args.next().as_deref() {
        None | Some("spawn-blocking") => Mode::SpawnBlocking,
        Some("inline") => Mode::Inline,
        Some(other) => {
            eprintln!("unknown mode {other:?}: expected spawn-blocking or inline");
            std::process::exit(2);
        }
    };
    (port, log, mode)
}

/// bg-write's answer.
pub const SENT: &str = r#"{"message":"Message sent"}"#;

/// `GET /health`'s answer.
pub const HEALTHY: &str = r#"{"status":"ok"}"#;

/// The background work of bg-write: appends `line` to the file at `path`
/// (opened each time, as afterward's demo does).
pub fn append_line(path: &str, line: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        let _ = file.write_all(line.as_bytes());
    }
}
