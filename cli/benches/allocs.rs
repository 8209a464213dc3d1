//! Heap allocations per request (issue #9), counted by a global allocator
//! in this process: the demo app of the `afterward` binary served in-process,
//! a client on one keep-alive connection that allocates nothing per request,
//! and every thread's allocations over the measured requests (the request
//! workers, the engine, and the background pool writing the notification).
//!
//! ```text
//! cargo bench -p afterward-cli --bench allocs
//! ```
//!
//! Requests: `GET /health`, and `POST /send-notification/{email}?q=…` (the
//! bg-write request of the HTTP benchmark: a path parameter, a dependency
//! reading the query, a background task appending a line). Rounds of 20,000
//! requests each; the median of 5 is reported. The markdown is printed and
//! written to `target/bench-allocs.md`. Without `--bench`, one short round.

#[allow(dead_code)]
#[path = "../src/demo.rs"]
mod demo;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use afterward::Server;

/// The system allocator, counting the allocations (and reallocations) made.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the counter has no effect
// on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sends `n` requests made by `request(i)` into `buffer` on one connection,
/// reading each response (up to its end, found by `Content-Length`), and
/// returns the allocations counted meanwhile, per request.
fn allocations_per_request(
    server: &afterward::ServerHandle,
    n: usize,
    request: impl Fn(usize, &mut Vec<u8>),
) -> f64 {
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut out = Vec::with_capacity(512);
    let mut input = vec![0u8; 64 * 1024];
    let mut exchange = |i: usize, out: &mut Vec<u8>, input: &mut [u8]| {
        out.clear();
        request(i, out);
        stream.write_all(out).unwrap();
        let mut filled = 0;
        loop {
            let read = stream.read(&mut input[filled..]).unwrap();
            assert!(read > 0, "the server closed the connection");
            filled += read;
            if let Some(end) = response_end(&input[..filled]) {
                assert_eq!(end, filled, "one response at a time");
                assert!(input.starts_with(b"HTTP/1.1 200"), "not a 200");
                return;
            }
        }
    };
    // Warm up: pools filled, threads started, caches grown.
    for i in 0..1_000 {
        exchange(i, &mut out, &mut input);
    }
    assert!(server.wait_idle(Duration::from_secs(60)));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for i in 0..n {
        exchange(i, &mut out, &mut input);
    }
    // The background tasks too.
    assert!(server.wait_idle(Duration::from_secs(60)));
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    (after - before) as f64 / n as f64
}

/// Where a response ends in `bytes`, once its head and `Content-Length` body
/// are there.
fn response_end(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= head_end + length).then_some(head_end + length)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if full { (20_000, 5) } else { (2_000, 1) };
    let dir = std::env::temp_dir().join(format!("afterward-allocs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notifier = demo::Notifier::new(dir.join("log.txt"), Duration::ZERO);
    let server = Server::builder()
        .address("127.0.0.1:0")
        .workers(4)
        .background_workers(2)
        .build(demo::app(notifier, demo::Files::default(), None))
        .and_then(Server::spawn)
        .unwrap();
    let (mut health, mut notify) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        health.push(allocations_per_request(&server, n, |_, out| {
            out.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n");
        }));
        notify.push(allocations_per_request(&server, n, |i, out| {
            let _ = write!(
                out,
                "POST /send-notification/user{i}@example.com?q=bench HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n"
            );
        }));
    }
    server.shutdown(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    let markdown = format!(
        "| request ({n} per round, median of {rounds}) | allocations per request (every thread) |\n\
         |---|---:|\n\
         | `GET /health` | {:.1} |\n\
         | `POST /send-notification/{{email}}?q=…` (bg-write: one background task) | {:.1} |\n",
        median(health),
        median(notify),
    );
    println!("\n{markdown}");
    if full {
        // The workspace's target directory, as the root package's benches
        // use (cargo runs this one from `cli/`).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(format!("{dir}/bench-allocs.md"), &markdown);
    }
}
