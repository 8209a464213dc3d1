//! One connection, wherever it is: waiting on the event loop (`event_loop.rs`)
//! for a request head, the rest of its response or its close; or with a
//! request worker, as the [`Exchange`] the worker answers. Its state
//! machine lives here, so that the loop and the workers move it the same way.

use std::cmp::Reverse;
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::body::Framing;
use super::buffer::{Buffer, BUFFER_SIZE};
use super::builtin::{EngineState, Incoming};
use super::head::{head_end, parse_head, ParsedHead, Refused};
use super::slots::Slot;
use super::wire::{self, Persistence};
use super::Head;
use crate::http_error::HttpError;
use crate::response::{IntoResponse, Response};

/// At most this much of an unread body is read and dropped to keep a
/// connection alive; a larger rest closes it.
const MAX_DRAIN: u64 = 64 * 1024;
/// How long a closing connection waits for the client to finish sending, so
/// that our last response is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(1);
/// How long a response's rest may wait before the minimum write rate applies.
pub(super) const WRITE_RATE_GRACE: Duration = Duration::from_secs(2);

/// What a connection waits for, and since when.
pub(super) enum State {
    /// The next request (idle timeout).
    Idle(Instant),
    /// The rest of a request head begun at `since` (header timeout);
    /// `searched` bytes of it have been scanned for its end.
    Head { since: Instant, searched: usize },
    /// The client to take the rest of a response (write timeout, minimum
    /// rate). `taken`: bytes it took since `started`. Then: keep the
    /// connection (reading `body_left` unread body bytes first) or close it.
    Writing {
        started: Instant,
        taken: u64,
        keep: bool,
        body_left: u64,
    },
    /// The unread rest of a request body, to drop (body read timeout).
    Draining { since: Instant, left: u64 },
    /// Our side is closed: what the client still sends is dropped until it
    /// closes, for at most [`LINGER`].
    Closing(Instant),
    /// With a request worker.
    Serving,
}

/// What the holder of a connection does with it next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Leave it to the event loop, waiting for this readiness.
    Wait(Interest),
    /// A whole request head is buffered: to the request workers.
    Queue,
    /// Drop it (closing the socket).
    Close,
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
    /// The rest of a response, and what runs once it is sent.
    out: Output,
    /// Whether the socket is blocking: a worker reading the body waits on it.
    blocking: bool,
    /// Whether its blocking read and write timeouts have been set.
    timeouts_set: bool,
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
            out: Output::default(),
            blocking: false,
            timeouts_set: false,
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
        match self.state {
            State::Idle(since) => after(since, limits.idle_timeout),
            State::Head { since, .. } => after(since, limits.header_timeout),
            State::Writing { started, taken, .. } => {
                let whole = after(started, limits.write_timeout);
                match limits.min_write_rate {
                    0 => whole,
                    rate => {
                        let earned = Duration::from_secs_f64(taken as f64 / rate as f64);
                        whole.min(after(started, WRITE_RATE_GRACE + earned))
                    }
                }
            }
            State::Draining { since, .. } => after(since, limits.body_read_timeout),
            State::Closing(since) => after(since, LINGER),
            // A worker's own timeouts bound it; the loop looks again later.
            State::Serving => far_future(),
        }
    }

    /// The socket is ready (or may be): make progress without blocking.
    pub(super) fn on_ready(&mut self, now: Instant) -> Step {
        match self.state {
            State::Writing { .. } => self.write_more(now),
            State::Closing(_) => self.discard(),
            State::Idle(_) | State::Head { .. } | State::Draining { .. } => self.read_head(now),
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

    /// Reads until a whole head is buffered or the socket has nothing more.
    fn read_head(&mut self, now: Instant) -> Step {
        let limit = self.shared.limits.max_header_bytes + 1;
        loop {
            if let Some(step) = self.scan(now) {
                return step;
            }
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
    }

    /// Looks at what is buffered: drops what is left of a body, skips the
    /// empty lines a client may send between requests (RFC 9112 §2.2), and
    /// finds the end of a head. `None`: more bytes are needed.
    fn scan(&mut self, now: Instant) -> Option<Step> {
        if let State::Draining { left, .. } = &mut self.state {
            let n = self
                .buf
                .len()
                .min(usize::try_from(*left).unwrap_or(usize::MAX));
            self.buf.consume(n);
            *left -= n as u64;
            if *left > 0 {
                return None;
            }
            self.state = State::Idle(now);
        }
        if let State::Idle(_) = self.state {
            self.buf.skip_blank_lines();
            if self.buf.is_empty() {
                return None;
            }
            self.state = State::Head {
                since: now,
                searched: 0,
            };
        }
        let State::Head { searched, .. } = &mut self.state else {
            return None;
        };
        let max = self.shared.limits.max_header_bytes;
        match head_end(self.buf.filled(), *searched) {
            Some(end) if end <= max => Some(Step::Queue),
            None if self.buf.len() <= max => {
                *searched = self.buf.len();
                None
            }
            _ => {
                let detail = format!("the request head is larger than {max} bytes");
                Some(self.refuse(HttpError::new(431, detail).into_response(), None, now))
            }
        }
    }

    /// Drops what the client still sends to a closing connection.
    fn discard(&mut self) -> Step {
        let mut sink = [0u8; 4096];
        loop {
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
    }

    /// Writes `bytes` without blocking; how many the socket took.
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.unblock()?;
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

    /// Sends more of a response's rest.
    fn write_more(&mut self, now: Instant) -> Step {
        let out = std::mem::take(&mut self.out.bytes);
        let written = self.write_now(&out[self.out.at..]);
        self.out.bytes = out;
        let State::Writing {
            taken,
            keep,
            body_left,
            ..
        } = &mut self.state
        else {
            return Step::Close;
        };
        match written {
            Ok(n) => {
                self.out.at += n;
                *taken += n as u64;
            }
            Err(_) => return Step::Close,
        }
        if self.out.at < self.out.bytes.len() {
            return Step::Wait(Interest::WRITABLE);
        }
        let (keep, body_left) = (*keep, *body_left);
        (self.out.bytes, self.out.at) = (Vec::new(), 0);
        self.run_then();
        match self.after_response(keep, body_left, now) {
            Some(step) => step,
            None => self.read_head(now),
        }
    }

    /// A response has been sent whole: close the connection, or make it
    /// ready for the next request (after dropping `body_left` unread body
    /// bytes). `None`: it waits for bytes, which may already be in the socket.
    fn after_response(&mut self, keep: bool, body_left: u64, now: Instant) -> Option<Step> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Some(Step::Close);
        }
        if !keep || self.shared.draining.load(Ordering::SeqCst) {
            return Some(self.start_closing(now));
        }
        self.state = if body_left > 0 {
            State::Draining {
                since: now,
                left: body_left,
            }
        } else {
            State::Idle(now)
        };
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

    /// Answers the head it has buffered `503` (shutdown has begun: heads
    /// read from now on are refused where they are read, those queued before
    /// are served), counted and logged with what the head says.
    pub(super) fn refuse_shutting_down(&mut self, now: Instant) -> Step {
        let parsed = self.take_head();
        let head = match &parsed {
            Ok(request) => Some(&request.head),
            Err(refused) => refused.head.as_deref(),
        };
        let response = HttpError::shutting_down().into_response();
        self.refuse(response, head, now)
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

    /// Closes our side and waits (for at most [`LINGER`]) for the client to
    /// close its own, so that it reads our last response before a reset.
    fn start_closing(&mut self, now: Instant) -> Step {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.buf = Buffer::default();
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

    /// Makes the socket non-blocking again after a worker read a body.
    fn unblock(&mut self) -> io::Result<()> {
        if self.blocking {
            socket2::SockRef::from(&self.stream).set_nonblocking(true)?;
            self.blocking = false;
        }
        Ok(())
    }

    /// Makes the socket blocking, with the body read timeout, for a worker.
    fn block(&mut self) -> io::Result<()> {
        if self.blocking {
            return Ok(());
        }
        let socket = socket2::SockRef::from(&self.stream);
        if !self.timeouts_set {
            let limits = &self.shared.limits;
            socket.set_read_timeout(Some(limits.body_read_timeout))?;
            socket.set_write_timeout(Some(limits.write_timeout))?;
            self.timeouts_set = true;
        }
        socket.set_nonblocking(false)?;
        self.blocking = true;
        Ok(())
    }

    /// A worker is done with the connection: `step` says what next.
    fn resume(mut self: Box<Self>, step: Step) {
        let shared = self.shared.clone();
        match step {
            Step::Queue if shared.draining.load(Ordering::SeqCst) => {
                let step = self.refuse_shutting_down(Instant::now());
                self.resume(step);
            }
            Step::Queue => shared.queue.push(Incoming::Ready(self)),
            Step::Wait(interest) if self.unblock().is_ok() => {
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
            _ => {
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

/// The body, read by a worker: first what was buffered with the head, then
/// from the socket, blocking (body read timeout).
impl Read for Conn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Conn {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.buf.is_empty() {
            self.block()?;
            match self
                .buf
                .read_from(&mut self.stream, &self.shared.buffers, BUFFER_SIZE)
            {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.buf.filled())
    }

    fn consume(&mut self, n: usize) {
        self.buf.consume(n);
    }
}

/// One request and the means to answer it.
pub(crate) struct Exchange {
    head: Head,
    body: BodyReader,
    http10: bool,
    keep_alive: bool,
    is_head: bool,
}

/// The request body as a reader over the connection.
struct BodyReader {
    conn: Option<Box<Conn>>,
    framing: Framing,
    /// `Expect: 100-continue` not yet answered.
    expect_continue: bool,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.framing.is_done() {
            return Ok(0);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::other("the connection is gone"))?;
        if self.expect_continue {
            self.expect_continue = false;
            conn.block()?;
            conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        self.framing.read(conn, buf)
    }
}

impl Exchange {
    /// Parses the head a connection has buffered (the event loop found its
    /// end). A head refused is answered here and the connection closed:
    /// `None`.
    pub(super) fn start(mut conn: Box<Conn>) -> Option<Exchange> {
        let now = Instant::now();
        conn.state = State::Serving;
        let step = match conn.take_head() {
            Err(refusal) => {
                let response = refusal.error.into_response();
                conn.refuse(response, refusal.head.as_deref(), now)
            }
            Ok(request) => return Some(Exchange::new(request, conn)),
        };
        conn.resume(step);
        None
    }

    fn new(request: ParsedHead, conn: Box<Conn>) -> Exchange {
        Exchange {
            head: request.head,
            body: BodyReader {
                conn: Some(conn),
                framing: request.framing,
                expect_continue: request.expect_continue,
            },
            http10: request.http10,
            keep_alive: request.keep_alive,
            is_head: request.is_head,
        }
    }

    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    /// The head, to take parts of, and the body, decoded from its framing.
    pub(crate) fn parts(&mut self) -> (&mut Head, &mut dyn Read) {
        (&mut self.head, &mut self.body)
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
        let Some(mut conn) = self.body.conn.take() else {
            then();
            return Err(io::Error::other("the connection is gone"));
        };
        let handler_closes = headers
            .get_all("Connection")
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let keep = self.keep_alive
            && !handler_closes
            && !conn.shared.draining.load(Ordering::SeqCst)
            && self.body_can_be_finished();
        let persistence = match (keep, self.http10) {
            (false, _) => Persistence::Close,
            (true, false) => Persistence::KeepAlive,
            (true, true) => Persistence::KeepAliveHttp10,
        };
        let body_left = match self.body.framing {
            Framing::Length(left) => left,
            _ => 0,
        };
        let send_body = !self.is_head;
        let mut out = Vec::new();
        wire::serialize(&mut out, status, &headers, &body, send_body, persistence);
        match conn.write_now(&out) {
            Ok(n) if n == out.len() => {
                let step = conn.after_response(keep, body_left, now);
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
                    body_left,
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

    /// Whether the unread rest of the body is known and small enough to read
    /// and drop after responding, so that the connection can serve another
    /// request.
    fn body_can_be_finished(&self) -> bool {
        match self.body.framing {
            Framing::Done | Framing::Length(0) => true,
            // Nothing was sent yet if `100 Continue` was not: the client may
            // or may not send the body, so the framing is lost.
            _ if self.body.expect_continue => false,
            Framing::Length(left) => left <= MAX_DRAIN,
            Framing::Chunked(_) => false,
        }
    }
}

impl Drop for Exchange {
    /// An exchange dropped without a response (it should not happen) still
    /// gets one, so that the client is not left waiting.
    fn drop(&mut self) {
        if let Some(mut conn) = self.body.conn.take() {
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
