//! [`Connection`]: one connection to a deployment, whatever its shape: one
//! server (directly or through Sentinel), or a Redis Cluster behind a
//! router that splits pipelines by node (`cluster.rs`). Every command of
//! afterward, and yours, goes through it the same way.

use redis::{ConnectionLike, RedisResult, Value};

use super::cluster::Router;

/// A connection made by [`RedisConfig::connect`](super::RedisConfig::connect):
/// use it as the `redis` crate's own (`cmd(…).query(&mut connection)`,
/// pipelines). Against a cluster, a pipeline may span keys of several
/// nodes (it is sent to each in turn); a transaction (`MULTI`) and a
/// script must keep to keys of one hash tag.
pub struct Connection(Inner);

enum Inner {
    One(redis::Connection),
    Cluster(Box<Router>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::One(_) => f.write_str("Connection(one server)"),
            Inner::Cluster(router) => write!(f, "Connection(cluster: {:?})", router.primaries()),
        }
    }
}

impl Connection {
    pub(crate) fn one(connection: redis::Connection) -> Connection {
        Connection(Inner::One(connection))
    }

    pub(crate) fn cluster(router: Router) -> Connection {
        Connection(Inner::Cluster(Box::new(router)))
    }

    /// Whether it is a cluster's.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Inner::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match &mut self.0 {
            Inner::One(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match &mut self.0 {
            Inner::One(c) => c.req_packed_commands(cmd, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::One(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match &mut self.0 {
            Inner::One(c) => c.check_connection(),
            Inner::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match &self.0 {
            Inner::One(c) => c.is_open(),
            Inner::Cluster(c) => c.is_open(),
        }
    }
}
