//! Helpers shared by the integration tests.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use afterward::testing::TEST_TIMEOUT;
use afterward::{Engine, Server, ServerBuilder};

#[cfg(feature = "redis")]
pub mod cluster;
#[cfg(feature = "redis")]
pub mod failover;
pub mod raw;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod sentinel;
#[cfg(feature = "redis")]
pub mod tls;

/// The engine the HTTP hardening suite (`tests/http_*.rs`,
/// `tests/cli_fd_exhaustion.rs`) runs on: the builtin one, whose guarantees it
/// states, whatever `AFTERWARD_ENGINE` says; or the one
/// `AFTERWARD_HARDENING_ENGINE` names, to see how another engine fares
/// (SECURITY.md lists tiny_http's results).
pub fn hardening_engine() -> Engine {
    std::env::var("AFTERWARD_HARDENING_ENGINE").map_or(Engine::Builtin, |name| {
        name.parse()
            .unwrap_or_else(|e| panic!("AFTERWARD_HARDENING_ENGINE: {e}"))
    })
}

/// A server builder on the [`hardening_engine`].
pub fn hardened() -> ServerBuilder {
    Server::builder().engine(hardening_engine())
}

/// A directory of its own for one test, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "afterward-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a file the background tasks wrote, or "" if they wrote nothing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A one-shot signal between a test and a task: `open` on one side, `wait` on
/// the other (with [`TEST_TIMEOUT`] as a guard, returning whether it opened).
#[derive(Clone)]
pub struct Gate {
    tx: Arc<Mutex<Option<Sender<()>>>>,
    rx: Arc<Mutex<Receiver<()>>>,
}

impl Gate {
    pub fn new() -> Gate {
        let (tx, rx) = mpsc::channel();
        Gate {
            tx: Arc::new(Mutex::new(Some(tx))),
            rx: Arc::new(Mutex::new(rx)),
        }
    }

    pub fn open(&self) {
        if let Some(tx) = self.tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the gate opens; `false` after [`TEST_TIMEOUT`].
    pub fn wait(&self) -> bool {
        self.wait_for(TEST_TIMEOUT)
    }

    pub fn wait_for(&self, timeout: Duration) -> bool {
        self.rx.lock().unwrap().recv_timeout(timeout).is_ok()
    }
}

/// An append-only list of events, shared between the test, handlers and tasks.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    pub fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// What the jobs of a test binary did: one line each, `KEY …`, so that tests
/// running at once keep to their own keys.
static RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Notes that a job did `line` (which starts with its test's key).
pub fn record_run(line: impl Into<String>) {
    RUNS.lock().unwrap().push(line.into());
}

/// The lines recorded under `key`, in order.
pub fn runs(key: &str) -> Vec<String> {
    let prefix = format!("{key} ");
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .cloned()
        .collect()
}

/// POSTs `path`, which must answer `202` with `{"id": …}`: the id.
pub fn accepted(server: &afterward::testing::TestServer, path: &str) -> String {
    let response = server.post(path).send();
    assert_eq!(response.status(), 202, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}
