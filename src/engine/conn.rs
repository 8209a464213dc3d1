//! One connection, wherever it is: waiting on the event loop (`event_loop.rs`)
//! for a request head and body, the rest of its response or its close; or
//! with a request worker, as the [`Exchange`] the worker answers. Its state
//! machine lives here, so that the loop and the workers move it the same way.
//!
//! Architecture invariant: a request worker never waits on a client. The
//! loop reads a request's head and whole body before a worker sees it, and
//! a worker writes without blocking, leaving the rest to the loop.

use std::cmp::Reverse;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::body::{BodyError, Framing, Received};
use super::buffer::{Buffer, BUFFER_SIZE};
use super::builtin::{EngineState, Incoming};
use super::head::{head_end, may_have_body, parse_head, ParsedHead, Refused};
use super::slots::Slot;
use super::wire::{self, Persistence};
use super::{BodySource, Head};
use crate::http_error::HttpError;
use crate::response::{IntoResponse, Response};
use crate::stats::Refusal;

/// How long a closing connection waits for the client to finish sending, so
/// that our last response is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(1);
/// How long a response's rest (or a body) may take before the minimum rate
/// applies.
pub(super) const RATE_GRACE: Duration = Duration::from_secs(2);
/// Reads one connection gets per turn of the event loop; then the others
/// have theirs, and it is looked at again at the next turn.
const READS_PER_TURN: usize = 4;
/// Bytes of a response's rest the loop writes to one connection per turn.
const WRITE_PER_TURN: usize = 256 * 1024;
/// The first reservation of a chunked body, whose length is unknown.
const CHUNKED_RESERVE: u64 = 16 * 1024;

/// What a connection waits for, and since when.
pub(super) enum State {
    /// The next request (idle timeout).
    Idle(Instant),
    /// The rest of a request head begun at `since` (header timeout);
    /// `searched` bytes of it have been scanned for its end; `skipped`
    /// empty lines' bytes came before it (they count toward the limit).
    Head {
        since: Instant,
        searched: usize,
        skipped: usize,
    },
    /// The rest of the body of the request in `Conn::request`, whose head
    /// ended at `since` (body timeout, minimum rate); `received`: the
    /// body's bytes on the wire so far.
    Body { since: Instant, received: u64 },
    /// The client to take the rest of a response (write timeout, minimum
    /// rate). `taken`: bytes it took since `started`. Then: keep the
    /// connection or close it.
    Writing {
        started: Instant,
        taken: u64,
        keep: bool,
    },
    /// Our side is closed: what the client still sends is dropped until it
    /// closes, for at most [`LINGER`].
    Closing(Instant),
    /// With a request worker, or in the queue to one.
    Serving,
}

/// What the holder of a connection does with it next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Leave it to the event loop, waiting for this readiness.
    Wait(Interest),
    /// It has used its turn with more to do: the loop looks at it again at
    /// its next turn, after the others (re-armed, so that the readiness
    /// still there is reported again).
    Again(Interest),
    /// A whole request (head and body) is buffered: to the request workers.
    Queue,
    /// Drop it (closing the socket).
    Close,
}

/// A request whose head the event loop has parsed (one that may have a
/// body), and its body as received.
pub(super) struct Pending {
    parsed: ParsedHead,
    body: Option<Received>,
}

/// An open connection. Counted open from [`Conn::new`] until dropped.
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
    pub(super) state: State,
    /// When the event loop's live timer entry for it fires; `None`: none.
    pub(super) timer_at: Option<Instant>,
    /// The readiness it is registered for.
    pub(super) interest: Interest,
    /// The request being read, when the loop parsed its head.
    request: Option<Box<Pending>>,
    /// When it entered the queue to the request workers.
    pub(super) queued_at: Instant,
    /// The rest of a response, and what runs once it is sent.
    out: Output,
    pub(super) shared: Arc<EngineState>,
}

#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    at: usize,
    /// What runs once the response is sent (or can no longer be): the
    /// request's background tasks are submitted by it.
    then: Option<Box<dyn FnOnce() + Send>>,
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
        shared: Arc<EngineState>,
    ) -> Box<Conn> {
        shared.counters.connection_opened();
        Box::new(Conn {
            stream,
            buf: Buffer::default(),
            remote_addr,
            client,
            slot,
            generation,
            state: State::Idle(now),
            timer_at: None,
            interest: Interest::READABLE,
            request: None,
            queued_at: now,
            out: Output::default(),
            shared,
        })
    }

    pub(super) fn token(&self) -> Token {
        Token(self.slot)
    }

    /// When the current state's time is up (a timeout too large for an
    /// `Instant` is a year).
    pub(super) fn deadline(&self) -> Instant {
        let limits = &self.shared.limits;
        let after = |since: Instant, timeout: Duration| {
            since.checked_add(timeout).unwrap_or_else(far_future)
        };
        // The sooner of a whole deadline and a minimum rate's: `done` bytes
        // at `rate` per second earn their time after the grace.
        let rated = |since: Instant, whole: Duration, done: u64, rate: u64| {
            let whole = after(since, whole);
            match rate {
                0 => whole,
                rate => {
                    let earned = Duration::from_secs_f64(done as f64 / rate as f64);
                    whole.min(after(since, RATE_GRACE + earned))
                }
            }
        };
        match self.state {
            State::Idle(since) => after(since, limits.idle_timeout),
            State::Head { since, .. } => after(since, limits.header_timeout),
            State::Body { since, received } => {
                rated(since, limits.body_timeout, received, limits.min_body_rate)
            }
            State::Writing { started, taken, .. } => {
                rated(started, limits.write_timeout, taken, limits.min_write_rate)
            }
            State::Closing(since) => after(since, LINGER),
            // A worker never waits on the client; the loop looks again later.
            State::Serving => far_future(),
        }
    }

    /// The socket is ready (or may be): make progress without blocking, for
    /// one turn at most.
    pub(super) fn on_ready(&mut self, now: Instant) -> Step {
        match self.state {
            State::Writing { .. } => self.write_more(now),
            State::Closing(_) => self.discard(),
            State::Idle(_) | State::Head { .. } | State::Body { .. } => self.read_request(now),
            State::Serving => Step::Close,
        }
    }

    /// The current state's deadline has passed.
    pub(super) fn expire(&mut self, now: Instant) -> Step {
        match self.state {
            State::Head { .. } => {
                let error = HttpError::new(408, "the request head took too long");
                self.refuse(error.into_response(), None, now)
            }
            State::Body { received, .. } => {
                let error = HttpError::new(408, "the request body took too long");
                let request = self.request.take();
                let head = request.as_ref().map(|r| &r.parsed.head);
                log::debug!(
                    "closing a connection to {} that sent {received} bytes of a body too slowly",
                    self.remote_addr
                );
                self.refuse(error.into_response(), head, now)
            }
            State::Writing { taken, .. } => {
                log::debug!(
                    "closing a connection to {} that took {taken} bytes of a response too slowly",
                    self.remote_addr
                );
                Step::Close
            }
            _ => Step::Close,
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
            let limit = match self.state {
                State::Body { .. } => BUFFER_SIZE,
                _ => self.shared.limits.max_header_bytes + 1,
            };
            match self
                .buf
                .read_from(&mut self.stream, &self.shared.buffers, limit)
            {
                Ok(0) => return Step::Close,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.buf.release_if_empty(&self.shared.buffers);
                    return Step::Wait(Interest::READABLE);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
        self.scan(now).unwrap_or(Step::Again(Interest::READABLE))
    }

    /// Looks at what is buffered: skips the empty lines a client may send
    /// before a request (RFC 9112 §2.2; they count toward the head's limit),
    /// finds the end of a head, and decodes a body. `None`: more bytes are
    /// needed.
    fn scan(&mut self, now: Instant) -> Option<Step> {
        if let State::Idle(_) = self.state {
            if self.buf.is_empty() {
                return None;
            }
            self.state = State::Head {
                since: now,
                searched: 0,
                skipped: 0,
            };
        }
        if let State::Head {
            searched, skipped, ..
        } = &mut self.state
        {
            let max = self.shared.limits.max_header_bytes;
            if *searched == 0 {
                *skipped += self.buf.skip_blank_lines();
                if *skipped > max {
                    let detail = "too many empty lines before the request";
                    return Some(self.refuse(
                        HttpError::new(400, detail).into_response(),
                        None,
                        now,
                    ));
                }
                if self.buf.is_empty() {
                    return None;
                }
            }
            return match head_end(self.buf.filled(), *searched) {
                Some(end) if end <= max => self.head_read(end, now),
                None if self.buf.len() <= max => {
                    *searched = self.buf.len();
                    None
                }
                _ => {
                    let detail = format!("the request head is larger than {max} bytes");
                    Some(self.refuse(HttpError::new(431, detail).into_response(), None, now))
                }
            };
        }
        if let State::Body { .. } = self.state {
            return self.body_read(now);
        }
        None
    }

    /// A whole head of `end` bytes is buffered. One that cannot have a body
    /// goes to a worker as it is (the worker parses it); one that may is
    /// parsed here, and its body read before a worker sees it.
    fn head_read(&mut self, end: usize, now: Instant) -> Option<Step> {
        if !may_have_body(&self.buf.filled()[..end]) {
            return Some(Step::Queue);
        }
        let parsed = match self.take_head() {
            Ok(parsed) => parsed,
            Err(refused) => {
                let response = refused.error.into_response();
                return Some(self.refuse(response, refused.head.as_deref(), now));
            }
        };
        let limits = &self.shared.limits;
        let expected = match parsed.framing {
            Framing::Done | Framing::Length(0) => {
                self.request = Some(Box::new(Pending { parsed, body: None }));
                return Some(Step::Queue);
            }
            Framing::Length(n) if n > limits.max_body_bytes as u64 => {
                let detail = format!(
                    "request body is larger than the limit of {} bytes",
                    limits.max_body_bytes
                );
                let response = HttpError::new(413, detail).into_response();
                return Some(self.refuse(response, Some(&parsed.head), now));
            }
            Framing::Length(n) => n,
            Framing::Chunked(_) => CHUNKED_RESERVE.min(limits.max_body_bytes as u64),
        };
        let counters = &self.shared.counters;
        let Some(body) = Received::reserve(counters, expected, limits.max_body_buffer_bytes) else {
            counters.refused(Refusal::BodyBudget);
            let error = HttpError::new(503, "the server is busy; retry later")
                .with_header("Retry-After", "1");
            return Some(self.refuse(error.into_response(), Some(&parsed.head), now));
        };
        if parsed.expect_continue {
            // 25 bytes on a connection that has sent only a head: they fit,
            // or the client is not reading at all.
            const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            if !matches!(self.write_now(CONTINUE), Ok(n) if n == CONTINUE.len()) {
                return Some(Step::Close);
            }
        }
        self.request = Some(Box::new(Pending {
            parsed,
            body: Some(body),
        }));
        self.state = State::Body {
            since: now,
            received: 0,
        };
        self.body_read(now)
    }

    /// Decodes what is buffered of the body; `Queue` once it is whole.
    fn body_read(&mut self, now: Instant) -> Option<Step> {
        let limits = &self.shared.limits;
        let (max_body, budget) = (limits.max_body_bytes, limits.max_body_buffer_bytes);
        let pending = self.request.as_mut()?;
        let body = pending.body.as_mut()?;
        let decoded = pending
            .parsed
            .framing
            .decode(self.buf.filled(), &mut body.data, max_body);
        let refusal = match decoded {
            Ok(used) => {
                self.buf.consume(used);
                if let State::Body { received, .. } = &mut self.state {
                    *received += used as u64;
                }
                if !body.cover(budget) {
                    self.shared.counters.refused(Refusal::BodyBudget);
                    HttpError::new(503, "the server is busy; retry later")
                        .with_header("Retry-After", "1")
                } else if pending.parsed.framing.is_done() {
                    return Some(Step::Queue);
                } else {
                    self.buf.release_if_empty(&self.shared.buffers);
                    return None;
                }
            }
            Err(BodyError::TooLarge) => HttpError::new(
                413,
                format!("request body is larger than the limit of {max_body} bytes"),
            ),
            Err(BodyError::Invalid(why)) => HttpError::new(400, format!("invalid body: {why}")),
        };
        let request = self.request.take();
        let head = request.as_ref().map(|r| &r.parsed.head);
        Some(self.refuse(refusal.into_response(), head, now))
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
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
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
        let State::Writing { taken, keep, .. } = &mut self.state else {
            return Step::Close;
        };
        match written {
            Ok(n) => {
                self.out.at += n;
                *taken += n as u64;
                if self.out.at == end && end < self.out.bytes.len() {
                    return Step::Again(Interest::WRITABLE);
                }
            }
            Err(_) => return Step::Close,
        }
        if self.out.at < self.out.bytes.len() {
            return Step::Wait(Interest::WRITABLE);
        }
        let keep = *keep;
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
    fn after_response(&mut self, keep: bool, now: Instant) -> Option<Step> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Some(Step::Close);
        }
        if !keep || self.shared.draining.load(Ordering::SeqCst) {
            return Some(self.start_closing(now));
        }
        self.state = State::Idle(now);
        let step = self.scan(now);
        if step.is_none() {
            self.buf.release_if_empty(&self.shared.buffers);
        }
        step
    }

    /// Answers `response` with `Connection: close` (as much as the socket
    /// takes at once: the engine's own answers are small), counted and
    /// logged, then closes.
    pub(super) fn refuse(&mut self, response: Response, head: Option<&Head>, now: Instant) -> Step {
        let out = closing_answer(&self.shared, response, head, now);
        let _ = self.write_now(&out);
        self.start_closing(now);
        // What the client has sent already raises no further edge.
        self.discard()
    }

    /// Answers the request it has buffered with `error` (without a handler),
    /// counted and logged with what its head says.
    pub(super) fn refuse_request(&mut self, error: HttpError, now: Instant) -> Step {
        let parsed = match self.request.take() {
            Some(pending) => Ok(pending.parsed),
            None => self.take_head(),
        };
        let head = match &parsed {
            Ok(request) => Some(&request.head),
            Err(refused) => refused.head.as_deref(),
        };
        self.refuse(error.into_response(), head, now)
    }

    /// Parses the head the event loop found whole at the start of the
    /// buffer, and consumes it.
    fn take_head(&mut self) -> Result<ParsedHead, Refused> {
        let end = head_end(self.buf.filled(), 0).unwrap_or(self.buf.len());
        let limits = &self.shared.limits;
        let parsed = parse_head(&self.buf.filled()[..end], Some(self.remote_addr), limits);
        self.buf.consume(end);
        parsed
    }

    /// Whether the client has closed the connection (or reset it): a peek
    /// finds its end, without taking any byte it sent.
    fn client_gone(&self) -> bool {
        match self.stream.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
        }
    }

    /// Closes our side and waits (for at most [`LINGER`]) for the client to
    /// close its own, so that it reads our last response before a reset.
    fn start_closing(&mut self, now: Instant) -> Step {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.buf = Buffer::default();
        self.request = None;
        self.state = State::Closing(now);
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
    pub(super) fn queue(mut self: Box<Self>) {
        let shared = self.shared.clone();
        self.queued_at = Instant::now();
        if let Err(mut conn) = shared.queue.push_ready(self) {
            shared.counters.refused(Refusal::QueueFull);
            let error = HttpError::new(503, "too many requests are waiting; retry later")
                .with_header("Retry-After", "1");
            let step = conn.refuse_request(error, Instant::now());
            conn.resume(step);
        }
    }

    /// A worker (or the loop, for a connection it took out of its slot) is
    /// done with the connection: `step` says what next.
    fn resume(mut self: Box<Self>, step: Step) {
        let shared = self.shared.clone();
        match step {
            Step::Queue if shared.draining.load(Ordering::SeqCst) => {
                let step = self.refuse_request(HttpError::shutting_down(), Instant::now());
                self.resume(step);
            }
            Step::Queue => self.queue(),
            Step::Wait(interest) | Step::Again(interest) => {
                let Some(mut slot) = shared.slots.lock(self.slot) else {
                    return;
                };
                let Slot::Away {
                    generation,
                    timer_at,
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
                self.interest = interest;
                let token = self.token();
                *slot = Slot::Here(self);
                let Slot::Here(conn) = &mut *slot else {
                    return;
                };
                // Re-armed under the slot's lock, so that the loop finds it
                // in place; a readiness already there is reported at once.
                if shared
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

/// `response`, an answer the engine gives itself, counted and logged (with
/// what was read of the request's head), as the bytes to send before closing.
pub(super) fn closing_answer(
    shared: &EngineState,
    mut response: Response,
    head: Option<&Head>,
    now: Instant,
) -> Vec<u8> {
    super::answered_unhandled(&shared.counters, &shared.ids, head, &mut response, now);
    let (status, headers, body) = response.into_wire();
    let mut out = Vec::new();
    wire::serialize(&mut out, status, &headers, &body, true, Persistence::Close);
    out
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
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

/// One request and the means to answer it.
pub(crate) struct Exchange {
    head: Head,
    /// The whole body, read by the event loop (taken by the handler's
    /// request), and its share of the body budget (held until the exchange
    /// ends).
    body: Option<Received>,
    conn: Option<Box<Conn>>,
    http10: bool,
    keep_alive: bool,
    is_head: bool,
}

impl Exchange {
    /// Takes a connection with a whole request out of the work queue. The
    /// request is not served when it waited past the queue timeout (`503`),
    /// when its client has gone meanwhile (dropped unanswered, counted;
    /// looked at, with one peek, only after a wait: a request taken at once
    /// costs no system call more), or when its head is refused (answered
    /// here): then `None`.
    pub(super) fn start(mut conn: Box<Conn>) -> Option<Exchange> {
        let now = Instant::now();
        conn.state = State::Serving;
        let counters = conn.shared.counters.clone();
        if now.duration_since(conn.queued_at) > conn.shared.limits.queue_timeout {
            counters.refused(Refusal::QueueTimeout);
            let error = HttpError::new(503, "the server is busy; retry later")
                .with_header("Retry-After", "1");
            let step = conn.refuse_request(error, now);
            conn.resume(step);
            return None;
        }
        let (parsed, body) = match conn.request.take() {
            Some(pending) => (Ok(pending.parsed), pending.body),
            None => (conn.take_head(), None),
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(refusal) => {
                let response = refusal.error.into_response();
                let step = conn.refuse(response, refusal.head.as_deref(), now);
                conn.resume(step);
                return None;
            }
        };
        let waited = now.duration_since(conn.queued_at);
        if waited >= conn.shared.limits.gone_check_after && conn.client_gone() {
            // Nobody would read the answer: the handler does not run.
            counters.client_gone();
            let head = &parsed.head;
            let id = conn
                .shared
                .ids
                .for_request(head.headers.get("X-Request-Id"));
            crate::access::log(&head.method, &head.target, 499, conn.queued_at, &id, 0);
            conn.resume(Step::Close);
            return None;
        }
        Some(Exchange {
            head: parsed.head,
            body,
            conn: Some(conn),
            http10: parsed.http10,
            keep_alive: parsed.keep_alive,
            is_head: parsed.is_head,
        })
    }

    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    pub(crate) fn head_mut(&mut self) -> &mut Head {
        &mut self.head
    }

    /// The head, to take parts of, and the body, whole (taken: call it once).
    pub(crate) fn parts(&mut self) -> (&mut Head, BodySource<'_>) {
        let body = self
            .body
            .as_mut()
            .map(|received| std::mem::take(&mut received.data))
            .unwrap_or_default();
        (&mut self.head, BodySource::Bytes(body))
    }

    /// Writes what of `response` the socket takes at once, without ever
    /// waiting on the client; the event loop sends the rest (write timeout,
    /// minimum rate). `then` runs once the whole response has been handed to
    /// the operating system, or can no longer be: here when the socket took
    /// it all, else on a request worker when the loop is done.
    ///
    /// A header that cannot be sent safely (a name that is not a token, a value
    /// with a control character such as CR or LF) is never emitted: the whole
    /// response is replaced by a `500` and the problem is logged.
    pub(crate) fn respond_then<F>(mut self, response: Response, then: F) -> io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let now = Instant::now();
        let (status, headers, body) = response.into_wire();
        let (status, headers, body) = match wire::check_headers(&headers) {
            Ok(()) => (status, headers, body),
            Err(bad) => {
                log::error!(
                    "refusing to send a response with an invalid header: {}",
                    bad.0
                );
                HttpError::new(500, "Internal Server Error")
                    .into_response()
                    .into_wire()
            }
        };
        // The body's memory goes back to the budget with the request.
        self.body = None;
        let Some(mut conn) = self.conn.take() else {
            then();
            return Err(io::Error::other("the connection is gone"));
        };
        let handler_closes = headers
            .get_all("Connection")
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let keep =
            self.keep_alive && !handler_closes && !conn.shared.draining.load(Ordering::SeqCst);
        let persistence = match (keep, self.http10) {
            (false, _) => Persistence::Close,
            (true, false) => Persistence::KeepAlive,
            (true, true) => Persistence::KeepAliveHttp10,
        };
        let send_body = !self.is_head;
        let mut out = Vec::new();
        wire::serialize(&mut out, status, &headers, &body, send_body, persistence);
        match conn.write_now(&out) {
            Ok(n) if n == out.len() => {
                let step = conn.after_response(keep, now);
                conn.resume(step.unwrap_or(Step::Wait(Interest::READABLE)));
                then();
                Ok(())
            }
            Ok(n) => {
                conn.out = Output {
                    bytes: out,
                    at: n,
                    then: Some(Box::new(then)),
                };
                conn.state = State::Writing {
                    started: now,
                    taken: 0,
                    keep,
                };
                conn.resume(Step::Wait(Interest::WRITABLE));
                Ok(())
            }
            Err(e) => {
                conn.resume(Step::Close);
                then();
                if is_client_gone(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

impl Drop for Exchange {
    /// An exchange dropped without a response (it should not happen) still
    /// gets one, so that the client is not left waiting.
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let error = HttpError::new(500, "Internal Server Error").into_response();
            let step = conn.refuse(error, Some(&self.head), Instant::now());
            conn.resume(step);
        }
    }
}

pub(super) fn is_client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}
