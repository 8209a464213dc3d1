//! A Sentinel deployment of the test's own: a primary, its replicas and
//! three sentinels (`redis-server --sentinel`), all on loopback ports,
//! killed by pid on drop. Sentinels notice a primary down after 1 s and
//! fail over at once.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use afterward::redis::client::cmd;
use afterward::redis::Connection;
use afterward::redis::RedisConfig;

use super::redis::RedisServer;
use super::{TempDir, TEST_TIMEOUT};

/// The service the sentinels watch.
pub const SERVICE: &str = "main";

pub struct SentinelSet {
    /// The data nodes: the first is the primary at start.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<(Child, u16, TempDir)>,
}

impl SentinelSet {
    /// A primary with `replicas` replicas, in sync, watched by three
    /// sentinels that know them all.
    pub fn start(replicas: usize) -> SentinelSet {
        let sync = ["--repl-diskless-sync-delay", "0"];
        let primary = RedisServer::start_tcp(false, &sync);
        let port = primary.port().to_string();
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            let mut flags = vec!["--replicaof", "127.0.0.1", port.as_str()];
            flags.extend(sync);
            nodes.push(RedisServer::start_tcp(false, &flags));
        }
        for replica in &nodes[1..] {
            wait_until("a replica in sync", || {
                info(&mut replica.connection(), "replication").contains("master_link_status:up")
            });
        }
        let sentinels = (0..3).map(|_| start_sentinel(nodes[0].port())).collect();
        let set = SentinelSet { nodes, sentinels };
        for (_, port, _) in &set.sentinels {
            wait_until("sentinels that know every node", || {
                let Ok(mut con) = sentinel_connection(*port) else {
                    return false;
                };
                let master: Vec<String> = cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(SERVICE)
                    .query(&mut con)
                    .unwrap_or_default();
                let field = |name: &str| {
                    master
                        .iter()
                        .position(|f| f == name)
                        .and_then(|i| master.get(i + 1))
                        .cloned()
                        .unwrap_or_default()
                };
                field("num-slaves") == replicas.to_string() && field("num-other-sentinels") == "2"
            });
        }
        set
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/main`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(_, port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    /// A configuration through the sentinels, with short timeouts.
    pub fn config(&self) -> RedisConfig {
        let mut config = RedisConfig::new(&self.url()).expect("a sentinel URL");
        config.timeout = Duration::from_millis(500);
        config
    }

    /// The port of the primary the sentinels name now.
    pub fn primary_port(&self) -> u16 {
        let (_, port, _) = &self.sentinels[0];
        let mut con = sentinel_connection(*port).expect("a sentinel");
        let (_, port): (String, u16) = cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SERVICE)
            .query(&mut con)
            .expect("the primary's address");
        port
    }

    /// Waits until the sentinels name a primary other than `port`, and it
    /// says it is one.
    pub fn wait_for_failover_from(&self, port: u16) -> u16 {
        let mut now = port;
        wait_until("a failover", || {
            now = self.primary_port();
            now != port
                && self
                    .nodes
                    .iter()
                    .find(|n| n.port() == now)
                    .is_some_and(|n| {
                        info(&mut n.connection(), "replication").contains("role:master")
                    })
        });
        now
    }
}

/// `INFO section` of a connection.
pub fn info(con: &mut Connection, section: &str) -> String {
    cmd("INFO").arg(section).query(con).unwrap_or_default()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sentinel_connection(
    port: u16,
) -> afterward::redis::client::RedisResult<afterward::redis::client::Connection> {
    let client = afterward::redis::client::Client::open(format!("redis://127.0.0.1:{port}"))?;
    client.get_connection_with_timeout(Duration::from_millis(500))
}

/// A sentinel on a free port, watching the primary on `primary`; retried
/// on another port if its own was taken meanwhile.
fn start_sentinel(primary: u16) -> (Child, u16, TempDir) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = TempDir::new();
        let conf = dir.file("sentinel.conf");
        let mut file = std::fs::File::create(&conf).expect("write the sentinel's config");
        write!(
            file,
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 2\n",
            dir = dir.path().display()
        )
        .unwrap();
        drop(file);
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs as a sentinel");
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break; // exited: its port was taken
            }
            if let Ok(mut con) = sentinel_connection(port) {
                if cmd("PING").query::<String>(&mut con).is_ok() {
                    return (child, port, dir);
                }
            }
            assert!(Instant::now() < deadline, "a sentinel never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no sentinel started on a free port");
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (child, _, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
