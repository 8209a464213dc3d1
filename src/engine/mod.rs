//! The HTTP/1.1 engine: the crate's own connection layer on the `httparse`
//! parser. The rest of the crate sees only this module's [`Engine`], which
//! yields [`Exchange`]s (a parsed request head, a body reader, and a way to
//! respond once), in the crate's own types.
//!
//! How it works:
//! - an accept thread (`afterward-accept`) takes connections, up to
//!   `max_connections`, and gives each a thread of its own (`afterward-conn`);
//! - a connection thread waits for a request (idle timeout), reads its head
//!   (header timeout, size and count limits), checks its framing strictly, and
//!   hands it to the request workers as an `Exchange`; it then waits for the
//!   connection to come back before reading the next request, so pipelined
//!   requests are answered in order;
//! - a request worker reads the body (body read timeout) and writes the
//!   response in one piece (write timeout), then returns the connection, or
//!   closes it.
//!
//! Why our own: see "The engine" in ARCHITECTURE.md (tiny_http 0.12 failed the
//! hardening suite: starvation, no timeouts or limits, smuggling).

mod body;
mod conn;
mod wire;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::headers::Headers;
use crate::method::Method;

pub(crate) use self::conn::Exchange;

/// Parses `bytes` as a request head, then reads what follows as its body:
/// what the fuzz target `request_head` drives. Never panics, whatever the input.
#[cfg(fuzzing)]
pub(crate) fn fuzz_request(bytes: &[u8]) {
    let limits = ConnectionLimits::default();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |i| i + 4);
    if let Ok(mut request) = conn::parse_head(&bytes[..end], None, &limits) {
        let mut rest = std::io::BufReader::new(&bytes[end..]);
        let mut buf = [0u8; 256];
        while let Ok(n) = request.framing.read(&mut rest, &mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = request.head.target.len();
    }
}

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
    pub(crate) listen_backlog: u32,
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
            listen_backlog: 1024,
        }
    }
}

/// A listening HTTP/1.1 server.
pub(crate) struct Engine {
    local_addr: SocketAddr,
    incoming: Receiver<Incoming>,
    wake: Sender<Incoming>,
    shared: Arc<EngineState>,
    acceptor: Option<JoinHandle<()>>,
}

/// What connection threads and request workers share.
pub(crate) struct EngineState {
    pub(crate) limits: ConnectionLimits,
    /// Set when the engine is dropped: accept nothing more, keep nothing alive.
    pub(crate) stopping: AtomicBool,
    /// Connections open now (each has a thread).
    pub(crate) connections: AtomicUsize,
}

/// What travels from connection threads to [`Engine::next`].
// Sent once per request and matched at once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Incoming {
    Request(Exchange),
    Wake,
}

/// What [`Engine::next`] returns.
// Returned once per request and matched at once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// A request to answer.
    Request(Exchange),
    /// [`Engine::wake_one`] was called.
    Woken,
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

impl Engine {
    /// Listens on `address` (`host:port`; port 0 picks a free one).
    pub(crate) fn bind(address: &str, limits: ConnectionLimits) -> io::Result<Engine> {
        let listener = listen(address, limits.listen_backlog)?;
        let local_addr = listener.local_addr()?;
        let (sender, incoming) = crossbeam_channel::unbounded();
        let shared = Arc::new(EngineState {
            limits,
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let acceptor = {
            let (shared, sender) = (shared.clone(), sender.clone());
            thread::Builder::new()
                .name("afterward-accept".into())
                .spawn(move || conn::accept_loop(&listener, &shared, &sender))?
        };
        Ok(Engine {
            local_addr,
            incoming,
            wake: sender,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Blocks until a request arrives or [`wake_one`](Self::wake_one) is called.
    pub(crate) fn next(&self) -> Next {
        match self.incoming.recv() {
            Ok(Incoming::Request(exchange)) => Next::Request(exchange),
            // The engine holds a sender itself, so the channel never disconnects.
            Ok(Incoming::Wake) | Err(_) => Next::Woken,
        }
    }

    /// A request that has already arrived, without blocking.
    pub(crate) fn try_next(&self) -> Option<Exchange> {
        loop {
            match self.incoming.try_recv() {
                Ok(Incoming::Request(exchange)) => return Some(exchange),
                Ok(Incoming::Wake) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Makes one call to [`next`](Self::next), current or future, return
    /// [`Next::Woken`]. Wake-ups queue behind requests already waiting.
    pub(crate) fn wake_one(&self) {
        let _ = self.wake.send(Incoming::Wake);
    }
}

/// Binds the first address `address` resolves to that accepts, and listens
/// with `backlog` (the kernel caps it at `net.core.somaxconn`).
fn listen(address: &str, backlog: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let mut last_error = None;
    for addr in address.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        // As std does: restart on the same port without waiting out TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuse_address(true)?;
        match socket.bind(&addr.into()) {
            Ok(()) => {
                socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
                return Ok(socket.into());
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

impl Drop for Engine {
    /// Stops accepting and closes the listening socket. Connections being
    /// served finish their current request and are then closed.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept thread with a connection of our own.
        let mut wake_addr = self.local_addr;
        if wake_addr.ip().is_unspecified() {
            wake_addr.set_ip(match wake_addr {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake_addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
