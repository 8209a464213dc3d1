//! Connections: the accept loop, one thread per connection reading request
//! heads, and the [`Exchange`] a request worker answers.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::body::{Chunk, Framing};
use super::builtin::{EngineState, Incoming};
use super::wire::{self, Persistence};
use super::{ConnectionLimits, Head};
use crate::headers::Headers;
use crate::http_error::HttpError;
use crate::method::Method;
use crate::response::{IntoResponse, Response};

/// Each connection thread only reads request heads; handlers run elsewhere.
const CONNECTION_STACK: usize = 128 * 1024;
/// At most this much of an unread body is read and dropped to keep a
/// connection alive; a larger rest closes it.
const MAX_DRAIN: u64 = 64 * 1024;
/// How long a closing connection waits for the client to finish sending, so
/// that our last response is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(1);

/// A connection between requests: the socket behind its read buffer.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
    remote_addr: Option<SocketAddr>,
    /// The socket's read timeout as last set, to skip needless system calls.
    read_timeout: Option<Duration>,
}

impl Conn {
    fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        if self.read_timeout != Some(timeout)
            && self.stream().set_read_timeout(Some(timeout)).is_ok()
        {
            self.read_timeout = Some(timeout);
        }
    }
}

/// What a request worker gives back to the connection thread.
enum Returned {
    /// Read the next request.
    KeepAlive(Conn),
    /// Close, after letting the client finish sending.
    Close(Conn),
    /// The exchange was dropped unanswered and closed the connection itself.
    Gone,
}

/// Accepts connections until the engine stops, one thread each.
pub(crate) fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<EngineState>,
    queue: &Sender<Incoming>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (stream, remote_addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // Out of descriptors or memory: wait for some to be freed
                // (closing connections free theirs), then accept again.
                if backoff == Duration::from_millis(5) {
                    log::warn!("cannot accept connections ({e}); retrying");
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let limits = &shared.limits;
        if shared.counters.connections_open() >= limits.max_connections as u64 {
            // Answer at once rather than leave the client waiting in the
            // backlog; no lingering here, the accept thread must move on.
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let mut response = busy();
            answered_itself(shared, None, &mut response, Instant::now());
            respond_and_close_now(stream, response);
            continue;
        }
        let client = super::builtin::client_key(remote_addr.ip());
        if !shared.client_connected(client) {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let mut response = busy_client();
            answered_itself(shared, None, &mut response, Instant::now());
            respond_and_close_now(stream, response);
            continue;
        }
        shared.counters.connection_opened();
        let opened = Opened {
            shared: shared.clone(),
            client,
        };
        let queue = queue.clone();
        let spawned = thread::Builder::new()
            .name("afterward-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                serve(stream, Some(remote_addr), &opened.shared, &queue);
                drop(opened);
            });
        // A thread that cannot start drops its closure, and `opened` with it.
        if let Err(e) = spawned {
            log::warn!("cannot start a connection thread: {e}");
        }
    }
}

/// A connection counted open (globally, and for its client); counted closed
/// when dropped: when its thread ends, however it ends (a panic unwinds
/// through it too), or with the closure of a thread that could not start.
struct Opened {
    shared: Arc<EngineState>,
    client: IpAddr,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.shared.client_disconnected(self.client);
        self.shared.counters.connection_closed();
    }
}

/// Counts and logs an answer the engine gives itself, which no request worker
/// sees, and gives it a request id (the client's, when a head was read).
fn answered_itself(
    shared: &EngineState,
    head: Option<&Head>,
    response: &mut Response,
    started: Instant,
) {
    super::answered_unhandled(&shared.counters, &shared.ids, head, response, started);
}

fn busy_client() -> Response {
    HttpError::new(503, "too many connections from this address; retry later")
        .with_header("Retry-After", "1")
        .into_response()
}

fn busy() -> Response {
    HttpError::new(503, "too many connections; retry later")
        .with_header("Retry-After", "1")
        .into_response()
}

/// One connection: read a request head, hand the request over, wait for the
/// connection to come back, repeat.
fn serve(
    stream: TcpStream,
    remote_addr: Option<SocketAddr>,
    shared: &Arc<EngineState>,
    queue: &Sender<Incoming>,
) {
    let limits = &shared.limits;
    let _ = stream.set_nodelay(limits.tcp_nodelay);
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let mut conn = Conn {
        reader: BufReader::with_capacity(8 * 1024, stream),
        remote_addr,
        read_timeout: None,
    };
    // One channel for the whole connection: each exchange sends it back once.
    let (back, returned) = crossbeam_channel::bounded(1);
    let mut head = Vec::with_capacity(1024);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let read = read_request(&mut conn, &mut head, limits);
        let started = Instant::now();
        let request = match read {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(refusal) => {
                let mut response = refusal.error.into_response();
                answered_itself(shared, refusal.head.as_deref(), &mut response, started);
                respond_and_close(conn.reader.into_inner(), response);
                return;
            }
        };
        if shared.draining.load(Ordering::SeqCst) {
            // Shutdown has begun: refuse at once rather than queue a request
            // no worker will take.
            let mut response = HttpError::shutting_down().into_response();
            answered_itself(shared, Some(&request.head), &mut response, started);
            respond_and_close(conn.reader.into_inner(), response);
            return;
        }
        let exchange = Exchange::new(request, conn, back.clone(), shared.clone());
        if let Err(unsent) = queue.send(Incoming::Request(exchange)) {
            // The server has gone: answer rather than drop the request.
            if let Incoming::Request(exchange) = unsent.into_inner() {
                let mut response = HttpError::shutting_down().into_response();
                answered_itself(shared, Some(exchange.head()), &mut response, started);
                let _ = exchange.respond(response);
            }
        }
        // Architecture invariant: a connection serves one request at a time.
        // Nothing more is read until the exchange comes back, so pipelined
        // requests are answered in order and a body is never read twice.
        match returned.recv() {
            Ok(Returned::KeepAlive(kept)) => conn = kept,
            Ok(Returned::Close(closing)) => {
                linger_and_close(closing.reader.into_inner());
                return;
            }
            // The thread holds a sender itself, so `recv` cannot fail.
            Ok(Returned::Gone) | Err(_) => return,
        }
    }
}

/// A request head, parsed and checked.
pub(super) struct ParsedHead {
    pub(super) head: Head,
    pub(super) framing: Framing,
    http10: bool,
    keep_alive: bool,
    expect_continue: bool,
    is_head: bool,
}

/// Waits for the next request (idle timeout) and reads its head (header
/// timeout, size and count limits). `Ok(None)`: the connection ended or idled
/// out before a request began; `Err`: the answer to give before closing.
fn read_request(
    conn: &mut Conn,
    head: &mut Vec<u8>,
    limits: &ConnectionLimits,
) -> Result<Option<ParsedHead>, Refused> {
    head.clear();
    if !read_head_bytes(conn, head, limits)? {
        return Ok(None);
    }
    parse_head(head, conn.remote_addr, limits).map(Some)
}

/// Reads a request head into `head`; `false` if the connection ended or idled
/// out before a request began.
fn read_head_bytes(
    conn: &mut Conn,
    head: &mut Vec<u8>,
    limits: &ConnectionLimits,
) -> Result<bool, HttpError> {
    conn.set_read_timeout(limits.idle_timeout);
    // Skip the empty lines a client may send between requests (RFC 9112 §2.2).
    loop {
        match conn.reader.fill_buf() {
            Ok([]) | Err(_) => return Ok(false),
            Ok([b'\r' | b'\n', ..]) => conn.reader.consume(1),
            Ok(_) => break,
        }
    }
    let deadline = Instant::now() + limits.header_timeout;
    loop {
        // Only a read from the socket can wait: bound it by the deadline.
        if conn.reader.buffer().is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HttpError::new(408, "the request head took too long"));
            }
            conn.set_read_timeout(left);
        }
        let available = match conn.reader.fill_buf() {
            Ok([]) => return Ok(false),
            Ok(available) => available,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HttpError::new(408, "the request head took too long"))
            }
            Err(_) => return Ok(false),
        };
        let start = head.len();
        head.extend_from_slice(available);
        let end = head_end(head, start);
        let used = match end {
            Some(len) => {
                head.truncate(len);
                len - start
            }
            None => head.len() - start,
        };
        conn.reader.consume(used);
        if head.len() > limits.max_header_bytes {
            return Err(HttpError::new(
                431,
                format!(
                    "the request head is larger than {} bytes",
                    limits.max_header_bytes
                ),
            ));
        }
        if end.is_some() {
            return Ok(true);
        }
    }
}

/// The length of the request head in `head` (up to and with the empty line
/// that ends it: `\n\n` or `\n\r\n`), if it is all there. `searched`:
/// how many bytes an earlier call looked at, so that a head read in pieces
/// is scanned once (the last two bytes again, as an end may straddle).
/// Reading from the socket, or from a readiness loop's buffer, only feeds it.
pub(super) fn head_end(head: &[u8], searched: usize) -> Option<usize> {
    (searched.saturating_sub(2)..head.len()).find_map(|i| {
        if head[i] != b'\n' {
            return None;
        }
        match (head.get(i + 1), head.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

pub(super) fn parse_head(
    bytes: &[u8],
    remote_addr: Option<SocketAddr>,
    limits: &ConnectionLimits,
) -> Result<ParsedHead, Refused> {
    let bad = |detail: &str| HttpError::new(400, detail.to_owned());
    // Up to 64 fields (the default limit) on the stack, more on the heap.
    let mut on_stack = [httparse::EMPTY_HEADER; 64];
    let mut on_heap = Vec::new();
    let fields = if limits.max_headers <= on_stack.len() {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut on_heap[..]
    };
    let mut parsed = httparse::Request::new(fields);
    let unread = |error| Refused { error, head: None };
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(unread(bad("incomplete request head"))),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(unread(HttpError::new(
                431,
                format!("more than {} header fields", limits.max_headers),
            )))
        }
        Err(httparse::Error::Version) => {
            return Err(unread(HttpError::new(
                505,
                "only HTTP/1.0 and HTTP/1.1 are supported",
            )))
        }
        Err(e) => return Err(unread(bad(&format!("malformed request head: {e}")))),
    }
    interpret(&parsed, remote_addr).map_err(|error| Refused {
        error,
        head: Some(Box::new(summary(&parsed, remote_addr))),
    })
}

/// A request refused by the engine, and what was read of its head (for the
/// access log and the client's request id).
pub(super) struct Refused {
    pub(super) error: HttpError,
    /// Boxed: refusals are rare, and the `Ok` side stays small.
    pub(super) head: Option<Box<Head>>,
}

impl From<HttpError> for Refused {
    fn from(error: HttpError) -> Refused {
        Refused { error, head: None }
    }
}

/// What the access log needs of a head that parsed but was refused: method,
/// target and the client's `X-Request-Id`.
fn summary(parsed: &httparse::Request<'_, '_>, remote_addr: Option<SocketAddr>) -> Head {
    let mut headers = Headers::new();
    let id = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("X-Request-Id"));
    if let Some(id) = id {
        headers.append(
            "X-Request-Id",
            String::from_utf8_lossy(id.value).into_owned(),
        );
    }
    Head {
        method: Method::from_token(parsed.method.unwrap_or("-")),
        target: parsed.path.unwrap_or("-").to_owned(),
        headers,
        remote_addr,
        content_length: None,
    }
}

/// Checks a parsed head (target form, framing, `Host`, `Expect`) and turns
/// it into our types.
fn interpret(
    parsed: &httparse::Request<'_, '_>,
    remote_addr: Option<SocketAddr>,
) -> Result<ParsedHead, HttpError> {
    let bad = |detail: &str| HttpError::new(400, detail.to_owned());
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad("incomplete request line"));
    };
    if !target.starts_with('/') {
        return Err(bad(
            "only origin-form request targets (/path?query) are supported",
        ));
    }
    let http10 = version == 0;

    let mut headers = Headers::with_capacity(parsed.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut connection_tokens = String::new();
    let mut expect_continue = false;
    for field in parsed.headers.iter() {
        let value = String::from_utf8_lossy(field.value);
        let trimmed = value.trim_matches([' ', '\t']);
        if field.name.eq_ignore_ascii_case("Content-Length") {
            if content_length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("invalid Content-Length"));
            }
            content_length = Some(trimmed.parse().map_err(|_| bad("invalid Content-Length"))?);
        } else if field.name.eq_ignore_ascii_case("Transfer-Encoding") {
            // Only exactly `chunked`, once: anything else could be read
            // differently by a proxy in front of us (request smuggling).
            if chunked || !trimmed.eq_ignore_ascii_case("chunked") {
                return Err(bad(
                    "unsupported Transfer-Encoding (only a single `chunked` is)",
                ));
            }
            chunked = true;
        } else if field.name.eq_ignore_ascii_case("Connection") {
            connection_tokens.push_str(trimmed);
            connection_tokens.push(',');
        } else if field.name.eq_ignore_ascii_case("Expect") {
            if !trimmed.eq_ignore_ascii_case("100-continue") {
                return Err(HttpError::new(
                    417,
                    "only `Expect: 100-continue` is supported",
                ));
            }
            expect_continue = !http10;
        }
        headers.append_received(field.name, value.into_owned());
    }
    super::check_host(&headers, http10)?;
    if chunked && content_length.is_some() {
        return Err(bad("both Transfer-Encoding and Content-Length"));
    }
    if chunked && http10 {
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let has_token = |token: &str| {
        connection_tokens
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let keep_alive = if http10 {
        has_token("keep-alive")
    } else {
        !has_token("close")
    };
    let framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked(Chunk::Size),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Done,
    };
    let method = Method::from_token(method);
    Ok(ParsedHead {
        is_head: method == Method::Head,
        head: Head {
            method,
            target: target.to_owned(),
            headers,
            remote_addr,
            content_length,
        },
        framing,
        http10,
        keep_alive,
        expect_continue: expect_continue && !matches!(framing, Framing::Done),
    })
}

/// One request and the means to answer it.
pub(crate) struct Exchange {
    head: Head,
    body: BodyReader,
    http10: bool,
    keep_alive: bool,
    is_head: bool,
    back: Sender<Returned>,
    shared: Arc<EngineState>,
}

/// The request body as a reader over the connection.
struct BodyReader {
    conn: Option<Conn>,
    framing: Framing,
    /// `Expect: 100-continue` not yet answered.
    expect_continue: bool,
    body_read_timeout: Duration,
    /// Whether a read has begun (the read timeout set, `100 Continue` sent).
    started: bool,
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
        if !self.started {
            self.started = true;
            conn.stream()
                .set_read_timeout(Some(self.body_read_timeout))?;
            if self.expect_continue {
                self.expect_continue = false;
                conn.reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
        }
        self.framing.read(&mut conn.reader, buf)
    }
}

impl Exchange {
    fn new(
        request: ParsedHead,
        conn: Conn,
        back: Sender<Returned>,
        shared: Arc<EngineState>,
    ) -> Exchange {
        let body_read_timeout = shared.limits.body_read_timeout;
        Exchange {
            head: request.head,
            body: BodyReader {
                conn: Some(conn),
                framing: request.framing,
                expect_continue: request.expect_continue,
                body_read_timeout,
                started: false,
            },
            http10: request.http10,
            keep_alive: request.keep_alive,
            is_head: request.is_head,
            back,
            shared,
        }
    }

    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    /// The head, to take parts of, and the body, decoded from its framing.
    pub(crate) fn parts(&mut self) -> (&mut Head, &mut dyn Read) {
        (&mut self.head, &mut self.body)
    }

    /// Writes `response` in one piece and flushes it; returns once it has
    /// been handed to the operating system, or the write timeout has passed.
    ///
    /// A header that cannot be sent safely (a name that is not a token, a value
    /// with a control character such as CR or LF) is never emitted: the whole
    /// response is replaced by a `500` and the problem is logged.
    pub(crate) fn respond(mut self, response: Response) -> io::Result<()> {
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
        let handler_closes = headers
            .get_all("Connection")
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let keep = self.keep_alive
            && !handler_closes
            && !self.shared.draining.load(Ordering::SeqCst)
            && self.body_can_be_finished();
        let persistence = match (keep, self.http10) {
            (false, _) => Persistence::Close,
            (true, false) => Persistence::KeepAlive,
            (true, true) => Persistence::KeepAliveHttp10,
        };
        let Some(mut conn) = self.body.conn.take() else {
            return Err(io::Error::other("the connection is gone"));
        };
        let written = wire::write_response(
            conn.reader.get_mut(),
            status,
            &headers,
            &body,
            !self.is_head,
            persistence,
        );
        let keep = keep && written.is_ok() && self.drain(&mut conn);
        let returned = if keep {
            Returned::KeepAlive(conn)
        } else {
            Returned::Close(conn)
        };
        // The connection thread is waiting for it; if it has gone, the
        // connection is simply dropped (closed).
        let _ = self.back.send(returned);
        match written {
            Err(e) if !is_client_gone(&e) => Err(e),
            _ => Ok(()),
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

    /// Reads and drops the rest of the body; whether it all arrived.
    fn drain(&mut self, conn: &mut Conn) -> bool {
        if self.body.framing.is_done() {
            return true;
        }
        if conn
            .stream()
            .set_read_timeout(Some(self.body.body_read_timeout))
            .is_err()
        {
            return false;
        }
        let mut sink = [0u8; 8192];
        loop {
            match self.body.framing.read(&mut conn.reader, &mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Exchange {
    /// An exchange dropped without a response (it should not happen) still
    /// gets one, so that the client is not left waiting.
    fn drop(&mut self) {
        if let Some(conn) = self.body.conn.take() {
            let mut error = HttpError::new(500, "Internal Server Error").into_response();
            answered_itself(&self.shared, Some(&self.head), &mut error, Instant::now());
            respond_and_close_now(conn.reader.into_inner(), error);
            // The connection thread waits for word of its connection.
            let _ = self.back.send(Returned::Gone);
        }
    }
}

fn is_client_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Writes `response` with `Connection: close`, then closes the connection
/// after [lingering](linger_and_close).
fn respond_and_close(stream: TcpStream, response: Response) {
    linger_and_close(respond_and_close_now(stream, response));
}

/// Writes `response` with `Connection: close` and closes our side at once;
/// returns the stream, for lingering or to drop.
fn respond_and_close_now(mut stream: TcpStream, response: Response) -> TcpStream {
    let (status, headers, body) = response.into_wire();
    let close = Persistence::Close;
    let _ = wire::write_response(&mut stream, status, &headers, &body, true, close);
    let _ = stream.shutdown(Shutdown::Write);
    stream
}

/// Closes our side, then reads and drops what the client still sends (for at
/// most [`LINGER`]), so that the client reads our last response before the
/// connection is reset.
fn linger_and_close(stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut stream = stream;
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::head_end;

    /// Feeds `bytes` to `head_end` in pieces ending at `cuts`, as reads
    /// would, and returns the first end found.
    fn in_pieces(bytes: &[u8], cuts: &[usize]) -> Option<usize> {
        let mut searched = 0;
        for &cut in cuts.iter().chain([&bytes.len()]) {
            if let Some(end) = head_end(&bytes[..cut], searched) {
                return Some(end);
            }
            searched = cut;
        }
        None
    }

    #[test]
    fn a_head_read_in_any_pieces_ends_where_it_ends_read_whole() {
        let cases: [(&[u8], Option<usize>); 5] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", Some(27)),
            (b"GET / HTTP/1.1\nHost: a\n\nbody", Some(24)),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Some(26)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(head_end(bytes, 0), expected, "{bytes:?}");
            for cut in 0..=bytes.len() {
                assert_eq!(in_pieces(bytes, &[cut]), expected, "{bytes:?} cut at {cut}");
            }
            let every_byte: Vec<usize> = (1..bytes.len()).collect();
            assert_eq!(
                in_pieces(bytes, &every_byte),
                expected,
                "{bytes:?} byte by byte"
            );
        }
    }
}
