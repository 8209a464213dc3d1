//! The job runner: attempts on the background pool, retries waiting in the
//! timer (never on a pool thread), dead letters, statuses and counters; and
//! the timer's thread, which hands due jobs to the pool and reports attempts
//! past their deadlines.
//!
//! Its size: a tenth is unit tests; the rest is one state (statuses, the
//! timer's heap, the counters, uniqueness keys, cancel marks) under one set
//! of rules, which every path of a job's life reads. It has outgrown that:
//! the next restructuring should move the lifecycle operations (cancel,
//! unique keys, run now, dead letters) to a room of their own.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::broker::Broker;
use super::cancel::{CancelError, Cancellation, Cancels};
use super::envelope::{now_ms, DeadLetter, Envelope};
use super::job::{EnqueueError, Job, JobContext, JobId};
use super::lanes::Lanes;
use super::options::JobOptions;
use super::policy::{self, After};
use super::registry::Registry;
use super::schedule::ScheduleControl;
use super::scope::JobScope;
use super::settings::{JobMode, JobSettings};
use super::spill::Spill;
use super::status::{IdSource, JobState, JobStatus, StatusStore};
use super::timer::{Next, Running, Timer};
use super::unique::Uniques;
use crate::pool::{current_slot, PoolSubmitter};
use crate::state::StateMap;
use crate::stats::{Counters, TaskInfo};
use crate::tasks::{BackgroundTask, Batch, TaskQueue};

/// Indexes into [`OUTCOMES`](super::registry::OUTCOMES).
const ENQUEUED: usize = 0;
const SUCCEEDED: usize = 1;
const RETRIED: usize = 2;
const DEAD: usize = 3;
const OVERDUE: usize = 4;
const DISCARDED: usize = 5;
const CANCELLED: usize = 6;

/// Runs jobs on the pool and keeps their statuses.
pub(crate) struct JobRunner {
    registry: Registry,
    /// The app's state, for [`JobContext::state`].
    state: Arc<StateMap>,
    settings: JobSettings,
    counters: Arc<Counters>,
    statuses: StatusStore,
    dead: Mutex<VecDeque<DeadLetter>>,
    /// Jobs enqueued in [`JobMode::Capture`].
    captured: Mutex<Vec<Envelope>>,
    pool: PoolSubmitter,
    timer: Arc<Timer>,
    ids: Arc<IdSource>,
    /// What attempts are lent: the id source, for follow-up jobs.
    scope: Arc<JobScope>,
    /// The uniqueness keys held by in-process jobs.
    uniques: Uniques,
    /// Running jobs asked to stop (shared with the attempts, through `scope`).
    cancels: Arc<Cancels>,
    /// The pool's schedules, once its scheduler has started.
    schedules: OnceLock<Arc<dyn ScheduleControl>>,
    /// Delayed jobs asked to run now before they reached the timer (their
    /// step still on its way): they skip their wait when they get there.
    hurried: Mutex<Vec<Arc<str>>>,
    /// Where jobs go instead of the pool, when they run elsewhere.
    broker: Option<Arc<dyn Broker>>,
    /// Where jobs go that would be dropped at the shutdown deadline (mixed
    /// mode: they run here, and go to Redis only then).
    spill: Spill,
    /// The in-process queues, when the settings choose which are served.
    lanes: Option<Lanes>,
}

impl JobRunner {
    /// Starts the runner and its timer thread (`afterward-jobs-timer`), which
    /// hands due jobs to the pool through `pool`.
    pub(crate) fn start(
        registry: Registry,
        state: StateMap,
        settings: JobSettings,
        counters: Arc<Counters>,
        pool: PoolSubmitter,
        broker: Option<Arc<dyn Broker>>,
        spill: Option<Arc<dyn Broker>>,
    ) -> std::io::Result<Arc<JobRunner>> {
        let timer = Arc::new(Timer::default());
        let ids = Arc::new(IdSource::default());
        let settings_queues = settings.queues.clone();
        let cancels = Arc::new(Cancels::default());
        let scope = Arc::new(JobScope {
            cancels: cancels.clone(),
            ids: ids.clone(),
            max_attempts: settings.max_attempts,
            max_result_bytes: settings.max_result_bytes,
            served: match &broker {
                Some(_) => None,
                None => settings_queues.clone(),
            },
        });
        let runner = Arc::new(JobRunner {
            registry,
            state: Arc::new(state),
            statuses: StatusStore::new(settings.status_capacity, ids.origin())
                .keeping_payloads(settings.status_payload_bytes),
            settings,
            counters,
            dead: Mutex::default(),
            captured: Mutex::default(),
            pool: pool.clone(),
            timer: timer.clone(),
            ids,
            scope,
            uniques: Uniques::default(),
            cancels,
            schedules: OnceLock::new(),
            hurried: Mutex::default(),
            lanes: match &broker {
                Some(_) => None,
                None => settings_queues.as_ref().map(Lanes::new),
            },
            broker,
            spill: Spill::new(spill),
        });
        let weak = Arc::downgrade(&runner);
        thread::Builder::new()
            .name("afterward-jobs-timer".into())
            .spawn(move || run_timer(&timer, &weak, &pool))?;
        Ok(runner)
    }

    pub(super) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Where jobs go instead of the pool, when they run elsewhere.
    pub(super) fn broker(&self) -> Option<&Arc<dyn Broker>> {
        self.broker.as_ref()
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What the in-process store knows of job `id`.
    /// A page of the statuses kept (see `StatusStore::select`).
    pub(super) fn select(
        &self,
        state: &str,
        q: &str,
        skip: usize,
        take: usize,
    ) -> (usize, Vec<JobStatus>) {
        self.statuses.select(self.ids.last(), state, q, skip, take)
    }

    /// Per queue, the jobs kept queued, running, delayed and retrying.
    pub(super) fn queue_counts(&self) -> Vec<(String, [u64; 4])> {
        self.statuses.queue_counts()
    }

    pub(super) fn status(&self, id: &str) -> Option<JobStatus> {
        self.statuses.get(id)
    }

    /// The dead jobs kept, oldest first.
    pub(super) fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.dead).iter().cloned().collect()
    }

    /// The jobs captured so far.
    pub(super) fn captured(&self) -> Vec<Envelope> {
        lock(&self.captured).clone()
    }

    /// Checks, serializes and registers a new job; counts it as enqueued.
    ///
    /// It goes to `options`' queue, or its type's; a queue name that is not
    /// valid, or that this runner does not serve (in-process, with queues
    /// chosen), is refused: the job would never run. A unique job whose key
    /// is held is not added: [`Prepared::Existing`] names the holder.
    pub(crate) fn envelope<J: Job>(
        &self,
        job: &J,
        request_id: &Arc<str>,
        options: &JobOptions,
    ) -> Result<Prepared, EnqueueError> {
        let spec = self
            .registry
            .get(J::NAME)
            .ok_or(EnqueueError::Unregistered(J::NAME))?;
        // The type's own queue was checked when the server was built.
        let queue = match &options.queue {
            None => Cow::Borrowed(spec.queue),
            Some(queue) => {
                if let Err(reason) = self.scope.check_queue(queue) {
                    return Err(EnqueueError::Queue {
                        queue: queue.to_string(),
                        reason,
                    });
                }
                queue.clone()
            }
        };
        let payload = serde_json::to_string(job).map_err(|source| EnqueueError::Payload {
            name: J::NAME,
            source,
        })?;
        let unique = options.unique.clone().or_else(|| job.unique_key());
        let envelope = Envelope {
            id: self.ids.next(),
            name: Cow::Borrowed(J::NAME),
            queue,
            payload,
            attempts: 0,
            max_attempts: spec.max_attempts(self.settings.max_attempts),
            enqueued_at_ms: now_ms(),
            request_id: request_id.clone(),
            last_error: None,
            unique: unique.map(|key| format!("{}:{key}", J::NAME)),
        };
        if self.settings.mode == JobMode::Capture {
            // A captured job is not in the system: no status, not counted.
            return Ok(Prepared::New(envelope));
        }
        if let Some(holder) = self.claim_unique(&envelope, options.delay)? {
            return Ok(Prepared::Existing(JobId::new(holder.into())));
        }
        // A job for the broker gets its status there, as it is sent.
        if self.broker.is_none() {
            self.keep_status(&envelope, options.delay);
        }
        self.counters.job_enqueued();
        spec.counts.bump(&envelope.queue, ENQUEUED);
        Ok(Prepared::New(envelope))
    }

    /// Keeps a new job's status: `queued`, or `delayed` when it waits
    /// `delay`, with its uniqueness key (a cancel before it starts frees it).
    fn keep_status(&self, envelope: &Envelope, delay: Option<Duration>) {
        let (name, queue) = (envelope.name.clone(), envelope.queue.clone());
        self.statuses.insert(
            &envelope.id,
            name,
            queue,
            envelope.enqueued_at_ms,
            &envelope.payload,
        );
        if envelope.unique.is_some() || delay.is_some() {
            let next_run = delay.map(|delay| SystemTime::now() + delay);
            self.statuses.update(&envelope.id, |s| {
                s.unique.clone_from(&envelope.unique);
                if let Some(next_run) = next_run {
                    s.state = JobState::Delayed { next_run };
                }
            });
        }
    }

    /// Claims a unique job's key (in the broker, or here): the holder's id
    /// if another job holds it.
    fn claim_unique(
        &self,
        envelope: &Envelope,
        delay: Option<Duration>,
    ) -> Result<Option<String>, EnqueueError> {
        let Some(key) = &envelope.unique else {
            return Ok(None);
        };
        match &self.broker {
            Some(broker) => broker
                .claim_unique(envelope, delay)
                .map_err(EnqueueError::Unavailable),
            None => Ok(self
                .uniques
                .claim(key, &envelope.id)
                .map(|holder| holder.to_string())),
        }
    }

    /// A job has ended (done, dead, discarded, cancelled): its uniqueness
    /// key, if it holds one, is free again.
    fn ended(&self, envelope: &Envelope) {
        let Some(key) = &envelope.unique else {
            return;
        };
        match &self.broker {
            Some(broker) => broker.release_unique(envelope),
            None => self.uniques.release(key, &envelope.id),
        }
    }

    /// Cancels job `id`: one not started never will (its status says so at
    /// once, and it is counted then); a running one is told.
    pub(super) fn cancel(&self, id: &str) -> Result<Cancellation, CancelError> {
        let decided = self.statuses.update_with(id, |s| match &s.state {
            JobState::Queued | JobState::Delayed { .. } | JobState::Retrying { .. } => {
                s.state = JobState::Cancelled;
                let ended = (s.name.clone(), s.queue.clone(), s.unique.clone());
                Ok(Some(ended))
            }
            JobState::Running => Ok(None),
            ended => Err(CancelError::Ended(ended.clone())),
        });
        match decided {
            None => Err(CancelError::NotFound),
            Some(Err(error)) => Err(error),
            Some(Ok(Some((name, queue, unique)))) => {
                self.counters.job_cancelled();
                self.count(&name, &queue, CANCELLED);
                if let Some(key) = unique {
                    self.uniques.release(&key, id);
                }
                log::info!("job {id} ({name}) cancelled before it started");
                Ok(Cancellation::Cancelled)
            }
            Some(Ok(None)) => {
                self.cancels.ask(id.into());
                Ok(Cancellation::Cancelling)
            }
        }
    }

    /// Takes the dead letters `pick` chooses out of the list and sends
    /// their jobs back to run, attempts reset, each counted as enqueued
    /// again (it will end again); with `requeue` false, drops them for
    /// good. How many.
    pub(super) fn take_dead(&self, pick: impl Fn(&DeadLetter) -> bool, requeue: bool) -> usize {
        let taken: VecDeque<DeadLetter> = {
            let mut dead = lock(&self.dead);
            let (taken, kept) = dead.drain(..).partition(|letter| pick(letter));
            *dead = kept;
            taken
        };
        let n = taken.len();
        if !requeue {
            return n;
        }
        for DeadLetter { mut envelope, .. } in taken {
            envelope.attempts = 0;
            envelope.last_error = None;
            // Its key was freed when it died: held again, if still free.
            if let Some(key) = &envelope.unique {
                if self.uniques.claim(key, &envelope.id).is_some() {
                    envelope.unique = None;
                }
            }
            self.keep_status(&envelope, None);
            self.counters.job_enqueued();
            self.count(&envelope.name, &envelope.queue, ENQUEUED);
            log::info!("dead job {} ({}) requeued", envelope.id, envelope.name);
            match self.settings.mode {
                JobMode::Eager => self.run_now(envelope),
                JobMode::Capture => self.capture(envelope),
                _ => self.wait(envelope, Instant::now()),
            }
        }
        n
    }

    /// The pool's schedules, given once its scheduler has started.
    pub(crate) fn set_schedules(&self, schedules: Arc<dyn ScheduleControl>) {
        let _ = self.schedules.set(schedules);
    }

    /// The pool's schedules, if it has any.
    pub(super) fn schedules(&self) -> Option<&Arc<dyn ScheduleControl>> {
        self.schedules.get()
    }

    /// Runs job `id`, delayed or waiting for a retry, now: whether it was
    /// waiting.
    pub(super) fn hurry(&self, id: &str) -> bool {
        let now = SystemTime::now();
        // Under the statuses' lock: a job delayed, not yet in the timer,
        // is marked before its step can look.
        let waiting = self.statuses.update_with(id, |s| match &mut s.state {
            JobState::Delayed { next_run } | JobState::Retrying { next_run } => {
                *next_run = now;
                true
            }
            _ => false,
        });
        if waiting != Some(true) {
            return false;
        }
        // The same lock as `delay`'s look and schedule: the job is in the
        // timer already, or it will see the mark.
        let mut hurried = lock(&self.hurried);
        if !self.timer.hurry(id) {
            hurried.push(id.into());
        }
        true
    }

    /// Whether job id `id` was made here (by this runner's id source).
    pub(super) fn made_here(&self, id: &str) -> bool {
        self.ids.made(id)
    }

    /// Whether jobs take turns in in-process queues.
    pub(super) fn has_lanes(&self) -> bool {
        self.lanes.is_some()
    }

    /// Puts a job due now in its queue's lane, counted as waiting until a
    /// turn takes it; its turn is the caller's to give. `Err` gives it back
    /// when the lanes have closed (shutdown).
    pub(super) fn enter_lane(&self, envelope: Envelope) -> Result<(), Envelope> {
        let Some(lanes) = &self.lanes else {
            return Err(envelope);
        };
        // Counted as it enters (the pool is never seen idle while it waits).
        lanes.push(envelope, Some(&self.counters))
    }

    /// A turn of the in-process queues, on a pool thread: runs the job they
    /// choose, then, as each finishes, a job a deferred turn can now run.
    pub(super) fn take_turn(&self) {
        let Some(lanes) = &self.lanes else {
            return;
        };
        let mut next = lanes.take();
        while let Some((lane, envelope)) = next {
            // This task runs: the pool is not idle while it stops waiting.
            self.counters.job_delayed(-1);
            self.run_attempt(envelope);
            next = lanes.finished(lane);
        }
    }

    /// A job that came after the queues closed (shutdown): discarded.
    pub(super) fn discard_closed(&self, envelope: &Envelope) {
        self.discarded(envelope, "the pool has shut down");
    }

    /// Whether jobs go to a broker instead of the pool.
    pub(crate) fn has_broker(&self) -> bool {
        self.broker.is_some()
    }

    /// Sends the job to the broker now, on this thread (a durable enqueue).
    pub(crate) fn send_now(
        &self,
        envelope: &Envelope,
        delay: Option<Duration>,
    ) -> Result<(), String> {
        match &self.broker {
            Some(broker) => {
                let sent = broker.send_now(envelope, delay);
                match &sent {
                    Ok(()) => self.counters.jobs_sent_now(),
                    Err(error) => self.discarded(envelope, error),
                }
                sent
            }
            None => Err("no broker is configured".into()),
        }
    }

    /// The task that hands the job to the broker after the response.
    pub(crate) fn send_task(
        self: Arc<Self>,
        envelope: Envelope,
        delay: Option<Duration>,
    ) -> BackgroundTask {
        BackgroundTask::step(Box::new(JobStep {
            runner: self,
            envelope,
            delay,
            send: true,
        }))
    }

    pub(crate) fn attempt_task(self: Arc<Self>, envelope: Envelope) -> BackgroundTask {
        BackgroundTask::step(Box::new(JobStep {
            runner: self,
            envelope,
            delay: None,
            send: false,
        }))
    }

    /// The task that puts the job in the timer, due `delay` from when it runs.
    pub(crate) fn delayed_task(
        self: Arc<Self>,
        envelope: Envelope,
        delay: Duration,
    ) -> BackgroundTask {
        BackgroundTask::step(Box::new(JobStep {
            runner: self,
            envelope,
            delay: Some(delay),
            send: false,
        }))
    }

    /// Counts `outcome` for the job type `name` (the metrics' `job` label).
    fn count(&self, name: &str, queue: &str, outcome: usize) {
        if let Some(spec) = self.registry.get(name) {
            spec.counts.bump(queue, outcome);
        }
    }

    /// A job counted buffered that the broker refused, having stopped: it
    /// is discarded, counted, and out of the buffer count.
    pub(super) fn broker_stopped(&self, envelope: &Envelope) {
        self.discarded(envelope, "the broker's sender has stopped");
        self.counters.jobs_unbuffered(1, false);
    }

    /// A job that will not run here: its status says so, and it is counted;
    /// `false` for one cancelled before (it ended then, and was counted).
    pub(super) fn count_discarded(&self, envelope: &Envelope) -> bool {
        let cancelled = self.statuses.update_with(&envelope.id, |s| {
            if s.state == JobState::Cancelled {
                return true;
            }
            s.state = JobState::Discarded;
            false
        });
        if cancelled == Some(true) {
            return false;
        }
        self.counters.job_discarded();
        self.count(&envelope.name, &envelope.queue, DISCARDED);
        self.ended(envelope);
        true
    }

    /// A job that will not run, and that no task stands for (it waited in
    /// the timer or the broker's buffer, or its broker refused it): counted,
    /// logged as a task not run is, and kept for a shutdown's report.
    fn discarded(&self, envelope: &Envelope, reason: &str) {
        if !self.count_discarded(envelope) {
            return;
        }
        let info = job_info(envelope, false);
        self.counters.not_run(log::Level::Warn, &info, reason);
    }

    /// Runs one attempt, on a pool thread; what follows (done, a retry in
    /// the timer, dead) is decided here.
    pub(super) fn run_attempt(&self, envelope: Envelope) {
        if let Some((envelope, delay)) = self.attempt(envelope) {
            self.wait(envelope, Instant::now() + delay);
        }
    }

    /// Runs one attempt and records how it ended; `Some` is a job to retry
    /// after the delay (already counted and shown as retrying).
    fn attempt(&self, mut envelope: Envelope) -> Option<(Envelope, Duration)> {
        envelope.attempts += 1;
        let attempts = envelope.attempts;
        // One step with a cancel: a job cancelled before this never starts.
        let starts = self.statuses.update_with(&envelope.id, |s| {
            if s.state == JobState::Cancelled {
                return false;
            }
            s.state = JobState::Running;
            s.attempts = attempts;
            s.started = Some(SystemTime::now());
            true
        });
        if starts == Some(false) {
            return None; // ended, and counted, when cancelled
        }
        let Some(spec) = self.registry.get(&envelope.name) else {
            let error = format!("no job named {:?} is registered", envelope.name);
            self.dead(envelope, error);
            return None;
        };
        let context =
            JobContext::for_attempt(&envelope, attempts, self.state.clone(), self.scope.clone());
        let timeout = spec.timeout(self.settings.timeout);
        self.timer.started(Running {
            id: envelope.id.clone(),
            name: envelope.name.clone(),
            queue: envelope.queue.clone(),
            attempt: attempts,
            deadline: Instant::now() + timeout,
            slot: current_slot(),
            overdue: false,
        });
        let outcome = spec.attempt(&envelope.payload, &context);
        let late = self.timer.ended(&envelope.id, attempts);
        if late {
            log::warn!(
                "job {} ({}) attempt {attempts} returned after its deadline: {}",
                envelope.name,
                envelope.id,
                if outcome.is_ok() {
                    "it succeeded"
                } else {
                    "it failed"
                }
            );
        }
        if self.cancels.forget(&envelope.id) {
            if let Err(failure) = &outcome {
                // Asked to stop, and it stopped: cancelled, not retried.
                self.statuses.update(&envelope.id, |s| {
                    s.state = JobState::Cancelled;
                    s.error = Some(failure.message.clone());
                });
                self.counters.job_cancelled();
                spec.counts.bump(&envelope.queue, CANCELLED);
                self.ended(&envelope);
                return None;
            }
        }
        match (policy::after(&outcome, &envelope, &self.settings), outcome) {
            (After::Done, _) => {
                let outbox = context.take_outbox();
                let children = outbox.child_ids();
                // The follow-ups exist before the status that names them.
                self.follow_up(outbox.children);
                // Done: an earlier attempt's error is history, not status.
                self.statuses.update(&envelope.id, |s| {
                    s.state = JobState::Done;
                    s.error = None;
                    s.result = outbox.result;
                    s.children = children;
                });
                self.counters.job_succeeded();
                spec.counts.bump(&envelope.queue, SUCCEEDED);
                self.ended(&envelope);
                None
            }
            (After::Retry(delay), Err(failure)) => {
                let next_run = SystemTime::now() + delay;
                self.statuses.update(&envelope.id, |s| {
                    s.state = JobState::Retrying { next_run };
                    s.error = Some(failure.message);
                });
                self.counters.job_retried();
                spec.counts.bump(&envelope.queue, RETRIED);
                Some((envelope, delay))
            }
            (_, result) => {
                let error = result.err().map(|f| f.message).unwrap_or_default();
                self.dead_logged(envelope, error);
                None
            }
        }
    }

    /// Enqueues the follow-up jobs of an attempt that succeeded, as any
    /// enqueue is counted and shown. They go through the timer (due at once
    /// unless delayed), whose thread hands them to the pool: this runs on a
    /// pool thread, which must not wait for room in the pool's own queue.
    fn follow_up(&self, children: Vec<(Envelope, Option<Duration>)>) {
        for (envelope, delay) in children {
            if self.settings.mode == JobMode::Capture {
                self.capture(envelope);
                continue;
            }
            self.keep_status(&envelope, delay);
            self.counters.job_enqueued();
            self.count(&envelope.name, &envelope.queue, ENQUEUED);
            if self.settings.mode == JobMode::Eager {
                self.run_now(envelope);
                continue;
            }
            match delay {
                Some(delay) => self.delay(envelope, delay),
                None => self.wait(envelope, Instant::now()),
            }
        }
    }

    /// Eager mode: every attempt now, on this thread, without the backoff.
    pub(crate) fn run_now(&self, envelope: Envelope) {
        let mut next = Some(envelope);
        while let Some(envelope) = next.take() {
            next = self.attempt(envelope).map(|(envelope, _)| envelope);
        }
    }

    /// Capture mode: kept for the test to read, never run.
    pub(crate) fn capture(&self, envelope: Envelope) {
        lock(&self.captured).push(envelope);
    }

    pub(crate) fn mode(&self) -> JobMode {
        self.settings.mode
    }

    fn dead(&self, envelope: Envelope, error: String) {
        policy::log_dead(&envelope, &error);
        self.dead_logged(envelope, error);
    }

    /// Keeps a dead job (already logged) in the dead letters, and says so
    /// in its status and counts.
    fn dead_logged(&self, envelope: Envelope, error: String) {
        self.statuses.update(&envelope.id, |s| {
            s.state = JobState::Dead;
            s.error = Some(error.clone());
        });
        self.counters.job_dead();
        self.count(&envelope.name, &envelope.queue, DEAD);
        self.ended(&envelope);
        let mut dead = lock(&self.dead);
        if self.settings.dead_letter_capacity > 0 {
            while dead.len() >= self.settings.dead_letter_capacity {
                dead.pop_front();
            }
            dead.push_back(DeadLetter { envelope, error });
        }
    }

    /// A new job, due `delay` from now: its status says `delayed` until it
    /// runs, and it waits in the timer.
    pub(super) fn delay(&self, envelope: Envelope, delay: Duration) {
        let next_run = SystemTime::now() + delay;
        self.statuses.update(&envelope.id, |s| {
            if s.state == JobState::Queued {
                s.state = JobState::Delayed { next_run };
            }
        });
        // Asked to run now before it got here: it waits no more. Looked at
        // and scheduled under one lock with `hurry`.
        let mut hurried = lock(&self.hurried);
        let at = hurried.iter().position(|h| **h == *envelope.id);
        let due = match at {
            Some(at) => {
                hurried.swap_remove(at);
                Instant::now()
            }
            None => Instant::now() + delay,
        };
        self.wait(envelope, due);
        drop(hurried);
    }

    /// Puts the job in the timer until `due`; it counts as delayed (and the
    /// pool as not idle) until then.
    pub(super) fn wait(&self, envelope: Envelope, due: Instant) {
        // Counted first: the pool is never seen idle while it waits.
        self.counters.job_delayed(1);
        if let Err(envelope) = self.timer.schedule(due, envelope) {
            self.counters.job_delayed(-1);
            self.discarded(&envelope, "the pool has shut down");
        }
    }

    /// An attempt is still running past its deadline: logged, counted, and
    /// its pool thread gets a replacement.
    fn overdue(&self, attempt: &Running) {
        self.counters.job_overdue();
        self.count(&attempt.name, &attempt.queue, OVERDUE);
        let replaced = attempt.slot.is_some_and(|slot| self.pool.replace(slot));
        log::warn!(
            "job {} ({}) attempt {} is overdue: still running past its deadline; {}",
            attempt.name,
            attempt.id,
            attempt.attempt,
            if replaced {
                "a replacement thread keeps the pool's capacity"
            } else {
                "no replacement thread (none left, or not on a pool thread)"
            }
        );
    }

    /// The shutdown deadline has passed: from now on, a job that would be
    /// dropped is spilled to Redis, in mixed mode.
    pub(crate) fn deadline_passed(&self) {
        self.spill.deadline_passed();
    }

    /// Sends a job that would be dropped at the shutdown deadline to Redis
    /// (mixed mode), due `delay` from now; whether it went (counted as sent).
    pub(super) fn try_spill(&self, envelope: &Envelope, delay: Option<Duration>) -> bool {
        let spilled = self.spill.send(envelope, delay);
        if spilled {
            self.counters.jobs_sent_now();
        }
        spilled
    }

    /// Shutdown: the timer stops, and the broker's sender; the jobs still
    /// waiting in either will not run here: each is discarded (logged,
    /// counted, kept for the shutdown's report) or, in mixed mode, spilled.
    pub(crate) fn close(&self) {
        self.deadline_passed();
        let mut waiting = self.timer.close();
        if let Some(lanes) = &self.lanes {
            let now = Instant::now();
            waiting.extend(lanes.close().into_iter().map(|envelope| (envelope, now)));
        }
        let unsent = self.broker.as_ref().map(|b| b.close()).unwrap_or_default();
        let unsent_n = unsent.len() as u64;
        for envelope in &unsent {
            self.discarded(
                envelope,
                "the shutdown deadline passed before the broker had it",
            );
        }
        if unsent_n > 0 {
            self.counters.jobs_unbuffered(unsent_n, false);
        }
        let now = Instant::now();
        for (envelope, due) in waiting {
            let delay = due.saturating_duration_since(now);
            if self.try_spill(&envelope, Some(delay)) {
                let info = job_info(&envelope, true);
                self.counters.not_run(log::Level::Warn, &info, "spilled");
            } else {
                self.discarded(&envelope, "the shutdown deadline passed while it waited");
            }
            self.counters.job_delayed(-1);
        }
    }
}

impl Drop for JobRunner {
    /// A pool dropped without a shutdown: the timer stops, and the jobs still
    /// waiting in it are discarded, logged and counted, not lost silently.
    fn drop(&mut self) {
        self.close();
    }
}

/// A job's next step, as a task: an attempt, or (with a delay) its wait in
/// the timer, or (with a broker) its send. How it runs as a task is in
/// `step.rs` (its `Step` impl); the runner only makes them.
pub(crate) struct JobStep {
    pub(super) runner: Arc<JobRunner>,
    pub(super) envelope: Envelope,
    pub(super) delay: Option<Duration>,
    /// Hand it to the broker (with its delay) instead of running it here.
    pub(super) send: bool,
}

/// A turn of the in-process queues, as a task: it runs the job the queues
/// choose when it runs (`step.rs`, its `Step` impl).
pub(crate) struct JobPick {
    pub(super) runner: Arc<JobRunner>,
}

/// A job as a shutdown report lists it.
/// A job made ready to enqueue, or the unique job already holding its key.
pub(crate) enum Prepared {
    New(Envelope),
    Existing(JobId),
}

fn job_info(envelope: &Envelope, spilled: bool) -> TaskInfo {
    TaskInfo {
        name: format!("job {} ({})", envelope.name, envelope.id),
        request_id: envelope.request_id.to_string(),
        spilled,
    }
}

/// The timer thread: hands each job to the pool when it is due, and reports
/// attempts still running past their deadlines, until the timer closes.
fn run_timer(timer: &Timer, runner: &Weak<JobRunner>, pool: &PoolSubmitter) {
    loop {
        match timer.next() {
            Next::Closed => return,
            Next::Overdue(attempts) => {
                if let Some(runner) = runner.upgrade() {
                    attempts.iter().for_each(|attempt| runner.overdue(attempt));
                }
            }
            Next::Due(envelope) => {
                let Some(runner) = runner.upgrade() else {
                    continue;
                };
                let request_id = envelope.request_id.clone();
                if let Some(lanes) = &runner.lanes {
                    // It stays counted as waiting, now for its turn.
                    match lanes.push(envelope, None) {
                        Ok(()) => {
                            let turn = BackgroundTask::step(Box::new(JobPick {
                                runner: runner.clone(),
                            }));
                            let batch =
                                Batch::seal(&request_id, TaskQueue::one(turn), &runner.counters);
                            pool.submit(batch);
                        }
                        Err(envelope) => {
                            runner.counters.job_delayed(-1);
                            runner.discard_closed(&envelope);
                        }
                    }
                    continue;
                }
                {
                    let task = runner.clone().attempt_task(envelope);
                    // Sealed (counted as scheduled) before it stops counting
                    // as delayed: the pool is never seen idle in between.
                    let batch = Batch::seal(&request_id, TaskQueue::one(task), &runner.counters);
                    runner.counters.job_delayed(-1);
                    pool.submit(batch);
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackgroundPool, JobResult};
    use std::sync::mpsc;

    /// What the jobs below share with the test: a gate each, and a line
    /// to say they have started.
    struct Gates {
        gates: Mutex<Vec<mpsc::Receiver<()>>>,
        started: Mutex<mpsc::Sender<()>>,
    }

    /// Says it has started, then waits until its gate opens (or is dropped).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Hold;

    impl Job for Hold {
        const NAME: &'static str = "hold";
        const TIMEOUT: Option<Duration> = Some(Duration::from_secs(3600));
        fn run(self, context: &JobContext) -> JobResult {
            let shared = context.state::<Arc<Gates>>().unwrap();
            let gate = lock(&shared.gates).remove(0);
            lock(&shared.started).send(()).unwrap();
            let _ = gate.recv();
            Ok(())
        }
    }

    /// `Hold`, with a deadline that passes while it waits.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Stuck;

    impl Job for Stuck {
        const NAME: &'static str = "stuck";
        const TIMEOUT: Option<Duration> = Some(Duration::from_millis(50));
        fn run(self, context: &JobContext) -> JobResult {
            Hold.run(context)
        }
    }

    /// A pool of `workers`, and the senders opening `jobs` gates, in order.
    fn pool(
        workers: usize,
        jobs: usize,
    ) -> (BackgroundPool, Vec<mpsc::Sender<()>>, mpsc::Receiver<()>) {
        let (opens, gates) = (0..jobs).map(|_| mpsc::channel()).unzip();
        let (started, starts) = mpsc::channel();
        let mut state = StateMap::default();
        state.insert(Arc::new(Gates {
            gates: Mutex::new(gates),
            started: Mutex::new(started),
        }));
        let pool = BackgroundPool::builder()
            .workers(workers)
            .job::<Hold>()
            .job::<Stuck>()
            .jobs(Registry::default(), state)
            .build()
            .unwrap();
        (pool, opens, starts)
    }

    fn runner(pool: &BackgroundPool) -> Arc<JobRunner> {
        pool.jobs().unwrap().runner
    }

    /// What the timer holds: jobs waiting, attempts running.
    fn timer_entries(pool: &BackgroundPool) -> (usize, usize) {
        let runner = runner(pool);
        runner.timer.entries()
    }

    const GUARD: Duration = Duration::from_secs(30);

    #[test]
    fn an_attempt_that_ends_in_time_leaves_nothing_in_the_timer() {
        let (pool, opens, starts) = pool(2, 100);
        let tasks = pool.tasks("r1");
        (0..100).for_each(|_| drop(tasks.enqueue(Hold).unwrap()));
        pool.dispatch(&tasks);
        starts.recv_timeout(GUARD).unwrap();
        // One attempt runs (a list runs on one thread), with its deadline.
        assert_eq!(timer_entries(&pool), (0, 1));
        drop(opens);
        assert!(pool.wait_idle(GUARD));
        assert_eq!(pool.stats().jobs_succeeded, 100);
        assert_eq!(timer_entries(&pool), (0, 0));
        pool.shutdown(GUARD);
    }

    #[test]
    fn a_short_deadline_is_seen_while_the_timer_waits_for_a_long_one() {
        let (pool, opens, starts) = pool(2, 2);
        let first = pool.tasks("r1");
        first.enqueue(Hold).unwrap();
        pool.dispatch(&first);
        starts.recv_timeout(GUARD).unwrap();
        // The timer now sleeps until Hold's deadline, an hour away.
        let second = pool.tasks("r2");
        second.enqueue(Stuck).unwrap();
        pool.dispatch(&second);
        let counters = runner(&pool).counters.clone();
        assert!(
            counters.wait_until(GUARD, |c| c.snapshot().jobs_overdue == 1),
            "the 50 ms deadline was not reported while the timer waited for the hour"
        );
        drop(opens);
        assert!(pool.wait_idle(GUARD));
        assert_eq!(pool.stats().jobs_succeeded, 2);
        pool.shutdown(GUARD);
    }
}
