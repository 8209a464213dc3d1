//! Our engine's listener: it binds, starts the watcher's thread
//! (`watcher.rs`), and hands request workers the requests the event loop
//! (`event_loop.rs`) has read whole, as [`Exchange`]s. A worker with
//! nothing to serve runs the loop's turns itself, while it has the lead
//! (leader/followers: `WorkQueue`).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use mio::{Interest, Poll, Waker};

use super::conn::Shared;
use super::descriptors;
use super::event_loop::{EventLoop, LISTENER, WAKER};
use super::exchange::Exchange;
use super::limits::ConnectionLimits;
use super::queue::Popped;
use super::state::{listen, EngineState, Incoming, Settings};
use super::watcher::{self, lock};
use crate::access::RequestIds;
use crate::stats::Counters;

/// Our engine, listening.
pub(crate) struct BuiltinListener {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    event_loop: Arc<Mutex<EventLoop>>,
    watcher: Option<JoinHandle<()>>,
}

impl BuiltinListener {
    /// Listens on `address` (`host:port`; port 0 picks a free one).
    pub(crate) fn bind(
        address: &str,
        limits: ConnectionLimits,
        counters: Arc<Counters>,
        ids: Arc<RequestIds>,
    ) -> io::Result<BuiltinListener> {
        let max_connections = descriptors::max_connections(limits.max_connections);
        let listener = listen(address, limits.listen_backlog)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let settings = Settings {
            limits,
            max_connections,
            // No more slots than the most the default cap can be.
            slots: max_connections.min(descriptors::MOST as usize),
            counters,
            ids,
        };
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(EngineState::new(settings, registry, waker));
        let event_loop = Arc::new(Mutex::new(EventLoop::new(poll, listener, shared.clone())));
        let (for_watcher, loop_for_watcher) = (shared.clone(), event_loop.clone());
        let watcher = thread::Builder::new()
            .name("afterward-io".into())
            .spawn(move || watcher::watch(&for_watcher, &loop_for_watcher))?;
        Ok(BuiltinListener {
            local_addr,
            shared,
            event_loop,
            watcher: Some(watcher),
        })
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Blocks until a request arrives (`Some`) or [`wake_one`](Self::wake_one)
    /// is called (`None`). On the way, answers requests that are refused,
    /// runs what follows responses the event loop finished sending, and
    /// runs the loop's turns while it has the lead.
    pub(crate) fn next(&self) -> Option<Exchange> {
        loop {
            match self.shared.queue.pop() {
                Popped::Item(Incoming::Ready(conn)) => {
                    if let Some(exchange) = Exchange::start(conn) {
                        return Some(exchange);
                    }
                }
                Popped::Item(Incoming::Run(then)) => then(),
                Popped::Item(Incoming::Wake) => return None,
                Popped::Lead => {
                    lock(&self.event_loop).turn(true);
                    self.shared.queue.release_lead(Instant::now(), true);
                }
            }
        }
    }

    /// Shutdown has begun: new requests are answered `503` and closed, and
    /// responses in flight close their connection.
    pub(crate) fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Makes one call to [`next`](Self::next), current or future, return
    /// `None`. Wake-ups queue behind requests already waiting.
    pub(crate) fn wake_one(&self) {
        self.shared.queue.push(Incoming::Wake);
    }
}

impl Drop for BuiltinListener {
    /// Stops the event loop, which closes the listening socket and every
    /// connection waiting on it. Connections being served finish their
    /// current request and are then closed.
    fn drop(&mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.queue.close_lead();
        let _ = self.shared.waker.wake();
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        // Connections and what was to run after responses, still queued:
        // they hold the engine's state, so they go now (workers have ended).
        // What was to run still runs, here: tasks submitted to a pool that
        // has shut down are discarded and counted, not lost. Dropping a
        // connection may queue more.
        loop {
            let queued = self.shared.queue.take_all();
            if queued.is_empty() {
                break;
            }
            for item in queued {
                if let Incoming::Run(then) = item {
                    then();
                }
            }
        }
    }
}
