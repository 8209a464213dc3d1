//! The limits and timeouts of our engine's connections, as the
//! [`ServerBuilder`](crate::ServerBuilder) sets them.

use std::time::Duration;

/// Per-connection limits and timeouts, set on the
/// [`ServerBuilder`](crate::ServerBuilder), which documents each.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// For a whole request body, from the end of its head.
    pub(crate) body_timeout: Duration,
    /// Bytes per second a client must send of a body; 0: no minimum.
    pub(crate) min_body_rate: u64,
    /// The largest body (the server's `max_body_bytes`).
    pub(crate) max_body_bytes: usize,
    /// Bytes of bodies the engine holds at most, all connections together.
    pub(crate) max_body_buffer_bytes: u64,
    /// Complete requests waiting for a request worker, at most.
    pub(crate) max_pending_requests: usize,
    /// How long a complete request may wait for a request worker.
    pub(crate) queue_timeout: Duration,
    /// How long a complete request waits for a busy request worker to come
    /// back before a sleeping one is woken for it.
    pub(crate) worker_wake_after: Duration,
    /// A request that waited this long for a worker is checked for a client
    /// gone before its handler runs.
    pub(crate) gone_check_after: Duration,
    pub(crate) write_timeout: Duration,
    /// Bytes per second a client must take of a response's rest; 0: no minimum.
    pub(crate) min_write_rate: u64,
    /// `None`: from the descriptor limit ([`limits::max_connections`]).
    pub(crate) max_connections: Option<usize>,
    /// Connections one client address may hold at once; `None`: no limit.
    pub(crate) max_connections_per_client: Option<usize>,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) listen_backlog: u32,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            max_body_bytes: 1024 * 1024,
            max_body_buffer_bytes: 64 * 1024 * 1024,
            max_pending_requests: 4096,
            queue_timeout: Duration::from_secs(10),
            worker_wake_after: Duration::from_micros(200),
            gone_check_after: Duration::from_millis(10),
            write_timeout: Duration::from_secs(30),
            min_write_rate: 1024,
            max_connections: None,
            max_connections_per_client: None,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            tcp_nodelay: true,
            listen_backlog: 1024,
        }
    }
}
