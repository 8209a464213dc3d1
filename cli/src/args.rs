//! Command-line flags, each with an `AFTERWARD_*` environment variable.
//!
//! A flag beats its environment variable, which beats the default. Any bad
//! value, from either source, is a usage error (exit status 2).
//!
//! Its size: one documented entry per flag, and their tests.

use std::ffi::OsString;
use std::fmt::Write;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use afterward::{Engine, OnFull, Queues};

/// One option: `--name VALUE`, or `AFTERWARD_NAME=VALUE`.
struct Opt {
    name: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
}

const OPTIONS: &[Opt] = &[
    Opt { name: "host", value: "HOST", default: "127.0.0.1", help: "address to listen on" },
    Opt { name: "port", value: "PORT", default: "8000", help: "port to listen on; 0 picks a free one" },
    Opt {
        name: "engine",
        value: "ENGINE",
        default: "builtin",
        help: "HTTP engine: builtin, or tiny-http (in a build with the tiny-http feature; no timeouts or limits)",
    },
    Opt { name: "workers", value: "N", default: "4 x cores, at least 8", help: "request worker threads" },
    Opt { name: "background-workers", value: "N", default: "cores, at least 2", help: "background task threads" },
    Opt { name: "queue-capacity", value: "N", default: "1024", help: "request task lists waiting for a background thread" },
    Opt {
        name: "on-full",
        value: "POLICY",
        default: "block",
        help: "when the queue is full: block (wait for room), caller-runs (the request worker runs the tasks), shed (503 new requests)",
    },
    Opt { name: "max-body-bytes", value: "N", default: "1048576", help: "largest request body; larger answers 413" },
    Opt { name: "body-timeout", value: "SECONDS", default: "30", help: "time to send a whole request body, from the end of its head; slower answers 408" },
    Opt { name: "min-body-rate", value: "BYTES_PER_S", default: "1024", help: "least a client must send of a body, on average after 2 s; slower answers 408 (0: off)" },
    Opt { name: "max-body-buffer-bytes", value: "N", default: "67108864", help: "bytes of request bodies held at once, every connection together; a body that does not fit answers 503" },
    Opt { name: "max-pending-requests", value: "N", default: "4096", help: "complete requests waiting for a request worker; more answer 503 at once" },
    Opt { name: "queue-timeout", value: "SECONDS", default: "10", help: "how long a complete request may wait for a request worker; longer answers 503" },
    Opt { name: "log-buffer-lines", value: "N", default: "8192", help: "log lines queued for stderr; when stderr cannot keep up, more are dropped and counted (afterward_log_lines_dropped_total), never waited for" },
    Opt { name: "shutdown-timeout", value: "SECONDS", default: "30", help: "time to drain tasks on SIGINT/SIGTERM" },
    Opt { name: "job-max-attempts", value: "N", default: "5", help: "attempts in all for a job (the demo's /files and /flaky)" },
    Opt { name: "job-backoff-ms", value: "MS", default: "100", help: "delay before a job's first retry; it doubles at each retry (with jitter), up to 60 s" },
    Opt { name: "job-timeout", value: "SECONDS", default: "30", help: "how long a job's attempt may run before it is reported overdue and its thread replaced" },
    Opt { name: "job-payload-bytes", value: "N", default: "1024", help: "how much of each job's payload its status keeps for the dashboard (longer ones are cut); 0 keeps none" },
    Opt {
        name: "queues",
        value: "QUEUES",
        default: "none: each job runs in its request's batch",
        help: "the queues this server's jobs run in, taking turns (without --redis-url): weights `default=3,slow=1` (a queue of weight 3 gets three turns for one), or an order `critical,default,low` with --strict",
    },
    Opt { name: "strict", value: "", default: "off", help: "with --queues: always the first queue, in the order given, that has a job ready" },
    Opt { name: "queue-limit", value: "LIMITS", default: "none", help: "with --queues: at most N jobs of a queue running at once here, `slow=1,reports=2`" },
    Opt { name: "log-file", value: "PATH", default: "log.txt", help: "file the notification tasks append to" },
    Opt { name: "dashboard", value: "", default: "off", help: "serve the jobs dashboard at /afterward (without --dashboard-token only on a loopback address)" },
    Opt { name: "dashboard-token", value: "TOKEN", default: "none", help: "the dashboard asks for this token: `Authorization: Bearer TOKEN`, or its login form" },
    Opt { name: "dashboard-actions", value: "", default: "off", help: "let the dashboard cancel, requeue, discard, pause and resume (read-only without)" },
    Opt { name: "heartbeat", value: "SPEC", default: "none", help: "a periodic job `heartbeat` that appends `heartbeat TICK` (the tick in Unix ms) to the log file of the process that runs it: an interval (`1s`, `500ms`, `5m`) or a cron expression (UTC); with --redis-url on several servers, each tick is enqueued once in all" },
    Opt { name: "notify-delay-ms", value: "MS", default: "0", help: "how long each notification task waits first (a slow mail server)" },
    Opt {
        name: "redis-url",
        value: "URL",
        default: "none: jobs run in this process",
        help: "send the demo's jobs (/files, /flaky) to Redis, for `afterward worker`s to run: redis://HOST:PORT or redis+unix:///PATH (build feature `redis`)",
    },
    Opt {
        name: "redis-mode",
        value: "MODE",
        default: "send",
        help: "with --redis-url: send (every job goes to Redis) or spill (jobs run here; those not run by the shutdown deadline go to Redis instead of being dropped)",
    },
    Opt {
        name: "redis-wait-replicas",
        value: "N",
        default: "0",
        help: "with --redis-url: a job is sent once N replicas have it too (WAIT), so a failover loses none acknowledged; none are sent while fewer are up",
    },
    Opt {
        name: "queue-partitions",
        value: "PARTITIONS",
        default: "none",
        help: "with --redis-url: split queues in partitions, `hot=4` (queues hot.0 to hot.3, spread over a cluster's nodes); give the workers the same",
    },
];

/// The options of `afterward worker`.
const WORKER_OPTIONS: &[Opt] = &[
    Opt { name: "redis-url", value: "URL", default: "(required)", help: "the Redis the web server sends jobs to" },
    Opt { name: "concurrency", value: "N", default: "cores, at least 2", help: "jobs run at once" },
    Opt { name: "prefetch", value: "N", default: "100", help: "jobs held at most, read and not finished (at least the concurrency); lower it for slow jobs, so that idle workers get them" },
    Opt {
        name: "queues",
        value: "QUEUES",
        default: "the demo's queue, default",
        help: "the queues this worker serves: weights `default=3,slow=1` (a queue of weight 3 gets three turns for one), or an order `critical,default,low` with --strict",
    },
    Opt { name: "strict", value: "", default: "off", help: "with --queues: always the first queue, in the order given, that has a job ready" },
    Opt { name: "queue-limit", value: "LIMITS", default: "none", help: "with --queues: at most N jobs of a queue running at once here, `slow=1,reports=2`" },
    Opt { name: "log-file", value: "PATH", default: "log.txt", help: "file the demo's jobs append their lines to (`flaky ID done`)" },
    Opt { name: "visibility-timeout", value: "SECONDS", default: "60", help: "how long a job held by a silent (crashed, stalled) worker waits before another takes it over" },
    Opt { name: "job-timeout", value: "SECONDS", default: "30", help: "how long a job's attempt may run before it is reported overdue" },
    Opt { name: "job-backoff-ms", value: "MS", default: "100", help: "delay before a job's first retry; it doubles at each retry (with jitter), up to 60 s (the attempts allowed come with each job, set by the web server's --job-max-attempts)" },
    Opt { name: "shutdown-timeout", value: "SECONDS", default: "30", help: "time to finish running jobs on SIGINT/SIGTERM; the rest stay pending for other workers" },
    Opt { name: "metrics-address", value: "HOST:PORT", default: "none", help: "serve the worker's counters at http://HOST:PORT/metrics (Prometheus); port 0 picks one" },
    Opt { name: "queue-partitions", value: "PARTITIONS", default: "none", help: "queues split in partitions, `hot=4`: the worker serves hot.0 to hot.3 for hot (the web servers' setting)" },
    Opt { name: "log-buffer-lines", value: "N", default: "8192", help: "log lines queued for stderr; when stderr cannot keep up, more are dropped, never waited for" },
];

/// The options of `afterward jobs`.
const JOBS_OPTIONS: &[Opt] = &[
    Opt {
        name: "redis-url",
        value: "URL",
        default: "(required)",
        help: "the Redis holding the jobs",
    },
    Opt {
        name: "all",
        value: "",
        default: "off",
        help: "requeue: every dead letter (of --queue, if given)",
    },
    Opt {
        name: "queue",
        value: "NAME",
        default: "every queue",
        help: "requeue --all: only this queue's dead letters",
    },
];

/// The settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub host: String,
    pub port: u16,
    pub engine: Engine,
    pub workers: Option<usize>,
    pub background_workers: Option<usize>,
    pub queue_capacity: usize,
    pub on_full: OnFull,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub min_body_rate: u64,
    pub max_body_buffer_bytes: u64,
    pub max_pending_requests: usize,
    pub queue_timeout: Duration,
    pub log_buffer_lines: usize,
    pub shutdown_timeout: Duration,
    pub job_max_attempts: u32,
    pub job_backoff: Duration,
    pub job_timeout: Duration,
    pub job_payload_bytes: usize,
    pub log_file: PathBuf,
    pub notify_delay: Duration,
    pub redis: Option<RedisTarget>,
    pub redis_mode: RedisMode,
    pub redis_wait_replicas: usize,
    pub queue_partitions: Vec<(String, usize)>,
    pub queues: Option<Queues>,
    pub heartbeat: Option<afterward::Schedule>,
    pub dashboard: Option<DashboardArgs>,
}

/// The dashboard's settings (`--dashboard`, or `afterward dashboard`).
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardArgs {
    pub token: Option<String>,
    pub actions: bool,
}

/// The settings of `afterward dashboard`.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardCommand {
    pub redis: RedisTarget,
    pub address: String,
    pub dashboard: DashboardArgs,
}

/// The options of `afterward dashboard`.
const DASHBOARD_OPTIONS: &[Opt] = &[
    Opt {
        name: "redis-url",
        value: "URL",
        default: "(required)",
        help: "the Redis holding the jobs",
    },
    Opt {
        name: "address",
        value: "HOST:PORT",
        default: "127.0.0.1:8001",
        help: "where to serve the dashboard (at /afterward)",
    },
    Opt {
        name: "dashboard-token",
        value: "TOKEN",
        default: "none",
        help: "the dashboard asks for this token (required off loopback)",
    },
    Opt {
        name: "dashboard-actions",
        value: "",
        default: "off",
        help: "let the dashboard cancel, requeue, discard, pause and resume",
    },
];

/// `--dashboard`, `--dashboard-token`, `--dashboard-actions` as given, for
/// a server on `host`: without a token, only a loopback host.
fn dashboard_args(
    options: &Resolver<'_, impl Fn(&str) -> Option<String>>,
    on: bool,
    host: &str,
) -> Result<Option<DashboardArgs>, String> {
    let token = options.raw("dashboard-token").map(|(_, t)| t);
    let actions = options.switch("dashboard-actions")?;
    if !on {
        if let Some((source, _)) = options
            .raw("dashboard-token")
            .or_else(|| options.raw("dashboard-actions"))
        {
            return Err(format!(
                "{source} needs --dashboard (or AFTERWARD_DASHBOARD)"
            ));
        }
        return Ok(None);
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if token.is_none() && !loopback {
        return Err(format!(
            "--dashboard without --dashboard-token would let anyone who reaches {host} see the jobs: give a token, or serve on a loopback address"
        ));
    }
    if token.as_deref() == Some("") {
        return Err("--dashboard-token must not be empty".into());
    }
    Ok(Some(DashboardArgs { token, actions }))
}

/// What `--redis-url` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisMode {
    /// Every job goes to Redis.
    #[default]
    Send,
    /// Jobs run here; those not run by the shutdown deadline go to Redis.
    Spill,
}

/// Where Redis is (`--redis-url`), with the TLS files to reach it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedisTarget {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// The client certificate and its key (both or neither).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The TLS options, wherever `--redis-url` is one.
const REDIS_TLS_OPTIONS: &[Opt] = &[
    Opt { name: "redis-ca-file", value: "PATH", default: "the system's roots", help: "with a rediss:// URL: the CA certificates (PEM) that Redis's certificate must chain to" },
    Opt { name: "redis-client-cert", value: "PATH", default: "none", help: "with a rediss:// URL: a client certificate (PEM) for servers that ask one; needs --redis-client-key" },
    Opt { name: "redis-client-key", value: "PATH", default: "none", help: "the private key (PEM) of --redis-client-cert" },
];

/// The settings of `afterward worker`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerArgs {
    pub redis: RedisTarget,
    pub queues: Option<Queues>,
    pub concurrency: Option<usize>,
    pub prefetch: Option<usize>,
    pub log_file: PathBuf,
    pub visibility_timeout: Duration,
    pub job_timeout: Duration,
    pub job_backoff: Duration,
    pub shutdown_timeout: Duration,
    pub metrics_address: Option<String>,
    pub queue_partitions: Vec<(String, usize)>,
    pub log_buffer_lines: usize,
}

/// What `afterward jobs` is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum JobsAction {
    /// Counts of jobs ready, pending, delayed and dead.
    Pending,
    /// The same, per queue.
    Queues,
    /// The dead letters.
    Dead,
    /// Sends a dead job back to run.
    Requeue(String),
    /// Sends every dead job (of one queue, if named) back to run.
    RequeueAll(Option<String>),
    /// Removes a dead letter for good.
    Discard(String),
    /// Cancels a job.
    Cancel(String),
    /// The schedules, one JSON line each.
    Schedules,
    /// Pauses (`true`) or resumes a schedule.
    Pause(String, bool),
}

/// The settings of `afterward jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsArgs {
    pub redis: RedisTarget,
    pub action: JobsAction,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Serve(Args),
    Worker(WorkerArgs),
    Jobs(JobsArgs),
    Dashboard(DashboardCommand),
    Help,
    Version,
}

/// The flags given, and the other arguments.
struct Given {
    given: Vec<(&'static str, String)>,
    positional: Vec<String>,
}

/// Reads `args` against the options `table`: `Err(command)` when they ask
/// for help or the version instead.
fn read(
    args: impl IntoIterator<Item = OsString>,
    table: &[Opt],
    positional_ok: bool,
) -> Result<Result<Given, Command>, String> {
    use lexopt::prelude::*;

    let mut given: Vec<(&'static str, String)> = Vec::new();
    let mut positional = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Err(Command::Help)),
            Short('V') | Long("version") => return Ok(Err(Command::Version)),
            Long(name) => {
                // The TLS options go wherever --redis-url does.
                let tls = if table.iter().any(|o| o.name == "redis-url") {
                    REDIS_TLS_OPTIONS
                } else {
                    &[]
                };
                let Some(opt) = table.iter().chain(tls).find(|o| o.name == name) else {
                    return Err(format!("unknown option --{name}"));
                };
                if opt.value.is_empty() {
                    // A switch: no value.
                    given.push((opt.name, "true".into()));
                    continue;
                }
                let value = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|e| e.to_string())?;
                given.push((opt.name, value));
            }
            Value(value) if positional_ok => {
                positional.push(value.string().map_err(|e| e.to_string())?);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Ok(Given { given, positional }))
}

/// Where each option's value comes from: the last flag, else the
/// environment, else `None` (the default).
struct Resolver<'a, E> {
    given: &'a [(&'static str, String)],
    env: &'a E,
}

impl<E: Fn(&str) -> Option<String>> Resolver<'_, E> {
    fn raw(&self, name: &'static str) -> Option<(String, String)> {
        if let Some((_, value)) = self.given.iter().rev().find(|(n, _)| *n == name) {
            return Some((format!("--{name}"), value.clone()));
        }
        let var = env_var(name);
        (self.env)(&var).map(|value| (var, value))
    }

    fn typed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        what: &str,
    ) -> Result<Option<T>, String> {
        self.raw(name)
            .map(|(source, value)| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid value {value:?} for {source}: expected {what}"))
            })
            .transpose()
    }

    /// One of `choices` (words and what they stand for), or `default`; the
    /// error names where the value came from and lists the words.
    fn choice<T: Copy>(
        &self,
        name: &'static str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, String> {
        let Some((source, value)) = self.raw(name) else {
            return Ok(default);
        };
        if let Some(&(_, chosen)) = choices.iter().find(|(word, _)| *word == value.trim()) {
            return Ok(chosen);
        }
        let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
        let (last, rest) = words.split_last().expect("choices are given");
        Err(format!(
            "invalid value {value:?} for {source}: expected {} or {last}",
            rest.join(", ")
        ))
    }

    /// A count of at least 1, the error naming where the value came from.
    fn count(&self, name: &'static str) -> Result<Option<usize>, String> {
        let Some((source, value)) = self.raw(name) else {
            return Ok(None);
        };
        match value.trim().parse::<usize>() {
            Ok(0) => Err(format!(
                "invalid value {value:?} for {source}: must be at least 1"
            )),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(format!(
                "invalid value {value:?} for {source}: expected a whole number"
            )),
        }
    }

    /// Seconds, above zero unless `zero_ok`.
    fn seconds(
        &self,
        name: &'static str,
        default: Duration,
        zero_ok: bool,
    ) -> Result<Duration, String> {
        let Some((source, value)) = self.raw(name) else {
            return Ok(default);
        };
        let expected = if zero_ok {
            "seconds >= 0"
        } else {
            "seconds > 0"
        };
        match value.trim().parse::<f64>() {
            Ok(s) if s > 0.0 || (zero_ok && s == 0.0) => Duration::try_from_secs_f64(s)
                .map_err(|_| format!("invalid value {value:?} for {source}: expected {expected}")),
            _ => Err(format!(
                "invalid value {value:?} for {source}: expected {expected}"
            )),
        }
    }

    fn job_max_attempts(&self) -> Result<u32, String> {
        match self.count("job-max-attempts")? {
            Some(n) => u32::try_from(n).map_err(|_| "--job-max-attempts is too large".to_owned()),
            None => Ok(5),
        }
    }

    fn job_backoff(&self) -> Result<Duration, String> {
        Ok(Duration::from_millis(
            self.typed("job-backoff-ms", "a number of milliseconds")?
                .unwrap_or(100),
        ))
    }

    /// A switch: given as a flag, or its variable set to 1/true/yes (0,
    /// false, no or empty: off).
    fn switch(&self, name: &'static str) -> Result<bool, String> {
        let Some((source, value)) = self.raw(name) else {
            return Ok(false);
        };
        match value.trim() {
            "1" | "true" | "yes" => Ok(true),
            "" | "0" | "false" | "no" => Ok(false),
            _ => Err(format!(
                "invalid value {value:?} for {source}: expected 1, true, yes, 0, false or no"
            )),
        }
    }

    /// `--queues`, `--strict` and `--queue-limit` together.
    fn queues(&self) -> Result<Option<Queues>, String> {
        let strict = self.switch("strict")?;
        let limits = self.raw("queue-limit");
        let Some((source, spec)) = self.raw("queues") else {
            return match (strict, limits) {
                (true, _) => Err("--strict needs --queues".into()),
                (_, Some((source, _))) => Err(format!("{source} needs --queues")),
                _ => Ok(None),
            };
        };
        let queues = Queues::parse(&spec, strict)
            .map_err(|e| format!("invalid value {spec:?} for {source}: {}", reason(e)))?;
        match limits {
            None => Ok(Some(queues)),
            Some((source, limits)) => queues
                .parse_limits(&limits)
                .map(Some)
                .map_err(|e| format!("invalid value {limits:?} for {source}: {}", reason(e))),
        }
    }

    /// `--queue-partitions QUEUE=N,…`.
    fn partitions(&self) -> Result<Vec<(String, usize)>, String> {
        let Some((source, spec)) = self.raw("queue-partitions") else {
            return Ok(Vec::new());
        };
        let bad = |why: String| format!("invalid value {spec:?} for {source}: {why}");
        let mut out: Vec<(String, usize)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (queue, n) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not QUEUE=N")))?;
            let n: usize = n
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "{n:?} is not a number of partitions from 1 to 1024"
                    ))
                })?;
            afterward::Queues::parse(queue.trim(), true).map_err(|e| bad(e.to_string()))?;
            if out.iter().any(|(q, _)| q == queue.trim()) {
                return Err(bad(format!("queue {queue:?} given twice")));
            }
            out.push((queue.trim().to_owned(), n));
        }
        Ok(out)
    }

    fn redis_url(&self, required: bool) -> Result<Option<RedisTarget>, String> {
        let file = |name: &'static str| self.raw(name).map(|(_, path)| PathBuf::from(path));
        let url = match self.raw("redis-url") {
            Some((source, _)) if cfg!(not(feature = "redis")) => {
                return Err(format!(
                    "{source}: this afterward was built without the feature `redis`"
                ))
            }
            Some((_, url)) => url,
            None if required => {
                return Err("--redis-url (or AFTERWARD_REDIS_URL) is required".into())
            }
            None => {
                if let Some((source, _)) = REDIS_TLS_OPTIONS.iter().find_map(|o| self.raw(o.name)) {
                    return Err(format!(
                        "{source} needs --redis-url (or AFTERWARD_REDIS_URL)"
                    ));
                }
                return Ok(None);
            }
        };
        let client_cert = match (file("redis-client-cert"), file("redis-client-key")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err("--redis-client-cert needs --redis-client-key".into()),
            (None, Some(_)) => return Err("--redis-client-key needs --redis-client-cert".into()),
        };
        Ok(Some(RedisTarget {
            url,
            ca_file: file("redis-ca-file"),
            client_cert,
        }))
    }
}

/// Parses `args` (without the program name), reading missing options from
/// `env`. `Err` is a usage error message.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let sub = args.first().and_then(|a| a.to_str()).map(str::to_owned);
    match sub.as_deref() {
        Some("worker") => {
            args.remove(0);
            parse_worker(args, &env)
        }
        Some("dashboard") => {
            args.remove(0);
            parse_dashboard(args, &env)
        }
        Some("jobs") => {
            args.remove(0);
            parse_jobs(args, &env)
        }
        _ => parse_serve(args, &env),
    }
}

fn parse_worker(
    args: Vec<OsString>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let Given { given, .. } = match read(args, WORKER_OPTIONS, false)? {
        Ok(given) => given,
        Err(command) => return Ok(command),
    };
    let options = Resolver { given: &given, env };
    Ok(Command::Worker(WorkerArgs {
        queue_partitions: options.partitions()?,
        redis: options.redis_url(true)?.unwrap_or_default(),
        queues: options.queues()?,
        concurrency: options.count("concurrency")?,
        prefetch: options.count("prefetch")?,
        log_file: options
            .raw("log-file")
            .map_or_else(|| PathBuf::from("log.txt"), |(_, v)| v.into()),
        visibility_timeout: options.seconds(
            "visibility-timeout",
            Duration::from_secs(60),
            false,
        )?,
        job_timeout: options.seconds("job-timeout", Duration::from_secs(30), false)?,
        job_backoff: options.job_backoff()?,
        shutdown_timeout: options.seconds("shutdown-timeout", Duration::from_secs(30), true)?,
        log_buffer_lines: options
            .count("log-buffer-lines")?
            .unwrap_or(LOG_BUFFER_LINES),
        metrics_address: match options.raw("metrics-address") {
            None => None,
            Some((source, value)) => match value.to_socket_addrs() {
                Ok(_) => Some(value),
                Err(e) => {
                    return Err(format!(
                        "invalid value {value:?} for {source}: not an address to listen on ({e})"
                    ))
                }
            },
        },
    }))
}

fn parse_jobs(
    args: Vec<OsString>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let Given { given, positional } = match read(args, JOBS_OPTIONS, true)? {
        Ok(given) => given,
        Err(command) => return Ok(command),
    };
    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    // Flags only (not the environment): they say what to do, not where.
    let flag = |name: &str| {
        given
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    let all = flag("all").is_some();
    let queue = flag("queue");
    let action = match (words.as_slice(), all) {
        (["pending"], false) => JobsAction::Pending,
        (["queues"], false) => JobsAction::Queues,
        (["dead"], false) => JobsAction::Dead,
        (["requeue", id], false) => JobsAction::Requeue((*id).to_owned()),
        (["requeue"], true) => JobsAction::RequeueAll(queue.clone()),
        (["discard", id], false) => JobsAction::Discard((*id).to_owned()),
        (["cancel", id], false) => JobsAction::Cancel((*id).to_owned()),
        (["schedules"], false) => JobsAction::Schedules,
        (["pause", name], false) => JobsAction::Pause((*name).to_owned(), true),
        (["resume", name], false) => JobsAction::Pause((*name).to_owned(), false),
        (_, true) => {
            return Err("--all goes with `requeue` alone: afterward jobs requeue --all [--queue NAME]".into())
        }
        _ => {
            return Err(format!(
                "`afterward jobs` takes pending, queues, dead, requeue ID, requeue --all [--queue NAME], discard ID, cancel ID, schedules, pause NAME or resume NAME, not {:?}",
                words.join(" ")
            ))
        }
    };
    if queue.is_some() && !matches!(action, JobsAction::RequeueAll(_)) {
        return Err("--queue goes with `requeue --all` only".into());
    }
    let options = Resolver { given: &given, env };
    let redis = options.redis_url(true)?.unwrap_or_default();
    Ok(Command::Jobs(JobsArgs { redis, action }))
}

fn parse_dashboard(
    args: Vec<OsString>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let Given { given, .. } = match read(args, DASHBOARD_OPTIONS, false)? {
        Ok(given) => given,
        Err(command) => return Ok(command),
    };
    let options = Resolver { given: &given, env };
    let redis = options.redis_url(true)?.unwrap_or_default();
    let address = options
        .raw("address")
        .map_or_else(|| "127.0.0.1:8001".to_owned(), |(_, a)| a);
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    let dashboard = dashboard_args(&options, true, host)?.unwrap_or(DashboardArgs {
        token: None,
        actions: false,
    });
    Ok(Command::Dashboard(DashboardCommand {
        redis,
        address,
        dashboard,
    }))
}

fn parse_serve(
    args: Vec<OsString>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let Given { given, .. } = match read(args, OPTIONS, false)? {
        Ok(given) => given,
        Err(command) => return Ok(command),
    };
    let options = Resolver { given: &given, env };
    let on_full = options.choice(
        "on-full",
        &[
            ("block", OnFull::Block),
            ("caller-runs", OnFull::CallerRuns),
            ("shed", OnFull::Shed),
        ],
        OnFull::Block,
    )?;
    let redis_mode = options.choice(
        "redis-mode",
        &[("send", RedisMode::Send), ("spill", RedisMode::Spill)],
        RedisMode::Send,
    )?;
    let engine = match options.raw("engine") {
        None => Engine::default(),
        Some((source, value)) => value
            .trim()
            .parse()
            .map_err(|e| format!("invalid value {value:?} for {source}: {e}"))?,
    };
    let (host, host_source) = match options.raw("host") {
        Some((source, value)) => (value, source),
        None => ("127.0.0.1".to_owned(), String::new()),
    };
    let port = options
        .typed("port", "a port number (0 to 65535)")?
        .unwrap_or(8000);
    let address = socket_address(&host, port);
    if let Err(e) = address.to_socket_addrs() {
        return Err(format!(
            "invalid value {host:?} for {host_source}: not an address to listen on ({e})"
        ));
    }
    let dashboard = dashboard_args(&options, options.switch("dashboard")?, &host)?;
    Ok(Command::Serve(Args {
        host,
        port,
        engine,
        workers: options.count("workers")?,
        background_workers: options.count("background-workers")?,
        queue_capacity: options
            .count("queue-capacity")?
            .unwrap_or(afterward::DEFAULT_QUEUE_CAPACITY),
        on_full,
        max_body_bytes: options
            .typed("max-body-bytes", "a number of bytes")?
            .unwrap_or(afterward::DEFAULT_MAX_BODY_BYTES),
        body_timeout: options.seconds("body-timeout", Duration::from_secs(30), false)?,
        min_body_rate: options
            .typed("min-body-rate", "a number of bytes per second")?
            .unwrap_or(1024),
        max_body_buffer_bytes: options
            .typed("max-body-buffer-bytes", "a number of bytes")?
            .unwrap_or(64 * 1024 * 1024),
        max_pending_requests: options.count("max-pending-requests")?.unwrap_or(4096),
        queue_timeout: options.seconds("queue-timeout", Duration::from_secs(10), false)?,
        log_buffer_lines: options
            .count("log-buffer-lines")?
            .unwrap_or(LOG_BUFFER_LINES),
        shutdown_timeout: options.seconds("shutdown-timeout", Duration::from_secs(30), true)?,
        job_max_attempts: options.job_max_attempts()?,
        job_backoff: options.job_backoff()?,
        job_timeout: options.seconds("job-timeout", Duration::from_secs(30), false)?,
        job_payload_bytes: options
            .typed("job-payload-bytes", "a number of bytes")?
            .unwrap_or(afterward::DEFAULT_STATUS_PAYLOAD_BYTES),
        log_file: options
            .raw("log-file")
            .map_or_else(|| PathBuf::from("log.txt"), |(_, v)| v.into()),
        notify_delay: Duration::from_millis(
            options
                .typed("notify-delay-ms", "a number of milliseconds")?
                .unwrap_or(0),
        ),
        redis_mode,
        dashboard,
        heartbeat: match options.raw("heartbeat") {
            None => None,
            Some((source, spec)) => Some(
                afterward::Schedule::parse(&spec)
                    .map_err(|e| format!("invalid value {spec:?} for {source}: {e}"))?,
            ),
        },
        queues: match (options.queues()?, options.raw("redis-url")) {
            // The demo's jobs run in `default`: in this process, it must be served.
            (Some(queues), None) if !queues.serves(afterward::DEFAULT_QUEUE) => {
                let (source, spec) = options.raw("queues").unwrap_or_default();
                return Err(format!(
                    "invalid value {spec:?} for {source}: the demo's jobs run in queue `default`, which it leaves out (add it, or send the jobs to Redis with --redis-url)"
                ));
            }
            (queues, _) => queues,
        },
        redis_wait_replicas: options
            .typed("redis-wait-replicas", "a number of replicas")?
            .unwrap_or(0),
        queue_partitions: options.partitions()?,
        redis: match (
            options.redis_url(false)?,
            options
                .raw("redis-mode")
                .or_else(|| options.raw("redis-wait-replicas"))
                .or_else(|| options.raw("queue-partitions")),
        ) {
            (None, Some((source, _))) => {
                return Err(format!(
                    "{source} needs --redis-url (or AFTERWARD_REDIS_URL)"
                ))
            }
            (url, _) => url,
        },
    }))
}

/// What a configuration error says, without its kind.
fn reason(error: afterward::Error) -> String {
    match error {
        afterward::Error::Config(reason) => reason,
        other => other.to_string(),
    }
}

/// Log lines queued for stderr by default.
pub const LOG_BUFFER_LINES: usize = 8192;

/// `host:port`, with brackets around a bare IPv6 address: `[::1]:8000`.
pub fn socket_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `AFTERWARD_` and the option's name in upper case, `-` as `_`.
fn env_var(name: &str) -> String {
    format!("AFTERWARD_{}", name.to_uppercase().replace('-', "_"))
}

/// The `--help` text.
pub fn help() -> String {
    let mut text = String::from(
        "afterward: an HTTP server whose handlers answer at once and leave slow work to background tasks.\n\n\
         Usage: afterward [OPTIONS]                          serve the demo app\n       \
         afterward worker --redis-url URL [OPTIONS]    run the demo's jobs from Redis\n       \
         afterward dashboard --redis-url URL [--address HOST:PORT] [--dashboard-token T] [--dashboard-actions]\n       \
         afterward jobs --redis-url URL pending|queues|dead|requeue ID|requeue --all [--queue NAME]|discard ID|cancel ID|schedules|pause NAME|resume NAME\n\n\
         Options (each also read from its environment variable):\n",
    );
    let list = |text: &mut String, table: &[Opt]| {
        for opt in table {
            let flag = if opt.value.is_empty() {
                format!("--{}", opt.name)
            } else {
                format!("--{} <{}>", opt.name, opt.value)
            };
            let _ = writeln!(text, "  {flag:<30} {}", opt.help);
            let _ = writeln!(
                text,
                "  {:<30} [env: {}] [default: {}]",
                "",
                env_var(opt.name),
                opt.default
            );
        }
    };
    list(&mut text, OPTIONS);
    text.push_str(
        "  -h, --help                     print this help\n  \
         -V, --version                  print the version\n\n\
         afterward worker options (the Redis features need a build with the feature `redis`):\n",
    );
    list(&mut text, WORKER_OPTIONS);
    text.push_str(
        "\nWherever --redis-url goes (the server, worker, jobs, dashboard): rediss:// for TLS,\n\
         redis://USER:PASSWORD@HOST:PORT/DB for an ACL user, redis+sentinel://[USER:PASSWORD@]HOST[:PORT],…/SERVICE[/DB]\n\
         to follow the primary Sentinel names. A Redis that cannot be reached or refuses us at start is exit status 2.\n",
    );
    list(&mut text, REDIS_TLS_OPTIONS);
    text.push_str(
        "\nafterward jobs: pending prints the counts of jobs ready, pending (read, not acknowledged),\n\
         delayed and dead, as JSON; queues prints the same per queue, one JSON object per line;\n\
         dead prints the dead letters, one JSON object per line;\n\
         requeue ID sends dead job ID back to run, with its attempts reset; requeue --all every dead job\n\
         (of --queue NAME only, if given); discard ID removes dead job ID's letter for good;\n\
         cancel ID cancels job ID (cancelled: it will not start; cancelling: it runs, and is told);\n\
         schedules prints each schedule (name, spec, last_run_ms, next_run_ms, paused), one JSON line each;\n\
         pause NAME and resume NAME pause and resume a schedule on every server.\n\n\
         Routes: POST /send-notification/{email}?q=, POST /files, GET /files/{id}, POST /flaky, GET /jobs/{id},\n\
         DELETE /jobs/{id} (cancel); with --dashboard, the jobs dashboard at /afterward.\n\
         GET /health, GET /metrics.\n\
         The file store keeps the results of the last 1000 uploads (oldest evicted; with --redis-url, in Redis for a day).\n\
         Logs go to stderr; RUST_LOG sets the level (default info).\n\
         SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once, with status 130.\n\
         Exit status: 0 after a clean shutdown, 1 if tasks were left unrun or on a start-up error, 2 on a usage error\n\
         (an invalid flag or variable, an address that does not resolve, a Redis that cannot be reached or refuses\n\
         the credentials or certificates at start), 130 after a second signal.\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args.iter().map(OsString::from), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn serve(args: &[&str], env: &[(&str, &str)]) -> Args {
        match parse_with(args, env) {
            Ok(Command::Serve(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_without_flags_or_environment() {
        let args = serve(&[], &[]);
        assert_eq!((args.host.as_str(), args.port), ("127.0.0.1", 8000));
        assert_eq!(args.on_full, OnFull::Block);
        assert_eq!(args.redis_mode, RedisMode::Send);
        assert_eq!(args.max_body_bytes, 1024 * 1024);
        assert_eq!(args.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(args.log_file, PathBuf::from("log.txt"));
        assert_eq!((args.workers, args.notify_delay), (None, Duration::ZERO));
        assert_eq!(args.engine, Engine::Builtin);
    }

    #[test]
    fn the_engine_is_named_by_flag_or_variable() {
        let args = serve(&["--engine", "builtin"], &[("AFTERWARD_ENGINE", "nope")]);
        assert_eq!(args.engine, Engine::Builtin);
        let tiny = parse_with(&[], &[("AFTERWARD_ENGINE", "tiny-http")]);
        #[cfg(feature = "tiny-http")]
        assert!(matches!(tiny, Ok(Command::Serve(args)) if args.engine == Engine::TinyHttp));
        #[cfg(not(feature = "tiny-http"))]
        assert!(tiny.unwrap_err().contains("feature `tiny-http`"));
    }

    #[test]
    fn flags_beat_environment_beats_defaults() {
        let env = [
            ("AFTERWARD_PORT", "9000"),
            ("AFTERWARD_ON_FULL", "shed"),
            ("AFTERWARD_WORKERS", "3"),
        ];
        let args = serve(
            &[
                "--port",
                "0",
                "--queue-capacity=7",
                "--shutdown-timeout",
                "0.5",
            ],
            &env,
        );
        assert_eq!(args.port, 0);
        assert_eq!(args.on_full, OnFull::Shed);
        assert_eq!(args.workers, Some(3));
        assert_eq!(args.queue_capacity, 7);
        assert_eq!(args.shutdown_timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_are_usage_errors_naming_their_source() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (&["--port", "http"], &[], "--port"),
            (&["--port", "70000"], &[], "--port"),
            (&[], &[("AFTERWARD_PORT", "x")], "AFTERWARD_PORT"),
            (&["--on-full", "drop"], &[], "caller-runs"),
            (&[], &[("AFTERWARD_REDIS_MODE", "later")], "send or spill"),
            (&["--redis-mode", "spill"], &[], "needs --redis-url"),
            (&["--redis-wait-replicas", "1"], &[], "needs --redis-url"),
            (&["--queue-partitions", "hot=4"], &[], "needs --redis-url"),
            (
                &[
                    "worker",
                    "--redis-url",
                    "redis://x",
                    "--queue-partitions",
                    "hot",
                ],
                &[],
                "not QUEUE=N",
            ),
            (
                &[
                    "worker",
                    "--redis-url",
                    "redis://x",
                    "--queue-partitions",
                    "hot=0",
                ],
                &[],
                "--queue-partitions",
            ),
            (
                &[
                    "worker",
                    "--redis-url",
                    "redis://x",
                    "--queue-partitions",
                    "h t=2",
                ],
                &[],
                "invalid queue name",
            ),
            (
                &["--redis-url", "redis://x", "--redis-wait-replicas", "one"],
                &[],
                "--redis-wait-replicas",
            ),
            (&["--redis-ca-file", "ca.pem"], &[], "needs --redis-url"),
            (&["--engine", "hyper"], &[], "unknown engine `hyper`"),
            (&["--workers", "0"], &[], "at least 1"),
            (&[], &[("AFTERWARD_WORKERS", "0")], "AFTERWARD_WORKERS"),
            (&["--host", "not-a-host.invalid"], &[], "--host"),
            (
                &[],
                &[("AFTERWARD_HOST", "not-a-host.invalid")],
                "AFTERWARD_HOST",
            ),
            (&["--shutdown-timeout", "-1"], &[], "--shutdown-timeout"),
            (&["--job-timeout", "0"], &[], "--job-timeout"),
            (&["worker"], &[], "--redis-url"),
            (&["worker", "--port", "1"], &[], "unknown option --port"),
            (
                &["jobs", "--redis-url", "redis://x", "drop"],
                &[],
                "pending, queues, dead, requeue ID",
            ),
            (
                &["jobs", "--redis-url", "redis://x", "requeue"],
                &[],
                "pending, queues, dead, requeue ID",
            ),
            (&["--nope"], &[], "unknown option --nope"),
            (&["--port"], &[], "missing argument"),
            (&["stray"], &[], "stray"),
        ];
        for (args, env, expected) in cases {
            let error = parse_with(args, env).unwrap_err();
            assert!(error.contains(expected), "{args:?} {env:?}: {error}");
        }
    }

    #[test]
    fn worker_and_jobs_are_subcommands_with_their_own_flags() {
        let env = [("AFTERWARD_REDIS_URL", "redis://127.0.0.1:6379")];
        let worker = parse_with(
            &[
                "worker",
                "--concurrency",
                "3",
                "--prefetch",
                "4",
                "--visibility-timeout",
                "0.5",
            ],
            &env,
        );
        let jobs = parse_with(&["jobs", "requeue", "abc"], &env);
        #[cfg(feature = "redis")]
        {
            let Ok(Command::Worker(worker)) = worker else {
                panic!("{worker:?}")
            };
            assert_eq!(worker.redis.url, "redis://127.0.0.1:6379");
            assert_eq!((worker.concurrency, worker.prefetch), (Some(3), Some(4)));
            assert_eq!(worker.visibility_timeout, Duration::from_millis(500));
            assert_eq!(worker.job_timeout, Duration::from_secs(30));
            assert_eq!(
                jobs,
                Ok(Command::Jobs(JobsArgs {
                    redis: RedisTarget {
                        url: "redis://127.0.0.1:6379".into(),
                        ..RedisTarget::default()
                    },
                    action: JobsAction::Requeue("abc".into())
                }))
            );
            assert_eq!(
                serve(&[], &env).redis.map(|r| r.url).as_deref(),
                Some("redis://127.0.0.1:6379")
            );
            assert_eq!(
                serve(&["--redis-mode", "spill"], &env).redis_mode,
                RedisMode::Spill
            );
        }
        #[cfg(not(feature = "redis"))]
        for parsed in [worker, jobs] {
            assert!(parsed.unwrap_err().contains("feature `redis`"));
        }
    }

    #[test]
    fn queues_come_as_weights_or_a_strict_order_with_limits() {
        let args = serve(
            &["--queues", "default=3,slow=1", "--queue-limit", "slow=1"],
            &[],
        );
        let expected = Queues::weighted([("default", 3), ("slow", 1)]).limit("slow", 1);
        assert_eq!(args.queues, Some(expected));
        let strict = serve(&["--queues", "critical,default", "--strict"], &[]);
        assert_eq!(strict.queues, Some(Queues::strict(["critical", "default"])));
        let from_env = serve(
            &[],
            &[
                ("AFTERWARD_QUEUES", "critical,default"),
                ("AFTERWARD_STRICT", "yes"),
            ],
        );
        assert_eq!(from_env.queues, strict.queues);
        assert_eq!(serve(&[], &[]).queues, None);
        for (args, env, expected) in [
            (
                &["--queues", "a=0,default"][..],
                &[][..],
                "invalid value \"a=0,default\" for --queues",
            ),
            (
                &["--queues", "a=2,default", "--strict"],
                &[],
                "strict order takes no weights",
            ),
            (
                &["--queues", "slow"],
                &[],
                "the demo's jobs run in queue `default`",
            ),
            (
                &["--queues", "default", "--queue-limit", "x"],
                &[],
                "for --queue-limit: queue limit",
            ),
            (
                &["--queues", "default", "--queue-limit", "slow=1"],
                &[],
                "not served",
            ),
            (&["--strict"], &[], "--strict needs --queues"),
            (
                &["--queue-limit", "a=1"],
                &[],
                "--queue-limit needs --queues",
            ),
            (
                &[],
                &[("AFTERWARD_STRICT", "maybe")],
                "for AFTERWARD_STRICT",
            ),
        ] {
            let error = parse_with(args, env).unwrap_err();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }

    #[test]
    fn help_lists_every_flag_and_variable() {
        assert_eq!(parse_with(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(parse_with(&["worker", "--help"], &[]), Ok(Command::Help));
        let text = help();
        for opt in OPTIONS
            .iter()
            .chain(WORKER_OPTIONS)
            .chain(JOBS_OPTIONS)
            .chain(REDIS_TLS_OPTIONS)
        {
            assert!(text.contains(&format!("--{}", opt.name)), "{}", opt.name);
            // `jobs --all` and `--queue` say what to do: flags only.
            if !matches!(opt.name, "all" | "queue") {
                assert!(text.contains(&env_var(opt.name)), "{}", opt.name);
            }
        }
    }
}
