//! HTTP/1.1 engines behind one seam. The rest of the crate sees only this
//! module's [`Listener`], which yields [`Exchange`]s (a request head in the
//! crate's own types, a body reader, and a way to respond once), whatever
//! engine reads and writes the bytes:
//!
//! - **builtin** (the default; `builtin.rs`, `event_loop.rs`, `conn.rs`,
//!   `head.rs`, `body.rs`, `wire.rs`, `slots.rs`, `buffer.rs`, `limits.rs`):
//!   our own, on the `httparse` parser and `mio`. One event-loop thread
//!   (`afterward-io`) accepts connections, up to `max_connections`, and waits
//!   on the readiness of every connection not being served: it reads request
//!   heads (idle and header timeouts, size limit) and hands connections with a
//!   whole head to the request workers. A worker parses and checks the head,
//!   reads the body (body read timeout), and writes the response without
//!   blocking; what the socket does not take, the loop sends (write timeout
//!   over the whole response, minimum rate), reading no further request from
//!   that connection meanwhile. The worker puts a kept-alive connection back
//!   in its slot and re-arms it itself. Why our own, and why this model:
//!   "The engine" and "The engine at scale" in ARCHITECTURE.md.
//! - **tiny_http** (feature `tiny-http`; `tiny.rs`): the design's engine,
//!   `tiny_http` 0.12. Request workers call its blocking `recv` themselves and
//!   answer with its `respond`. It has no timeouts, limits or connection cap
//!   (SECURITY.md lists what it does not defend).
//!
//! The seam is the one a readiness-based engine needs too: complete request
//! heads are handed to request workers, and the worker writes the response.
//!
//! Architecture invariant: only this folder reads or writes HTTP. It sees the
//! rest of the crate through `Response`, `HttpError`, `IntoResponse`,
//! `Headers`, `Method` and `Counters`; the rest sees it only through
//! `Engine`, `Listener`, `Next`, `Head` and `Exchange`.

mod body;
mod buffer;
mod builtin;
mod conn;
mod event_loop;
mod head;
pub(crate) mod limits;
mod slots;
#[cfg(feature = "tiny-http")]
mod tiny;
mod wire;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::access::{self, RequestIds};
use crate::headers::Headers;
use crate::http_error::HttpError;
use crate::method::Method;
use crate::response::Response;
use crate::stats::Counters;

/// The HTTP/1.1 engine a [`Server`](crate::Server) runs on, chosen with
/// [`ServerBuilder::engine`](crate::ServerBuilder::engine).
///
/// Everything above the engine (routing, extractors, background tasks,
/// shutdown, counters) behaves the same on each. What differs is how well the
/// connection layer defends itself: see SECURITY.md.
///
/// Parses from the names the binary's `--engine` flag takes: `builtin`,
/// `tiny-http`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// afterward's own engine: an event loop holding every idle connection
    /// (no thread each), strict framing, and every timeout and limit of the
    /// [`ServerBuilder`](crate::ServerBuilder).
    #[default]
    Builtin,
    /// `tiny_http` 0.12 (cargo feature `tiny-http`): the engine this crate was
    /// first designed on, for deployments that already run it. It has no
    /// timeouts, size limits or connection cap: the builder's connection
    /// settings (`header_timeout`, `idle_timeout`, `body_timeout`,
    /// `write_timeout`, `max_connections`, `max_connections_per_client`,
    /// `max_header_bytes`, `max_headers`,
    /// `tcp_nodelay`) do not apply to it, and the server logs a warning at
    /// start-up. Put it behind a reverse proxy.
    #[cfg(feature = "tiny-http")]
    TinyHttp,
}

impl Engine {
    /// The engine's name, as [`FromStr`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Builtin => "builtin",
            #[cfg(feature = "tiny-http")]
            Engine::TinyHttp => "tiny-http",
        }
    }
}

impl FromStr for Engine {
    type Err = String;

    /// `builtin`, or `tiny-http` (in a build with that feature).
    fn from_str(name: &str) -> Result<Engine, String> {
        match name {
            "builtin" => Ok(Engine::Builtin),
            #[cfg(feature = "tiny-http")]
            "tiny-http" => Ok(Engine::TinyHttp),
            #[cfg(not(feature = "tiny-http"))]
            "tiny-http" => Err(
                "the tiny-http engine is not in this build (cargo feature `tiny-http`)".to_owned(),
            ),
            other => Err(format!(
                "unknown engine `{other}` (expected `builtin` or `tiny-http`)"
            )),
        }
    }
}

/// A listening engine: where request workers take requests from.
pub(crate) enum Listener {
    Builtin(builtin::BuiltinListener),
    #[cfg(feature = "tiny-http")]
    TinyHttp(tiny::TinyListener),
}

impl Listener {
    /// Listens on `address` (`host:port`; port 0 picks a free one) with `engine`.
    pub(crate) fn bind(
        engine: Engine,
        address: &str,
        limits: ConnectionLimits,
        counters: Arc<Counters>,
        ids: Arc<RequestIds>,
    ) -> io::Result<Listener> {
        match engine {
            Engine::Builtin => builtin::BuiltinListener::bind(address, limits, counters, ids)
                .map(Listener::Builtin),
            #[cfg(feature = "tiny-http")]
            Engine::TinyHttp => {
                tiny::TinyListener::bind(address, &limits, counters, ids).map(Listener::TinyHttp)
            }
        }
    }

    /// Shutdown has begun. The builtin engine answers new requests `503`
    /// with `Connection: close` and closes
    /// connections after their response in flight. (tiny_http cannot do
    /// either; the server's refuser answers what reaches it.)
    pub(crate) fn drain(&self) {
        match self {
            Listener::Builtin(listener) => listener.drain(),
            #[cfg(feature = "tiny-http")]
            Listener::TinyHttp(_) => {}
        }
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        match self {
            Listener::Builtin(listener) => listener.local_addr(),
            #[cfg(feature = "tiny-http")]
            Listener::TinyHttp(listener) => listener.local_addr(),
        }
    }

    /// Blocks until a request arrives or [`wake_one`](Self::wake_one) is called.
    pub(crate) fn next(&self) -> Next {
        match self {
            Listener::Builtin(listener) => listener.next(),
            #[cfg(feature = "tiny-http")]
            Listener::TinyHttp(listener) => listener.next(),
        }
    }

    /// Makes one call to [`next`](Self::next), current or future, return
    /// [`Next::Woken`]. Wake-ups queue behind requests already waiting.
    pub(crate) fn wake_one(&self) {
        match self {
            Listener::Builtin(listener) => listener.wake_one(),
            #[cfg(feature = "tiny-http")]
            Listener::TinyHttp(listener) => listener.wake_one(),
        }
    }
}

/// Counts and logs an answer given without a handler (by the engine itself,
/// or by the server's refuser during shutdown), and gives it a request id:
/// the client's `X-Request-Id` when a head was read and it is sane, else a
/// new one.
///
/// Architecture invariant: every answer is counted and logged: here, or in
/// `server::worker::handle` for the requests handlers see.
pub(crate) fn answered_unhandled(
    counters: &Counters,
    ids: &RequestIds,
    head: Option<&Head>,
    response: &mut Response,
    started: std::time::Instant,
) {
    let request_id = ids.for_request(head.and_then(|h| h.headers.get("X-Request-Id")));
    response
        .headers_mut()
        .set("X-Request-Id".into(), request_id.to_string().into());
    let status = response.status();
    counters.responding(status);
    match head {
        Some(head) => access::log(&head.method, &head.target, status, started, &request_id, 0),
        None => access::log(&"-", "-", status, started, &request_id, 0),
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, an HTTP/1.0 one
/// at most one; its value is `host[:port]` (empty is allowed: a target with
/// no authority). Anything else is `400`.
pub(crate) fn check_host(headers: &Headers, http10: bool) -> Result<(), HttpError> {
    let mut hosts = headers.get_all("Host");
    let bad = |detail: &str| Err(HttpError::new(400, detail.to_owned()));
    match (hosts.next(), hosts.next()) {
        (None, _) if http10 => Ok(()),
        (None, _) => bad("an HTTP/1.1 request needs a Host header"),
        (Some(_), Some(_)) => bad("more than one Host header"),
        (Some(value), None) if is_valid_host(value.trim_matches([' ', '\t'])) => Ok(()),
        (Some(_), None) => bad("invalid Host header"),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986): an IP literal in brackets, or
/// registered-name characters; the port all digits.
fn is_valid_host(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let literal_ok = !literal.is_empty()
            && literal.bytes().all(|b| {
                b.is_ascii_hexdigit() || b":.vV".contains(&b) || is_unreserved_or_sub_delim(b)
            });
        if !literal_ok {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (value, ""),
        }
    };
    let host_ok = host
        .bytes()
        .all(|b| b == b'%' || is_unreserved_or_sub_delim(b));
    host_ok && port.bytes().all(|b| b.is_ascii_digit())
}

fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// What [`Listener::next`] returns.
// Returned once per request and matched at once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// A request to answer.
    Request(Exchange),
    /// [`Listener::wake_one`] was called.
    Woken,
}

/// One request and the means to answer it, from whichever engine read it.
pub(crate) enum Exchange {
    Builtin(conn::Exchange),
    #[cfg(feature = "tiny-http")]
    TinyHttp(tiny::TinyExchange),
}

impl Exchange {
    /// The request head.
    pub(crate) fn head(&self) -> &Head {
        match self {
            Exchange::Builtin(exchange) => exchange.head(),
            #[cfg(feature = "tiny-http")]
            Exchange::TinyHttp(exchange) => exchange.head(),
        }
    }

    /// The head, to take parts of.
    pub(crate) fn head_mut(&mut self) -> &mut Head {
        match self {
            Exchange::Builtin(exchange) => exchange.head_mut(),
            #[cfg(feature = "tiny-http")]
            Exchange::TinyHttp(exchange) => exchange.head_mut(),
        }
    }

    /// The head, to take parts of, and the body (taken: call it once): whole (our engine reads
    /// it before a worker sees the request), or a reader decoding it from
    /// its framing (tiny_http).
    pub(crate) fn parts(&mut self) -> (&mut Head, BodySource<'_>) {
        match self {
            Exchange::Builtin(exchange) => exchange.parts(),
            #[cfg(feature = "tiny-http")]
            Exchange::TinyHttp(exchange) => exchange.parts(),
        }
    }

    /// Sends `response`, then runs `then` once all of it has been handed to
    /// the operating system (or can no longer be: the client has gone). The
    /// request worker never waits on a slow client: with our engine, what
    /// the socket does not take at once is sent by the event loop, and
    /// `then` runs on a request worker when it is done. A client that has
    /// gone away is not an error. A header that cannot be sent safely turns
    /// the response into a `500` (logged).
    pub(crate) fn respond_then<F>(self, response: Response, then: F) -> io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        match self {
            Exchange::Builtin(exchange) => exchange.respond_then(response, then),
            #[cfg(feature = "tiny-http")]
            Exchange::TinyHttp(exchange) => {
                let sent = exchange.respond(response);
                then();
                sent
            }
        }
    }
}

/// Reads `bytes` as the event loop reads a connection: in pieces into a
/// pooled [`buffer::Buffer`], blank lines before the head skipped (and
/// counted toward its limit), the head's end searched piece by piece, up to
/// the head size limit; then parses the head and decodes its body piece by
/// piece, as the loop does. What the fuzz target `request_head` drives.
/// Never panics, whatever the input, and finds what a reading of the whole
/// input at once finds.
#[cfg(any(fuzzing, test))]
pub(crate) fn fuzz_request(bytes: &[u8]) {
    use std::io::Read;

    /// Gives `rest` out `step` bytes at a time, as a socket might.
    struct Pieces<'a> {
        rest: &'a [u8],
        step: usize,
    }
    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.rest.len());
            out[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    let limits = ConnectionLimits::default();
    let max = limits.max_header_bytes;
    let step = 1 + usize::from(bytes.first().copied().unwrap_or(0)) * 97;
    let mut source = Pieces { rest: bytes, step };
    let pool = buffer::Pool::default();
    let mut buf = buffer::Buffer::default();
    let (mut skipped, mut searched) = (0, 0);
    let end = loop {
        if searched == 0 {
            skipped += buf.skip_blank_lines();
        }
        if skipped > max {
            return;
        }
        let end = head::head_end(buf.filled(), searched);
        if end.is_some() || buf.len() > max {
            break end;
        }
        searched = buf.len();
        match buf.read_from(&mut source, &pool, max + 1) {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
    };
    // The buffer holds the input's bytes, in order, and the end found in
    // pieces is the end found in those bytes whole.
    let held = &bytes[skipped..skipped + buf.len()];
    assert_eq!(buf.filled(), held, "pieces of {step} bytes");
    assert_eq!(end, head::head_end(held, 0), "pieces of {step} bytes");
    let Some(end) = end.filter(|&end| end <= max) else {
        return;
    };
    let Ok(request) = head::parse_head(&buf.filled()[..end], None, &limits) else {
        return;
    };
    if request.framing != body::Framing::Done {
        assert!(head::may_have_body(&buf.filled()[..end]), "a body unseen");
    }
    buf.consume(end);
    let after_head = skipped + end;
    // The body decoded whole...
    let mut whole = request.framing;
    let mut expected = Vec::new();
    let whole_result = whole.decode(&bytes[after_head..], &mut expected, limits.max_body_bytes);
    // ...and in pieces, out of the same buffer as the loop's.
    let mut framing = request.framing;
    let mut decoded = Vec::new();
    let mut used = 0;
    let result = loop {
        match framing.decode(buf.filled(), &mut decoded, limits.max_body_bytes) {
            Err(error) => break Err(error),
            Ok(n) => {
                buf.consume(n);
                used += n;
            }
        }
        if framing.is_done() {
            break Ok(used);
        }
        match buf.read_from(&mut source, &pool, buffer::BUFFER_SIZE) {
            Ok(0) | Err(_) => break Ok(used),
            Ok(_) => {}
        }
    };
    match (whole_result, result) {
        (Ok(n), Ok(m)) if whole.is_done() => {
            assert!(framing.is_done(), "pieces of {step} bytes");
            assert_eq!((n, &expected), (m, &decoded), "pieces of {step} bytes");
        }
        // Cut short: the pieces got as far as the whole did.
        (Ok(_), Ok(_)) => assert_eq!(expected, decoded, "pieces of {step} bytes"),
        (Err(a), Err(b)) => assert_eq!(a, b, "pieces of {step} bytes"),
        (a, b) => panic!("whole {a:?}, pieces {b:?} (pieces of {step} bytes)"),
    }
}

/// Per-connection limits and timeouts, set on the
/// [`ServerBuilder`](crate::ServerBuilder), which documents each.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// For a whole request body, from the end of its head.
    pub(crate) body_timeout: Duration,
    /// Bytes per second a client must send of a body; 0: no minimum.
    pub(crate) min_body_rate: u64,
    /// The largest body (the server's `max_body_bytes`).
    pub(crate) max_body_bytes: usize,
    /// Bytes of bodies the engine holds at most, all connections together.
    pub(crate) max_body_buffer_bytes: u64,
    /// Complete requests waiting for a request worker, at most.
    pub(crate) max_pending_requests: usize,
    /// How long a complete request may wait for a request worker.
    pub(crate) queue_timeout: Duration,
    /// A request that waited this long for a worker is checked for a client
    /// gone before its handler runs.
    pub(crate) gone_check_after: Duration,
    pub(crate) write_timeout: Duration,
    /// Bytes per second a client must take of a response's rest; 0: no minimum.
    pub(crate) min_write_rate: u64,
    /// `None`: from the descriptor limit ([`limits::max_connections`]).
    pub(crate) max_connections: Option<usize>,
    /// Connections one client address may hold at once; `None`: no limit.
    pub(crate) max_connections_per_client: Option<usize>,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) listen_backlog: u32,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            max_body_bytes: 1024 * 1024,
            max_body_buffer_bytes: 64 * 1024 * 1024,
            max_pending_requests: 4096,
            queue_timeout: Duration::from_secs(10),
            gone_check_after: Duration::from_millis(10),
            write_timeout: Duration::from_secs(30),
            min_write_rate: 1024,
            max_connections: None,
            max_connections_per_client: None,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            tcp_nodelay: true,
            listen_backlog: 1024,
        }
    }
}

/// A request's body as its engine gives it.
#[cfg_attr(not(feature = "tiny-http"), allow(dead_code))]
pub(crate) enum BodySource<'a> {
    /// Read whole, and checked against the body limit.
    Bytes(Vec<u8>),
    /// To read (once, up to the limit).
    Reader(&'a mut dyn Read),
}

/// The parts of a request that are read before its body.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: Method,
    /// The request target as sent: path and optional `?query`, still percent-encoded.
    pub(crate) target: String,
    pub(crate) headers: Headers,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// The declared body length, when the client sent `Content-Length`.
    pub(crate) content_length: Option<u64>,
}

#[cfg(test)]
mod tests {
    /// The fuzz target's property on a few inputs of each kind, so that it
    /// is compiled and holds in every test run, not only under `cargo fuzz`.
    #[test]
    fn reading_in_pieces_finds_what_reading_whole_finds() {
        let inputs: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n",
            b"\x00\xff garbage\r\n\r\n",
            b"",
        ];
        for input in inputs {
            for first in [0u8, 1, 5, 200] {
                let mut bytes = vec![first];
                bytes.extend_from_slice(input);
                super::fuzz_request(&bytes[1..]);
                super::fuzz_request(&bytes);
            }
        }
    }
}
