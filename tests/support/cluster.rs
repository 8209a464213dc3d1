//! A Redis Cluster of the test's own: primaries (and replicas) on loopback
//! ports, joined by `redis-cli --cluster create`, killed by pid on drop.

use std::process::Command;
use std::time::{Duration, Instant};

use afterward::redis::client::{cmd, Value};
use afterward::redis::RedisConfig;

use super::redis::RedisServer;
use super::TEST_TIMEOUT;

pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// Whether it speaks TLS (`rediss+cluster://`).
    tls: bool,
    /// One cluster at a time per test binary: six nodes gossiping each,
    /// two clusters on two cores would slow each other's failovers.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    /// `primaries` primaries with `replicas` replicas each, every slot
    /// served, every node agreeing (`cluster_state:ok`).
    pub fn start(primaries: usize, replicas: usize) -> Cluster {
        Cluster::start_with(primaries, replicas, None)
    }

    /// `primaries` primaries speaking only TLS, to clients and to each
    /// other, with `certs`' server certificate.
    pub fn start_tls(primaries: usize, certs: &super::tls::Certs) -> Cluster {
        Cluster::start_with(primaries, 0, Some(certs))
    }

    fn start_with(primaries: usize, replicas: usize, certs: Option<&super::tls::Certs>) -> Cluster {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let mut flags: Vec<String> = vec!["--repl-diskless-sync-delay".into(), "0".into()];
        if let Some(certs) = certs {
            flags.extend(certs.server_flags("optional"));
            flags.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| RedisServer::start_cluster_node(certs.is_some(), &flags))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut cli = Command::new("redis-cli");
        if let Some(certs) = certs {
            cli.arg("--tls").arg("--cacert").arg(certs.file("ca.crt"));
        }
        let status = cli
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli runs (Debian package redis-tools, with redis-server)");
        assert!(status.success(), "redis-cli --cluster create");
        let cluster = Cluster {
            nodes,
            tls: certs.is_some(),
            _turn: turn,
        };
        cluster.wait_until("every node sees the cluster ok", |c| {
            c.nodes
                .iter()
                .all(|n| c.info(n).contains("cluster_state:ok"))
        });
        if replicas > 0 {
            // Seen from both sides: a node the create has not yet made a
            // replica still says `role:master`, so each primary must count
            // its replicas online too (as `WAIT` counts them).
            cluster.wait_until("every replica in sync", |c| {
                c.nodes.iter().all(|n| {
                    let replication: String = cmd("INFO")
                        .arg("replication")
                        .query(&mut n.connection())
                        .unwrap_or_default();
                    if replication.contains("role:master") {
                        replication.matches("state=online").count() == replicas
                    } else {
                        replication.contains("master_link_status:up")
                    }
                })
            });
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2` (two seeds are enough;
    /// `rediss+cluster://` for a TLS cluster: use it with the CA file).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .take(2)
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}+cluster://{}", seeds.join(","))
    }

    pub fn config(&self) -> RedisConfig {
        let mut config = RedisConfig::new(&self.url()).expect("a cluster URL");
        config.timeout = Duration::from_millis(500);
        config
    }

    /// `CLUSTER INFO` of a node.
    pub fn info(&self, node: &RedisServer) -> String {
        cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node.connection())
            .unwrap_or_default()
    }

    /// The node serving `key`'s slot now, as a running node sees the map
    /// (waited for while the map names none of ours: mid-failover, a slot's
    /// primary may show as no address).
    pub fn owner(&self, key: &str) -> usize {
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            if let Some(owner) = self.owner_now(key) {
                return owner;
            }
            assert!(Instant::now() < deadline, "no node of ours serves {key}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn owner_now(&self, key: &str) -> Option<usize> {
        let slot: u16 = cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.alive().connection())
            .unwrap();
        let reply: Value = cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.alive().connection())
            .unwrap();
        let Value::Array(ranges) = reply else {
            panic!("CLUSTER SLOTS: {reply:?}")
        };
        let int = |v: &Value| match v {
            Value::Int(n) => *n,
            other => panic!("{other:?}"),
        };
        let port = ranges.iter().find_map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let (first, last) = (int(&parts[0]), int(&parts[1]));
            let Value::Array(primary) = &parts[2] else {
                return None;
            };
            (first..=last)
                .contains(&i64::from(slot))
                .then(|| int(&primary[1]) as u16)
        })?;
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// A node still running.
    fn alive(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a node runs")
    }

    /// The node id of node `index`.
    pub fn id(&self, index: usize) -> String {
        cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[index].connection())
            .unwrap()
    }

    pub fn wait_until(&self, what: &str, condition: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        while !condition(self) {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
