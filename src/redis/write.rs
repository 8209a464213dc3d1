//! How jobs are written to Redis: the producer's batches, a worker's
//! follow-up jobs and a requeued dead letter alike.

use std::time::Duration;

use super::connection::Connection;
use super::keys::{Keys, QueueKeys};
use super::status::{StatusWrite, StatusWrites};
use super::RedisConfig;
use crate::jobs::envelope::now_ms;
use crate::jobs::Envelope;

/// A job on its way to Redis.
pub(crate) struct Outgoing {
    pub(crate) envelope: Envelope,
    /// Unix milliseconds when it is due, for a delayed one.
    pub(crate) due_ms: Option<u64>,
}

impl Outgoing {
    /// `envelope`, due `delay` from now (at once: `None`).
    pub(crate) fn new(envelope: Envelope, delay: Option<Duration>) -> Outgoing {
        Outgoing {
            envelope,
            due_ms: delay.map(|d| now_ms() + d.as_millis() as u64),
        }
    }
}

/// Adds to a pipeline what stands for jobs cancelled before they were
/// sent: their status, `cancelled`, and their unique keys freed.
pub(crate) fn write_cancelled(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    config: &RedisConfig,
    jobs: &[&Outgoing],
) {
    let mut statuses = StatusWrites::default();
    for job in jobs {
        let envelope = &job.envelope;
        let queue = keys.queue(&config.queue_of(envelope));
        let status = StatusWrite::new(&envelope.name, "cancelled", 0);
        statuses.push(&queue, &envelope.id, &status);
        super::unique::release(pipe, &queue, envelope);
    }
    statuses.add_to(pipe, config);
}

/// Adds a batch of jobs to a pipeline: their statuses (`queued`, first, so
/// that a worker's `running` always comes after), then the jobs themselves,
/// each in its queue: an `XADD` each for those due now (a script adding them
/// all cost Redis 1.5–2 µs more per job, measured), one `ZADD` per queue for
/// those due later.
pub(crate) fn write_jobs(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    config: &RedisConfig,
    batch: &[Outgoing],
) {
    let mut statuses = StatusWrites::default();
    // Jobs come in runs of one queue: the last one's keys are the likely ones.
    let mut queues: Vec<QueueKeys> = Vec::new();
    let mut queue_of = |queue: &str| match queues.iter().position(|q| q.queue == queue) {
        Some(index) => index,
        None => {
            queues.push(keys.queue(queue));
            queues.len() - 1
        }
    };
    let lanes: Vec<usize> = batch
        .iter()
        .map(|job| queue_of(&config.queue_of(&job.envelope)))
        .collect();
    for (job, lane) in batch.iter().zip(&lanes) {
        let envelope = &job.envelope;
        // A delayed job's status says when it is due (a cancel finds it there).
        let state = if job.due_ms.is_some() {
            "delayed"
        } else {
            "queued"
        };
        let status = StatusWrite {
            next_run_ms: job.due_ms,
            history: vec![(state, envelope.enqueued_at_ms)],
            ..StatusWrite::new(&envelope.name, state, envelope.attempts)
        };
        statuses.push(&queues[*lane], &envelope.id, &status);
        statuses.push_payload(
            &queues[*lane],
            &envelope.id,
            &envelope.payload,
            config.status_payload_bytes,
        );
    }
    statuses.add_to(pipe, config);
    for (job, lane) in batch.iter().zip(&lanes) {
        if job.due_ms.is_none() {
            pipe.cmd("XADD")
                .arg(&queues[*lane].stream)
                .arg("*")
                .arg("envelope")
                .arg(job.envelope.to_json_text())
                .ignore();
        }
    }
    for (index, queue) in queues.iter().enumerate() {
        let mut later = batch
            .iter()
            .zip(&lanes)
            .filter(|(job, lane)| **lane == index && job.due_ms.is_some())
            .peekable();
        if later.peek().is_none() {
            continue;
        }
        let add = pipe.cmd("ZADD");
        add.arg(&queue.delayed);
        for (job, _) in later {
            add.arg(job.due_ms.unwrap_or(0))
                .arg(job.envelope.to_json_text());
        }
        add.ignore();
    }
}

/// Waits until [`RedisConfig::wait_replicas`] replicas have every write of
/// `connection` so far (`WAIT`, for half the timeout): Redis replicates
/// after it answers, so without this a failover can lose jobs the primary
/// acknowledged. `Err` when fewer have them: the caller sends again (a
/// duplicate with the same id, if the first landed after all).
pub(crate) fn confirm_replicated(
    connection: &mut Connection,
    config: &RedisConfig,
) -> redis::RedisResult<()> {
    if config.wait_replicas == 0 {
        return Ok(());
    }
    let timeout_ms = (config.timeout.as_millis() / 2).max(1) as u64;
    let have: usize = redis::cmd("WAIT")
        .arg(config.wait_replicas)
        .arg(timeout_ms)
        .query(connection)?;
    if have < config.wait_replicas {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "fewer replicas than wait_replicas have the jobs",
            format!("{have} of {} in {timeout_ms} ms", config.wait_replicas),
        )));
    }
    Ok(())
}
