//! HTTP/1.1 engines behind one seam. The rest of the crate sees only this
//! module's [`Listener`], which yields [`Exchange`]s (a request head in the
//! crate's own types, a body reader, and a way to respond once), whatever
//! engine reads and writes the bytes:
//!
//! - **builtin** (the default; `builtin.rs`, `event_loop.rs`, `conn.rs`,
//!   `head.rs`, `body.rs`, `wire.rs`, `slots.rs`, `buffer.rs`, `limits.rs`):
//!   our own, on the `httparse` parser and `mio`. One event loop, run by
//!   whichever thread has the lead (a request worker with nothing to serve,
//!   or the watcher, `afterward-io`, while all are busy: leader/followers),
//!   accepts connections, up to `max_connections`, and waits
//!   on the readiness of every connection not being served: it reads request
//!   heads (idle and header timeouts, size limit) and hands connections with a
//!   whole head to the request workers. A worker parses and checks the head,
//!   reads the body (body read timeout), and writes the response without
//!   blocking; what the socket does not take, the loop sends (write timeout
//!   over the whole response, minimum rate), reading no further request from
//!   that connection meanwhile. The worker puts a kept-alive connection back
//!   in its slot and re-arms it itself. Why our own, and why this model:
//!   "Decisions" in ARCHITECTURE.md.
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

mod answer;
mod body;
mod buffer;
mod builtin;
mod conn;
mod descriptors;
mod event_loop;
mod exchange;
#[cfg(any(fuzzing, test))]
mod fuzz;
mod head;
mod limits;
mod parts;
mod protocol;
mod queue;
mod slots;
mod state;
#[cfg(feature = "tiny-http")]
mod tiny;
mod watcher;
mod wire;

use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

pub(crate) use self::answer::answered_unhandled;
#[cfg(any(fuzzing, test))]
pub(crate) use self::fuzz::fuzz_request;
pub(crate) use self::limits::ConnectionLimits;
pub(crate) use self::parts::{BodySource, Head};
use crate::access::RequestIds;
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
            Listener::Builtin(listener) => match listener.next() {
                Some(exchange) => Next::Request(Exchange::Builtin(exchange)),
                None => Next::Woken,
            },
            #[cfg(feature = "tiny-http")]
            Listener::TinyHttp(listener) => match listener.next() {
                Some(exchange) => Next::Request(Exchange::TinyHttp(exchange)),
                None => Next::Woken,
            },
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
    Builtin(exchange::Exchange),
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
