//! The consumer's I/O thread: every call to the backend, in batches. It
//! fetches jobs from the queues served (no more of a limited queue's than
//! it may run, and no more in all than the runners will start soon: see
//! [`IoLoop::budget`]), hands them to the runner threads, records their
//! outcomes, renews what runs, reclaims what a silent consumer holds,
//! promotes what is due, and reconnects with backoff when a call fails.
//!
//! Where the backend gives a second handle ([`Backend::fetcher`]), the
//! fetch is the fetching thread's call (`fetcher.rs`): the I/O thread asks
//! for the next batch *before* it records the last one, and the fetching
//! thread hands the jobs to the runners, so that the read and the run
//! overlap the record; the I/O thread still decides what to fetch, one
//! request at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::backend::{Action, Announce, Backend, Delivery, Record, Want};
use super::fetcher::{Fetcher, Reply, Request};
use super::held::Held;
use super::ready::Ready;
use super::runner::{lock_slot, Finished, Outcome, Slots};
use super::stats::{Shared, WorkerReport};
use crate::jobs::cancel::Cancels;
use crate::jobs::envelope::{now_ms, Envelope};
use crate::jobs::policy::{self, After};
use crate::jobs::settings::JobSettings;

/// How long a job runs before its `running` status is written.
const ANNOUNCE_AFTER: Duration = Duration::from_millis(2);

/// How long a result waits for others to share its record.
const RECORD_LINGER: Duration = Duration::from_millis(2);

/// How often due jobs are promoted.
const PROMOTE_EVERY: Duration = Duration::from_millis(50);

/// When a finished attempt started, Unix ms (0 for one not run).
fn started_ms(finished: &Finished) -> u64 {
    if finished.ran_for.is_zero() {
        return 0;
    }
    now_ms().saturating_sub(finished.ran_for.as_millis() as u64)
}

/// How often the store's cancel requests are looked at: how soon a job a
/// worker holds learns it was cancelled.
pub(super) const CANCELS_EVERY: Duration = Duration::from_millis(100);

/// How often the store's pending count is read.
const PENDING_EVERY: Duration = Duration::from_secs(1);

/// The first and the longest wait before connecting again after a failure.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How long the stop waits for a fetch still out. Each of the backend's
/// calls returns within its own timeout, but a fetch may make several; one
/// still out after this is left to the fetching thread, which logs how many
/// jobs it took (they stay pending in the store, for another worker).
const FETCH_DRAIN: Duration = Duration::from_secs(5);

/// A running job whose `running` status is being written.
struct Announced {
    lane: usize,
    entry: String,
    id: Arc<str>,
    name: String,
    attempt: u32,
    last_error: Option<String>,
    enqueued_at_ms: u64,
    started_ms: u64,
}

/// The I/O thread: everything said to the backend.
pub(super) struct IoLoop<B> {
    pub(super) backend: B,
    pub(super) name: String,
    /// Jobs held at most.
    pub(super) capacity: usize,
    /// Runner threads.
    pub(super) concurrency: usize,
    /// How soon a job held and not started is expected to start, at most.
    pub(super) horizon: Duration,
    /// The jobs held and not started, for the runners.
    pub(super) ready: Arc<Ready>,
    /// The jobs held: handed out, not yet recorded.
    pub(super) held: Arc<Held>,
    /// How many queues (lanes) are served.
    pub(super) lanes: usize,
    pub(super) batch: usize,
    pub(super) visibility: Duration,
    pub(super) settings: JobSettings,
    pub(super) slots: Slots,
    pub(super) shared: Arc<Shared>,
    /// The jobs asked to stop, as the store says (the runners look here).
    pub(super) cancels: Arc<Cancels>,
    /// The fetching thread, where the backend gave a second handle; `None`:
    /// this thread fetches.
    pub(super) fetcher: Option<Fetcher>,
}

/// What the I/O thread keeps between turns.
struct LoopState {
    /// How long an attempt runs, on average of late (an exponentially
    /// weighted mean, in seconds); `None` before the first.
    mean_run: Option<f64>,
    /// Whether the runners' jobs not started were taken back (the stop).
    closed: bool,
    /// Where each lane's next reclaim is due.
    next_reclaim_lane: usize,
    /// Results not yet recorded.
    done: Vec<Finished>,
    /// When the oldest of them came.
    first_done: Option<Instant>,
    last_promote: Instant,
    last_reclaim: Instant,
    last_renew: Instant,
    last_pending: Instant,
    last_cancels: Instant,
    /// Jobs handed back unrun (the consumer is stopping): pending in the
    /// store.
    not_run: u64,
    /// The fetching thread's replies (a channel that never sends when there
    /// is none).
    replies: Receiver<Reply>,
    /// A reply taken while waiting, not handled yet.
    fetched: Option<Reply>,
    /// The fetching thread is gone (it panicked), not yet said.
    fetcher_lost: bool,
    /// Every runner has ended (the stop): the results channel is
    /// disconnected, so always ready, and is no longer waited on.
    runners_gone: bool,
    /// Jobs asked of the fetching thread, not come back: 0 when no fetch is
    /// out (there is one at most).
    asked: usize,
    /// After a failed fetch: none is asked before this, and the next wait.
    fetch_again_at: Option<Instant>,
    fetch_retry: Duration,
}

impl LoopState {
    /// Takes the results there are, without waiting.
    fn collect(&mut self, results: &Receiver<Vec<Finished>>) {
        let before = self.done.len();
        self.done.extend(results.try_iter().flatten());
        if before == 0 && !self.done.is_empty() {
            self.first_done = Some(Instant::now());
        }
    }

    /// Waits up to `timeout` for a result or the fetching thread's reply,
    /// then takes the results there are.
    fn wait(&mut self, results: &Receiver<Vec<Finished>>, timeout: Duration) {
        let none = crossbeam_channel::never();
        let results = if self.runners_gone { &none } else { results };
        crossbeam_channel::select! {
            recv(results) -> finished => match finished {
                Ok(finished) => {
                    if self.done.is_empty() {
                        self.first_done = Some(Instant::now());
                    }
                    self.done.extend(finished);
                    self.collect(results);
                }
                Err(_) => self.runners_gone = true,
            },
            recv(self.replies) -> reply => match reply {
                Ok(reply) => self.fetched = Some(reply),
                // The fetching thread is gone (it panicked): `take_fetched`
                // says so, and this thread fetches from now on.
                Err(_) => {
                    self.replies = crossbeam_channel::never();
                    self.fetcher_lost = true;
                }
            },
            default(timeout) => {}
        }
    }
}

impl<B: Backend> IoLoop<B> {
    pub(super) fn run(mut self, results: &Receiver<Vec<Finished>>) -> WorkerReport {
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or_else(Instant::now);
        let mut state = LoopState {
            mean_run: None,
            closed: false,
            next_reclaim_lane: 0,
            done: Vec::new(),
            first_done: None,
            last_promote: long_ago,
            last_reclaim: Instant::now(),
            last_renew: Instant::now(),
            last_pending: long_ago,
            last_cancels: long_ago,
            not_run: 0,
            replies: self
                .fetcher
                .as_ref()
                .map_or_else(crossbeam_channel::never, |f| f.replies.clone()),
            fetched: None,
            fetcher_lost: false,
            runners_gone: false,
            asked: 0,
            fetch_again_at: None,
            fetch_retry: RECONNECT_FIRST,
        };
        let mut connected = false;
        let mut retry_delay = RECONNECT_FIRST;
        loop {
            state.collect(results);
            let stopping = self.shared.stopping.load(Ordering::SeqCst);
            if stopping {
                self.close_ready(&mut state);
            }
            let turn = if connected {
                Ok(())
            } else {
                self.backend.connect()
            }
            .and_then(|()| {
                connected = true;
                self.step(results, &mut state, stopping)
            });
            match turn {
                Ok(true) => retry_delay = RECONNECT_FIRST,
                Ok(false) => break,
                Err(error) => {
                    self.failed(&error);
                    connected = false;
                    // A store that is down, or takes connections but fails
                    // calls (one out of memory, a replica), must not hold
                    // the stop past its deadline, nor make this thread spin.
                    if stopping && self.past_deadline() {
                        break;
                    }
                    state.wait(results, retry_delay);
                    retry_delay = (retry_delay * 2).min(RECONNECT_MAX);
                }
            }
        }
        self.drain_fetch(&mut state);
        self.finish(&state)
    }

    /// The stop: the jobs the runners have not started go back (pending in
    /// the store, for another consumer), counted.
    fn close_ready(&self, state: &mut LoopState) {
        if state.closed {
            return;
        }
        state.closed = true;
        let left = self.ready.close();
        self.held.remove(left.iter().map(|d| d.entry.as_str()));
        state.not_run += left.len() as u64;
        self.held.publish(&self.shared, |_| {});
    }

    /// How many more jobs to hold now: no more than the runners will start
    /// within the horizon at the mean time an attempt has taken of late
    /// (beyond one per runner), and no more than the capacity. A job held
    /// here waits for this consumer's runners even when another consumer is
    /// idle: so jobs of seconds are never held beyond the free runners,
    /// while jobs of microseconds come in batches of up to the capacity.
    /// A job finished and not yet recorded no longer counts (it waits for
    /// no runner), and one asked of the fetching thread already does.
    fn budget(&self, state: &LoopState) -> usize {
        let ahead = match state.mean_run {
            // Until an attempt has been timed: one per runner.
            None => 0.0,
            Some(mean) => self.concurrency as f64 * self.horizon.as_secs_f64() / mean.max(1e-9),
        };
        let target = (self.concurrency as f64 + ahead).min(self.capacity as f64) as usize;
        target
            .max(self.concurrency)
            .min(self.capacity)
            .saturating_sub(self.holding(state))
    }

    /// Jobs held and not finished, and asked for: what the budget counts.
    fn holding(&self, state: &LoopState) -> usize {
        self.held.len().saturating_sub(state.done.len()) + state.asked
    }

    /// The report at the end: what was not recorded stays pending in the
    /// store, counted and logged.
    fn finish(&self, state: &LoopState) -> WorkerReport {
        let left = self.held.len() as u64 + state.not_run;
        if left > 0 {
            log::warn!(
                "worker {} stops with {left} jobs unfinished: left pending for other workers",
                self.name
            );
        }
        self.shared.update(|s| s.in_flight = 0);
        WorkerReport {
            stats: self.shared.stats(),
            left_pending: left,
        }
    }

    fn failed(&self, error: &str) {
        log::warn!(
            "worker {}: {} call failed ({error}); retrying",
            self.name,
            B::NAME
        );
        self.shared.update(|s| s.redis_errors += 1);
    }

    fn past_deadline(&self) -> bool {
        let deadline = *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        deadline.is_none_or(|d| Instant::now() >= d)
    }

    /// Records the results waiting, if any.
    fn flush(&mut self, state: &mut LoopState) -> Result<(), String> {
        if !state.done.is_empty() {
            state.not_run += self.record(&state.done, &mut state.mean_run)?;
            state.done.clear();
            state.first_done = None;
        }
        Ok(())
    }

    /// One turn of the loop; `Ok(false)` when the consumer is done.
    ///
    /// Results are recorded, and jobs fetched, in batches of at least half
    /// the batch size when there is that much to do: one round trip per job
    /// would make the store's latency the limit. A result waits at most
    /// [`RECORD_LINGER`] for others to join it.
    fn step(
        &mut self,
        results: &Receiver<Vec<Finished>>,
        state: &mut LoopState,
        stopping: bool,
    ) -> Result<bool, String> {
        let half = (self.capacity.min(self.batch) / 2).max(1);
        self.take_fetched(state);
        if !stopping {
            // Before the record: the fetch's round trip overlaps it.
            self.ask(state, half);
        }
        let all_done = state.done.len() >= self.held.len();
        let waited = state
            .first_done
            .is_some_and(|first| first.elapsed() >= RECORD_LINGER);
        if state.done.len() >= half || all_done || waited || stopping {
            self.flush(state)?;
        }
        self.watch_deadlines();
        self.announce()?;
        if stopping {
            if (self.held.is_empty() && state.asked == 0) || self.past_deadline() {
                self.flush(state)?;
                return Ok(false);
            }
            state.wait(results, Duration::from_millis(20));
            return Ok(true);
        }
        let now = Instant::now();
        if now.duration_since(state.last_promote) >= PROMOTE_EVERY {
            state.last_promote = now;
            let moved = self.backend.promote(self.batch)?;
            if moved > 0 {
                self.shared.update(|s| s.promoted += moved);
            }
        }
        if now.duration_since(state.last_cancels) >= CANCELS_EVERY {
            state.last_cancels = now;
            if let Some(ids) = self.backend.cancels()? {
                self.cancels.replace(ids);
            }
        }
        if now.duration_since(state.last_pending) >= PENDING_EVERY {
            state.last_pending = now;
            let pending = self.backend.pending()?;
            self.shared.update(|s| s.group_pending = pending);
        }
        if !self.held.is_empty() && now.duration_since(state.last_renew) >= self.visibility / 3 {
            state.last_renew = now;
            let entries = self.held.entries();
            let held: Vec<(usize, &str)> = entries
                .iter()
                .map(|(lane, entry)| (*lane, entry.as_str()))
                .collect();
            self.backend.renew(&held, self.visibility)?;
        }
        // With a fetch out, the reclaim waits for it to come back (no more
        // is asked meanwhile): both take from the same budget.
        if self.reclaim_due(state) && state.asked == 0 {
            state.last_reclaim = now;
            self.reclaim(state)?;
        }
        if self.fetcher.is_some() {
            // The fetching thread reads: wait for results or its reply
            // (with nothing held, no result comes: then until the next
            // promotion is due, at most).
            let timeout = if self.held.is_empty() {
                PROMOTE_EVERY
            } else {
                RECORD_LINGER
            };
            state.wait(results, timeout);
            return Ok(true);
        }
        let budget = self.budget(state);
        if budget == 0 || (budget < half && !self.held.is_empty() && !self.ready.has_idle_runner())
        {
            // Enough to do: wait for results rather than fetch a few more
            // (unless a runner has nothing to do).
            state.wait(results, RECORD_LINGER);
            return Ok(true);
        }
        let wants = self.wants(budget);
        // Nothing held, so nothing to record meanwhile: the backend may wait
        // a little for a job.
        let fetched = if wants.is_empty() {
            Vec::new()
        } else {
            self.backend
                .fetch(&wants, budget.min(self.batch), self.held.is_empty())?
        };
        if fetched.is_empty() {
            if !self.held.is_empty() {
                state.wait(results, RECORD_LINGER);
            }
            return Ok(true);
        }
        let n = fetched.len() as u64;
        self.shared.update(|s| s.claimed += n);
        self.hand_out(fetched, state);
        Ok(true)
    }

    /// Whether taking over jobs held too long by another consumer is due.
    fn reclaim_due(&self, state: &LoopState) -> bool {
        state.last_reclaim.elapsed() >= self.visibility / 2
    }

    /// What to fetch from each queue, in the order to read them, within
    /// `budget` and each queue's room.
    fn wants(&self, budget: usize) -> Vec<Want> {
        self.ready
            .fetch_order()
            .into_iter()
            .map(|lane| Want {
                lane,
                max: self.ready.room(lane).min(budget),
            })
            .filter(|want| want.max > 0)
            .collect()
    }

    /// Asks the fetching thread for the next batch, when there is one, no
    /// fetch is out, none failed just now, no reclaim waits, and the budget
    /// is worth a call (at least half a batch, or a runner is idle).
    fn ask(&mut self, state: &mut LoopState, half: usize) {
        let Some(fetcher) = &self.fetcher else {
            return;
        };
        if state.asked > 0
            || state.fetch_again_at.is_some_and(|at| Instant::now() < at)
            || self.reclaim_due(state)
        {
            return;
        }
        let budget = self.budget(state).min(self.batch);
        let running = self.held.len() > state.done.len();
        if budget == 0 || (budget < half && running && !self.ready.has_idle_runner()) {
            return;
        }
        let wants = self.wants(budget);
        if wants.is_empty() {
            return;
        }
        // With none ready, the store waits a little for one: this thread
        // goes on meanwhile, and the reply comes as soon as a job does.
        if fetcher.ask(Request {
            wants,
            budget,
            wait: true,
        }) {
            state.asked = budget;
        } else {
            self.fetcher_gone(state);
        }
    }

    /// Takes the fetching thread's reply: counts the jobs the runners
    /// refused (the stop had begun) left pending; after a failure, spaces
    /// the next request.
    fn take_fetched(&mut self, state: &mut LoopState) {
        if state.fetcher_lost {
            self.fetcher_gone(state);
            return;
        }
        let Some(reply) = state
            .fetched
            .take()
            .or_else(|| state.replies.try_recv().ok())
        else {
            return;
        };
        state.asked = 0;
        match reply {
            Ok(fetched) => {
                state.fetch_again_at = None;
                state.fetch_retry = RECONNECT_FIRST;
                // Fetched as the stop began: pending in the store, for
                // another consumer.
                state.not_run += fetched.refused as u64;
            }
            Err(error) => {
                self.failed(&error);
                state.fetch_again_at = Some(Instant::now() + state.fetch_retry);
                state.fetch_retry = (state.fetch_retry * 2).min(RECONNECT_MAX);
            }
        }
    }

    /// The fetching thread is gone (it panicked): this thread fetches from
    /// now on.
    fn fetcher_gone(&mut self, state: &mut LoopState) {
        log::error!(
            "worker {}: the fetching thread is gone; the I/O thread fetches",
            self.name
        );
        self.fetcher = None;
        state.replies = crossbeam_channel::never();
        state.fetcher_lost = false;
        state.asked = 0;
    }

    /// At the end: closes the runners' queue, waits for a fetch still out,
    /// and counts what it took (refused by the closed queue) left pending.
    fn drain_fetch(&mut self, state: &mut LoopState) {
        if state.fetcher_lost {
            self.fetcher_gone(state);
        }
        if state.asked == 0 {
            return;
        }
        self.close_ready(state);
        if state.fetched.is_none() {
            match state.replies.recv_timeout(FETCH_DRAIN) {
                Ok(reply) => state.fetched = Some(reply),
                Err(_) => {
                    log::warn!(
                        "worker {}: a fetch of up to {} jobs did not come back by the stop: what it takes stays pending in the store, for another worker",
                        self.name,
                        state.asked
                    );
                    // Its reply now has no one to read it: the fetching
                    // thread logs how many jobs it took instead.
                    self.fetcher = None;
                    state.replies = crossbeam_channel::never();
                    state.asked = 0;
                    return;
                }
            }
        }
        self.take_fetched(state);
    }

    /// Takes over, from one lane per turn in rotation, the jobs another
    /// consumer has held past the visibility timeout (within this one's
    /// budget and the lane's limit).
    fn reclaim(&mut self, state: &mut LoopState) -> Result<(), String> {
        for _ in 0..self.lanes {
            let lane = state.next_reclaim_lane % self.lanes;
            state.next_reclaim_lane = state.next_reclaim_lane.wrapping_add(1);
            let max = self.budget(state).min(self.ready.room(lane));
            if max == 0 {
                continue;
            }
            let taken = self.backend.reclaim(lane, max, self.visibility)?;
            if !taken.is_empty() {
                let n = taken.len() as u64;
                log::warn!(
                    "worker {}: took over {n} jobs held past the visibility timeout by another worker (they may run twice)",
                    self.name
                );
                self.shared.update(|s| s.reclaimed += n);
                self.hand_out(taken, state);
            }
        }
        Ok(())
    }

    /// Gives the jobs to the runner threads, held until recorded (those
    /// refused, the stop having begun, are counted left pending).
    fn hand_out(&self, deliveries: Vec<Delivery>, state: &mut LoopState) {
        let refused = self.held.hand_out(deliveries, &self.ready, &self.shared);
        state.not_run += refused.len() as u64;
    }

    /// Writes the `running` status of the jobs running for at least
    /// [`ANNOUNCE_AFTER`], in one call.
    fn announce(&mut self) -> Result<(), String> {
        // Copied out of the slots: no slot stays locked across the call.
        let mut running: Vec<Announced> = Vec::new();
        for slot in self.slots.iter() {
            let slot = lock_slot(slot);
            let Some(job) = slot.as_ref() else {
                continue;
            };
            if !job.announced && job.started.elapsed() >= ANNOUNCE_AFTER {
                running.push(Announced {
                    lane: job.lane,
                    entry: job.entry.clone(),
                    id: job.id.clone(),
                    name: job.name.to_string(),
                    attempt: job.attempt,
                    last_error: job.last_error.clone(),
                    enqueued_at_ms: job.enqueued_at_ms,
                    started_ms: now_ms().saturating_sub(job.started.elapsed().as_millis() as u64),
                });
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        let announces: Vec<Announce<'_>> = running
            .iter()
            .map(|job| Announce {
                lane: job.lane,
                envelope_id: &job.id,
                name: &job.name,
                attempt: job.attempt,
                last_error: job.last_error.as_deref(),
                enqueued_at_ms: job.enqueued_at_ms,
                started_ms: job.started_ms,
            })
            .collect();
        self.backend.announce(&announces)?;
        for slot in self.slots.iter() {
            if let Some(job) = lock_slot(slot).as_mut() {
                if running.iter().any(|r| r.entry == job.entry) {
                    job.announced = true;
                }
            }
        }
        Ok(())
    }

    /// Reports the jobs running past their deadline, once each.
    fn watch_deadlines(&self) {
        let now = Instant::now();
        for slot in self.slots.iter() {
            let mut slot = lock_slot(slot);
            let Some(job) = slot.as_mut().filter(|j| !j.overdue && now >= j.deadline) else {
                continue;
            };
            job.overdue = true;
            log::warn!(
                "job {} ({}) attempt {} is overdue: still running after {:?}",
                job.name,
                job.id,
                job.attempt,
                now - job.started
            );
            drop(slot);
            self.shared.update(|s| s.overdue += 1);
        }
    }

    /// Records finished attempts in one backend call: each with what the
    /// retry policy says follows it. Returns how many came back unrun
    /// (they stay pending, for another consumer).
    fn record(&mut self, done: &[Finished], mean_run: &mut Option<f64>) -> Result<u64, String> {
        let (mut succeeded, mut retried, mut dead, mut not_run) = (0, 0, 0, 0);
        let mut cancelled = 0;
        let mut records = Vec::with_capacity(done.len());
        for finished in done {
            let action = match &finished.outcome {
                Outcome::NotRun => {
                    not_run += 1;
                    continue;
                }
                Outcome::Unreadable { text, error } => {
                    dead += 1;
                    log::error!(
                        "stream entry {} is not a job ({error}): moved to the dead letters",
                        finished.entry
                    );
                    Action::Unreadable { text, error }
                }
                Outcome::Cancelled { envelope } => {
                    cancelled += 1;
                    self.cancels.forget(&envelope.id);
                    Action::Cancelled {
                        envelope,
                        error: None,
                    }
                }
                Outcome::Ran {
                    envelope,
                    result,
                    outbox,
                } => {
                    let ran = finished.ran_for.as_secs_f64();
                    *mean_run = Some(mean_run.map_or(ran, |mean| mean * 0.9 + ran * 0.1));
                    let error = result.as_ref().err().map(|f| f.message.as_str());
                    // Asked to stop, and it stopped: cancelled, not retried.
                    if error.is_some() && self.cancels.forget(&envelope.id) {
                        cancelled += 1;
                        records.push(Record {
                            lane: finished.lane,
                            entry: &finished.entry,
                            action: Action::Cancelled { envelope, error },
                            started_ms: started_ms(finished),
                        });
                        continue;
                    }
                    match policy::after(result, envelope, &self.settings) {
                        After::Done => {
                            succeeded += 1;
                            Action::Done {
                                envelope,
                                result: outbox.result.as_deref(),
                                children: &outbox.children,
                            }
                        }
                        After::Retry(delay) => {
                            retried += 1;
                            Action::Retry {
                                envelope: Envelope {
                                    last_error: error.map(str::to_owned),
                                    ..envelope.clone()
                                },
                                due_ms: now_ms() + delay.as_millis() as u64,
                            }
                        }
                        After::Dead => {
                            dead += 1;
                            Action::Dead {
                                envelope,
                                error: error.unwrap_or_default(),
                            }
                        }
                    }
                }
            };
            records.push(Record {
                lane: finished.lane,
                entry: &finished.entry,
                action,
                started_ms: started_ms(finished),
            });
        }
        if !records.is_empty() {
            self.backend.record(&records)?;
        }
        self.held.remove(done.iter().map(|f| f.entry.as_str()));
        self.held.publish(&self.shared, |s| {
            s.succeeded += succeeded;
            s.retried += retried;
            s.dead += dead;
            s.cancelled += cancelled;
        });
        Ok(not_run)
    }
}
