//! Our engine's listener: the event loop's thread (`event_loop.rs`), what it
//! shares with request workers, and the queue of connections with a whole
//! request head that request workers take [`Exchange`]s from.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Interest, Poll, Registry, Waker};

use super::buffer::Pool;
use super::conn::{self, Conn};
use super::event_loop::{EventLoop, Timer, LISTENER, WAKER};
use super::slots::Slots;
use super::{ConnectionLimits, Exchange, Next};
use crate::access::RequestIds;
use crate::stats::Counters;

/// Our engine, listening.
pub(crate) struct BuiltinListener {
    local_addr: SocketAddr,
    shared: Arc<EngineState>,
    io_thread: Option<JoinHandle<()>>,
}

/// What the event loop, connections and request workers share.
pub(crate) struct EngineState {
    pub(crate) limits: ConnectionLimits,
    /// `limits.max_connections`, or the default from the descriptor limit.
    pub(crate) max_connections: usize,
    /// Set when the engine is dropped: the loop ends, connections close.
    pub(crate) stopping: AtomicBool,
    /// Set when shutdown begins (and when the engine is dropped): new requests
    /// are answered `503`, responses close.
    pub(crate) draining: AtomicBool,
    /// Where connections and the engine's own answers are counted.
    pub(crate) counters: Arc<Counters>,
    /// Request ids for the engine's own answers.
    pub(crate) ids: Arc<RequestIds>,
    /// Connections open per client address, when they are limited
    /// (`max_connections_per_client`).
    pub(crate) per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Every open connection's slot.
    pub(super) slots: Slots,
    /// Read buffers not in use.
    pub(super) buffers: Pool,
    /// The event loop's registry: workers re-arm the connections they put back.
    pub(super) registry: Registry,
    /// To the request workers.
    pub(super) queue: WorkQueue,
    /// Timer entries for connections workers put back with a deadline sooner
    /// than the loop's entry for them (a short write timeout, a close), or
    /// whose entry fired while the worker had them; taken by the loop when
    /// `waker` wakes it.
    pub(super) sooner: Mutex<Vec<Timer>>,
    pub(super) waker: Waker,
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

/// What travels to [`BuiltinListener::next`].
pub(crate) enum Incoming {
    /// A connection with a whole request head buffered.
    Ready(Box<Conn>),
    /// What runs once a response the event loop finished sending is sent:
    /// run by a worker, as it may block (a full background queue).
    Run(Box<dyn FnOnce() + Send>),
    Wake,
}

/// The request workers' queue. A worker that finds it empty looks again
/// before it sleeps, but only one at a time (the "searcher"): it spins for
/// [`SPIN`], then yields the core until [`SEARCH`] has passed. The first
/// item pushed while one searches wakes nobody, any more do, and a worker
/// that takes an item with more behind it wakes a sleeper too, so that a
/// burst is spread over the workers. Sleeping is a condition variable.
///
/// Why: with a crossbeam channel every idle worker spun and yielded before
/// it slept (a quarter of the server's context switches were those yields);
/// with no search at all, every request woke a sleeping worker; a searcher
/// that only spun took a core the event loop and clients needed (p99 at two
/// connections, 0.12 to 3 ms). Measurements: BENCHMARKS.md.
///
/// Connections with a whole request are bounded (`max_pending_requests`):
/// one more is given back, for the loop to answer `503` at once. What runs
/// after a response and wake-ups are never refused.
pub(crate) struct WorkQueue {
    state: Mutex<Waiting>,
    ready: Condvar,
    /// `state.items.len()`, for the searcher to watch without the lock.
    len: AtomicUsize,
    /// The most connections it holds.
    capacity: usize,
    /// Counts the connections it holds (`requests_queued`).
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Waiting {
    items: VecDeque<Incoming>,
    /// How many of `items` are connections.
    requests: usize,
    /// Workers asleep on `ready`.
    sleeping: usize,
    /// Whether a worker is searching.
    searching: bool,
}

/// How long the searcher spins before it yields.
const SPIN: Duration = Duration::from_micros(2);
/// How long the searcher looks before it sleeps.
const SEARCH: Duration = Duration::from_micros(20);

impl WorkQueue {
    pub(super) fn new(capacity: usize, counters: Arc<Counters>) -> WorkQueue {
        WorkQueue {
            state: Mutex::default(),
            ready: Condvar::new(),
            len: AtomicUsize::new(0),
            capacity,
            counters,
        }
    }

    /// Queues a connection with a whole request, unless the queue holds
    /// `capacity` of them already: then it comes back.
    pub(super) fn push_ready(&self, conn: Box<Conn>) -> Result<(), Box<Conn>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.requests >= self.capacity {
            return Err(conn);
        }
        state.requests += 1;
        self.counters.request_queued(true);
        self.push_locked(state, Incoming::Ready(conn));
        Ok(())
    }

    /// Queues what runs after a response, or a wake-up.
    pub(super) fn push(&self, item: Incoming) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.push_locked(state, item);
    }

    fn push_locked(&self, mut state: std::sync::MutexGuard<'_, Waiting>, item: Incoming) {
        state.items.push_back(item);
        self.len.store(state.items.len(), Ordering::SeqCst);
        let wake = state.sleeping > 0 && (!state.searching || state.items.len() > 1);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// The first item, waiting for one.
    fn pop(&self) -> Incoming {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut searched = false;
        loop {
            if let Some(item) = state.items.pop_front() {
                self.len.store(state.items.len(), Ordering::SeqCst);
                if let Incoming::Ready(_) = item {
                    state.requests -= 1;
                    self.counters.request_queued(false);
                }
                let wake = !state.items.is_empty() && state.sleeping > 0;
                drop(state);
                if wake {
                    self.ready.notify_one();
                }
                return item;
            }
            if !state.searching && !searched {
                state.searching = true;
                searched = true;
                drop(state);
                let started = Instant::now();
                while self.len.load(Ordering::SeqCst) == 0 && started.elapsed() < SEARCH {
                    if started.elapsed() < SPIN {
                        for _ in 0..16 {
                            std::hint::spin_loop();
                        }
                    } else {
                        std::thread::yield_now();
                    }
                }
                state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.searching = false;
                continue;
            }
            state.sleeping += 1;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.sleeping -= 1;
            searched = false;
        }
    }

    fn take_all(&self) -> VecDeque<Incoming> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..std::mem::take(&mut state.requests) {
            self.counters.request_queued(false);
        }
        std::mem::take(&mut state.items)
    }
}

impl BuiltinListener {
    /// Listens on `address` (`host:port`; port 0 picks a free one).
    pub(crate) fn bind(
        address: &str,
        limits: ConnectionLimits,
        counters: Arc<Counters>,
        ids: Arc<RequestIds>,
    ) -> io::Result<BuiltinListener> {
        let max_connections = super::limits::max_connections(limits.max_connections);
        let listener = listen(address, limits.listen_backlog)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let queue = WorkQueue::new(limits.max_pending_requests, counters.clone());
        let shared = Arc::new(EngineState {
            // No more slots than the most the default cap can be.
            slots: Slots::new(max_connections.min(super::limits::MOST as usize)),
            max_connections,
            limits,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            counters,
            ids,
            per_client: Mutex::default(),
            buffers: Pool::default(),
            registry: poll.registry().try_clone()?,
            queue,
            sooner: Mutex::default(),
            waker: Waker::new(poll.registry(), WAKER)?,
        });
        let event_loop = EventLoop::new(poll, listener, shared.clone());
        let io_thread = thread::Builder::new()
            .name("afterward-io".into())
            .spawn(move || event_loop.run())?;
        Ok(BuiltinListener {
            local_addr,
            shared,
            io_thread: Some(io_thread),
        })
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Blocks until a request arrives or [`wake_one`](Self::wake_one) is
    /// called. On the way, answers heads that are refused and runs what
    /// follows responses the event loop finished sending.
    pub(crate) fn next(&self) -> Next {
        loop {
            match self.shared.queue.pop() {
                Incoming::Ready(conn) => {
                    if let Some(exchange) = conn::Exchange::start(conn) {
                        return Next::Request(Exchange::Builtin(exchange));
                    }
                }
                Incoming::Run(then) => then(),
                Incoming::Wake => return Next::Woken,
            }
        }
    }

    /// Shutdown has begun: new requests are answered `503` and closed, and
    /// responses in flight close their connection.
    pub(crate) fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Makes one call to [`next`](Self::next), current or future, return
    /// [`Next::Woken`]. Wake-ups queue behind requests already waiting.
    pub(crate) fn wake_one(&self) {
        self.shared.queue.push(Incoming::Wake);
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
    /// Stops the event loop, which closes the listening socket and every
    /// connection waiting on it. Connections being served finish their
    /// current request and are then closed.
    fn drop(&mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
        if let Some(io_thread) = self.io_thread.take() {
            let _ = io_thread.join();
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

#[cfg(test)]
mod tests {
    use super::{client_key, Incoming, WorkQueue};
    use std::net::IpAddr;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_pushed_while_a_worker_searches_reaches_every_sleeping_worker() {
        const WORKERS: usize = 4;
        let queue = Arc::new(WorkQueue::new(64, Arc::default()));
        // How many items were taken, and whether the workers may finish:
        // each holds its item (a slow handler) until all are taken.
        let taken = Arc::new((Mutex::new(0), Condvar::new()));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (queue, taken) = (queue.clone(), taken.clone());
                std::thread::spawn(move || {
                    let _item = queue.pop();
                    let (count, changed) = &*taken;
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    changed.notify_all();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while *count < WORKERS && Instant::now() < deadline {
                        count = changed
                            .wait_timeout(count, Duration::from_secs(1))
                            .unwrap()
                            .0;
                    }
                })
            })
            .collect();
        // Every worker asleep (each searches first, one at a time)...
        let deadline = Instant::now() + Duration::from_secs(30);
        while queue.state.lock().unwrap().sleeping < WORKERS {
            assert!(Instant::now() < deadline, "the workers never slept");
            std::thread::yield_now();
        }
        // ...and one more searching (this thread, standing in for a worker):
        // it will take one item of the burst, at most, once it stops.
        queue.state.lock().unwrap().searching = true;
        for _ in 0..=WORKERS {
            queue.push(Incoming::Wake);
        }
        let (count, changed) = &*taken;
        let count = changed
            .wait_timeout_while(count.lock().unwrap(), Duration::from_secs(30), |n| {
                *n < WORKERS
            })
            .unwrap()
            .0;
        assert_eq!(*count, WORKERS, "items left waiting while workers sleep");
        drop(count);
        let mut state = queue.state.lock().unwrap();
        state.searching = false;
        assert_eq!(state.items.len(), 1, "what is left for the searcher");
        drop(state);
        for worker in workers {
            worker.join().unwrap();
        }
    }

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
