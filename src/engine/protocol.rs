//! HTTP/1.1 on one connection as a state machine over the bytes read so far:
//! what the connection waits for and until when, where a request's head and
//! body end, and what to refuse. No I/O: `conn.rs` reads and writes the
//! socket and does what this says (sans-IO, as ureq keeps HTTP's state
//! apart from its transport), so every transition is unit-tested here.
//!
//! Its size: a third of it is the unit tests of every transition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::body::{BodyError, Framing, Received};
use super::buffer::Buffer;
use super::head::{head_end, may_have_body, parse_head, ParsedHead, Refused};
use super::limits::ConnectionLimits;
use super::parts::Head;
use crate::http_error::HttpError;
use crate::stats::{Counters, Refusal as Counted};

/// How long a closing connection waits for the client to finish sending, so
/// that our last response is not destroyed by a reset.
pub(super) const LINGER: Duration = Duration::from_secs(1);
/// How long a response's rest (or a body) may take before the minimum rate
/// applies.
pub(super) const RATE_GRACE: Duration = Duration::from_secs(2);
/// The first reservation of a chunked body, whose length is unknown.
const CHUNKED_RESERVE: u64 = 16 * 1024;

/// What a connection waits for, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The rest of the body of the pending request, whose head ended at
    /// `since` (body timeout, minimum rate); `received`: the body's bytes on
    /// the wire so far.
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

/// A request whose head was parsed while it was read (one that may have a
/// body), and its body as received.
pub(super) struct Pending {
    pub(super) parsed: ParsedHead,
    pub(super) body: Option<Received>,
}

/// What the bytes read so far call for.
pub(super) enum Scan {
    /// More bytes are needed.
    More,
    /// A whole request (head, and body if any) is buffered: to a worker.
    Request,
    /// `100 Continue` is owed before the client sends the body: send it,
    /// then scan again.
    Continue,
    /// Answer this, then close.
    Refuse(Refusal),
}

/// An answer the engine gives without a handler, and what was read of the
/// request (for the access log and the client's request id).
pub(super) struct Refusal {
    pub(super) error: HttpError,
    pub(super) head: Option<Box<Head>>,
}

/// `Scan::Refuse` with `error`, and what was read of the head.
fn refuse(error: HttpError, head: Option<Box<Head>>) -> Scan {
    Scan::Refuse(Refusal { error, head })
}

/// What a scan needs to know of its connection and engine.
pub(super) struct Context<'a> {
    pub(super) limits: &'a ConnectionLimits,
    /// For the body budget and the refusals it counts.
    pub(super) counters: &'a Arc<Counters>,
    pub(super) remote_addr: SocketAddr,
}

/// The protocol's side of one connection: its state, and the request being
/// read when its head was parsed here.
pub(super) struct Protocol {
    pub(super) state: State,
    pending: Option<Box<Pending>>,
}

impl Protocol {
    /// A connection just accepted, waiting for its first request.
    pub(super) fn new(now: Instant) -> Protocol {
        Protocol {
            state: State::Idle(now),
            pending: None,
        }
    }

    /// When the current state's time is up (a timeout too large for an
    /// `Instant` is a year).
    pub(super) fn deadline(&self, limits: &ConnectionLimits) -> Instant {
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

    /// The current state's deadline has passed: what to answer before
    /// closing (`408` for a head or a body too slow), if anything.
    pub(super) fn expired(&mut self) -> Option<Refusal> {
        let detail = match self.state {
            State::Head { .. } => "the request head took too long",
            State::Body { .. } => "the request body took too long",
            _ => return None,
        };
        let head = self.pending.take().map(|p| Box::new(p.parsed.head));
        Some(Refusal {
            error: HttpError::new(408, detail),
            head,
        })
    }

    /// Looks at what is buffered: skips the empty lines a client may send
    /// before a request (RFC 9112 §2.2; they count toward the head's limit
    /// and start its deadline), finds the end of a head, and decodes a body
    /// (consuming it from `buf`).
    pub(super) fn scan(&mut self, buf: &mut Buffer, now: Instant, context: &Context<'_>) -> Scan {
        if let State::Idle(_) = self.state {
            if buf.is_empty() {
                return Scan::More;
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
            let max = context.limits.max_header_bytes;
            if *searched == 0 {
                *skipped += buf.skip_blank_lines();
                if *skipped > max {
                    let detail = "too many empty lines before the request";
                    return refuse(HttpError::new(400, detail), None);
                }
                if buf.is_empty() {
                    return Scan::More;
                }
            }
            return match head_end(buf.filled(), *searched) {
                Some(end) if end <= max => self.head_read(buf, end, now, context),
                None if buf.len() <= max => {
                    *searched = buf.len();
                    Scan::More
                }
                _ => {
                    let detail = format!("the request head is larger than {max} bytes");
                    refuse(HttpError::new(431, detail), None)
                }
            };
        }
        if let State::Body { .. } = self.state {
            return self.body_read(buf, context);
        }
        Scan::More
    }

    /// A whole head of `end` bytes is buffered. One that cannot have a body
    /// goes to a worker as it is (the worker parses it); one that may is
    /// parsed here, and its body read before a worker sees it.
    fn head_read(
        &mut self,
        buf: &mut Buffer,
        end: usize,
        now: Instant,
        context: &Context<'_>,
    ) -> Scan {
        if !may_have_body(&buf.filled()[..end]) {
            return Scan::Request;
        }
        let parsed = match take_head(buf, Some(context.remote_addr), context.limits) {
            Ok(parsed) => parsed,
            Err(refused) => return refuse(refused.error, refused.head),
        };
        let limits = context.limits;
        let expected = match parsed.framing {
            Framing::Done | Framing::Length(0) => {
                self.pending = Some(Box::new(Pending { parsed, body: None }));
                return Scan::Request;
            }
            Framing::Length(n) if n > limits.max_body_bytes as u64 => {
                let detail = format!(
                    "request body is larger than the limit of {} bytes",
                    limits.max_body_bytes
                );
                return refuse(HttpError::new(413, detail), Some(Box::new(parsed.head)));
            }
            Framing::Length(n) => n,
            Framing::Chunked(_) => CHUNKED_RESERVE.min(limits.max_body_bytes as u64),
        };
        let counters = context.counters;
        let Some(body) = Received::reserve(counters, expected, limits.max_body_buffer_bytes) else {
            counters.refused(Counted::BodyBudget);
            return refuse(busy(), Some(Box::new(parsed.head)));
        };
        let continue_owed = parsed.expect_continue;
        self.pending = Some(Box::new(Pending {
            parsed,
            body: Some(body),
        }));
        self.state = State::Body {
            since: now,
            received: 0,
        };
        if continue_owed {
            return Scan::Continue;
        }
        self.body_read(buf, context)
    }

    /// Decodes what is buffered of the body; `Request` once it is whole.
    fn body_read(&mut self, buf: &mut Buffer, context: &Context<'_>) -> Scan {
        let limits = context.limits;
        let Some(pending) = self.pending.as_mut() else {
            return Scan::More;
        };
        let Some(body) = pending.body.as_mut() else {
            return Scan::More;
        };
        let max_body = limits.max_body_bytes;
        let error = match pending
            .parsed
            .framing
            .decode(buf.filled(), &mut body.data, max_body)
        {
            Ok(used) => {
                buf.consume(used);
                if let State::Body { received, .. } = &mut self.state {
                    *received += used as u64;
                }
                if !body.cover(limits.max_body_buffer_bytes) {
                    context.counters.refused(Counted::BodyBudget);
                    busy()
                } else if pending.parsed.framing.is_done() {
                    return Scan::Request;
                } else {
                    return Scan::More;
                }
            }
            Err(BodyError::TooLarge) => HttpError::new(
                413,
                format!("request body is larger than the limit of {max_body} bytes"),
            ),
            Err(BodyError::Invalid(why)) => HttpError::new(400, format!("invalid body: {why}")),
        };
        let head = self.pending.take().map(|p| Box::new(p.parsed.head));
        refuse(error, head)
    }

    /// The request a scan found whole, for a worker: parsed here already
    /// (with its body), or parsed now from the head at the start of `buf`.
    pub(super) fn take_request(
        &mut self,
        buf: &mut Buffer,
        remote_addr: SocketAddr,
        limits: &ConnectionLimits,
    ) -> Result<(ParsedHead, Option<Received>), Refused> {
        self.state = State::Serving;
        match self.pending.take() {
            Some(pending) => Ok((pending.parsed, pending.body)),
            None => take_head(buf, Some(remote_addr), limits).map(|parsed| (parsed, None)),
        }
    }

    /// What was read of the request, for an answer that refuses it: its
    /// head parsed here, or parsed now from `buf`.
    pub(super) fn refused_head(
        &mut self,
        buf: &mut Buffer,
        remote_addr: SocketAddr,
        limits: &ConnectionLimits,
    ) -> Option<Box<Head>> {
        match self.take_request(buf, remote_addr, limits) {
            Ok((parsed, _)) => Some(Box::new(parsed.head)),
            Err(refused) => refused.head,
        }
    }

    /// The rest of a response waits for the client.
    pub(super) fn writing(&mut self, now: Instant, keep: bool) {
        self.state = State::Writing {
            started: now,
            taken: 0,
            keep,
        };
    }

    /// The client took `n` more bytes of the response.
    pub(super) fn took(&mut self, n: usize) {
        if let State::Writing { taken, .. } = &mut self.state {
            *taken += n as u64;
        }
    }

    /// A response has been sent whole and the connection stays: it waits
    /// for the next request.
    pub(super) fn idle(&mut self, now: Instant) {
        self.state = State::Idle(now);
    }

    /// Our side is closed; anything pending goes.
    pub(super) fn closing(&mut self, now: Instant) {
        self.pending = None;
        self.state = State::Closing(now);
    }
}

/// Parses the head the scan found whole at the start of `buf`, and
/// consumes it.
fn take_head(
    buf: &mut Buffer,
    remote_addr: Option<SocketAddr>,
    limits: &ConnectionLimits,
) -> Result<ParsedHead, Refused> {
    let end = head_end(buf.filled(), 0).unwrap_or(buf.len());
    let parsed = parse_head(&buf.filled()[..end], remote_addr, limits);
    buf.consume(end);
    parsed
}

/// `503` with `Retry-After`: the server cannot take the request now.
pub(super) fn busy() -> HttpError {
    HttpError::new(503, "the server is busy; retry later").with_header("Retry-After", "1")
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::buffer::Pool;

    /// A protocol and the buffer it scans, with the limits and counters of
    /// its engine.
    struct Harness {
        protocol: Protocol,
        buf: Buffer,
        pool: Pool,
        limits: ConnectionLimits,
        counters: Arc<Counters>,
        now: Instant,
    }

    impl Harness {
        fn new(limits: ConnectionLimits) -> Harness {
            let now = Instant::now();
            Harness {
                protocol: Protocol::new(now),
                buf: Buffer::default(),
                pool: Pool::default(),
                limits,
                counters: Arc::new(Counters::default()),
                now,
            }
        }

        /// `bytes` arrive; what the scan says.
        fn feed(&mut self, mut bytes: &[u8]) -> Scan {
            while !bytes.is_empty() {
                let limit = self.buf.len() + bytes.len();
                self.buf.read_from(&mut bytes, &self.pool, limit).unwrap();
            }
            self.scan()
        }

        fn scan(&mut self) -> Scan {
            let context = Context {
                limits: &self.limits,
                counters: &self.counters,
                remote_addr: "127.0.0.1:9".parse().unwrap(),
            };
            self.protocol.scan(&mut self.buf, self.now, &context)
        }

        fn take(&mut self) -> (ParsedHead, Option<Received>) {
            let addr = "127.0.0.1:9".parse().unwrap();
            match self
                .protocol
                .take_request(&mut self.buf, addr, &self.limits)
            {
                Ok(request) => request,
                Err(refused) => panic!("refused: {}", refused.error.status()),
            }
        }
    }

    fn status(scan: Scan) -> u16 {
        match scan {
            Scan::Refuse(refusal) => refusal.error.status(),
            Scan::More => 0,
            Scan::Request => 1,
            Scan::Continue => 100,
        }
    }

    #[test]
    fn a_head_without_a_body_goes_to_a_worker_unparsed_and_is_parsed_there() {
        let mut h = Harness::new(ConnectionLimits::default());
        assert_eq!(status(h.feed(b"GET /a HTTP/1.1\r\nHost")), 0);
        assert!(matches!(h.protocol.state, State::Head { .. }));
        assert_eq!(status(h.feed(b": x\r\n\r\nGET /b")), 1);
        assert!(h.protocol.pending.is_none(), "not parsed on the loop");
        let (parsed, body) = h.take();
        assert_eq!((parsed.head.target.as_str(), body.is_none()), ("/a", true));
        assert_eq!(h.buf.filled(), b"GET /b", "the next request stays");
        assert_eq!(h.protocol.state, State::Serving);
    }

    #[test]
    fn empty_lines_before_a_head_start_its_deadline_and_count_toward_its_limit() {
        let limits = ConnectionLimits {
            max_header_bytes: 64,
            ..ConnectionLimits::default()
        };
        let mut h = Harness::new(limits.clone());
        assert_eq!(status(h.feed(b"\r\n\r\n")), 0);
        let State::Head { skipped, since, .. } = h.protocol.state else {
            panic!("{:?}", h.protocol.state);
        };
        assert_eq!((skipped, since), (4, h.now));
        assert_eq!(h.protocol.deadline(&limits), h.now + limits.header_timeout);
        assert_eq!(status(h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")), 1);
        let mut flood = Harness::new(limits);
        assert_eq!(status(flood.feed(&[b'\n'; 65])), 400);
    }

    #[test]
    fn a_head_over_its_limit_is_431_whole_or_not() {
        let limits = ConnectionLimits {
            max_header_bytes: 32,
            ..ConnectionLimits::default()
        };
        let mut h = Harness::new(limits);
        assert_eq!(
            status(h.feed(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")),
            431
        );
    }

    #[test]
    fn a_body_is_decoded_as_it_arrives_then_the_request_goes_whole() {
        let limits = ConnectionLimits::default();
        let mut h = Harness::new(limits.clone());
        let head = b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello";
        assert_eq!(status(h.feed(head)), 0);
        let State::Body { since, received } = h.protocol.state else {
            panic!("{:?}", h.protocol.state);
        };
        assert_eq!(received, 5);
        let deadline = h.protocol.deadline(&limits);
        // The sooner of the whole body's deadline and the rate's.
        let rated = since + RATE_GRACE + Duration::from_secs_f64(5.0 / 1024.0);
        assert_eq!(deadline, rated.min(since + limits.body_timeout));
        assert_eq!(h.counters.snapshot().body_bytes_buffered, 10);
        assert_eq!(status(h.feed(b"worldGET /next")), 1);
        let (parsed, body) = h.take();
        assert_eq!(parsed.head.target, "/u");
        assert_eq!(body.unwrap().data, b"helloworld");
        assert_eq!(h.buf.filled(), b"GET /next");
        assert_eq!(h.counters.snapshot().body_bytes_buffered, 0, "given back");
    }

    #[test]
    fn a_chunked_body_in_pieces_and_its_trailers() {
        let mut h = Harness::new(ConnectionLimits::default());
        let head = b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(h.feed(head)), 0);
        for piece in [&b"3\r\nab"[..], b"c\r\n4\r", b"\ndefg\r\n0\r\nT: 1\r\n"] {
            assert_eq!(status(h.feed(piece)), 0);
        }
        assert_eq!(status(h.feed(b"\r\n")), 1);
        assert_eq!(h.take().1.unwrap().data, b"abcdefg");
    }

    #[test]
    fn expect_100_continue_is_owed_before_the_body() {
        let mut h = Harness::new(ConnectionLimits::default());
        let head =
            b"POST /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(status(h.feed(head)), 100);
        assert_eq!(status(h.feed(b"ok")), 1);
    }

    #[test]
    fn bodies_too_large_or_over_the_budget_are_refused_before_they_are_read() {
        let limits = ConnectionLimits {
            max_body_bytes: 100,
            max_body_buffer_bytes: 150,
            ..ConnectionLimits::default()
        };
        let head = |n: usize| format!("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n");
        let mut too_large = Harness::new(limits.clone());
        assert_eq!(status(too_large.feed(head(101).as_bytes())), 413);
        let mut first = Harness::new(limits.clone());
        let mut second = Harness::new(limits);
        second.counters = first.counters.clone();
        assert_eq!(status(first.feed(head(100).as_bytes())), 0);
        assert_eq!(status(second.feed(head(60).as_bytes())), 503);
        assert_eq!(first.counters.snapshot().refused_body_budget, 1);
        let mut chunked = Harness::new(ConnectionLimits {
            max_body_bytes: 4,
            ..ConnectionLimits::default()
        });
        let head = b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
        assert_eq!(status(chunked.feed(head)), 413);
    }

    #[test]
    fn a_head_or_body_past_its_deadline_is_408_other_states_just_close() {
        let mut h = Harness::new(ConnectionLimits::default());
        assert!(h.protocol.expired().is_none(), "idle: closed quietly");
        h.feed(b"GET / HTTP");
        assert_eq!(h.protocol.expired().map(|r| r.error.status()), Some(408));
        let mut body = Harness::new(ConnectionLimits::default());
        body.feed(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n");
        let refusal = body.protocol.expired().unwrap();
        assert_eq!(refusal.error.status(), 408);
        assert_eq!(refusal.head.unwrap().target, "/u", "logged with its head");
        body.protocol.writing(body.now, true);
        assert!(body.protocol.expired().is_none());
    }

    #[test]
    fn a_response_rest_earns_its_time_at_the_minimum_rate() {
        let limits = ConnectionLimits {
            min_write_rate: 1000,
            write_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        };
        let mut h = Harness::new(limits.clone());
        h.protocol.writing(h.now, true);
        assert_eq!(h.protocol.deadline(&limits), h.now + RATE_GRACE);
        h.protocol.took(3000);
        assert_eq!(
            h.protocol.deadline(&limits),
            h.now + RATE_GRACE + Duration::from_secs(3)
        );
        h.protocol.closing(h.now);
        assert_eq!(h.protocol.deadline(&limits), h.now + LINGER);
    }
}
