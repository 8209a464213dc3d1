//! The HTTP/1.1 engine seam: the only module that names `tiny_http`.
//!
//! The rest of the crate sees an [`Engine`] that yields [`Exchange`]s (a parsed
//! request head, a body reader, and a way to respond once), in the crate's own
//! types. Replacing the engine means rewriting this file only.
//!
//! What the engine does (tiny_http 0.12): an accept thread hands each connection
//! to a connection thread, which parses requests one after another and pushes
//! them on a queue; request workers take them with [`Engine::next`].

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::headers::Headers;
use crate::method::Method;
use crate::response::Response;

/// Per-connection limits and timeouts, set on the
/// [`ServerBuilder`](crate::ServerBuilder), which documents each.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) tcp_nodelay: bool,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            tcp_nodelay: true,
        }
    }
}

/// A listening HTTP/1.1 server.
pub(crate) struct Engine {
    server: tiny_http::Server,
    local_addr: SocketAddr,
}

/// What [`Engine::next`] returns.
// Returned once per request and matched at once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// A request to answer.
    Request(Exchange),
    /// [`Engine::wake_one`] was called.
    Woken,
    /// Accepting failed; the engine will accept no more connections.
    Failed(io::Error),
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

/// One request and the means to answer it.
pub(crate) struct Exchange {
    head: Head,
    request: tiny_http::Request,
}

impl Engine {
    /// Listens on `address` (`host:port`; port 0 picks a free one).
    pub(crate) fn bind(address: &str, _limits: ConnectionLimits) -> io::Result<Engine> {
        let listener = TcpListener::bind(address)?;
        let local_addr = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
        Ok(Engine { server, local_addr })
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Blocks until a request arrives or [`wake_one`](Self::wake_one) is called.
    pub(crate) fn next(&self) -> Next {
        match self.server.recv() {
            Ok(request) => Next::Request(Exchange::new(request)),
            // tiny_http reports both a wake-up and an accept failure as an
            // error; only the latter has an OS error behind it.
            Err(e) if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::Other => Next::Woken,
            Err(e) => Next::Failed(e),
        }
    }

    /// A request that has already arrived, without blocking.
    pub(crate) fn try_next(&self) -> Option<Exchange> {
        self.server.try_recv().ok().flatten().map(Exchange::new)
    }

    /// Makes one call to [`next`](Self::next), current or future, return
    /// [`Next::Woken`]. Wake-ups queue behind requests already waiting.
    pub(crate) fn wake_one(&self) {
        self.server.unblock();
    }
}

impl Exchange {
    fn new(request: tiny_http::Request) -> Exchange {
        let headers = request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
            .collect();
        let head = Head {
            method: Method::from_token(request.method().as_str()),
            target: request.url().to_owned(),
            headers,
            remote_addr: request.remote_addr().copied(),
            content_length: request.body_length().map(|n| n as u64),
        };
        Exchange { head, request }
    }

    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    /// The head, to take parts of, and the body, decoded from its transfer
    /// encoding.
    pub(crate) fn parts(&mut self) -> (&mut Head, &mut dyn Read) {
        (&mut self.head, self.request.as_reader())
    }

    /// Writes `response` and flushes it; returns once it has been handed to
    /// the operating system. Errors from a client that went away are ignored.
    ///
    /// A header that cannot be sent safely (a name that is not a token, a value
    /// with a control character such as CR or LF) is never emitted: the whole
    /// response is replaced by a `500` and the problem is logged.
    pub(crate) fn respond(self, response: Response) -> io::Result<()> {
        let (status, headers, body) = response.into_wire();
        let wire_headers = match to_wire_headers(&headers) {
            Ok(headers) => headers,
            Err(bad) => {
                log::error!("refusing to send a response with an invalid header: {bad}");
                let error = crate::HttpError::new(500, "Internal Server Error");
                let (_, headers, body) = crate::IntoResponse::into_response(error).into_wire();
                return self.write(500, to_wire_headers(&headers).unwrap_or_default(), body);
            }
        };
        self.write(status, wire_headers, body)
    }

    fn write(self, status: u16, headers: Vec<tiny_http::Header>, body: Vec<u8>) -> io::Result<()> {
        let length = body.len();
        let response = tiny_http::Response::new(
            tiny_http::StatusCode(status),
            headers,
            io::Cursor::new(body),
            Some(length),
            None,
        );
        self.request.respond(response)
    }
}

/// Converts headers for tiny_http, refusing any that would corrupt the response.
fn to_wire_headers(headers: &Headers) -> Result<Vec<tiny_http::Header>, String> {
    let mut wire = Vec::with_capacity(headers.len() + 1);
    if !headers.contains("Server") {
        wire.push(tiny_http::Header::from_bytes("Server", "afterward").expect("valid header"));
    }
    for (name, value) in headers.iter() {
        let name_ok = !name.is_empty() && name.bytes().all(is_token_byte);
        let value_ok = value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !name_ok || !value_ok {
            return Err(format!("{name:?}: {value:?}"));
        }
        let header = tiny_http::Header::from_bytes(name, value)
            .map_err(|()| format!("{name:?}: {value:?}"))?;
        wire.push(header);
    }
    Ok(wire)
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::to_wire_headers;
    use crate::headers::Headers;

    #[test]
    fn header_values_with_line_breaks_are_refused() {
        for (name, value) in [
            ("X-Ok", "a\r\nSet-Cookie: evil=1"),
            ("X-Ok", "a\nb"),
            ("X Bad", "v"),
            ("X-Ok", "caf\u{e9}"),
        ] {
            let mut headers = Headers::new();
            headers.insert(name, value);
            assert!(to_wire_headers(&headers).is_err(), "{name:?}: {value:?}");
        }
        let mut headers = Headers::new();
        headers.insert("X-Ok", "plain value\twith tab");
        assert_eq!(to_wire_headers(&headers).unwrap().len(), 2);
    }
}
