//! A Redis server of the test's own (`redis-server` from the OS packages),
//! on a unix socket in a temporary directory, killed by pid on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use afterward::redis::RedisConfig;

use super::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "no"])
    }

    /// A server with `extra` arguments (persistence, say).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            dir: TempDir::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// A server not started yet: its socket path is known, nothing listens.
    pub fn not_started() -> RedisServer {
        RedisServer {
            child: None,
            dir: TempDir::new(),
            extra: vec!["--appendonly".into(), "no".into()],
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.file("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// The deployment's configuration, with short timeouts for tests.
    pub fn config(&self) -> RedisConfig {
        let mut config = RedisConfig::new(&self.url()).expect("a valid URL");
        config.timeout = Duration::from_millis(500);
        config
    }

    /// Starts (again) on the same socket and directory (so an AOF file, if
    /// any, is read back); returns once it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--save", "", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (Debian package redis-server; .ci/run installs it)");
        let stdout = child.stdout.take().expect("piped");
        let (ready, is_ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line
                    .to_ascii_lowercase()
                    .contains("ready to accept connections")
                {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
        });
        let started = Instant::now();
        is_ready
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("redis-server not ready after {:?}", started.elapsed()));
        self.child = Some(child);
    }

    /// `kill -9`, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP or SIGCONT.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// A plain connection, for the test's own commands.
    pub fn connection(&self) -> afterward::redis::client::Connection {
        self.config()
            .connect()
            .expect("connect to the test's Redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
