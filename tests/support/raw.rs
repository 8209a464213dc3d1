//! Raw TCP clients for the HTTP hardening tests: send exact bytes, read what
//! comes back, and tell a closed connection from a silent one.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use afterward::testing::TestResponse;

/// A connection that keeps its read buffer across responses (for keep-alive
/// and pipelining).
pub struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::try_connect(addr).expect("connect")
    }

    /// [`connect`](Self::connect), for a server that may be gone.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Raw> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(super::TEST_TIMEOUT))?;
        stream.set_write_timeout(Some(super::TEST_TIMEOUT))?;
        Ok(Raw {
            reader: BufReader::new(stream),
        })
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes `bytes`; an error (the server closed first) is returned, not a panic.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one response, or panics.
    pub fn response(&mut self) -> TestResponse {
        TestResponse::read_from(&mut self.reader, false).expect("a response")
    }

    /// Reads one response, waiting at most `timeout`.
    pub fn response_within(&mut self, timeout: Duration) -> std::io::Result<TestResponse> {
        self.stream().set_read_timeout(Some(timeout)).unwrap();
        let response = TestResponse::read_from(&mut self.reader, false);
        self.stream()
            .set_read_timeout(Some(super::TEST_TIMEOUT))
            .unwrap();
        response
    }

    /// Whether the server closes the connection (EOF or reset) within
    /// `timeout`, reading and dropping anything it sends first.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream().set_read_timeout(Some(left)).unwrap();
            let buffered = self.reader.buffer().len();
            if buffered > 0 {
                self.reader.consume(buffered);
                continue;
            }
            let mut chunk = [0u8; 4096];
            match self.reader.get_mut().read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// A GET request that keeps the connection open.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// The number of threads of this process.
pub fn thread_count() -> usize {
    status_field("Threads:")
}

/// The resident memory of this process, in KiB.
pub fn rss_kib() -> usize {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}
