//! The event loop: it waits on the readiness of the listening socket and of
//! every connection not with a request worker. It accepts, reads request
//! heads, sends the rest of responses a worker could not write at once,
//! closes connections gracefully, and keeps their deadlines (idle, header,
//! body drain, write) in a timer heap. It never blocks on a client, and
//! never runs a handler or a task.
//!
//! It has no thread of its own: its turns are run, one at a time, by
//! whichever thread has the lead (the work queue hands it out): a request
//! worker with nothing to serve, which may block in the poll, or, while
//! every worker is busy, the watcher (`watcher.rs`), which only looks. The
//! requests a turn reads go to the work queue, and the worker that ran it
//! takes the first once it gives the lead back.
//!
//! Readiness is edge-triggered (`mio`): a connection is read or written until
//! the socket would block, until it leaves the loop (to a worker, which
//! re-arms it when it puts it back: `conn.rs`), or until its turn is spent.
//!
//! Architecture invariant: the loop does a bounded amount of work per
//! connection per turn (a few reads, a bounded write, a bounded number of
//! accepts), and checks deadlines at every turn, so no client, however fast
//! it sends, holds it from the others. A connection that has used its turn
//! with more to do is re-armed (`Step::Again`), which reports its readiness
//! again at the next turn, after every other connection ready now.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::answer::closing_answer;
use super::conn::{Conn, Shared, Step};
use super::queue::Pusher;
use super::slots::Slot;
use super::state::{client_key, Timer};
use crate::http_error::HttpError;
use crate::response::IntoResponse;

/// The listening socket's token.
pub(super) const LISTENER: Token = Token(usize::MAX);
/// The token of the waker that tells the loop to stop.
pub(super) const WAKER: Token = Token(usize::MAX - 1);
/// The first wait before accepting again after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
/// Connections accepted per turn, at most; the rest wait for the next turn.
const ACCEPTS_PER_TURN: usize = 64;

/// The event loop's own state; everything else is in [`EngineState`].
pub(super) struct EventLoop {
    poll: Poll,
    events: Events,
    listener: TcpListener,
    shared: Arc<Shared>,
    timers: Timers,
    generation: u64,
    /// When to accept again, after running out of descriptors.
    accept_again: Option<Instant>,
    backoff: Duration,
    /// When a request queued may need a sleeping worker woken for it.
    spread: Option<Instant>,
}

impl EventLoop {
    pub(super) fn new(poll: Poll, listener: TcpListener, shared: Arc<Shared>) -> EventLoop {
        EventLoop {
            poll,
            events: Events::with_capacity(1024),
            listener,
            timers: Timers {
                heap: BinaryHeap::new(),
            },
            shared,
            generation: 0,
            accept_again: None,
            backoff: ACCEPT_BACKOFF,
            spread: None,
        }
    }

    /// Runs one turn: waits for readiness, then acts on what is ready and
    /// on every deadline that has passed. It waits only if `may_block` and
    /// nothing is queued for the workers, and then until the next deadline
    /// at most (an item queued meanwhile that no worker takes ends the wait:
    /// `WorkQueue::poll_begins`); otherwise it only looks.
    pub(super) fn turn(&mut self, may_block: bool) {
        // Kept across turns (no allocation per turn), out of `self` while
        // the turn acts on it.
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if self.wait(&mut events, may_block) {
            self.act(&events);
        }
        self.events = events;
    }

    /// Waits for readiness (see [`turn`](Self::turn)); `false`: the engine
    /// has stopped, and nobody takes the lead again.
    fn wait(&mut self, events: &mut Events, may_block: bool) -> bool {
        let shared = &self.shared;
        if shared.stopping.load(Ordering::SeqCst) {
            shared.queue.close_lead();
            return false;
        }
        let block = may_block && shared.queue.poll_begins();
        let timeout = if block {
            let next = self.timers.heap.peek().map(|Reverse((at, _, _))| *at);
            let next = next
                .into_iter()
                .chain(self.accept_again)
                .chain(self.spread)
                .min();
            next.map(|at| at.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        let polled = self.poll.poll(events, timeout);
        if block {
            shared.queue.poll_ended();
        }
        if let Err(e) = polled {
            if e.kind() != ErrorKind::Interrupted {
                log::error!("the event loop cannot wait for readiness: {e}; closing");
                shared.stopping.store(true, Ordering::SeqCst);
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            shared.queue.close_lead();
            return false;
        }
        true
    }

    /// Acts on what the poll found ready, then on every deadline passed.
    fn act(&mut self, events: &Events) {
        let sooner =
            std::mem::take(&mut *self.shared.sooner.lock().unwrap_or_else(|e| e.into_inner()));
        self.timers.heap.extend(sooner);
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(now),
                WAKER => {}
                Token(slot) => self.ready(slot, now),
            }
        }
        let now = Instant::now();
        if self.accept_again.is_some_and(|at| at <= now) {
            self.accept_again = None;
            self.accept(now);
        }
        self.expire(now);
        // Architecture invariant: a request queued waits for a busy worker
        // `worker_wake_after` at most while another sleeps: every turn
        // looks at the queue, and one that blocks wakes by that time if
        // nothing else wakes it first; while nobody leads, the watcher
        // looks (`WorkQueue::watch`).
        self.spread = self.shared.queue.spread(now);
    }

    /// Closes every connection it holds: the engine has stopped.
    pub(super) fn close_all(&self) {
        self.shared.slots.clear();
    }

    /// Accepts the connections waiting, up to a turn's worth; with more
    /// left, the listener is re-armed, to be reported again next turn.
    fn accept(&mut self, now: Instant) {
        if self.accept_again.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((stream, remote_addr)) => self.admit(stream, remote_addr, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.backoff = ACCEPT_BACKOFF;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory: try again once some may
                    // have been freed (closing connections free theirs).
                    if self.backoff == ACCEPT_BACKOFF {
                        log::warn!("cannot accept connections ({e}); retrying");
                    }
                    self.accept_again = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_millis(500));
                    return;
                }
            }
        }
        let registry = self.poll.registry();
        if registry
            .reregister(&mut self.listener, LISTENER, Interest::READABLE)
            .is_err()
        {
            // Accept again shortly, as after running out of descriptors.
            self.accept_again = Some(now + ACCEPT_BACKOFF);
        }
    }

    /// Takes a new connection into a slot, or answers `503` beyond a cap.
    fn admit(&mut self, stream: TcpStream, remote_addr: SocketAddr, now: Instant) {
        let shared = &self.shared;
        if shared.counters.connections_open() >= shared.max_connections as u64 {
            return busy(shared, stream, "too many connections; retry later", now);
        }
        let client = client_key(remote_addr.ip());
        if !shared.client_connected(client) {
            let detail = "too many connections from this address; retry later";
            return busy(shared, stream, detail, now);
        }
        let Some(slot) = shared.slots.allocate() else {
            shared.client_disconnected(client);
            return busy(shared, stream, "too many connections; retry later", now);
        };
        self.generation += 1;
        let _ = stream.set_nodelay(shared.limits.tcp_nodelay);
        let mut conn = Conn::new(
            stream,
            remote_addr,
            client,
            slot,
            self.generation,
            now,
            shared.clone(),
        );
        let token = conn.token();
        // Bytes already there are reported at once.
        if shared
            .registry
            .register(&mut conn.stream, token, Interest::READABLE)
            .is_err()
        {
            return;
        }
        let Some(mut guard) = shared.slots.lock(slot) else {
            return;
        };
        *guard = Slot::Here(conn);
        self.timers.keep(&mut guard);
    }

    /// A connection's socket is ready.
    fn ready(&mut self, slot: usize, now: Instant) {
        let Some(mut guard) = self.shared.slots.lock(slot) else {
            return;
        };
        // An event for a connection a worker has: noted, for the worker to
        // register it again when it puts it back; for one closed since, for
        // nobody.
        let conn = match &mut *guard {
            Slot::Here(conn) => conn,
            Slot::Away { ready, .. } => {
                *ready = true;
                return;
            }
            Slot::Vacant => return,
        };
        let step = conn.on_ready(now);
        apply(&self.shared, &mut self.timers, guard, step, false);
    }

    /// Acts on every deadline that has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.heap.peek() {
            if at > now {
                return;
            }
            self.timers.heap.pop();
            let Some(mut guard) = self.shared.slots.lock(slot) else {
                continue;
            };
            let expired = match &mut *guard {
                Slot::Away {
                    generation: away,
                    timer_at,
                    ..
                } if *away == generation && *timer_at == Some(at) => {
                    // A worker has it: the deadline is the one it sets when it
                    // puts the connection back, which then asks for an entry.
                    *timer_at = None;
                    continue;
                }
                Slot::Here(conn) if conn.generation == generation && conn.timer_at == Some(at) => {
                    conn.timer_at = None;
                    (conn.deadline() <= now).then(|| conn.expire(now))
                }
                // Stale: the connection has gone, or has a later entry.
                _ => continue,
            };
            match expired {
                Some(step) => apply(&self.shared, &mut self.timers, guard, step, true),
                None => self.timers.keep(&mut guard),
            }
        }
    }
}

/// Deadlines: at most one live entry per connection (others are stale and
/// skipped). A connection the loop holds always has one; one a worker has
/// keeps its entry until it fires, and gets a new one, through
/// `EngineState::sooner`, if it comes back with none or a later one.
struct Timers {
    heap: BinaryHeap<Timer>,
}

impl Timers {
    /// Makes sure the timer looks at the slot's connection by its deadline.
    fn keep(&mut self, guard: &mut MutexGuard<'_, Slot<Conn>>) {
        let Slot::Here(conn) = &mut **guard else {
            return;
        };
        let deadline = conn.deadline();
        if conn.timer_at.is_none_or(|at| deadline < at) {
            conn.timer_at = Some(deadline);
            self.heap
                .push(Reverse((deadline, conn.slot, conn.generation)));
        }
    }
}

/// Carries out `step` for the connection in `guard`'s slot. `rearm`: it
/// waits on readiness it has not read or written to exhaustion, so it
/// must be registered again for an edge already there to be reported.
fn apply(
    shared: &Shared,
    timers: &mut Timers,
    mut guard: MutexGuard<'_, Slot<Conn>>,
    step: Step,
    rearm: bool,
) {
    let Slot::Here(conn) = &mut *guard else {
        return;
    };
    // Shutdown has begun: a head read from now on is refused here, not queued.
    let step = match step {
        Step::Queue if shared.draining.load(Ordering::SeqCst) => {
            conn.refuse_request(HttpError::shutting_down(), Instant::now())
        }
        step => step,
    };
    match step {
        Step::Wait(interest) | Step::Again(interest) => {
            let rearm = rearm || matches!(step, Step::Again(_));
            if rearm || conn.interest != interest {
                conn.interest = interest;
                let token = conn.token();
                if shared
                    .registry
                    .reregister(&mut conn.stream, token, interest)
                    .is_err()
                {
                    *guard = Slot::Vacant;
                    return;
                }
            }
            timers.keep(&mut guard);
        }
        Step::Queue => {
            let away = Slot::Away {
                generation: conn.generation,
                timer_at: conn.timer_at,
                ready: false,
            };
            if let Slot::Here(conn) = std::mem::replace(&mut *guard, away) {
                drop(guard);
                conn.queue(Pusher::Loop);
            }
        }
        Step::Close => *guard = Slot::Vacant,
    }
}

/// Answers a connection beyond a cap `503` at once and closes it, rather
/// than leave the client waiting; without lingering: the loop moves on.
fn busy(shared: &Shared, mut stream: TcpStream, detail: &str, now: Instant) {
    let response = HttpError::new(503, detail.to_owned())
        .with_header("Retry-After", "1")
        .into_response();
    let answer = closing_answer(&shared.counters, &shared.ids, response, None, now);
    let _ = stream.write(&answer);
    let _ = stream.shutdown(Shutdown::Write);
}
