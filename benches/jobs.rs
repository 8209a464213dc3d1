//! The cost of named jobs against closures, in one run (issue #6):
//!
//! ```text
//! cargo bench --bench jobs
//! JOBS_N=200000 cargo bench --bench jobs
//! ```
//!
//! 1. **Enqueue**: the request worker's cost of `enqueue` (serializing a
//!    ~100-byte payload, the status, the counters) against `add_task` of a
//!    closure capturing the same strings, single-threaded, per call.
//! 2. **Throughput**: no-op jobs against no-op closures through a pool of 2
//!    workers, one per task list as the server dispatches them, until idle.
//! 3. **Backoff does not hold threads**: on a 1-thread pool, how long a
//!    notification (a closure task) takes from dispatch to run, idle, and
//!    with 1,000 jobs waiting in backoff: the ratio should stay near 1.
//!
//! Figures are ratios within the run (the machine is shared); the markdown
//! is printed and written to `target/bench-jobs.md`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it only makes a quick check.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use afterward::{BackgroundPool, Job, JobContext, JobResult, JobSettings};
use serde::{Deserialize, Serialize};

/// A job doing nothing, with a ~100-byte payload.
#[derive(Serialize, Deserialize)]
struct Noop {
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

/// Fails every attempt: it waits in backoff (a long one) until shutdown.
#[derive(Serialize, Deserialize)]
struct AlwaysLate;

impl Job for AlwaysLate {
    const NAME: &'static str = "always_late";
    fn run(self, _: &JobContext) -> JobResult {
        Err("not now".into())
    }
}

fn payload(i: usize) -> Noop {
    Noop {
        to: format!("user{i}@example.com"),
        subject: "Welcome to afterward: your account is ready, here is what comes next".into(),
    }
}

fn pool(workers: usize) -> BackgroundPool {
    let mut settings = JobSettings::default();
    settings.backoff = Duration::from_secs(3600);
    settings.max_backoff = Duration::from_secs(3600);
    settings.status_capacity = 10_000;
    BackgroundPool::builder()
        .workers(workers)
        .queue_capacity(1 << 16)
        .job::<Noop>()
        .job::<AlwaysLate>()
        .job_settings(settings)
        .build()
        .expect("a pool")
}

/// Per-call cost of `enqueue` and of `add_task`, in nanoseconds.
fn enqueue_cost(n: usize) -> (f64, f64) {
    let pool = pool(1);
    let measure = |as_job: bool| {
        let mut total = Duration::ZERO;
        for round in 0..n / 1000 {
            let tasks = pool.tasks("bench");
            let started = Instant::now();
            for i in 0..1000 {
                if as_job {
                    tasks.enqueue(payload(round * 1000 + i)).unwrap();
                } else {
                    let job = payload(round * 1000 + i);
                    tasks.add_task(move || {
                        std::hint::black_box((&job.to, &job.subject));
                    });
                }
            }
            total += started.elapsed();
            // Run them before the next round: the timed loop measures the
            // request worker's own cost, not contention with the pool.
            pool.dispatch(&tasks);
            assert!(pool.wait_idle(Duration::from_secs(600)));
        }
        total.as_nanos() as f64 / n as f64
    };
    let closure = measure(false);
    let job = measure(true);
    pool.shutdown(Duration::from_secs(60));
    (closure, job)
}

/// Tasks per second through 2 workers, one per list, closures then jobs.
fn throughput(n: usize) -> (f64, f64) {
    let pool = pool(2);
    let measure = |as_job: bool| {
        let started = Instant::now();
        for i in 0..n {
            let tasks = pool.tasks("bench");
            if as_job {
                tasks.enqueue(payload(i)).unwrap();
            } else {
                let job = payload(i);
                tasks.add_task(move || {
                    std::hint::black_box((&job.to, &job.subject));
                });
            }
            pool.dispatch(&tasks);
        }
        assert!(pool.wait_idle(Duration::from_secs(600)));
        n as f64 / started.elapsed().as_secs_f64()
    };
    let closures = measure(false);
    let jobs = measure(true);
    pool.shutdown(Duration::from_secs(60));
    (closures, jobs)
}

/// Median microseconds from dispatching a notification to its running, on
/// a 1-thread pool, with `waiting` jobs in backoff.
fn notification_latency(waiting: usize, samples: usize) -> f64 {
    let pool = pool(1);
    let tasks = pool.tasks("backoff");
    for _ in 0..waiting {
        tasks.enqueue(AlwaysLate).unwrap();
    }
    pool.dispatch(&tasks);
    let delayed = |pool: &BackgroundPool| pool.stats().jobs_delayed as usize;
    // Their first attempts run, fail, and move to the timer.
    let deadline = Instant::now() + Duration::from_secs(60);
    while delayed(&pool) < waiting {
        assert!(
            Instant::now() < deadline,
            "the jobs never reached the timer"
        );
        std::thread::yield_now();
    }
    let mut micros = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (ran, run) = mpsc::channel();
        let tasks = pool.tasks("notify");
        let sent = Instant::now();
        tasks.add_task(move || ran.send(sent.elapsed()).unwrap());
        pool.dispatch(&tasks);
        micros.push(run.recv().unwrap().as_secs_f64() * 1e6);
    }
    pool.shutdown(Duration::from_millis(100));
    micros.sort_by(f64::total_cmp);
    micros[micros.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("JOBS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let samples = if full { 2_000 } else { 50 };

    let (closure_ns, job_ns) = enqueue_cost(n);
    let (closures_per_s, jobs_per_s) = throughput(n);
    let idle_us = notification_latency(0, samples);
    let busy_us = notification_latency(1000, samples);

    let markdown = format!(
        "| measure | closure (`add_task`) | job (`enqueue`) | ratio |\n\
         |---|---:|---:|---:|\n\
         | enqueue, per call (request worker) | {:.2} µs | {:.2} µs | {:.2}× |\n\
         | no-op throughput, 2 workers, one per list | {:.0}/s | {:.0}/s | {:.2}× |\n\n\
         | measure | idle pool | 1,000 jobs in backoff | ratio |\n\
         |---|---:|---:|---:|\n\
         | notification, dispatch to run, 1 thread (median of {samples}) | {:.1} µs | {:.1} µs | {:.2}× |\n",
        closure_ns / 1000.0,
        job_ns / 1000.0,
        job_ns / closure_ns,
        closures_per_s,
        jobs_per_s,
        jobs_per_s / closures_per_s,
        idle_us,
        busy_us,
        busy_us / idle_us,
    );
    println!("jobs against closures, n = {n}\n\n{markdown}");
    if full {
        let _ = std::fs::create_dir_all("target");
        let _ = std::fs::write("target/bench-jobs.md", &markdown);
    }
}
