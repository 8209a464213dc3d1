//! The tiny_http engine (feature `tiny-http`): `tiny_http` 0.12 behind the
//! same seam as ours.
//!
//! This is the design's shape taken literally: request workers block in
//! tiny_http's `recv` themselves, build the request in our types, and answer
//! with its `respond`, which returns once the response is written and flushed.
//! tiny_http reads requests on its own threads (one per connection, uncapped)
//! and has no timeouts or size limits; SECURITY.md lists the hardening cases
//! it fails. What this file adds:
//! - the listening socket is ours (`builtin::listen`), for the same backlog;
//! - `unblock` queues a wake-up behind the requests already waiting, which is
//!   exactly `Listener::wake_one`;
//! - framing headers are tiny_http's (it drops a `Connection` we set, and
//!   computes `Content-Length` from the body), so we never pass ours on; the
//!   body is never sent chunked, so every response has a `Content-Length`;
//! - a chunked request body the handler left unread is drained (up to
//!   [`MAX_DRAIN`]) before responding: tiny_http drains a `Content-Length`
//!   body itself, but would read the rest of a chunked one as the next request.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::answer::answered_unhandled;
use super::head::check_host;
use super::limits::ConnectionLimits;
use super::parts::{BodySource, Head};
use super::wire;
use crate::access::RequestIds;
use crate::headers::Headers;
use crate::http_error::HttpError;
use crate::method::Method;
use crate::response::{IntoResponse, Response};
use crate::stats::Counters;

/// At most this much of an unread chunked body is drained before responding.
const MAX_DRAIN: u64 = 64 * 1024;

/// A tiny_http server, listening.
pub(crate) struct TinyListener {
    server: tiny_http::Server,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    ids: Arc<RequestIds>,
}

impl TinyListener {
    /// Listens on `address` with our socket (and backlog); tiny_http accepts.
    pub(crate) fn bind(
        address: &str,
        limits: &ConnectionLimits,
        counters: Arc<Counters>,
        ids: Arc<RequestIds>,
    ) -> io::Result<TinyListener> {
        let listener = super::state::listen(address, limits.listen_backlog)?;
        let local_addr = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
        Ok(TinyListener {
            server,
            local_addr,
            counters,
            ids,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Blocks until a request arrives (`Some`) or a wake-up (`None`).
    pub(crate) fn next(&self) -> Option<TinyExchange> {
        loop {
            match self.server.recv() {
                Ok(request) => {
                    if let Some(exchange) = self.checked(request) {
                        return Some(exchange);
                    }
                }
                Err(e) => {
                    log_unless_woken(&e);
                    return None;
                }
            }
        }
    }

    /// The request as an exchange, or `None` once it has been refused for
    /// a checks tiny_http does not make (`Host`, RFC 9112 §3.2).
    fn checked(&self, request: tiny_http::Request) -> Option<TinyExchange> {
        let started = Instant::now();
        let http10 = request.http_version().0 == 1 && request.http_version().1 == 0;
        let exchange = TinyExchange::new(request);
        match check_host(&exchange.head.headers, http10) {
            Ok(()) => Some(exchange),
            Err(refusal) => {
                let mut response = refusal.into_response();
                let (counters, ids) = (&self.counters, &self.ids);
                answered_unhandled(counters, ids, Some(&exchange.head), &mut response, started);
                let _ = exchange.respond(response);
                None
            }
        }
    }

    pub(crate) fn wake_one(&self) {
        self.server.unblock();
    }
}

/// `recv` fails for a wake-up (`unblock`), or because tiny_http's accept
/// thread met an error, after which it accepts no more connections.
fn log_unless_woken(e: &io::Error) {
    if e.to_string() != "thread unblocked" {
        log::error!("tiny_http stopped accepting connections: {e}");
    }
}

/// One tiny_http request and the means to answer it.
pub(crate) struct TinyExchange {
    head: Head,
    request: tiny_http::Request,
    chunked: bool,
}

impl TinyExchange {
    fn new(request: tiny_http::Request) -> TinyExchange {
        let mut headers = Headers::new();
        let mut chunked = false;
        for header in request.headers() {
            chunked |= header.field.equiv("Transfer-Encoding");
            headers.append(header.field.as_str().as_str(), header.value.as_str());
        }
        let head = Head {
            method: Method::from_token(request.method().as_str()),
            target: request.url().to_owned(),
            headers,
            remote_addr: request.remote_addr().copied(),
            content_length: request.body_length().map(|n| n as u64),
        };
        TinyExchange {
            head,
            request,
            chunked,
        }
    }

    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    pub(crate) fn head_mut(&mut self) -> &mut Head {
        &mut self.head
    }

    pub(crate) fn parts(&mut self) -> (&mut Head, BodySource<'_>) {
        (&mut self.head, BodySource::Reader(self.request.as_reader()))
    }

    /// Answers through tiny_http's `respond`, which returns once the response
    /// is written and flushed (a client that has gone is not an error there).
    pub(crate) fn respond(mut self, response: Response) -> io::Result<()> {
        let (status, headers, body) = match to_parts(response) {
            Ok(parts) => parts,
            Err(bad) => {
                log::error!("refusing to send a response with an invalid header: {bad}");
                to_parts(HttpError::new(500, "Internal Server Error").into_response())
                    .expect("our own error response has valid headers")
            }
        };
        let mut out = tiny_http::Response::from_data(body)
            .with_status_code(status)
            .with_chunked_threshold(usize::MAX);
        for header in headers {
            out.add_header(header);
        }
        if self.chunked {
            let _ = io::copy(
                &mut self.request.as_reader().take(MAX_DRAIN),
                &mut io::sink(),
            );
        }
        self.request.respond(out)
    }
}

/// The status, the handler's headers in tiny_http's type (framing headers
/// left to tiny_http), and the body; `Err` names a header that cannot be sent.
fn to_parts(response: Response) -> Result<(u16, Vec<tiny_http::Header>, Vec<u8>), String> {
    let (status, headers, body) = response.into_wire();
    wire::check_headers(&headers).map_err(|bad| bad.0)?;
    let mut converted = Vec::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        if wire::is_framing_header(name) {
            continue;
        }
        let header = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
            .map_err(|()| format!("{name:?}: {value:?}"))?;
        converted.push(header);
    }
    Ok((status, converted, body))
}
