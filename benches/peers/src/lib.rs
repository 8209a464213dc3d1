//! What the peer servers share: their arguments and the background work.

use std::io::Write;

/// `PORT LOG_FILE` from the command line (`default_port`, `peers-log.txt`).
pub fn args(default_port: u16) -> (u16, String) {
    let mut args = std::env::args().skip(1);
    let port = args
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_port);
    let log = args.next().unwrap_or_else(|| "peers-log.txt".into());
    (port, log)
}

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
