//! The web server's side: a bounded buffer of jobs and the sender thread
//! that empties it into Redis in pipelined batches, retrying with backoff
//! while Redis is slow or down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, SendTimeoutError, Sender};

use super::connection::Connection;
use super::keys::{known_queues, Keys};
use super::schedules::RedisTicks;
use super::status::read_status;
use super::write::{confirm_replicated, write_cancelled, write_jobs, Outgoing};
use super::{cancel, unique};
use super::{LazyConnection, RedisConfig};
use crate::error::Error;
use crate::jobs::broker::{Broker, Refused};
use crate::jobs::cancel::Cancels;
use crate::jobs::schedule::Ticks;
use crate::jobs::{CancelError, Cancellation, Envelope, JobStatus};
use crate::stats::Counters;

/// Sends jobs to Redis: [`Broker`] for the web server.
pub(crate) struct Producer {
    keys: Keys,
    buffer: Sender<Outgoing>,
    /// The buffer's other end, kept here too: `close` takes what came in
    /// after the sender thread's last look.
    leftover: Receiver<Outgoing>,
    /// Set by `close`: no job is taken after it.
    closed: AtomicBool,
    /// Callers between their look at `closed` and the end of their
    /// hand-over: `close` waits for them before its last look.
    handing: AtomicUsize,
    /// Dropped to stop the sender thread.
    stop: Mutex<Option<Sender<()>>>,
    /// The sender thread; it returns the jobs it could not send.
    thread: Mutex<Option<JoinHandle<Vec<Outgoing>>>>,
    /// For durable sends and status reads, on the caller's thread.
    direct: LazyConnection,
    /// Jobs of ours cancelled before Redis had them: dropped as they come.
    unsent_cancels: Arc<Cancels>,
    /// Held by a send from its look at `unsent_cancels` to Redis's answer,
    /// and by a cancel from its ask to its answer: so a cancel sees a job
    /// either in Redis or not sent yet, never between.
    send_lock: Arc<Mutex<()>>,
    /// The web server's counters (jobs cancelled, taken out of Redis).
    counters: Arc<Counters>,
    stats: Arc<SendStats>,
}

#[derive(Default)]
struct SendStats {
    batches: AtomicU64,
    errors: AtomicU64,
}

impl Producer {
    /// Starts the sender thread (`afterward-redis-sender`). Redis need not be
    /// up: jobs wait in the buffer until it is.
    pub(crate) fn start(
        config: RedisConfig,
        counters: Arc<Counters>,
    ) -> Result<Arc<Producer>, Error> {
        let (buffer, jobs) = crossbeam_channel::bounded(config.buffer_capacity);
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let stats = Arc::new(SendStats::default());
        let unsent_cancels = Arc::new(Cancels::default());
        let server_counters = counters.clone();
        let send_lock = Arc::new(Mutex::new(()));
        let sender = SendLoop {
            unsent_cancels: unsent_cancels.clone(),
            send_lock: send_lock.clone(),
            config: config.clone(),
            keys: config.keys(),
            counters,
            stats: stats.clone(),
            named: Mutex::default(),
        };
        let leftover = jobs.clone();
        let thread = thread::Builder::new()
            .name("afterward-redis-sender".into())
            .spawn(move || sender.run(&jobs, &stopped))?;
        Ok(Arc::new(Producer {
            keys: config.keys(),
            buffer,
            leftover,
            closed: AtomicBool::new(false),
            handing: AtomicUsize::new(0),
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
            direct: LazyConnection::new(config),
            stats,
            unsent_cancels,
            send_lock,
            counters: server_counters,
        }))
    }
}

impl Producer {
    /// Hands `envelope` (due `delay` from now) over with `hand_over`, unless
    /// the producer is closed: then it is refused as stopped. `close` waits
    /// for every caller inside before it takes what is left, so a job is
    /// either seen by `close` or refused: never left in the buffer.
    fn handing(
        &self,
        envelope: Envelope,
        delay: Option<Duration>,
        hand_over: impl FnOnce(Outgoing) -> Result<(), Refused>,
    ) -> Result<(), Refused> {
        let job = Outgoing::new(envelope, delay);
        self.handing.fetch_add(1, Ordering::SeqCst);
        let handed = if self.closed.load(Ordering::SeqCst) {
            Err(Refused::Stopped(job.envelope))
        } else {
            hand_over(job)
        };
        self.handing.fetch_sub(1, Ordering::SeqCst);
        handed
    }
}

impl Broker for Producer {
    fn send(&self, envelope: Envelope, delay: Option<Duration>) -> Result<(), Envelope> {
        // Waits while the buffer is full, looking at `closed` now and then.
        let sent = self.handing(envelope, delay, |mut job| loop {
            match self.buffer.send_timeout(job, Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(unsent)) if !self.closed.load(Ordering::SeqCst) => {
                    job = unsent;
                }
                Err(SendTimeoutError::Timeout(unsent) | SendTimeoutError::Disconnected(unsent)) => {
                    return Err(Refused::Stopped(unsent.envelope));
                }
            }
        });
        sent.map_err(|refused| match refused {
            Refused::Full(envelope) | Refused::Stopped(envelope) => envelope,
        })
    }

    fn try_send(&self, envelope: Envelope, delay: Option<Duration>) -> Result<(), Refused> {
        self.handing(envelope, delay, |job| {
            self.buffer.try_send(job).map_err(|refused| {
                let full = refused.is_full();
                let envelope = refused.into_inner().envelope;
                if full {
                    Refused::Full(envelope)
                } else {
                    Refused::Stopped(envelope)
                }
            })
        })
    }

    fn send_now(&self, envelope: &Envelope, delay: Option<Duration>) -> Result<(), String> {
        let outgoing = Outgoing::new(envelope.clone(), delay);
        let config = self.direct.config();
        // The queue is named in the set each time: a durable send is rare.
        let mut names = redis::pipe();
        names
            .cmd("SADD")
            .arg(self.keys.queues())
            .arg(&*config.queue_of(envelope))
            .ignore();
        // On a cluster the set is on a node of its own: named apart, so
        // that the WAIT after the job waits on the job's node alone.
        let cluster = config.is_cluster();
        let mut pipe = if cluster {
            redis::pipe()
        } else {
            names.clone()
        };
        write_jobs(
            &mut pipe,
            &self.keys,
            config,
            std::slice::from_ref(&outgoing),
        );
        self.direct.call(|connection| {
            if cluster {
                names.query::<()>(connection)?;
            }
            pipe.query::<()>(connection)?;
            confirm_replicated(connection, config)
        })
    }

    fn claim_unique(
        &self,
        envelope: &Envelope,
        delay: Option<Duration>,
    ) -> Result<Option<String>, String> {
        let queue = self.keys.queue(&self.direct.config().queue_of(envelope));
        let ttl = self.direct.config().unique_ttl;
        let claim = unique::claim(&queue, envelope, ttl, delay);
        self.direct.call(|connection| claim.query(connection))
    }

    fn release_unique(&self, envelope: &Envelope) {
        let mut pipe = redis::pipe();
        let queue = self.keys.queue(&self.direct.config().queue_of(envelope));
        unique::release(&mut pipe, &queue, envelope);
        if let Err(error) = self.direct.call(|connection| pipe.query::<()>(connection)) {
            // Its TTL frees it: say so, as nothing else will.
            log::warn!(
                "could not release the unique key of job {} ({error}); it expires after unique_ttl",
                envelope.id
            );
        }
    }

    fn cancel(&self, id: &str, ours: bool) -> Result<Cancellation, CancelError> {
        // No send in between (see `send_lock`): the job is in Redis, or
        // it is not sent yet and will be dropped for this ask.
        let _sends = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        if ours {
            self.unsent_cancels.ask(id.into());
        }
        let config = self.direct.config();
        let cancelled = self
            .direct
            .call(|connection| cancel::cancel(connection, &self.keys, config, id))
            .unwrap_or_else(|error| Err(CancelError::Unavailable(error)));
        match cancelled {
            // Not in Redis yet: it will be dropped (and counted) when it comes.
            Err(CancelError::NotFound) if ours => Ok(Cancellation::Cancelled),
            Ok(Cancellation::Cancelled) => {
                self.unsent_cancels.forget(id);
                self.counters.job_cancelled();
                Ok(Cancellation::Cancelled)
            }
            other => {
                self.unsent_cancels.forget(id);
                other
            }
        }
    }

    fn ticks(&self) -> Option<Arc<dyn Ticks>> {
        let connection = LazyConnection::new(self.direct.config().clone());
        Some(Arc::new(RedisTicks::new(self.keys.clone(), connection)))
    }

    /// Looks in every queue the deployment knows.
    fn status(&self, id: &str) -> Result<Option<JobStatus>, String> {
        self.direct.call(|connection| {
            let queues = known_queues(connection, &self.keys)?;
            read_status(connection, &self.keys, &queues, id)
        })
    }

    fn close(&self) -> Vec<Envelope> {
        self.closed.store(true, Ordering::SeqCst);
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut unsent = thread
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        // Callers that looked at `closed` before it was set may still be
        // putting a job in (a waiting `send` sees `closed` within 50 ms);
        // then what they put in after the thread's last look is taken here.
        while self.handing.load(Ordering::SeqCst) > 0 {
            thread::sleep(Duration::from_millis(1));
        }
        unsent.extend(self.leftover.try_iter());
        unsent
            .into_iter()
            .map(|o| o.envelope)
            .filter(|envelope| !self.unsent_cancels.forget(&envelope.id))
            .collect()
    }

    fn to_prometheus(&self) -> String {
        format!(
            "# HELP afterward_jobs_send_batches_total Pipelined sends of jobs to Redis that succeeded.\n\
             # TYPE afterward_jobs_send_batches_total counter\n\
             afterward_jobs_send_batches_total {}\n\
             # HELP afterward_jobs_send_errors_total Sends of jobs to Redis that failed (retried).\n\
             # TYPE afterward_jobs_send_errors_total counter\n\
             afterward_jobs_send_errors_total {}\n",
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.errors.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let unsent = self.close();
        if !unsent.is_empty() {
            log::error!("{} jobs dropped unsent with the Redis sender", unsent.len());
        }
    }
}

/// The sender thread's state.
struct SendLoop {
    config: RedisConfig,
    keys: Keys,
    counters: Arc<Counters>,
    stats: Arc<SendStats>,
    unsent_cancels: Arc<Cancels>,
    send_lock: Arc<Mutex<()>>,
    /// The queues named in the deployment's set on this connection.
    named: Mutex<Vec<String>>,
}

impl SendLoop {
    /// Sends batches until stopped; returns what it could not send.
    fn run(self, jobs: &Receiver<Outgoing>, stop: &Receiver<()>) -> Vec<Outgoing> {
        let mut batch: Vec<Outgoing> = Vec::with_capacity(self.config.batch);
        let mut connection: Option<Connection> = None;
        let mut delay = Duration::from_millis(50);
        let mut failing_since: Option<Instant> = None;
        loop {
            if batch.is_empty() {
                select! {
                    recv(jobs) -> job => match job {
                        Ok(job) => batch.push(job),
                        Err(_) => return batch,
                    },
                    recv(stop) -> _ => break,
                }
                // Others may come meanwhile; not woken by each of them.
                let enough = self.config.batch.min(self.config.buffer_capacity);
                if !self.config.linger.is_zero() && jobs.len() + 1 < enough {
                    select! {
                        recv(stop) -> _ => break,
                        default(self.config.linger) => {}
                    }
                }
            }
            while batch.len() < self.config.batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            match self.send(&mut connection, &batch) {
                Ok(dropped) => {
                    if let Some(since) = failing_since.take() {
                        log::info!(
                            "Redis takes jobs again, after {:.1} s of failed sends",
                            since.elapsed().as_secs_f64()
                        );
                    }
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.unbuffered(batch.len() as u64, dropped);
                    batch.clear();
                    delay = Duration::from_millis(50);
                }
                Err(error) => {
                    connection = None;
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        log::warn!(
                            "jobs could not be sent to Redis ({error}); {} wait in the buffer, retrying with backoff",
                            batch.len() + jobs.len()
                        );
                    } else {
                        log::debug!("jobs still not sent to Redis: {error}");
                    }
                    select! {
                        recv(stop) -> _ => break,
                        default(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Stopped: the pool has drained, or its deadline passed. One last
        // try for what is left, then it goes back to the runner.
        batch.extend(jobs.try_iter());
        let mut sent = 0;
        while sent < batch.len() {
            let end = (sent + self.config.batch).min(batch.len());
            let Ok(dropped) = self.send(&mut connection, &batch[sent..end]) else {
                break;
            };
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.unbuffered((end - sent) as u64, dropped);
            sent = end;
        }
        batch.split_off(sent)
    }

    /// `n` jobs out of the buffer, `dropped` of them cancelled, not sent.
    fn unbuffered(&self, n: u64, dropped: u64) {
        self.counters.jobs_unbuffered(n - dropped, true);
        self.counters.jobs_unbuffered(dropped, false);
        for _ in 0..dropped {
            self.counters.job_cancelled();
        }
    }

    /// One pipelined send of `batch`; how many of its jobs were cancelled
    /// before it (not sent: their status `cancelled`, their unique keys
    /// freed).
    fn send(
        &self,
        connection: &mut Option<Connection>,
        batch: &[Outgoing],
    ) -> redis::RedisResult<u64> {
        let _sends = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        if connection.is_none() {
            *connection = Some(self.config.connect()?);
            self.named.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let mut pipe = redis::pipe();
        // Each queue is named in the deployment's set once per connection
        // (Redis may have restarted without its data in between).
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let mut new: Vec<std::borrow::Cow<'_, str>> = Vec::new();
        for job in batch {
            let queue = self.config.queue_of(&job.envelope);
            if !named.iter().any(|q| *q == *queue) && !new.contains(&queue) {
                new.push(queue);
            }
        }
        if !new.is_empty() {
            // On a cluster the set is on a node of its own: named apart, so
            // that the WAIT after the jobs waits on their nodes alone.
            let mut names = redis::pipe();
            let add = names.cmd("SADD").arg(self.keys.queues());
            for queue in &new {
                add.arg(&**queue);
            }
            add.ignore();
            if self.config.is_cluster() {
                let connection = connection.as_mut().expect("connected above");
                names.query::<()>(connection)?;
            } else {
                pipe = names;
            }
        }
        let cancelled: Vec<&Outgoing> = batch
            .iter()
            .filter(|job| self.unsent_cancels.is_asked(&job.envelope.id))
            .collect();
        if cancelled.is_empty() {
            write_jobs(&mut pipe, &self.keys, &self.config, batch);
        } else {
            let kept: Vec<Outgoing> = batch
                .iter()
                .filter(|job| !self.unsent_cancels.is_asked(&job.envelope.id))
                .map(|job| Outgoing {
                    envelope: job.envelope.clone(),
                    due_ms: job.due_ms,
                })
                .collect();
            write_jobs(&mut pipe, &self.keys, &self.config, &kept);
            write_cancelled(&mut pipe, &self.keys, &self.config, &cancelled);
        }
        let connection = connection.as_mut().expect("connected above");
        pipe.query::<()>(connection)?;
        confirm_replicated(connection, &self.config)?;
        named.extend(new.into_iter().map(std::borrow::Cow::into_owned));
        for job in &cancelled {
            self.unsent_cancels.forget(&job.envelope.id);
        }
        Ok(cancelled.len() as u64)
    }
}
