//! What the event loop, connections and request workers share: the limits,
//! counters and flags, the connection table, the read buffers, the loop's
//! registry and the queue to the request workers. Over the connection type
//! `C`, so that this file sits below `conn.rs` (which names it
//! `EngineState<Conn>`).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::{Registry, Waker};

use super::buffer::Pool;
use super::limits::ConnectionLimits;
use super::queue::WorkQueue;
use super::slots::Slots;
use crate::access::RequestIds;
use crate::stats::Counters;

/// A timer entry of the event loop: when, which slot, which connection in it.
pub(super) type Timer = Reverse<(Instant, usize, u64)>;

/// What the event loop, connections and request workers share.
pub(super) struct EngineState<C> {
    pub(super) limits: ConnectionLimits,
    /// `limits.max_connections`, or the default from the descriptor limit.
    pub(super) max_connections: usize,
    /// Set when the engine is dropped: the loop ends, connections close.
    pub(super) stopping: AtomicBool,
    /// Set when shutdown begins (and when the engine is dropped): new requests
    /// are answered `503`, responses close.
    pub(super) draining: AtomicBool,
    /// Where connections and the engine's own answers are counted.
    pub(super) counters: Arc<Counters>,
    /// Request ids for the engine's own answers.
    pub(super) ids: Arc<RequestIds>,
    /// Connections open per client address, when they are limited
    /// (`max_connections_per_client`).
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Every open connection's slot.
    pub(super) slots: Slots<C>,
    /// Read buffers not in use.
    pub(super) buffers: Pool,
    /// The event loop's registry: workers re-arm the connections they put back.
    pub(super) registry: Registry,
    /// To the request workers; it also hands out the lead: the right to
    /// run the event loop's turn (`builtin.rs`).
    pub(super) queue: WorkQueue<Incoming<C>>,
    /// Timer entries for connections workers put back with a deadline sooner
    /// than the loop's entry for them (a short write timeout, a close), or
    /// whose entry fired while the worker had them; taken by the loop when
    /// `waker` wakes it.
    pub(super) sooner: Mutex<Vec<Timer>>,
    /// Wakes the thread blocked in the loop's poll.
    pub(super) waker: Arc<Waker>,
}

/// What travels to the request workers.
pub(super) enum Incoming<C> {
    /// A connection with a whole request buffered (counted in the queue's
    /// bound).
    Ready(Box<C>),
    /// What runs once a response the event loop finished sending is sent:
    /// run by a worker, as it may block (a full background queue).
    Run(Box<dyn FnOnce() + Send>),
    Wake,
}

/// What [`EngineState::new`] needs besides the loop's registry and waker.
pub(super) struct Settings {
    pub(super) limits: ConnectionLimits,
    pub(super) max_connections: usize,
    /// How many slots to make room for.
    pub(super) slots: usize,
    pub(super) counters: Arc<Counters>,
    pub(super) ids: Arc<RequestIds>,
}

impl<C> EngineState<C> {
    pub(super) fn new(settings: Settings, registry: Registry, waker: Waker) -> EngineState<C> {
        let Settings {
            limits,
            max_connections,
            slots,
            counters,
            ids,
        } = settings;
        let waker = Arc::new(waker);
        let rouse = waker.clone();
        EngineState {
            queue: WorkQueue::new(
                limits.max_pending_requests,
                limits.worker_wake_after,
                counters.clone(),
            )
            .with_lead(move || {
                let _ = rouse.wake();
            }),
            slots: Slots::new(slots),
            limits,
            max_connections,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            counters,
            ids,
            per_client: Mutex::default(),
            buffers: Pool::default(),
            registry,
            sooner: Mutex::default(),
            waker,
        }
    }

    /// Counts a connection of `client` in, unless it has its limit
    /// already (`false`). Without a limit, nothing is counted.
    pub(super) fn client_connected(&self, client: IpAddr) -> bool {
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
    pub(super) fn client_disconnected(&self, client: IpAddr) {
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

/// What a client is counted as for `max_connections_per_client`: its IPv4
/// address (also when it comes as an IPv4-mapped IPv6 one), or its IPv6 /64,
/// which one client usually holds whole.
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        v4 => v4,
    }
}

/// Binds the first address `address` resolves to that accepts, and listens
/// with `backlog` (the kernel caps it at `net.core.somaxconn`). Both engines
/// listen through it.
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
