//! Where Redis is, and how a connection to it is made: one server
//! (`redis://`, `rediss://`, `redis+unix://`), the primary a set of
//! Sentinels names (`redis+sentinel://`, `rediss+sentinel://`), or a Redis
//! Cluster (`redis+cluster://`, `rediss+cluster://`, see `cluster.rs`); with the
//! TLS files given, the credentials of the URL, a timeout on every step and
//! a `PING` that proves the connection serves (a server asking for a
//! password only says so at the first command).
//!
//! Architecture invariant: the URL as given is never shown. Messages use
//! [`Target::shown`], the URL with its password replaced by `***`
//! ([`redact`]), and the redis crate's errors name no credentials.

use std::time::Duration;

use redis::{ErrorKind, RedisError, RedisResult};

use super::cluster::Router;
use super::connection::Connection;

/// The Sentinel port when a sentinel's address has none.
const SENTINEL_PORT: u16 = 26379;

/// A parsed `--redis-url`: where to connect, and how.
#[derive(Clone)]
pub(crate) struct Target {
    /// The URL as given, password and all: to build clients, never shown.
    url: String,
    /// The URL with its password hidden: for every message.
    shown: String,
    kind: Kind,
    /// Whether every connection is TLS (`rediss`, `rediss+sentinel`, …).
    secure: bool,
    tls: TlsFiles,
}

#[derive(Clone)]
enum Kind {
    /// One server; the client is made once (and again when TLS files change).
    Direct(redis::Client),
    /// The primary a set of Sentinels names, asked at every connect.
    Sentinel(Sentinels),
    /// A Redis Cluster: the seeds to read its slot map from.
    Cluster(Seeds),
}

/// `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]`.
#[derive(Clone)]
struct Seeds {
    scheme: &'static str,
    addresses: Vec<String>,
    userinfo: String,
}

/// `redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB]`.
#[derive(Clone)]
struct Sentinels {
    /// `rediss` for TLS to the sentinels and to the data nodes, else `redis`.
    scheme: &'static str,
    /// `HOST:PORT` of each sentinel, in the order asked.
    addresses: Vec<String>,
    /// The service (`sentinel monitor SERVICE …`).
    service: String,
    /// `USER:PASSWORD@` for the data nodes, as given (percent-encoded), or empty.
    userinfo: String,
    /// `/DB`, or empty.
    db: String,
    /// The sentinels' own password (`?sentinel_password=`), if they ask one.
    sentinel_auth: String,
}

/// PEM files for TLS: a CA that replaces the system's roots, and a client
/// certificate with its key. Never shown (the key is secret).
#[derive(Clone, Default)]
#[cfg_attr(not(feature = "redis-tls"), allow(dead_code))]
struct TlsFiles {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// The target of `url`; `Err` (a message with the password hidden) for
    /// a URL that is not one.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let shown = redact(url);
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("invalid Redis URL {shown:?}: no scheme (redis://HOST:PORT)"))?;
        // TLS to every node: a scheme of its own, decided here once.
        let secure = matches!(
            scheme,
            "rediss" | "valkeys" | "rediss+sentinel" | "rediss+cluster"
        );
        check_tls_built(secure, &shown)?;
        let kind = match scheme {
            "redis+sentinel" | "rediss+sentinel" => {
                Kind::Sentinel(Sentinels::parse(secure, rest, &shown)?)
            }
            "redis+cluster" | "rediss+cluster" => Kind::Cluster(Seeds::parse(secure, rest, &shown)?),
            "redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys" => {
                let client = redis::Client::open(url)
                    .map_err(|e| format!("invalid Redis URL {shown:?}: {e}"))?;
                Kind::Direct(client)
            }
            other => {
                return Err(format!(
                    "invalid Redis URL {shown:?}: unknown scheme `{other}` (redis, rediss, redis+unix, redis+sentinel, rediss+sentinel, redis+cluster, rediss+cluster)"
                ))
            }
        };
        Ok(Target {
            url: url.to_owned(),
            shown,
            kind,
            secure,
            tls: TlsFiles::default(),
        })
    }

    /// The URL with its password hidden.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Verifies servers against the CA in `pem` instead of the system's roots.
    #[cfg(feature = "redis-tls")]
    pub(crate) fn set_ca(&mut self, pem: Vec<u8>) -> Result<(), String> {
        self.tls.ca = Some(pem);
        self.rebuild()
    }

    /// Shows servers the client certificate `cert` (with its key `key`).
    #[cfg(feature = "redis-tls")]
    pub(crate) fn set_client_cert(&mut self, cert: Vec<u8>, key: Vec<u8>) -> Result<(), String> {
        self.tls.client = Some((cert, key));
        self.rebuild()
    }

    /// Makes the direct client again with the TLS files.
    #[cfg(feature = "redis-tls")]
    fn rebuild(&mut self) -> Result<(), String> {
        if !self.secure {
            return Err(format!(
                "TLS files are for rediss:// URLs; {:?} is plain TCP",
                self.shown
            ));
        }
        if let Kind::Direct(_) = self.kind {
            let client = self
                .tls
                .client_for(&self.url)
                .map_err(|e| format!("invalid TLS files for Redis at {:?}: {e}", self.shown))?;
            self.kind = Kind::Direct(client);
        }
        Ok(())
    }

    /// A connection that has answered a `PING`, made within `timeout` per
    /// step (connect, each reply); through Sentinel, to the primary it
    /// names now.
    pub(crate) fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        match &self.kind {
            Kind::Direct(client) => open(client, timeout).map(Connection::one),
            Kind::Sentinel(sentinels) => sentinels.primary(&self.tls, timeout).map(Connection::one),
            Kind::Cluster(seeds) => {
                let (scheme, userinfo, tls) =
                    (seeds.scheme, seeds.userinfo.clone(), self.tls.clone());
                let opener = move |address: &str| {
                    let client = tls.client_for(&format!("{scheme}://{userinfo}{address}"))?;
                    open(&client, timeout)
                };
                Router::connect(seeds.addresses.clone(), std::sync::Arc::new(opener))
                    .map(Connection::cluster)
            }
        }
    }

    /// Whether it is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// Why a connect failed, for a person: the cause, and a hint when it
    /// is a usual mistake.
    pub(crate) fn explain(&self, error: &RedisError) -> String {
        let text = error.to_string();
        let hint = if error.kind() == ErrorKind::AuthenticationFailed {
            " (wrong user or password)"
        } else if text.contains("NOAUTH") {
            " (Redis asks for a password: redis://:PASSWORD@HOST or redis://USER:PASSWORD@HOST)"
        } else if text.contains("invalid peer certificate") {
            " (the server's certificate: give its CA with --redis-ca-file, and connect by a name or address it was made for)"
        } else if !self.secure && text.contains("reset by peer") {
            " (a TLS port? use rediss://)"
        } else if self.secure && error.is_timeout() {
            " (no TLS answer: a plain port? use redis://)"
        } else {
            ""
        };
        format!("{text}{hint}")
    }
}

impl TlsFiles {
    /// A client for `url` with these files (the system's roots without a CA).
    fn client_for(&self, url: &str) -> RedisResult<redis::Client> {
        #[cfg(feature = "redis-tls")]
        if self.ca.is_some() || self.client.is_some() {
            install_crypto();
            let certificates = redis::TlsCertificates {
                root_cert: self.ca.clone(),
                client_tls: self
                    .client
                    .as_ref()
                    .map(|(cert, key)| redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.clone(),
                    }),
            };
            return redis::Client::build_with_tls(url, certificates);
        }
        #[cfg(feature = "redis-tls")]
        if url.starts_with("rediss://") {
            install_crypto();
        }
        redis::Client::open(url)
    }
}

/// rustls needs a process-wide crypto provider before its first handshake
/// (the redis crate builds its TLS settings itself): ring, unless the
/// application installed one first.
#[cfg(feature = "redis-tls")]
fn install_crypto() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one first: as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `Err` for a TLS URL in a build without TLS.
fn check_tls_built(tls: bool, shown: &str) -> Result<(), String> {
    if tls && cfg!(not(feature = "redis-tls")) {
        return Err(format!(
            "{shown:?}: TLS to Redis needs afterward's feature `redis-tls`"
        ));
    }
    Ok(())
}

impl Seeds {
    fn parse(tls: bool, rest: &str, shown: &str) -> Result<Seeds, String> {
        let bad = |why: &str| {
            format!(
                "invalid Redis URL {shown:?}: {why} (redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…])"
            )
        };
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        if hosts.contains('/') || hosts.contains('?') {
            return Err(bad("a cluster has one database and no options"));
        }
        Ok(Seeds {
            scheme: if tls { "rediss" } else { "redis" },
            addresses: addresses(hosts, None).map_err(|e| bad(&e))?,
            userinfo,
        })
    }
}

/// `HOST[:PORT],…` as `HOST:PORT` each (`default` for a host without a
/// port; none: a port is required).
fn addresses(hosts: &str, default: Option<u16>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for host in hosts.split(',') {
        let address = match (host.rsplit_once(':'), default) {
            (Some((name, port)), _) if !name.is_empty() && port.parse::<u16>().is_ok() => {
                host.to_owned()
            }
            (None, Some(port)) if !host.is_empty() => format!("{host}:{port}"),
            (_, _) if host.is_empty() => return Err("an empty address".into()),
            _ => return Err(format!("address {host:?}")),
        };
        out.push(address);
    }
    Ok(out)
}

impl Sentinels {
    fn parse(tls: bool, rest: &str, shown: &str) -> Result<Sentinels, String> {
        let bad = |why: &str| {
            format!(
                "invalid Redis URL {shown:?}: {why} (redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB])"
            )
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (format!("{userinfo}@"), rest),
            None => (String::new(), rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no service"))?;
        let (service, db) = match path.split_once('/') {
            Some((service, db)) => {
                db.parse::<u32>()
                    .map_err(|_| bad(&format!("database {db:?} is not a number")))?;
                (service, format!("/{db}"))
            }
            None => (path, String::new()),
        };
        if service.is_empty() {
            return Err(bad("no service"));
        }
        let addresses = addresses(hosts, Some(SENTINEL_PORT)).map_err(|e| bad(&e))?;
        let mut sentinel_auth = String::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sentinel_password", password)) => sentinel_auth = format!(":{password}@"),
                _ => {
                    return Err(bad(&format!(
                        "unknown option {:?}",
                        pair.split('=').next().unwrap_or_default()
                    )))
                }
            }
        }
        Ok(Sentinels {
            scheme: if tls { "rediss" } else { "redis" },
            addresses,
            service: service.to_owned(),
            userinfo,
            db,
            sentinel_auth,
        })
    }

    /// Asks each sentinel in turn for the service's primary, connects to
    /// it and checks that it says it is one (a sentinel may lag a
    /// failover): the first that does, or the last error.
    fn primary(&self, tls: &TlsFiles, timeout: Duration) -> RedisResult<redis::Connection> {
        let mut last = None;
        for address in &self.addresses {
            let url = format!("{}://{}{address}", self.scheme, self.sentinel_auth);
            let named = tls
                .client_for(&url)
                .and_then(|c| open(&c, timeout))
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(&self.service)
                        .query::<Option<(String, u16)>>(&mut c)
                });
            let (host, port) = match named {
                Ok(Some(primary)) => primary,
                Ok(None) => {
                    last = Some(RedisError::from((
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "the sentinel knows no such service",
                        format!("{address}: {}", self.service),
                    )));
                    continue;
                }
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let node = format!(
                "{}://{}{host}:{port}{}",
                self.scheme, self.userinfo, self.db
            );
            let connected = tls.client_for(&node).and_then(|c| open(&c, timeout));
            match connected.and_then(|mut c| {
                let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c)?;
                Ok((c, role))
            }) {
                Ok((c, role)) if is_primary(&role) => return Ok(c),
                Ok(_) => {
                    last = Some(RedisError::from((
                        ErrorKind::Io,
                        "the node a sentinel named is not a primary (a failover under way)",
                        format!("{host}:{port}"),
                    )))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::EmptySentinelList, "no sentinel"))))
    }
}

/// Whether a `ROLE` reply says `master`.
fn is_primary(role: &[redis::Value]) -> bool {
    matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master")
        || matches!(role.first(), Some(redis::Value::SimpleString(s)) if s == "master")
}

/// A connection of `client` with `timeout` on connect, reads and writes,
/// that has answered a `PING`.
fn open(client: &redis::Client, timeout: Duration) -> RedisResult<redis::Connection> {
    let mut connection = client.get_connection_with_timeout(timeout)?;
    connection.set_read_timeout(Some(timeout))?;
    connection.set_write_timeout(Some(timeout))?;
    redis::cmd("PING").query::<()>(&mut connection)?;
    Ok(connection)
}

/// `url` with the password of its user info replaced by `***`
/// (`redis://jobs:***@host:6379`; `redis://:***@host`), and a
/// `sentinel_password=` option's too.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL: it could be anything, even a bare password.
        return "(not a URL)".into();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                // A lone word: the crate takes it as a user name, but people
                // write passwords there too.
                None if userinfo.is_empty() => out.push('@'),
                None => out.push_str("***@"),
            }
            out.push_str(host);
        }
        None => out.push_str(rest),
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.contains("password") => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_password_is_never_shown() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://jobs:s3cr%40t@h:1", "redis://jobs:***@h:1"),
            ("redis://:pw@h:1", "redis://:***@h:1"),
            ("rediss://pw@h:1", "rediss://***@h:1"),
            ("redis://a:b@c@h:1", "redis://a:***@h:1"),
            (
                "redis+sentinel://u:p@s1,s2:26380/main/2?sentinel_password=x",
                "redis+sentinel://u:***@s1,s2:26380/main/2?sentinel_password=***",
            ),
            ("s3cret", "(not a URL)"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
        let error = Target::parse("bogus://u:hunter2@h").err().unwrap();
        assert!(
            !error.contains("hunter2") && error.contains("bogus"),
            "{error}"
        );
        let error = Target::parse("redis://u:hunter2@h:notaport").err().unwrap();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn sentinel_urls_name_their_sentinels_service_and_database() {
        let target = Target::parse("redis+sentinel://u:p@a,b:26390/main/3").unwrap();
        let Kind::Sentinel(s) = target.kind else {
            panic!("a sentinel target")
        };
        assert_eq!(s.addresses, ["a:26379", "b:26390"]);
        assert_eq!((s.service.as_str(), s.db.as_str()), ("main", "/3"));
        assert_eq!((s.userinfo.as_str(), s.scheme), ("u:p@", "redis"));
        for bad in [
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/",
            "redis+sentinel://a:x/main",
            "redis+sentinel://a:1,/main",
            "redis+sentinel://a:1/main/x",
            "redis+sentinel://a:1/main?color=red",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
