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
    /// A TCP port too (plain, or TLS only), beside the unix socket.
    tcp: Option<Tcp>,
}

#[derive(Clone, Copy)]
struct Tcp {
    port: u16,
    tls: bool,
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
            tcp: None,
        };
        server.restart();
        server
    }

    /// A server also on a TCP port of loopback (`tls`: a TLS port only,
    /// whose certificate flags are in `extra`), for URLs with a host.
    pub fn start_tcp(tls: bool, extra: &[&str]) -> RedisServer {
        // A free port, found by binding it: another process may take it
        // before Redis does; then Redis exits and another is tried.
        let ports = std::iter::repeat_with(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        });
        RedisServer::start_on_one_of(ports.take(5), tls, extra)
    }

    /// A Redis Cluster node (not in a cluster yet; `tls`: on a TLS port,
    /// the certificate flags and `--tls-cluster yes` in `extra`) on a TCP
    /// port whose bus port (+10,000) is free too.
    pub fn start_cluster_node(tls: bool, extra: &[&str]) -> RedisServer {
        let mut flags = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"];
        flags.extend(extra);
        // Ports below 55,536 (so that the bus port is one), from a base
        // spread by pid, each node of this process on the next: two nodes
        // never try the same port, so a killed node's port stays its own
        // for its restart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = std::process::id().wrapping_mul(7919);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        let ports = std::iter::repeat_with(|| {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (20_000 + base.wrapping_add(n.wrapping_mul(7)) % 30_000) as u16
        })
        .take(50)
        .filter(|port| free(*port) && free(port + 10_000));
        RedisServer::start_on_one_of(ports, tls, &flags)
    }

    /// A server on the first of `ports` it starts on (`--appendonly no`
    /// and `extra`), a port being taken by another process meanwhile.
    fn start_on_one_of(ports: impl Iterator<Item = u16>, tls: bool, extra: &[&str]) -> RedisServer {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--appendonly".into(), "no".into()]);
        for port in ports {
            let mut server = RedisServer {
                child: None,
                dir: TempDir::new(),
                extra: extra.clone(),
                tcp: Some(Tcp { port, tls }),
            };
            if server.try_start() {
                return server;
            }
        }
        panic!("redis-server started on none of the ports tried");
    }

    /// The TCP port (see [`start_tcp`](Self::start_tcp)).
    pub fn port(&self) -> u16 {
        self.tcp.expect("a TCP server").port
    }

    /// A server not started yet: its socket path is known, nothing listens.
    pub fn not_started() -> RedisServer {
        RedisServer {
            child: None,
            dir: TempDir::new(),
            extra: vec!["--appendonly".into(), "no".into()],
            tcp: None,
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
        with_test_timeouts(&self.url())
    }

    /// [`config`](Self::config), as ACL user `user` with password `pass`.
    pub fn config_as(&self, user: &str, pass: &str) -> RedisConfig {
        with_test_timeouts(&format!("{}?user={user}&pass={pass}", self.url()))
    }

    /// Starts (again) on the same socket and directory (so an AOF file, if
    /// any, is read back); returns once it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.try_start(), "redis-server exited at start");
    }

    /// Starts it: whether it came up (`false`: it exited, its port taken).
    fn try_start(&mut self) -> bool {
        assert!(self.child.is_none(), "already running");
        let ports: Vec<String> = match self.tcp {
            None => vec!["--port".into(), "0".into()],
            Some(Tcp { port, tls: false }) => vec!["--port".into(), port.to_string()],
            Some(Tcp { port, tls: true }) => {
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                ]
            }
        };
        let mut child = Command::new("redis-server")
            .args(&ports)
            .args(["--bind", "127.0.0.1", "--unixsocket"])
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
        match is_ready.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => {
                self.child = Some(child);
                true
            }
            // Its output ended without "ready": it exited.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                false
            }
            Err(_) => panic!("redis-server not ready after {:?}", started.elapsed()),
        }
    }

    /// `kill -9`, and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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
    pub fn connection(&self) -> afterward::redis::Connection {
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

/// The password of user `jobs` in [`acl_flags`].
pub const ACL_PASSWORD: &str = "hunter2-S3cret";

/// ACL rules for a server: user `jobs` with [`ACL_PASSWORD`] and every
/// right, and a default user that needs a password too (`default-pw`).
pub fn acl_flags() -> Vec<String> {
    [
        "--user",
        "jobs",
        "on",
        &format!(">{ACL_PASSWORD}"),
        "~*",
        "&*",
        "+@all",
        "--requirepass",
        "default-pw",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The configuration of `url`, with short timeouts for tests.
fn with_test_timeouts(url: &str) -> RedisConfig {
    let mut config = RedisConfig::new(url).expect("a valid URL");
    config.timeout = Duration::from_millis(500);
    config
}
