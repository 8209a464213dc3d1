//! Redis Cluster, behind one connection: a slot map from `CLUSTER SLOTS`, a
//! plain connection to each primary, and pipelines split by node.
//!
//! Every key of a queue shares one hash tag (`{P:Q}`, see `keys.rs`), so a
//! `MULTI` of one queue's record, a script and any single command lands on
//! one node whole; a pipeline that spans queues (a producer's batch, a
//! dashboard's counts) is sent to each node in turn, each node's part in
//! its order, and the replies are put back in the pipeline's order. This
//! keeps every caller's code the same as for one server (the redis crate's
//! `ClusterConnection` refuses pipelines and `MULTI`, re-sends timed-out
//! writes up to 16 times and does not recover from a killed primary).
//!
//! Architecture invariant: a transaction keeps to one node (refused
//! otherwise, never split), and a split pipeline's replies come back in its
//! order. And: a node's connection that failed is dropped, never reused
//! (it may be mid-reply); a connection error or a `MOVED`/`ASK`/
//! `CLUSTERDOWN`/`TRYAGAIN` reply marks the map stale, and the next call
//! reads it again from any node that answers (so a failover or a slot
//! move is followed). The failed call itself is returned as an error: its
//! caller retries, as after any Redis error.

use std::collections::HashMap;

use redis::{ConnectionLike, ErrorKind, RedisError, RedisResult, Value};

/// How a node's connection is made (its address → a connected client).
pub(crate) type Opener = dyn Fn(&str) -> RedisResult<redis::Connection> + Send + Sync;

/// The slots Redis Cluster hashes keys into.
const SLOTS: u16 = 16384;

pub(crate) struct Router {
    /// Addresses to ask for the slot map: the seeds, then every primary seen.
    known: Vec<String>,
    open: std::sync::Arc<Opener>,
    /// `(first, last, primary address)`, sorted.
    slots: Vec<(u16, u16, String)>,
    stale: bool,
    nodes: HashMap<String, redis::Connection>,
    /// The nodes the last call wrote to, for a `WAIT` after it.
    touched: Vec<String>,
}

impl Router {
    /// A router for the cluster `seeds` belong to, with its slot map read.
    pub(crate) fn connect(seeds: Vec<String>, open: std::sync::Arc<Opener>) -> RedisResult<Router> {
        let mut router = Router {
            known: seeds,
            open,
            slots: Vec::new(),
            stale: true,
            nodes: HashMap::new(),
            touched: Vec::new(),
        };
        router.refresh()?;
        // Every primary answers, or the connect fails (as one server's would).
        for address in router.primaries() {
            router.node(&address)?;
        }
        Ok(router)
    }

    /// The primaries of the map, each once.
    pub(crate) fn primaries(&self) -> Vec<String> {
        let mut out: Vec<String> = self.slots.iter().map(|(_, _, a)| a.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The address of the primary owning `key`'s slot.
    pub(crate) fn node_of(&mut self, key: &[u8]) -> RedisResult<String> {
        if self.stale {
            self.refresh()?;
        }
        let slot = slot(key);
        self.slots
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, address)| address.clone())
            .ok_or_else(|| {
                self.stale = true;
                RedisError::from((
                    ErrorKind::ClusterConnectionNotFound,
                    "no node serves the slot",
                    slot.to_string(),
                ))
            })
    }

    /// Reads the slot map from the first node that gives one.
    fn refresh(&mut self) -> RedisResult<()> {
        let mut last = None;
        let mut candidates = self.known.clone();
        // Nodes already connected first: they answer without a connect.
        candidates.sort_by_key(|a| !self.nodes.contains_key(a));
        for address in candidates {
            let reply = self
                .node(&address)
                .and_then(|con| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(con));
            match reply.map(parse_slots) {
                Ok(Some(slots)) if !slots.is_empty() => {
                    for (_, _, primary) in &slots {
                        if !self.known.contains(primary) {
                            self.known.push(primary.clone());
                        }
                    }
                    self.slots = slots;
                    self.stale = false;
                    return Ok(());
                }
                Ok(_) => {
                    last = Some(RedisError::from((
                        ErrorKind::ClusterConnectionNotFound,
                        "a node gave no slot map",
                        address,
                    )))
                }
                Err(e) => {
                    self.nodes.remove(&address);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "no cluster node"))
        }))
    }

    /// The connection to `address`, made if need be.
    fn node(&mut self, address: &str) -> RedisResult<&mut redis::Connection> {
        if !self.nodes.contains_key(address) {
            let connection = (self.open)(address)?;
            self.nodes.insert(address.to_owned(), connection);
        }
        Ok(self.nodes.get_mut(address).expect("inserted above"))
    }

    /// Notes what a node's answer says of the map: an error drops the
    /// node's connection (`Io`) and marks the map stale, as a redirection
    /// or a cluster down reply does.
    fn note<T>(&mut self, address: &str, result: &RedisResult<T>, values: Option<&[Value]>) {
        let redirected = |code: &str| matches!(code, "MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN");
        if let Err(error) = result {
            let code = error.code().unwrap_or_default();
            if error.kind() == ErrorKind::Io || error.is_connection_dropped() || error.is_timeout()
            {
                self.nodes.remove(address);
                self.stale = true;
            } else if redirected(code) || error.to_string().contains("Moved") {
                self.stale = true;
            }
        }
        if let Some(values) = values {
            if values
                .iter()
                .any(|v| matches!(v, Value::ServerError(e) if redirected(e.code())))
            {
                self.stale = true;
            }
        }
    }

    fn send(
        &mut self,
        address: &str,
        packed: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let result = self
            .node(address)
            .and_then(|con| con.req_packed_commands(packed, offset, count));
        // A slot being moved: what its old node no longer holds is asked of
        // the new one, after `ASKING` (a transaction whole: the flag holds
        // until its `EXEC`); the map itself has not changed yet.
        match &result {
            Err(error) => {
                if let Some(target) = ask_target(&error.to_string()) {
                    return self.asking(&target, packed, offset, count);
                }
            }
            Ok(values) if offset == 0 && values.iter().any(|v| ask_of(v).is_some()) => {
                let commands = parse_commands(packed)?;
                let mut values = values.clone();
                for (value, command) in values.iter_mut().zip(&commands) {
                    if let Some(target) = ask_of(value) {
                        let mut reply =
                            self.asking(&target, &packed[command.span.clone()], 0, 1)?;
                        *value = reply.pop().unwrap_or(Value::Nil);
                    }
                }
                return Ok(values);
            }
            Ok(_) => {}
        }
        self.note(address, &result, result.as_ref().ok().map(Vec::as_slice));
        result
    }

    /// `packed` sent to `target` after `ASKING`.
    fn asking(
        &mut self,
        target: &str,
        packed: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut asked = redis::cmd("ASKING").get_packed_command();
        asked.extend_from_slice(packed);
        let result = self
            .node(target)
            .and_then(|con| con.req_packed_commands(&asked, offset + 1, count));
        self.note(target, &result, result.as_ref().ok().map(Vec::as_slice));
        result
    }

    /// `WAIT n ms` on every node the last call wrote to: the fewest
    /// replicas any of them reached.
    fn wait(&mut self, packed: &[u8]) -> RedisResult<Value> {
        let mut fewest: Option<i64> = None;
        for address in self.touched.clone() {
            let reply = self.send(&address, packed, 0, 1)?;
            let n = match reply.first() {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            fewest = Some(fewest.map_or(n, |f| f.min(n)));
        }
        Ok(Value::Int(fewest.unwrap_or(0)))
    }
}

impl ConnectionLike for Router {
    fn req_packed_command(&mut self, packed: &[u8]) -> RedisResult<Value> {
        let commands = parse_commands(packed)?;
        if commands.first().is_some_and(|c| c.name_is("WAIT")) {
            return self.wait(packed);
        }
        let mut values = self.route(packed, &commands, 0, 1)?;
        values
            .pop()
            .ok_or_else(|| RedisError::from((ErrorKind::Client, "no reply")))
    }

    fn req_packed_commands(
        &mut self,
        packed: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let commands = parse_commands(packed)?;
        self.route(packed, &commands, offset, count)
    }

    fn get_db(&self) -> i64 {
        0
    }

    fn check_connection(&mut self) -> bool {
        self.primaries().into_iter().all(|address| {
            self.node(&address)
                .and_then(|con| redis::cmd("PING").query::<()>(con))
                .is_ok()
        })
    }

    fn is_open(&self) -> bool {
        !self.nodes.is_empty()
    }
}

impl Router {
    /// Sends the pipeline `packed`, read into `commands`, to the nodes of
    /// its commands' keys: whole to one node, or split by node.
    fn route(
        &mut self,
        packed: &[u8],
        commands: &[Command<'_>],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        // Each command's node: its key's; a command without a key goes
        // with the one before it (or the first node).
        let mut routes: Vec<String> = Vec::with_capacity(commands.len());
        for command in commands {
            let node = match command.key() {
                Some(key) => self.node_of(key)?,
                None => match routes.last() {
                    Some(previous) => previous.clone(),
                    None => match commands.iter().find_map(Command::key) {
                        Some(key) => self.node_of(key)?,
                        None => {
                            if self.stale {
                                self.refresh()?;
                            }
                            self.primaries().into_iter().next().ok_or_else(|| {
                                RedisError::from((ErrorKind::ClusterConnectionNotFound, "no node"))
                            })?
                        }
                    },
                },
            };
            routes.push(node);
        }
        let mut nodes: Vec<String> = routes.clone();
        nodes.sort();
        nodes.dedup();
        self.touched.clone_from(&nodes);
        // A transaction, and any pipeline of one node: as it is.
        let atomic = commands.first().is_some_and(|c| c.name_is("MULTI"));
        if nodes.len() == 1 || atomic {
            let address = routes.first().cloned().unwrap_or_default();
            if atomic && nodes.len() > 1 {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "a transaction spans nodes of the cluster",
                    nodes.join(", "),
                )));
            }
            return self.send(&address, packed, offset, count);
        }
        // Split: each node's commands in their order, replies put back.
        let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
        for address in &nodes {
            let mine: Vec<usize> = (0..commands.len())
                .filter(|i| routes[*i] == *address)
                .collect();
            let mut part = Vec::new();
            for i in &mine {
                part.extend_from_slice(&packed[commands[*i].span.clone()]);
            }
            let values = self.send(address, &part, 0, mine.len())?;
            for (i, value) in mine.into_iter().zip(values) {
                replies[i] = Some(value);
            }
        }
        Ok(replies
            .into_iter()
            .skip(offset)
            .take(count)
            .map(|v| v.unwrap_or(Value::Nil))
            .collect())
    }
}

/// One command of a packed pipeline: where it is, and its arguments.
struct Command<'a> {
    span: std::ops::Range<usize>,
    args: Vec<&'a [u8]>,
}

impl Command<'_> {
    fn name_is(&self, name: &str) -> bool {
        self.args
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The key that routes it: the first key, where each command we send
    /// has it; `None` for a command without one.
    fn key(&self) -> Option<&[u8]> {
        let name = std::str::from_utf8(self.args.first()?)
            .ok()?
            .to_ascii_uppercase();
        let at = match name.as_str() {
            "PING" | "WAIT" | "MULTI" | "EXEC" | "DISCARD" | "ROLE" | "INFO" | "CLUSTER"
            | "CLIENT" | "SCRIPT" | "SELECT" | "AUTH" | "HELLO" | "KEYS" | "DBSIZE"
            | "FLUSHALL" | "FLUSHDB" | "TIME" | "ECHO" => return None,
            "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" => {
                let keys: usize = std::str::from_utf8(self.args.get(2)?).ok()?.parse().ok()?;
                if keys == 0 {
                    return None;
                }
                3
            }
            "XREAD" | "XREADGROUP" => {
                self.args
                    .iter()
                    .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?
                    + 1
            }
            "XGROUP" | "XINFO" | "OBJECT" | "MEMORY" => 2,
            _ => 1,
        };
        self.args.get(at).copied()
    }
}

/// The node an `ASK` reply sends a command to.
fn ask_of(value: &Value) -> Option<String> {
    match value {
        Value::ServerError(e) if e.code() == "ASK" => {
            e.details()?.split_whitespace().nth(1).map(str::to_owned)
        }
        _ => None,
    }
}

/// The node an error's `ASK` names (`ASK 3999 127.0.0.1:6381`, or as the
/// redis crate shows it, `Ask: 3999 127.0.0.1:6381`), if any.
fn ask_target(text: &str) -> Option<String> {
    let at = text
        .find("ASK ")
        .map(|i| i + 4)
        .or_else(|| text.find("Ask: ").map(|i| i + 5))?;
    let mut words = text[at..].split_whitespace();
    words.next()?.parse::<u16>().ok()?;
    let address = words
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit());
    address.contains(':').then(|| address.to_owned())
}

/// The commands of a packed pipeline (`*N\r\n` then `$len\r\narg\r\n` each).
fn parse_commands(packed: &[u8]) -> RedisResult<Vec<Command<'_>>> {
    let bad = || {
        RedisError::from((
            ErrorKind::Client,
            "a command the cluster router cannot read",
        ))
    };
    let line = |at: usize| -> RedisResult<(usize, usize)> {
        let end = packed[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(bad)?
            + at;
        let n = std::str::from_utf8(&packed[at + 1..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok((n, end + 2))
    };
    let mut commands = Vec::new();
    let mut at = 0;
    while at < packed.len() {
        let start = at;
        if packed[at] != b'*' {
            return Err(bad());
        }
        let (n, mut next) = line(at)?;
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            if packed.get(next) != Some(&b'$') {
                return Err(bad());
            }
            let (len, data) = line(next)?;
            let end = data + len;
            args.push(packed.get(data..end).ok_or_else(bad)?);
            next = end + 2;
        }
        at = next;
        commands.push(Command {
            span: start..at,
            args,
        });
    }
    Ok(commands)
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, …], replicas…], …]`.
fn parse_slots(reply: Value) -> Option<Vec<(u16, u16, String)>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        let number = |v: &Value| match v {
            Value::Int(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        let first = number(parts.first()?)?;
        let last = number(parts.get(1)?)?;
        let Value::Array(primary) = parts.get(2)? else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = match primary.get(1)? {
            Value::Int(n) => *n,
            _ => return None,
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        out.push((first, last, format!("{host}:{port}")));
    }
    out.sort();
    Some(out)
}

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the part between
/// the first `{` and the next `}`, if not empty) or of all of it.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// CRC16-XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_redis_clusters_slots_by_their_tag() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        assert_eq!(slot(b"{job}"), 2906);
        assert_eq!(slot(b"{afterward}"), 9172);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"{}x"), crc16(b"{}x") % SLOTS);
        assert_eq!(
            slot(b"{afterward:default}:jobs"),
            slot(b"afterward:default")
        );
    }

    #[test]
    fn an_ask_names_the_node_to_ask() {
        assert_eq!(
            ask_target("Ask: 3999 127.0.0.1:6381").as_deref(),
            Some("127.0.0.1:6381")
        );
        assert_eq!(
            ask_target("Transaction aborted: [(Index 1, error: Ask: 12 10.0.0.2:7000)]").as_deref(),
            Some("10.0.0.2:7000")
        );
        assert_eq!(ask_target("Moved: 3999 127.0.0.1:6381"), None);
        assert_eq!(ask_target("ASK x y"), None);
    }

    #[test]
    fn a_packed_pipeline_is_read_back_into_its_commands_and_keys() {
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg("{p:a}:jobs")
            .arg("*")
            .arg("envelope")
            .arg("x");
        pipe.cmd("PING");
        pipe.cmd("EVAL")
            .arg("return 1")
            .arg(2)
            .arg("{p:b}:d")
            .arg("{p:b}:e");
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("STREAMS")
            .arg("{p:c}:jobs")
            .arg(">");
        pipe.cmd("EVAL").arg("return 1").arg(0);
        let packed = pipe.get_packed_pipeline();
        let commands = parse_commands(&packed).unwrap();
        let keys: Vec<Option<&[u8]>> = commands.iter().map(Command::key).collect();
        assert_eq!(
            keys,
            [
                Some(&b"{p:a}:jobs"[..]),
                None,
                Some(&b"{p:b}:d"[..]),
                Some(&b"{p:c}:jobs"[..]),
                None
            ]
        );
        assert_eq!(commands.last().unwrap().span.end, packed.len());
        assert!(parse_commands(b"*1\r\n$4\r\nPI").is_err());
    }
}
