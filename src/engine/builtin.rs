//! Our engine's listener: the accept thread, one thread per connection
//! (`conn.rs`), and the queue of complete request heads that request workers
//! take [`Exchange`]s from.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::{conn, ConnectionLimits, Exchange, Next};
use crate::access::RequestIds;
use crate::stats::Counters;

/// Our engine, listening.
pub(crate) struct BuiltinListener {
    local_addr: SocketAddr,
    incoming: Receiver<Incoming>,
    wake: Sender<Incoming>,
    shared: Arc<EngineState>,
    acceptor: Option<JoinHandle<()>>,
}

/// What connection threads and request workers share.
pub(crate) struct EngineState {
    pub(crate) limits: ConnectionLimits,
    /// Set when the engine is dropped: accept nothing more.
    pub(crate) stopping: AtomicBool,
    /// Set when shutdown begins (and when the engine is dropped): new requests
    /// are answered `503` by their connection thread, responses close.
    pub(crate) draining: AtomicBool,
    /// Where connections and the engine's own answers are counted.
    pub(crate) counters: Arc<Counters>,
    /// Request ids for the engine's own answers.
    pub(crate) ids: Arc<RequestIds>,
    /// Connections open per client address, when they are limited
    /// (`max_connections_per_client`).
    pub(crate) per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// What a client is counted as for `max_connections_per_client`: its IPv4
/// address (also when it comes as an IPv4-mapped IPv6 one), or its IPv6 /64,
/// which one client usually holds whole.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        v4 => v4,
    }
}

impl EngineState {
    /// Counts a connection of `client` in, unless it has its limit
    /// already (`false`). Without a limit, nothing is counted.
    pub(crate) fn client_connected(&self, client: IpAddr) -> bool {
        let Some(limit) = self.limits.max_connections_per_client else {
            return true;
        };
        let mut open = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    /// Counts a connection of `client` out.
    pub(crate) fn client_disconnected(&self, client: IpAddr) {
        if self.limits.max_connections_per_client.is_none() {
            return;
        }
        let mut open = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&client);
            }
        }
    }
}

/// What travels from connection threads to [`BuiltinListener::next`].
// Sent once per request and matched at once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Incoming {
    Request(conn::Exchange),
    Wake,
}

impl BuiltinListener {
    /// Listens on `address` (`host:port`; port 0 picks a free one).
    pub(crate) fn bind(
        address: &str,
        limits: ConnectionLimits,
        counters: Arc<Counters>,
        ids: Arc<RequestIds>,
    ) -> io::Result<BuiltinListener> {
        let listener = listen(address, limits.listen_backlog)?;
        let local_addr = listener.local_addr()?;
        let (sender, incoming) = crossbeam_channel::unbounded();
        let shared = Arc::new(EngineState {
            limits,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            counters,
            ids,
            per_client: Mutex::default(),
        });
        let acceptor = {
            let (shared, sender) = (shared.clone(), sender.clone());
            thread::Builder::new()
                .name("afterward-accept".into())
                .spawn(move || conn::accept_loop(&listener, &shared, &sender))?
        };
        Ok(BuiltinListener {
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
            Ok(Incoming::Request(exchange)) => Next::Request(Exchange::Builtin(exchange)),
            // The engine holds a sender itself, so the channel never disconnects.
            Ok(Incoming::Wake) | Err(_) => Next::Woken,
        }
    }

    /// Shutdown has begun: connection threads answer new requests `503` and
    /// close, and responses in flight close their connection.
    pub(crate) fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Makes one call to [`next`](Self::next), current or future, return
    /// [`Next::Woken`]. Wake-ups queue behind requests already waiting.
    pub(crate) fn wake_one(&self) {
        let _ = self.wake.send(Incoming::Wake);
    }
}

/// Binds the first address `address` resolves to that accepts, and listens
/// with `backlog` (the kernel caps it at `net.core.somaxconn`).
pub(crate) fn listen(address: &str, backlog: u32) -> io::Result<TcpListener> {
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

impl Drop for BuiltinListener {
    /// Stops accepting and closes the listening socket. Connections being
    /// served finish their current request and are then closed.
    fn drop(&mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::client_key;
    use std::net::IpAddr;

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_slash_64() {
        let key = |ip: &str| client_key(ip.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
