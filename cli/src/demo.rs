//! The demo app the binary serves: notifications (closure tasks), file
//! uploads counted by a job (202 Accepted), a flaky job to watch retries,
//! job statuses, health and metrics.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::{
    App, BackgroundTasks, Dependency, Depends, GiveUp, HttpError, IntoResponse, Job, JobContext,
    JobOptions, JobResult, Json, Missed, Path, Query, RawBody, Request, Response, Schedule, State,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How many upload results the store keeps; the oldest is evicted first.
pub const MAX_FILES: usize = 1000;

/// The demo's settings, shared by its handlers.
#[derive(Clone)]
pub struct Notifier {
    log_file: Arc<PathBuf>,
    delay: Duration,
}

impl Notifier {
    pub fn new(log_file: PathBuf, delay: Duration) -> Notifier {
        Notifier {
            log_file: Arc::new(log_file),
            delay,
        }
    }

    /// Appends `line` to the log file, now.
    fn append(&self, line: &str) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*self.log_file)?;
        file.write_all(line.as_bytes())
    }

    /// The background task: wait (the slow mail server), then append `line`.
    fn task(&self, line: String) -> impl FnOnce() -> std::io::Result<()> + Send + 'static {
        let notifier = self.clone();
        move || {
            if !notifier.delay.is_zero() {
                std::thread::sleep(notifier.delay);
            }
            notifier.append(&line)
        }
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`), so that a
/// value from a request (a `%0A` in the email, say) can never start a line of
/// its own in the log file.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// A response that changes over time: no cache may keep it.
fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.headers_mut().insert("Cache-Control", "no-store");
    response
}

/// FastAPI's `get_query` dependency: logs the query, if any, in the background.
#[derive(Clone)]
struct GetQuery;

impl Dependency for GetQuery {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let tasks: BackgroundTasks = request.extract()?;
        let State(notifier): State<Notifier> = request.extract()?;
        let Query(mut params): Query<HashMap<String, String>> = request.extract()?;
        if let Some(q) = params.remove("q").filter(|q| !q.is_empty()) {
            let line = format!("found query: {}\n", one_line(&q));
            tasks.add(
                afterward::BackgroundTask::new(notifier.task(line)).named("write_log(found query)"),
            );
        }
        Ok(GetQuery)
    }
}

fn send_notification(
    Path(email): Path<String>,
    Depends(GetQuery): Depends<GetQuery>,
    State(notifier): State<Notifier>,
    tasks: BackgroundTasks,
) -> Json<Value> {
    let line = format!("message to {}\n", one_line(&email));
    tasks.add(afterward::BackgroundTask::new(notifier.task(line)).named("write_log(message)"));
    Json(json!({"message": "Message sent"}))
}

/// What the store knows of one upload.
#[derive(Clone)]
enum FileStatus {
    Queued,
    Running,
    Done {
        bytes: usize,
        lines: usize,
        words: usize,
    },
    Failed(String),
}

impl FileStatus {
    /// The status as `GET /files/{id}` shows it, without the id.
    fn to_json(&self) -> Value {
        match self {
            FileStatus::Queued => json!({"status": "queued"}),
            FileStatus::Running => json!({"status": "running"}),
            FileStatus::Done {
                bytes,
                lines,
                words,
            } => json!({
                "status": "done",
                "result": {"bytes": bytes, "lines": lines, "words": words},
            }),
            FileStatus::Failed(error) => json!({"status": "failed", "error": error}),
        }
    }

    /// Reads [`to_json`](Self::to_json) back (from Redis).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn from_json(value: &Value) -> Option<FileStatus> {
        let count = |key: &str| value["result"][key].as_u64().map(|n| n as usize);
        Some(match value["status"].as_str()? {
            "queued" => FileStatus::Queued,
            "running" => FileStatus::Running,
            "done" => FileStatus::Done {
                bytes: count("bytes")?,
                lines: count("lines")?,
                words: count("words")?,
            },
            "failed" => FileStatus::Failed(value["error"].as_str()?.to_owned()),
            _ => return None,
        })
    }
}

/// Upload results, bounded: at most [`MAX_FILES`], oldest evicted first.
/// With `--redis-url` they live in Redis instead, where the worker that
/// counts the words writes them, for a day.
#[derive(Clone, Default)]
pub struct Files {
    inner: Arc<Mutex<FileStore>>,
    #[cfg(feature = "redis")]
    redis: Option<Arc<RedisFiles>>,
}

/// Upload results in Redis: `{prefix}:file:{id}`, one JSON value with a TTL.
#[cfg(feature = "redis")]
struct RedisFiles(afterward::redis::LazyConnection);

#[cfg(feature = "redis")]
impl RedisFiles {
    const TTL_MS: u64 = 24 * 3600 * 1000;

    fn key(&self, id: &str) -> String {
        format!("{}:file:{id}", self.0.config().prefix)
    }

    fn set(&self, id: &str, status: &FileStatus) {
        let mut set = afterward::redis::client::cmd("SET");
        set.arg(self.key(id))
            .arg(status.to_json().to_string())
            .arg("PX")
            .arg(Self::TTL_MS);
        if let Err(e) = self.0.call(|con| set.query::<()>(con)) {
            log::warn!("upload {id}: its status could not be written to Redis: {e}");
        }
    }

    fn get(&self, id: &str) -> Result<Option<FileStatus>, String> {
        let mut get = afterward::redis::client::cmd("GET");
        get.arg(self.key(id));
        let text: Option<String> = self.0.call(|con| get.query(con))?;
        Ok(text
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| FileStatus::from_json(&v)))
    }
}

#[derive(Default)]
struct FileStore {
    by_id: HashMap<String, FileStatus>,
    order: VecDeque<String>,
}

impl Files {
    /// Results kept in Redis (`--redis-url`), shared by the web server and
    /// the workers.
    #[cfg(feature = "redis")]
    pub fn in_redis(config: afterward::redis::RedisConfig) -> Files {
        Files {
            redis: Some(Arc::new(RedisFiles(afterward::redis::LazyConnection::new(
                config,
            )))),
            ..Files::default()
        }
    }

    fn insert(&self, id: &str) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return redis.set(id, &FileStatus::Queued);
        }
        let mut store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while store.order.len() >= MAX_FILES {
            if let Some(oldest) = store.order.pop_front() {
                store.by_id.remove(&oldest);
            }
        }
        store.by_id.insert(id.to_owned(), FileStatus::Queued);
        store.order.push_back(id.to_owned());
    }

    /// Updates an entry that has not been evicted meanwhile.
    fn set(&self, id: &str, status: FileStatus) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return redis.set(id, &status);
        }
        let mut store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = store.by_id.get_mut(id) {
            *entry = status;
        }
    }

    /// `Err` when Redis cannot be asked.
    fn get(&self, id: &str) -> Result<Option<FileStatus>, String> {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return redis.get(id);
        }
        let store = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(store.by_id.get(id).cloned())
    }
}

/// The word count of an upload, as a job: `GET /jobs/{id}` follows it, and
/// its id is the upload's.
#[derive(Serialize, Deserialize)]
struct CountWords {
    /// The upload, when it is UTF-8 text.
    text: Option<String>,
    bytes: usize,
    /// Why it is not text, otherwise.
    not_text: Option<String>,
}

impl Job for CountWords {
    const NAME: &'static str = "count_words";

    fn run(self, job: &JobContext) -> JobResult {
        let files = job.state::<Files>().ok_or("the app has no file store")?;
        let id = job.id().as_str();
        files.set(id, FileStatus::Running);
        let Some(text) = self.text else {
            let reason = self.not_text.unwrap_or_default();
            files.set(id, FileStatus::Failed(reason.clone()));
            // No retry makes a file text.
            return Err(GiveUp::new(reason).into());
        };
        files.set(
            id,
            FileStatus::Done {
                bytes: self.bytes,
                lines: text.matches('\n').count(),
                words: text.split_whitespace().count(),
            },
        );
        Ok(())
    }
}

fn upload(RawBody(body): RawBody, State(files): State<Files>, tasks: BackgroundTasks) -> Response {
    let bytes = body.len();
    let job = match String::from_utf8(body) {
        Ok(text) => CountWords {
            text: Some(text),
            bytes,
            not_text: None,
        },
        Err(e) => CountWords {
            text: None,
            bytes,
            not_text: Some(format!("the file is not UTF-8 text: {}", e.utf8_error())),
        },
    };
    let id = match tasks.enqueue(job) {
        Ok(id) => id.to_string(),
        Err(e) => return HttpError::from(e).into_response(),
    };
    files.insert(&id);
    Response::json(&json!({"id": id, "status": "queued"}))
        .with_status(202)
        .with_header("Location", format!("/files/{id}"))
}

/// A job that sleeps `sleep_ms` on each attempt and fails its first `fail`
/// attempts, then succeeds: retries and backoff, to watch. On success it
/// appends `flaky ID done` to the log file (of the server, or of the worker
/// that ran it).
#[derive(Serialize, Deserialize)]
struct Flaky {
    fail: u32,
    sleep_ms: u64,
}

impl Job for Flaky {
    const NAME: &'static str = "flaky";

    fn run(self, job: &JobContext) -> JobResult {
        // The job's "work": it looks for a cancel every 10 ms.
        let until = std::time::Instant::now() + Duration::from_millis(self.sleep_ms);
        while std::time::Instant::now() < until {
            if job.is_cancelled() {
                return Err("cancelled while it ran".into());
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
        if job.attempt() <= self.fail {
            return Err(format!("attempt {} failed on purpose", job.attempt()).into());
        }
        let notifier = job.state::<Notifier>().ok_or("the app has no notifier")?;
        notifier.append(&format!("flaky {} done\n", job.id()))?;
        job.set_result(&serde_json::json!({ "attempt": job.attempt() }))?;
        Ok(())
    }
}

/// The periodic job of `--heartbeat`: one line per tick, in the log file
/// of the process that runs it.
#[derive(Serialize, Deserialize)]
struct Heartbeat {
    /// The tick's time, in Unix milliseconds.
    tick: u64,
}

impl Job for Heartbeat {
    const NAME: &'static str = "heartbeat";

    fn run(self, job: &JobContext) -> JobResult {
        let notifier = job.state::<Notifier>().ok_or("the app has no notifier")?;
        Ok(notifier.append(&format!("heartbeat {}\n", self.tick))?)
    }
}

#[derive(Deserialize)]
struct FlakyParams {
    #[serde(default)]
    fail: u32,
    #[serde(default)]
    sleep_ms: u64,
    /// The queue to wait in (`default` unless given).
    queue: Option<String>,
    /// A uniqueness key: while a job of this key has not ended, the same id.
    unique: Option<String>,
}

fn flaky(Query(params): Query<FlakyParams>, tasks: BackgroundTasks) -> Result<Response, HttpError> {
    let mut options = JobOptions::new();
    if let Some(queue) = params.queue {
        options = options.queue(queue);
    }
    if let Some(key) = params.unique {
        options = options.unique(key);
    }
    let job = Flaky {
        fail: params.fail,
        sleep_ms: params.sleep_ms,
    };
    let id = tasks.enqueue_with(job, options)?;
    Ok(
        Response::json(&json!({"id": id.as_str(), "status": "queued"}))
            .with_status(202)
            .with_header("Location", format!("/jobs/{id}")),
    )
}

fn file_status(Path(id): Path<String>, State(files): State<Files>) -> Response {
    let status = match files.get(&id) {
        Ok(Some(status)) => status,
        Ok(None) => return no_store(HttpError::new(404, format!("no file with id {id}"))),
        Err(e) => {
            log::warn!("upload {id}: its status could not be read: {e}");
            return no_store(HttpError::new(
                503,
                "upload statuses are unavailable, try again later",
            ));
        }
    };
    let mut body = status.to_json();
    body["id"] = id.into();
    no_store(Json(body))
}

/// The demo app, keeping upload results in `files`.
pub fn app(notifier: Notifier, files: Files, heartbeat: Option<Schedule>) -> App {
    let app = match heartbeat {
        // A late server still fires the latest tick (once: its claim).
        Some(schedule) => App::new().schedule(
            schedule.named("heartbeat").missed(Missed::RunOnce),
            |tick| Heartbeat { tick },
        ),
        None => App::new(),
    };
    app.state(notifier)
        .state(files)
        .job::<CountWords>()
        .job::<Flaky>()
        .job::<Heartbeat>()
        .post("/send-notification/{email}", send_notification)
        .post("/files", upload)
        .get("/files/{id}", file_status)
        .post("/flaky", flaky)
        .get("/jobs/{id}", afterward::job_status_handler)
        .delete("/jobs/{id}", afterward::job_cancel_handler)
        .get("/health", || no_store(Json(json!({"status": "ok"}))))
        .get("/metrics", afterward::metrics_handler)
}
