//! Jobs over Redis (issue #7), against a `redis-server` the bench starts on
//! a unix socket, in one run:
//!
//! ```text
//! cargo bench --bench redis --features redis
//! REDIS_JOBS=200000 cargo bench --bench redis --features redis
//! REDIS_QUEUES=4 cargo bench --bench redis --features redis
//! ```
//!
//! With `REDIS_QUEUES=K` (default 1), the jobs are spread over K queues
//! (`q0`…), and the worker serves them all with equal weights: what named
//! queues cost a worker. The raw consumer reads one queue either way (the
//! per-round baseline).
//!
//! 1. **Send**: jobs enqueued on a `BackgroundPool` with Redis, until Redis
//!    has them all (the sender's pipelined `XADD`s), in jobs/s.
//! 2. **Worker, end to end**: one [`Worker`] (2 threads) runs the queued
//!    no-op jobs: read, run, status `done` (`running` only for a job still
//!    running after 2 ms), acknowledged and deleted; jobs/s until the last
//!    is done.
//! 3. **Raw consumer**, the baseline: the same number of envelopes read by a
//!    loop on the `redis` crate alone, `XREADGROUP COUNT 100`, each envelope
//!    parsed, one pipelined `XACK` + `XDEL` per batch: what a worker could
//!    do at most with nothing else (no status, no job run).
//!
//! Rounds interleave (send, worker, raw) and the medians are reported, with
//! the worker's ratio to the raw consumer, and for each phase the CPU time
//! per job of redis-server (`INFO cpu`) and of this process
//! (`/proc/self/stat`): on a shared 2-core machine, rates swing with the
//! neighbours; CPU per job says where the time goes. The markdown is printed and written
//! to `target/bench-redis.md`. Without `--bench` it only makes a quick check.

use std::time::{Duration, Instant};

use afterward::redis::client::{self, streams::StreamReadReply, Value};
use afterward::redis::RedisConfig;
use afterward::Envelope;

#[path = "common/redis_load.rs"]
mod redis_load;

use redis_load::{median, send, worker};

// The tests' helpers, for their Redis server (started on a unix socket in a
// temporary directory, killed on drop).
#[path = "../tests/support/mod.rs"]
mod support;

/// Empties the deployment's keys.
fn flush(config: &RedisConfig) {
    let mut con = config.connect().unwrap();
    let _: () = client::cmd("FLUSHALL").query(&mut con).unwrap();
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`
/// (zero where there is none).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // Linux reports in USER_HZ, 100 per second on every supported platform.
    Duration::from_millis(ticks * 10)
}

/// The baseline: the redis crate alone consumes the `n` queued envelopes.
fn raw_consumer(config: &RedisConfig, n: usize) -> f64 {
    let mut con = config.connect().unwrap();
    let created: Result<(), _> = client::cmd("XGROUP")
        .arg(&[
            "CREATE",
            "{afterward:default}:jobs",
            "workers",
            "0",
            "MKSTREAM",
        ])
        .query::<()>(&mut con);
    drop(created); // BUSYGROUP: the worker made it
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let reply: Option<StreamReadReply> = client::cmd("XREADGROUP")
            .arg(&[
                "GROUP",
                "workers",
                "raw",
                "COUNT",
                "100",
                "BLOCK",
                "1000",
                "STREAMS",
                "{afterward:default}:jobs",
                ">",
            ])
            .query(&mut con)
            .unwrap();
        let entries: Vec<_> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        let mut ack = client::cmd("XACK");
        ack.arg("{afterward:default}:jobs").arg("workers");
        let mut delete = client::cmd("XDEL");
        delete.arg("{afterward:default}:jobs");
        for entry in &entries {
            let Some(Value::BulkString(text)) = entry.map.get("envelope") else {
                panic!("an entry without an envelope");
            };
            let envelope = Envelope::from_json_text(std::str::from_utf8(text).unwrap()).unwrap();
            std::hint::black_box(envelope);
            ack.arg(&entry.id);
            delete.arg(&entry.id);
        }
        if !entries.is_empty() {
            let mut pipe = client::pipe();
            pipe.add_command(ack).ignore().add_command(delete).ignore();
            pipe.query::<()>(&mut con).unwrap();
        }
        done += entries.len();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// One phase of a round.
#[derive(Clone, Copy, Default)]
struct Measured {
    /// Jobs per second.
    rate: f64,
    /// redis-server's CPU per job, µs.
    redis_us: f64,
    /// This process's CPU per job, µs (every thread: the pool and its
    /// sender, the worker, or the raw consumer).
    own_us: f64,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}/s (CPU per job: Redis {:.1} µs, client {:.1} µs)",
            self.rate, self.redis_us, self.own_us
        )
    }
}

/// Redis's CPU time so far.
fn redis_cpu(config: &RedisConfig) -> Duration {
    redis_load::redis_cpu(&mut config.connect().unwrap())
}

/// Runs `phase` (which returns jobs/s), with Redis's and this process's CPU
/// per job over it.
fn measure(config: &RedisConfig, n: usize, phase: impl FnOnce() -> f64) -> Measured {
    let (redis, own) = (redis_cpu(config), own_cpu());
    let rate = phase();
    let per_job = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    Measured {
        rate,
        redis_us: per_job(redis_cpu(config).saturating_sub(redis)),
        own_us: per_job(own_cpu().saturating_sub(own)),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("REDIS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 500 });
    let rounds: usize = std::env::var("REDIS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 5 } else { 1 });
    let queues: usize = std::env::var("REDIS_QUEUES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let redis = support::redis::RedisServer::start();
    let config = redis.config();
    // Per phase (send, worker, raw): jobs/s, Redis's CPU and this process's
    // CPU per job, each round.
    let mut phases: [Vec<Measured>; 3] = Default::default();
    for round in 1..=rounds {
        flush(&config);
        let sent = measure(&config, n, || send(&config, n, queues));
        let worked = measure(&config, n, || worker(&config, n, queues));
        flush(&config);
        send(&config, n, 1);
        let raw = measure(&config, n, || raw_consumer(&config, n));
        println!(
            "round {round}: send {sent}, worker {worked}, raw consumer {raw}; worker / raw {:.2}x",
            worked.rate / raw.rate
        );
        for (phase, measured) in phases.iter_mut().zip([sent, worked, raw]) {
            phase.push(measured);
        }
    }
    let ratios: Vec<f64> = phases[1]
        .iter()
        .zip(&phases[2])
        .map(|(w, r)| w.rate / r.rate)
        .collect();
    let row = |label: &str, phase: &[Measured]| {
        format!(
            "| {label} | {:.0} | {:.1} | {:.1} |\n",
            median(phase.iter().map(|m| m.rate).collect()),
            median(phase.iter().map(|m| m.redis_us).collect()),
            median(phase.iter().map(|m| m.own_us).collect()),
        )
    };
    let markdown = format!(
        "| measure ({n} no-op jobs, ~100-byte payload, {queues} queue(s); medians of {rounds} rounds) | jobs/s | Redis CPU µs/job | client CPU µs/job |\n\
         |---|---:|---:|---:|\n\
         {}{}{}\
         | worker / raw consumer (median of the per-round ratios) | {:.2}× | | |\n",
        row("send: enqueue on a pool with Redis until Redis has them all", &phases[0]),
        row("**worker, end to end** (2 threads: read, run, status, ack + delete)", &phases[1]),
        row("raw consumer, the baseline (XREADGROUP 100, parse, XACK + XDEL)", &phases[2]),
        median(ratios),
    );
    println!("\n{markdown}");
    if full {
        let _ = std::fs::create_dir_all("target");
        let _ = std::fs::write("target/bench-redis.md", &markdown);
    }
}
