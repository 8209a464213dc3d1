//! One request and the means to answer it, as a request worker holds it:
//! taken from the work queue (after the queue-timeout and client-gone
//! checks), with its head and whole body, answered once with
//! [`respond_then`](Exchange::respond_then).
//!
//! Architecture invariant: a request worker never waits on a client. The
//! event loop reads a request's head and whole body before the exchange
//! exists, and `respond_then` writes what the socket takes at once and
//! hands the rest to the loop; nothing here reads or writes with blocking.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::Interest;

use super::body::Received;
use super::conn::{is_client_gone, Conn, Output, Step};
use super::parts::{BodySource, Head};
use super::protocol::busy;
use super::wire::{self, Persistence};
use crate::http_error::HttpError;
use crate::response::{IntoResponse, Response};
use crate::stats::Refusal;

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
    /// here): then `None`. The worker that took it from the queue is busy
    /// until the exchange ends (see `WorkQueue::finished`).
    pub(super) fn start(conn: Box<Conn>) -> Option<Exchange> {
        let now = Instant::now();
        let shared = conn.shared.clone();
        let exchange = Exchange::begin(conn, now);
        if exchange.is_none() {
            shared.queue.finished(now);
        }
        exchange
    }

    fn begin(mut conn: Box<Conn>, now: Instant) -> Option<Exchange> {
        let shared = conn.shared.clone();
        let waited = now.duration_since(conn.queued_at);
        if waited > shared.limits.queue_timeout {
            shared.counters.refused(Refusal::QueueTimeout);
            let step = conn.refuse_request(busy(), now);
            conn.resume(step);
            return None;
        }
        let request = conn
            .protocol
            .take_request(&mut conn.buf, conn.remote_addr, &shared.limits);
        let (parsed, body) = match request {
            Ok(request) => request,
            Err(refusal) => {
                let response = refusal.error.into_response();
                let step = conn.refuse(response, refusal.head.as_deref(), now);
                conn.resume(step);
                return None;
            }
        };
        if waited >= shared.limits.gone_check_after && conn.client_gone() {
            // Nobody would read the answer: the handler does not run.
            shared.counters.client_gone();
            let head = &parsed.head;
            let id = shared.ids.for_request(head.headers.get("X-Request-Id"));
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
        conn.shared.queue.finished(now);
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
                conn.protocol.writing(now, keep);
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
            let now = Instant::now();
            conn.shared.queue.finished(now);
            let error = HttpError::new(500, "Internal Server Error").into_response();
            let step = conn.refuse(error, Some(&self.head), now);
            conn.resume(step);
        }
    }
}
