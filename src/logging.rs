//! Log output that never blocks serving: [`NonBlockingWriter`], a bounded
//! queue of lines between the threads that log and a thread of its own that
//! writes them to the real sink.
//!
//! The crate logs through the `log` crate, on the threads that serve: the
//! event loop (the engine's own `400`s and `408`s), the request workers
//! (access lines), the background pool. A logger that writes to its sink
//! directly blocks them all when the sink stalls (a full pipe nobody reads, a
//! frozen terminal, a slow disk), and the server stops answering. Give the
//! logger a `NonBlockingWriter` instead: lines go into a bounded queue, a
//! thread (`afterward-log`) writes them out, and when the queue is full a
//! line is dropped and counted ([`dropped_lines`], and
//! `afterward_log_lines_dropped_total` in [`Stats::to_prometheus`](crate::Stats::to_prometheus))
//! rather than waited for. The `afterward` binary logs this way.
//!
//! ```
//! use afterward::logging::NonBlockingWriter;
//!
//! let (writer, flusher) = NonBlockingWriter::new(std::io::stderr(), 8192)?;
//! // With env_logger: .target(env_logger::Target::Pipe(Box::new(writer)))
//! # drop(writer);
//! // Before the process exits, write out what is queued (up to a deadline).
//! flusher.flush(std::time::Duration::from_secs(1));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Why not a channel: the writing thread takes everything queued at once and
//! writes it in one call, and is woken only when it has gone to sleep (after
//! finding the queue empty twice, a millisecond apart), so a busy server
//! pays no wake-up per line; a channel's blocking receive spins and yields
//! before it sleeps, a system call per line at full speed.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Lines dropped by every [`NonBlockingWriter`] of the process because
/// their queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How long the writing thread waits, having found the queue empty, before
/// it looks again and, still finding nothing, sleeps until woken.
const LINGER: Duration = Duration::from_millis(1);

/// How many log lines every [`NonBlockingWriter`] of this process has
/// dropped because its queue was full (its sink could not keep up).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// What the writers and the writing thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// The writing thread sleeps on it; flushers wait on it too.
    changed: Condvar,
    /// Lines queued at most.
    capacity: usize,
}

#[derive(Default)]
struct Queue {
    /// Whole lines, in order.
    bytes: Vec<u8>,
    /// How many lines `bytes` holds.
    lines: usize,
    /// Lines ever queued, and ever written (or lost with a failed sink).
    queued: u64,
    written: u64,
    /// The writing thread waits until woken.
    asleep: bool,
    /// The writer is gone: the thread writes what is left and ends.
    closed: bool,
}

/// A [`Write`] that never blocks: whole lines are queued for a thread of its
/// own, which writes them to the sink; a line that finds the queue full is
/// dropped and counted. See the [module](self) for why.
///
/// Each `write` queues the complete lines it ends (a logger's record is
/// usually one `write`); the start of a line not yet ended waits in the
/// writer for its end. `flush` does not wait for the sink: use
/// [`LogFlusher::flush`] before the process exits.
pub struct NonBlockingWriter {
    shared: Arc<Shared>,
    /// The start of a line not ended yet.
    partial: Vec<u8>,
}

/// Waits for a [`NonBlockingWriter`]'s queued lines to be written.
#[derive(Clone)]
pub struct LogFlusher {
    shared: Arc<Shared>,
}

impl Drop for NonBlockingWriter {
    /// The writing thread writes what is queued, then ends.
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.changed.notify_all();
    }
}

impl NonBlockingWriter {
    /// A writer queueing up to `capacity` lines for `sink`, and its flusher;
    /// starts the thread that writes to the sink (`afterward-log`), which
    /// ends once the writer is dropped and what it queued is written.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn new<W: Write + Send + 'static>(
        sink: W,
        capacity: usize,
    ) -> io::Result<(NonBlockingWriter, LogFlusher)> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        });
        let for_thread = shared.clone();
        thread::Builder::new()
            .name("afterward-log".into())
            .spawn(move || write_out(sink, &for_thread))?;
        let flusher = LogFlusher {
            shared: shared.clone(),
        };
        Ok((
            NonBlockingWriter {
                shared,
                partial: Vec::new(),
            },
            flusher,
        ))
    }
}

impl Write for NonBlockingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(last) = buf.iter().rposition(|&b| b == b'\n') else {
            self.partial.extend_from_slice(buf);
            return Ok(buf.len());
        };
        let (whole, rest) = buf.split_at(last + 1);
        let lines = whole.iter().filter(|&&b| b == b'\n').count();
        let mut queue = lock(&self.shared.queue);
        if queue.lines + lines > self.shared.capacity {
            drop(queue);
            DROPPED.fetch_add(lines as u64, Ordering::Relaxed);
            self.partial.clear();
        } else {
            queue.bytes.append(&mut self.partial);
            queue.bytes.extend_from_slice(whole);
            queue.lines += lines;
            queue.queued += lines as u64;
            if queue.asleep {
                queue.asleep = false;
                drop(queue);
                self.shared.changed.notify_all();
            }
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogFlusher {
    /// Waits until every line queued before this call is written, or until
    /// `timeout` has passed; whether they were.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut queue = lock(&self.shared.queue);
        let target = queue.queued;
        if queue.asleep {
            queue.asleep = false;
            self.shared.changed.notify_all();
        }
        while queue.written < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            queue = self
                .shared
                .changed
                .wait_timeout(queue, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// The writing thread: writes what is queued, in order, until the queue is
/// closed and empty. A sink that fails ends the writing (lines are then
/// counted written, so that no flush waits on them; nothing is written any
/// more).
fn write_out<W: Write>(mut sink: W, shared: &Shared) {
    let mut failed = false;
    let mut idle_once = false;
    let mut batch = Vec::new();
    loop {
        let mut queue = lock(&shared.queue);
        if queue.bytes.is_empty() {
            if queue.closed {
                return;
            }
            if !idle_once {
                idle_once = true;
                drop(queue);
                thread::sleep(LINGER);
                continue;
            }
            queue.asleep = true;
            while queue.asleep && !queue.closed {
                queue = shared
                    .changed
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner());
            }
            continue;
        }
        idle_once = false;
        std::mem::swap(&mut batch, &mut queue.bytes);
        let lines = std::mem::take(&mut queue.lines) as u64;
        drop(queue);
        if !failed {
            failed = sink.write_all(&batch).and_then(|()| sink.flush()).is_err();
        }
        batch.clear();
        lock(&shared.queue).written += lines;
        shared.changed.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the sink is open, and what it was given.
    type Held = Mutex<(bool, Vec<u8>)>;

    /// A sink that takes nothing until it is opened, then keeps what it is given.
    #[derive(Clone, Default)]
    struct Gated(Arc<(Held, Condvar)>);

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (state, opened) = &*self.0;
            let mut state = opened
                .wait_while(state.lock().unwrap(), |(open, _)| !*open)
                .unwrap();
            state.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Gated {
        fn open(&self) {
            self.0 .0.lock().unwrap().0 = true;
            self.0 .1.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.0 .0.lock().unwrap().1.clone()).unwrap()
        }
    }

    #[test]
    fn a_stalled_sink_never_blocks_a_writer_and_what_it_drops_is_counted() {
        let sink = Gated::default();
        let (mut writer, flusher) = NonBlockingWriter::new(sink.clone(), 4).unwrap();
        let before = dropped_lines();
        // The sink takes nothing: the queue holds four lines (and the
        // thread one batch of them), the rest are dropped, and none of it
        // waits.
        for i in 0..20 {
            writeln!(writer, "line {i}").unwrap();
        }
        assert!(dropped_lines() - before >= 12);
        sink.open();
        assert!(flusher.flush(Duration::from_secs(30)));
        let written = sink.text();
        assert!(written.starts_with("line 0\n"), "{written}");
        assert_eq!(
            written.lines().count() as u64 + dropped_lines() - before,
            20
        );
    }

    #[test]
    fn lines_written_in_pieces_go_out_whole_and_in_order() {
        let sink = Gated::default();
        sink.open();
        let (mut writer, flusher) = NonBlockingWriter::new(sink.clone(), 64).unwrap();
        writer.write_all(b"first ").unwrap();
        writer.write_all(b"line\nsecond line\nthi").unwrap();
        writer.write_all(b"rd\n").unwrap();
        assert!(flusher.flush(Duration::from_secs(30)));
        assert_eq!(sink.text(), "first line\nsecond line\nthird\n");
    }

    #[test]
    fn the_thread_ends_once_the_writer_is_gone_and_its_lines_written() {
        let sink = Gated::default();
        sink.open();
        let (mut writer, flusher) = NonBlockingWriter::new(sink.clone(), 64).unwrap();
        writeln!(writer, "last").unwrap();
        let shared = writer.shared.clone();
        drop(writer);
        assert!(flusher.flush(Duration::from_secs(30)));
        drop(flusher);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The thread holds the last reference but this one: it ends.
        while Arc::strong_count(&shared) > 1 {
            assert!(Instant::now() < deadline, "the writing thread never ended");
            thread::yield_now();
        }
        assert_eq!(sink.text(), "last\n");
    }
}
