//! One connection, wherever it is: waiting on the event loop (`event_loop.rs`)
//! for a request, the rest of its response or its close; in the queue to the
//! request workers; or with one, inside an `Exchange` (`exchange.rs`). Its
//! socket I/O lives here, bounded per turn; what the bytes mean is the
//! protocol's (`protocol.rs`, no I/O); how a connection goes back to the loop
//! or on to the workers is here too, so that the loop and the workers move it
//! the same way.

use std::cmp::Reverse;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::answer::closing_answer;
use super::buffer::{Buffer, BUFFER_SIZE};
use super::parts::Head;
use super::protocol::{Context, Protocol, Refusal, Scan, State};
use super::queue::Pusher;
use super::slots::Slot;
use super::state::{EngineState, Incoming};
use crate::http_error::HttpError;
use crate::response::{IntoResponse, Response};
use crate::stats::Refusal as Counted;

/// The engine's shared state, over our connections.
pub(super) type Shared = EngineState<Conn>;

/// Reads one connection gets per turn of the event loop; then the others
/// have theirs, and it is looked at again at the next turn.
const READS_PER_TURN: usize = 4;
/// Bytes of a response's rest the loop writes to one connection per turn.
const WRITE_PER_TURN: usize = 256 * 1024;

/// What the holder of a connection does with it next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Leave it to the event loop, waiting for this readiness.
    Wait(Interest),
    /// It has used its turn with more to do: the loop looks at it again at
    /// its next turn, after the others (re-armed, so that the readiness
    /// still there is reported again).
    Again(Interest),
    /// A whole request is buffered: to the request workers.
    Queue,
    /// Drop it (closing the socket).
    Close,
}

/// An open connection. Counted open from [`Conn::new`] until dropped.
///
/// Architecture invariant: a connection serves one request at a time. A
/// `Conn` is in one place (its slot, the work queue, or one worker's
/// `Exchange`), and nothing is read from it for a next request until its
/// response has been sent whole (while `Writing`, it waits for
/// writability only): pipelined requests are answered in order, a body is
/// never read by two threads, and a client that does not read its
/// responses stops being read.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    /// Read and not yet used: a head, the start of a body, a pipelined request.
    pub(super) buf: Buffer,
    pub(super) remote_addr: SocketAddr,
    client: IpAddr,
    /// Its slot, and its token with the event loop.
    pub(super) slot: usize,
    /// Tells it from earlier connections in the same slot.
    pub(super) generation: u64,
    pub(super) protocol: Protocol,
    /// When the event loop's live timer entry for it fires; `None`: none.
    pub(super) timer_at: Option<Instant>,
    /// The readiness it is registered for.
    pub(super) interest: Interest,
    /// Whether the socket had nothing more when the loop last read it (the
    /// read did not fill the buffer), and no event has come since: then a
    /// worker putting the connection back need not register it again, as
    /// any byte that comes later makes an event of its own.
    drained: bool,
    /// When it entered the queue to the request workers.
    pub(super) queued_at: Instant,
    /// The rest of a response, and what runs once it is sent.
    pub(super) out: Output,
    pub(super) shared: Arc<Shared>,
}

/// The rest of a response, and what runs once it is sent (or can no longer
/// be): the request's background tasks are submitted by it.
#[derive(Default)]
pub(super) struct Output {
    pub(super) bytes: Vec<u8>,
    pub(super) at: usize,
    pub(super) then: Option<Box<dyn FnOnce() + Send>>,
}

impl Conn {
    /// A connection just accepted, counted open.
    pub(super) fn new(
        stream: TcpStream,
        remote_addr: SocketAddr,
        client: IpAddr,
        slot: usize,
        generation: u64,
        now: Instant,
        shared: Arc<Shared>,
    ) -> Box<Conn> {
        shared.counters.connection_opened();
        Box::new(Conn {
            stream,
            buf: Buffer::default(),
            remote_addr,
            client,
            slot,
            generation,
            protocol: Protocol::new(now),
            timer_at: None,
            interest: Interest::READABLE,
            drained: false,
            queued_at: now,
            out: Output::default(),
            shared,
        })
    }

    pub(super) fn token(&self) -> Token {
        Token(self.slot)
    }

    /// When the current state's time is up.
    pub(super) fn deadline(&self) -> Instant {
        self.protocol.deadline(&self.shared.limits)
    }

    /// The socket is ready (or may be): make progress without blocking, for
    /// one turn at most.
    pub(super) fn on_ready(&mut self, now: Instant) -> Step {
        // An event: the socket may hold bytes, whatever was read before.
        self.drained = false;
        match self.protocol.state {
            State::Writing { .. } => self.write_more(now),
            State::Closing(_) => self.discard(),
            State::Idle(_) | State::Head { .. } | State::Body { .. } => self.read_request(now),
            State::Serving => Step::Close,
        }
    }

    /// The current state's deadline has passed.
    pub(super) fn expire(&mut self, now: Instant) -> Step {
        if let State::Writing { taken, .. } = self.protocol.state {
            log::debug!(
                "closing a connection to {} that took {taken} bytes of a response too slowly",
                self.remote_addr
            );
        }
        match self.protocol.expired() {
            Some(refusal) => self.refuse_with(refusal, now),
            None => Step::Close,
        }
    }

    /// Reads until a whole request is buffered, the socket has nothing
    /// more, or this turn's reads are spent.
    fn read_request(&mut self, now: Instant) -> Step {
        for _ in 0..READS_PER_TURN {
            if let Some(step) = self.scan(now) {
                return step;
            }
            // A head may grow to its limit; a body is decoded out of a
            // buffer of the usual size (a chunk line fits in it).
            let limit = match self.protocol.state {
                State::Body { .. } => BUFFER_SIZE,
                _ => self.shared.limits.max_header_bytes + 1,
            };
            match self
                .buf
                .read_from(&mut self.stream, &self.shared.buffers, limit)
            {
                Ok(0) => return Step::Close,
                // A read that left room took all the socket had.
                Ok(_) => self.drained = self.buf.has_room(),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.drained = true;
                    self.buf.release_if_empty(&self.shared.buffers);
                    return Step::Wait(Interest::READABLE);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
        self.scan(now).unwrap_or(Step::Again(Interest::READABLE))
    }

    /// Does what the protocol makes of the bytes buffered; `None`: more
    /// are needed.
    fn scan(&mut self, now: Instant) -> Option<Step> {
        loop {
            let context = Context {
                limits: &self.shared.limits,
                counters: &self.shared.counters,
                remote_addr: self.remote_addr,
            };
            match self.protocol.scan(&mut self.buf, now, &context) {
                Scan::More => {
                    self.buf.release_if_empty(&self.shared.buffers);
                    return None;
                }
                Scan::Request => return Some(Step::Queue),
                Scan::Refuse(refusal) => return Some(self.refuse_with(refusal, now)),
                Scan::Continue => {
                    // 25 bytes on a connection that has sent only a head:
                    // they fit, or the client is not reading at all.
                    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
                    if !matches!(self.write_now(CONTINUE), Ok(n) if n == CONTINUE.len()) {
                        return Some(Step::Close);
                    }
                }
            }
        }
    }

    /// Drops what the client still sends to a closing connection.
    fn discard(&mut self) -> Step {
        let mut sink = [0u8; 4096];
        for _ in 0..READS_PER_TURN {
            match self.stream.read(&mut sink) {
                Ok(0) => return Step::Close,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Step::Wait(Interest::READABLE)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
        Step::Again(Interest::READABLE)
    }

    /// Writes `bytes` without blocking; how many the socket took.
    pub(super) fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.write(&bytes[written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Sends more of a response's rest, at most [`WRITE_PER_TURN`] bytes.
    fn write_more(&mut self, now: Instant) -> Step {
        let out = std::mem::take(&mut self.out.bytes);
        let end = out.len().min(self.out.at + WRITE_PER_TURN);
        let written = self.write_now(&out[self.out.at..end]);
        self.out.bytes = out;
        let State::Writing { keep, .. } = self.protocol.state else {
            return Step::Close;
        };
        match written {
            Ok(n) => {
                self.out.at += n;
                self.protocol.took(n);
                if self.out.at == end && end < self.out.bytes.len() {
                    return Step::Again(Interest::WRITABLE);
                }
            }
            Err(_) => return Step::Close,
        }
        if self.out.at < self.out.bytes.len() {
            return Step::Wait(Interest::WRITABLE);
        }
        (self.out.bytes, self.out.at) = (Vec::new(), 0);
        self.run_then();
        match self.after_response(keep, now) {
            Some(step) => step,
            None => self.read_request(now),
        }
    }

    /// A response has been sent whole: close the connection, or make it
    /// ready for the next request. `None`: it waits for bytes, which may
    /// already be in the socket.
    pub(super) fn after_response(&mut self, keep: bool, now: Instant) -> Option<Step> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Some(Step::Close);
        }
        if !keep || self.shared.draining.load(Ordering::SeqCst) {
            return Some(self.start_closing(now));
        }
        self.protocol.idle(now);
        self.scan(now)
    }

    /// Answers `response` with `Connection: close` (as much as the socket
    /// takes at once: the engine's own answers are small), counted and
    /// logged, then closes.
    pub(super) fn refuse(&mut self, response: Response, head: Option<&Head>, now: Instant) -> Step {
        let shared = &self.shared;
        let out = closing_answer(&shared.counters, &shared.ids, response, head, now);
        let _ = self.write_now(&out);
        self.start_closing(now);
        // What the client has sent already raises no further edge.
        self.discard()
    }

    fn refuse_with(&mut self, refusal: Refusal, now: Instant) -> Step {
        let Refusal { error, head } = refusal;
        self.refuse(error.into_response(), head.as_deref(), now)
    }

    /// Answers the request it has buffered with `error` (without a handler),
    /// counted and logged with what its head says.
    pub(super) fn refuse_request(&mut self, error: HttpError, now: Instant) -> Step {
        let limits = &self.shared.limits;
        let head = self
            .protocol
            .refused_head(&mut self.buf, self.remote_addr, limits);
        self.refuse(error.into_response(), head.as_deref(), now)
    }

    /// Whether the client has closed the connection (or reset it): a peek
    /// finds its end, without taking any byte it sent.
    pub(super) fn client_gone(&self) -> bool {
        match self.stream.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
        }
    }

    /// Closes our side and waits (for at most the protocol's linger) for the
    /// client to close its own, so that it reads our last response before a
    /// reset.
    fn start_closing(&mut self, now: Instant) -> Step {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.buf = Buffer::default();
        self.protocol.closing(now);
        Step::Wait(Interest::READABLE)
    }

    /// Hands what runs after the response to a request worker: never run on
    /// the event loop, which must not block.
    fn run_then(&mut self) {
        if let Some(then) = self.out.then.take() {
            self.shared.queue.push(Incoming::Run(then));
        }
    }

    /// Sends a connection with a whole request to the request workers, or,
    /// when their queue is full, answers it `503` at once.
    pub(super) fn queue(mut self: Box<Self>, by: Pusher) {
        let shared = self.shared.clone();
        let now = Instant::now();
        self.queued_at = now;
        if let Err(Incoming::Ready(mut conn)) =
            shared.queue.push_counted(Incoming::Ready(self), by, now)
        {
            shared.counters.refused(Counted::QueueFull);
            let error = HttpError::new(503, "too many requests are waiting; retry later")
                .with_header("Retry-After", "1");
            let step = conn.refuse_request(error, Instant::now());
            conn.resume(step);
        }
    }

    /// A worker (or the loop, for a connection it took out of its slot) is
    /// done with the connection: `step` says what next.
    pub(super) fn resume(mut self: Box<Self>, step: Step) {
        let shared = self.shared.clone();
        match step {
            Step::Queue if shared.draining.load(Ordering::SeqCst) => {
                let step = self.refuse_request(HttpError::shutting_down(), Instant::now());
                self.resume(step);
            }
            Step::Queue => self.queue(Pusher::Other),
            Step::Wait(interest) | Step::Again(interest) => {
                let Some(mut slot) = shared.slots.lock(self.slot) else {
                    return;
                };
                let Slot::Away {
                    generation,
                    timer_at,
                    ready,
                } = *slot
                else {
                    return;
                };
                // Checked under the slot's lock: the loop empties the
                // slots after setting `stopping`, so no connection put back
                // is left behind.
                if generation != self.generation || shared.stopping.load(Ordering::SeqCst) {
                    *slot = Slot::Vacant;
                    return;
                }
                self.timer_at = timer_at;
                let deadline = self.deadline();
                if timer_at.is_none_or(|at| deadline < at) {
                    // The loop's entry has fired, or is too late for the new
                    // state: ask it for one in time.
                    self.timer_at = Some(deadline);
                    let entry = Reverse((deadline, self.slot, self.generation));
                    shared
                        .sooner
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(entry);
                    let _ = shared.waker.wake();
                }
                // Architecture invariant: no readiness is lost. Registered
                // again only when it must be: for another
                // interest, for readiness left unread (`Again`), for an event
                // that came while a worker had it, or bytes the loop's last
                // read may have left. Otherwise the registration in place
                // reports the next byte (edge-triggered): no system call.
                let rearm = ready
                    || !self.drained
                    || self.interest != interest
                    || matches!(step, Step::Again(_));
                self.interest = interest;
                let token = self.token();
                *slot = Slot::Here(self);
                let Slot::Here(conn) = &mut *slot else {
                    return;
                };
                // Re-armed under the slot's lock, so that the loop finds it
                // in place; a readiness already there is reported at once.
                if rearm
                    && shared
                        .registry
                        .reregister(&mut conn.stream, token, interest)
                        .is_err()
                {
                    *slot = Slot::Vacant;
                }
            }
            Step::Close => {
                if let Some(mut slot) = shared.slots.lock(self.slot) {
                    if matches!(*slot, Slot::Away { generation, .. } if generation == self.generation)
                    {
                        *slot = Slot::Vacant;
                    }
                }
            }
        }
    }
}

impl Drop for Conn {
    /// Counts the connection closed and frees its slot; what was to run
    /// after its response still runs.
    fn drop(&mut self) {
        self.run_then();
        self.shared.slots.release(self.slot);
        self.shared.client_disconnected(self.client);
        self.shared.counters.connection_closed();
    }
}

pub(super) fn is_client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}
