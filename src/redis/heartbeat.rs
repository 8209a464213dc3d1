//! Workers' heartbeats: each worker writes who it is and how it does
//! (host, pid, queues, concurrency, jobs in flight) every few seconds, in a
//! key that expires when it stops writing, so a dashboard lists the workers
//! seen recently ([`Admin::workers`](super::Admin::workers)).
//!
//! | key | type | what |
//! |---|---|---|
//! | `{P:workers}:names` | set | the names of the workers that have written a heartbeat |
//! | `{P:workers}:w:NAME` | string | its last heartbeat (JSON), expiring after [`HEARTBEAT_TTL`] |

use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::keys::Keys;
use super::{LazyConnection, RedisConfig};
use crate::jobs::consumer::WorkerStats;
use crate::jobs::envelope::now_ms;

/// How often a worker writes its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How long a heartbeat is kept: a worker silent this long is gone.
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(15);

/// What a worker says of itself.
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) queues: Vec<String>,
    pub(crate) concurrency: usize,
}

/// A worker's heartbeat thread; stopping it deletes the heartbeat.
pub(crate) struct Heartbeat {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts `afterward-heartbeat`, writing `identity` and `stats()`.
    pub(crate) fn start(
        config: &RedisConfig,
        identity: Identity,
        stats: impl Fn() -> WorkerStats + Send + 'static,
    ) -> std::io::Result<Heartbeat> {
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let keys = config.keys();
        let connection = LazyConnection::new(config.clone());
        let thread = thread::Builder::new()
            .name("afterward-heartbeat".into())
            .spawn(move || beat(&keys, &connection, &identity, &stats, &stopped))?;
        Ok(Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn beat(
    keys: &Keys,
    connection: &LazyConnection,
    identity: &Identity,
    stats: &dyn Fn() -> WorkerStats,
    stopped: &Receiver<()>,
) {
    let key = keys.workers(&format!("w:{}", identity.name));
    let host = host();
    loop {
        let now = stats();
        let text = serde_json::json!({
            "name": identity.name,
            "host": host,
            "pid": std::process::id(),
            "queues": identity.queues,
            "concurrency": identity.concurrency,
            "in_flight": now.in_flight,
            "succeeded": now.succeeded,
            "last_heartbeat_ms": now_ms(),
        })
        .to_string();
        let written = connection.call(|con| {
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(&text)
                .arg("PX")
                .arg(HEARTBEAT_TTL.as_millis() as u64)
                .ignore()
                .cmd("SADD")
                .arg(keys.workers("names"))
                .arg(&identity.name)
                .ignore()
                .query::<()>(con)
        });
        if let Err(error) = written {
            log::debug!("heartbeat not written: {error}");
        }
        match stopped.recv_timeout(HEARTBEAT_EVERY) {
            Err(RecvTimeoutError::Timeout) => continue,
            _ => break,
        }
    }
    // Stopped: gone at once, not after the TTL.
    let _ = connection.call(|con| {
        redis::pipe()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("SREM")
            .arg(keys.workers("names"))
            .arg(&identity.name)
            .ignore()
            .query::<()>(con)
    });
}
