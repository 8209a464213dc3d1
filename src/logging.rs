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

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Lines dropped by every [`NonBlockingWriter`] of the process because
/// their queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines every [`NonBlockingWriter`] of this process has
/// dropped because its queue was full (its sink could not keep up).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// What travels to the writing thread.
enum Message {
    /// Whole lines, as one write.
    Lines(Vec<u8>),
    /// Everything before this has been written: say so.
    Flushed(Sender<()>),
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
    queue: Sender<Message>,
    /// The start of a line not ended yet.
    partial: Vec<u8>,
}

/// Waits for a [`NonBlockingWriter`]'s queued lines to be written.
#[derive(Clone)]
pub struct LogFlusher {
    queue: Sender<Message>,
}

impl NonBlockingWriter {
    /// A writer queueing up to `capacity` writes for `sink`, and its flusher;
    /// starts the thread that writes to the sink (`afterward-log`), which
    /// ends when the writer and every flusher are dropped.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn new<W: Write + Send + 'static>(
        sink: W,
        capacity: usize,
    ) -> io::Result<(NonBlockingWriter, LogFlusher)> {
        let (queue, lines) = crossbeam_channel::bounded(capacity.max(1));
        thread::Builder::new()
            .name("afterward-log".into())
            .spawn(move || write_out(sink, &lines))?;
        let flusher = LogFlusher {
            queue: queue.clone(),
        };
        Ok((
            NonBlockingWriter {
                queue,
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
        let mut lines = std::mem::take(&mut self.partial);
        lines.extend_from_slice(&buf[..=last]);
        self.partial.extend_from_slice(&buf[last + 1..]);
        match self.queue.try_send(Message::Lines(lines)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Lines(lines))) => {
                let n = lines.iter().filter(|&&b| b == b'\n').count();
                DROPPED.fetch_add(n as u64, Ordering::Relaxed);
            }
            // The writing thread has ended (its sink failed): nothing can
            // be written any more, and nothing is waited for.
            Err(_) => {}
        }
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
        let (done, written) = crossbeam_channel::bounded(1);
        self.queue
            .send_timeout(Message::Flushed(done), timeout)
            .is_ok()
            && written.recv_timeout(timeout).is_ok()
    }
}

/// The writing thread: writes each queued write to `sink`, in order, until
/// every sender is gone. A sink that fails ends it (the writers then queue
/// into nothing, and never block).
fn write_out<W: Write>(mut sink: W, lines: &Receiver<Message>) {
    for message in lines {
        match message {
            Message::Lines(bytes) => {
                if sink.write_all(&bytes).and_then(|()| sink.flush()).is_err() {
                    return;
                }
            }
            Message::Flushed(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Condvar, Mutex};

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
        // The sink takes nothing: the first write is held by the thread,
        // four fill the queue, the rest are dropped, and none of it waits.
        for i in 0..20 {
            writeln!(writer, "line {i}").unwrap();
        }
        assert!(dropped_lines() - before >= 15);
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
}
