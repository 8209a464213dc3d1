//! What the Redis benches share (`benches/redis.rs`, `benches/capacity.rs`):
//! the no-op job, sending `n` of them through a pool with Redis, one worker
//! running them, Redis's CPU time, a median.

use std::time::{Duration, Instant};

use afterward::redis::client::cmd;
use afterward::redis::{Admin, Connection, RedisConfig, Worker};
use afterward::{BackgroundPool, Job, JobContext, JobOptions, JobResult, Queues};
use serde::{Deserialize, Serialize};

/// A no-op job with a ~100-byte payload.
#[derive(Serialize, Deserialize)]
pub struct Noop {
    to: String,
    subject: String,
}

impl Job for Noop {
    const NAME: &'static str = "noop";
    fn run(self, _: &JobContext) -> JobResult {
        std::hint::black_box((&self.to, &self.subject));
        Ok(())
    }
}

pub fn payload(i: usize) -> Noop {
    Noop {
        to: format!("user{i}@example.com"),
        subject: "Welcome to afterward: your account is ready, here is what comes next".into(),
    }
}

/// Redis's CPU time so far (user + system), from `INFO cpu` on `connection`.
pub fn redis_cpu(connection: &mut Connection) -> Duration {
    let info: String = cmd("INFO").arg("cpu").query(connection).unwrap();
    let seconds: f64 = info
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(seconds)
}

/// Enqueues `n` jobs through a pool with Redis, over `queues` queues (one:
/// the job's own); jobs/s until all are sent.
pub fn send(config: &RedisConfig, n: usize, queues: usize) -> f64 {
    let pool = BackgroundPool::builder()
        .workers(2)
        .job::<Noop>()
        .redis(config.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    for chunk in 0..n.div_ceil(100) {
        let tasks = pool.tasks("bench");
        for i in chunk * 100..((chunk + 1) * 100).min(n) {
            if queues > 1 {
                let options = JobOptions::new().queue(format!("q{}", i % queues));
                tasks.enqueue_with(payload(i), options).unwrap();
            } else {
                tasks.enqueue(payload(i)).unwrap();
            }
        }
        pool.dispatch(&tasks);
    }
    assert!(pool.wait_idle(Duration::from_secs(600)));
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let report = pool.shutdown(Duration::from_secs(60));
    assert_eq!(report.stats.jobs_sent, n as u64, "{report:?}");
    rate
}

/// One worker runs the `n` queued jobs (of `queues` queues); jobs/s.
pub fn worker(config: &RedisConfig, n: usize, queues: usize) -> f64 {
    let started = Instant::now();
    let mut builder = Worker::builder(config.clone()).job::<Noop>().concurrency(2);
    if queues > 1 {
        builder = builder.queues(Queues::weighted((0..queues).map(|q| (format!("q{q}"), 1))));
    }
    let worker = builder.start().unwrap();
    assert!(worker.wait_for(Duration::from_secs(600), |s| s.succeeded == n as u64));
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert!(worker.stop(Duration::from_secs(60)).is_complete());
    let counts = Admin::new(config.clone()).counts().unwrap();
    assert_eq!((counts.ready, counts.pending), (0, 0));
    rate
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
