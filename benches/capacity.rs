//! The capacity model's measurements (BENCHMARKS.md, "What Redis costs per
//! job"): against one `redis-server` and a 3-primary Redis Cluster started
//! here, side by side in one run, and interleaved:
//!
//! ```text
//! cargo bench --bench capacity --features redis
//! CAPACITY_JOBS=200000 CAPACITY_QUEUES=6 cargo bench --bench capacity --features redis
//! ```
//!
//! 1. **Send**: jobs enqueued on a `BackgroundPool` with Redis, spread over
//!    `CAPACITY_QUEUES` queues (6: on a cluster, each node serves some),
//!    until Redis has them all; jobs/s and Redis's CPU per job (every node's
//!    `INFO cpu`, summed).
//! 2. **Work**: one `Worker` (2 threads) runs them all; the same figures.
//! 3. **Each command's cost** on one server, over send and work together
//!    (`CONFIG RESETSTAT`, then `INFO commandstats`): calls per job and
//!    Redis CPU µs per job, per command.
//!
//! This machine has 2 cores for the bench, the worker, the server and every
//! Redis: the cluster's three nodes share them, so its rates say what the
//! path costs, not what three machines would do; Redis CPU per job is the
//! figure that scales (BENCHMARKS.md turns it into nodes per load).

use std::time::Duration;

use afterward::redis::client::cmd;
use afterward::redis::{Connection, RedisConfig};

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/redis_load.rs"]
mod redis_load;

use redis_load::{median, redis_cpu, send, worker};
use support::cluster::Cluster;
use support::redis::RedisServer;

/// A deployment: its configuration, and a connection to each of its nodes.
struct Target<'a> {
    name: &'static str,
    config: RedisConfig,
    nodes: Vec<&'a RedisServer>,
    /// The queues its jobs are spread over.
    queues: usize,
}

impl Target<'_> {
    fn flush(&self) {
        for node in &self.nodes {
            let _: () = cmd("FLUSHALL").query(&mut node.connection()).unwrap();
        }
    }

    /// Each node's CPU time so far (user + system).
    fn cpu(&self) -> Vec<Duration> {
        self.nodes
            .iter()
            .map(|node| redis_cpu(&mut node.connection()))
            .collect()
    }
}

/// `(command, calls, µs)` from `INFO commandstats`.
fn command_stats(con: &mut Connection) -> Vec<(String, u64, u64)> {
    let info: String = cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                    .parse::<u64>()
                    .ok()
            };
            Some((name.to_owned(), field("calls")?, field("usec")?))
        })
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("CAPACITY_JOBS", if full { 100_000 } else { 300 });
    let rounds = env("CAPACITY_ROUNDS", if full { 3 } else { 1 });
    let queues = env("CAPACITY_QUEUES", 6).max(1);

    let one = RedisServer::start();
    let cluster = Cluster::start(3, 0);
    let mut partitioned = cluster.config();
    partitioned.partitions = vec![(afterward::DEFAULT_QUEUE.into(), 6)];
    let all: Vec<&RedisServer> = cluster.nodes.iter().collect();
    let targets = [
        Target {
            name: "one redis-server",
            config: one.config(),
            nodes: vec![&one],
            queues,
        },
        Target {
            name: "3-primary cluster",
            config: cluster.config(),
            nodes: all.clone(),
            queues,
        },
        Target {
            name: "3-primary cluster, one queue",
            config: cluster.config(),
            nodes: all.clone(),
            queues: 1,
        },
        Target {
            name: "3-primary cluster, one queue in 6 partitions",
            config: partitioned,
            nodes: all,
            queues: 1,
        },
    ];
    // Per target: send and work, (jobs/s, Redis µs per job, the busiest
    // node's share of it) per round.
    let mut results: Vec<[Vec<(f64, f64, f64)>; 2]> = vec![Default::default(); targets.len()];
    let mut commands: Vec<(String, u64, u64)> = Vec::new();
    let spent = |from: &[Duration], to: &[Duration]| -> (f64, f64) {
        let each: Vec<f64> = from
            .iter()
            .zip(to)
            .map(|(a, b)| b.saturating_sub(*a).as_secs_f64())
            .collect();
        let total: f64 = each.iter().sum();
        let busiest = each.iter().copied().fold(0.0, f64::max);
        (
            total * 1e6 / n as f64,
            if total > 0.0 { busiest / total } else { 1.0 },
        )
    };
    for round in 1..=rounds {
        for (t, target) in targets.iter().enumerate() {
            target.flush();
            if t == 0 {
                let _: () = cmd("CONFIG")
                    .arg("RESETSTAT")
                    .query(&mut one.connection())
                    .unwrap();
            }
            let before = target.cpu();
            let sent = send(&target.config, n, target.queues);
            let middle = target.cpu();
            let worked = worker(&target.config, n, target.queues);
            let after = target.cpu();
            if t == 0 {
                commands = command_stats(&mut one.connection());
            }
            let (send_us, send_share) = spent(&before, &middle);
            let (work_us, work_share) = spent(&middle, &after);
            println!(
                "round {round}, {}: send {sent:.0}/s ({send_us:.1} µs Redis CPU/job), work {worked:.0}/s ({work_us:.1} µs/job); busiest node {:.0} % / {:.0} %",
                target.name,
                send_share * 100.0,
                work_share * 100.0
            );
            results[t][0].push((sent, send_us, send_share));
            results[t][1].push((worked, work_us, work_share));
        }
    }
    let mut markdown = format!(
        "| {n} no-op jobs, medians of {rounds} rounds | send jobs/s | Redis CPU µs/job (send) | one worker jobs/s | Redis CPU µs/job (work) | busiest node's share of Redis CPU (send / work) |\n|---|---:|---:|---:|---:|---:|\n"
    );
    for (target, result) in targets.iter().zip(&results) {
        let pick = |phase: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
            median(phase.iter().map(f).collect())
        };
        markdown.push_str(&format!(
            "| {} ({} queue(s)) | {:.0} | {:.1} | {:.0} | {:.1} | {:.0} % / {:.0} % |\n",
            target.name,
            target.queues,
            pick(&result[0], |p| p.0),
            pick(&result[0], |p| p.1),
            pick(&result[1], |p| p.0),
            pick(&result[1], |p| p.1),
            pick(&result[0], |p| p.2) * 100.0,
            pick(&result[1], |p| p.2) * 100.0,
        ));
    }
    commands.retain(|(_, calls, _)| *calls as f64 / n as f64 >= 0.0005);
    commands.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    // EXEC's time holds its commands' (each also counted on its own).
    let total: u64 = commands
        .iter()
        .filter(|(name, _, _)| name != "exec")
        .map(|(_, _, usec)| usec)
        .sum();
    markdown.push_str(&format!(
        "\nOne server, send and work of the last round, per job (Redis's own accounting, `INFO commandstats`; {:.2} µs/job in all, `exec`'s time being that of the commands in it):\n\n| command | calls per job | Redis µs per job |\n|---|---:|---:|\n",
        total as f64 / n as f64
    ));
    for (name, calls, usec) in &commands {
        markdown.push_str(&format!(
            "| `{name}` | {:.3} | {:.3} |\n",
            *calls as f64 / n as f64,
            *usec as f64 / n as f64
        ));
    }
    println!("\n{markdown}");
    if full {
        let _ = std::fs::create_dir_all("target");
        let _ = std::fs::write("target/bench-capacity.md", &markdown);
    }
}
