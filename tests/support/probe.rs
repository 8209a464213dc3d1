//! A job that says when it runs, for the queue tests (in-process and over
//! Redis): [`Probe`] logs its start and end under its tag in a [`Log`] (in
//! the app's state), and a held one waits for a permit the test gives.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use afterward::testing::{TestServer, TEST_TIMEOUT};
use afterward::{
    App, BackgroundTasks, HttpError, Job, JobContext, JobOptions, JobResult, Json, Query,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the probes saw: the order jobs started in, how many of each tag
/// ran at once at most and finished; and the permits a held probe waits
/// for (one per job let through).
#[derive(Default)]
pub struct Log {
    pub state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
pub struct LogState {
    pub order: Vec<String>,
    /// When each start came, in the same order.
    pub started: Vec<Instant>,
    running: HashMap<String, usize>,
    most: HashMap<String, usize>,
    done: HashMap<String, usize>,
    permits: HashMap<String, usize>,
}

impl LogState {
    pub fn done(&self, tag: &str) -> usize {
        self.done.get(tag).copied().unwrap_or(0)
    }
    pub fn most(&self, tag: &str) -> usize {
        self.most.get(tag).copied().unwrap_or(0)
    }
}

impl Log {
    /// Waits until `condition` holds (the probes' own signal).
    pub fn wait_until(&self, condition: impl Fn(&LogState) -> bool) -> MutexGuard<'_, LogState> {
        let (state, waited) = self
            .changed
            .wait_timeout_while(self.state.lock().unwrap(), TEST_TIMEOUT, |s| !condition(s))
            .unwrap();
        assert!(!waited.timed_out(), "never happened: {:?}", state.order);
        state
    }

    /// Lets `n` held probes of `tag` through.
    pub fn release(&self, tag: &str, n: usize) {
        *self
            .state
            .lock()
            .unwrap()
            .permits
            .entry(tag.into())
            .or_default() += n;
        self.changed.notify_all();
    }
}

/// A job that logs its start under its tag; a held one waits for a permit
/// of its tag. Its queue is `default` unless the enqueue names another.
#[derive(Serialize, Deserialize)]
pub struct Probe {
    pub tag: String,
    pub held: bool,
}

impl Job for Probe {
    const NAME: &'static str = "probe";
    fn run(self, job: &JobContext) -> JobResult {
        let log = job.state::<Arc<Log>>().expect("the log");
        let mut state = log.state.lock().unwrap();
        state.order.push(self.tag.clone());
        state.started.push(Instant::now());
        let running = state.running.entry(self.tag.clone()).or_default();
        *running += 1;
        let now = *running;
        let most = state.most.entry(self.tag.clone()).or_default();
        *most = (*most).max(now);
        log.changed.notify_all();
        if self.held {
            state = log
                .changed
                .wait_while(state, |s| {
                    s.permits.get(&self.tag).copied().unwrap_or(0) == 0
                })
                .unwrap();
            *state.permits.get_mut(&self.tag).unwrap() -= 1;
        }
        *state.running.get_mut(&self.tag).unwrap() -= 1;
        *state.done.entry(self.tag).or_default() += 1;
        log.changed.notify_all();
        Ok(())
    }
}

/// `POST /probe?tag=T[&queue=Q][&held=true][&unique=K][&delay_ms=D]`: enqueues a probe,
/// answers its id.
#[derive(Deserialize)]
pub struct Enqueue {
    tag: String,
    queue: Option<String>,
    #[serde(default)]
    held: bool,
    /// A uniqueness key.
    unique: Option<String>,
    /// A delay, in milliseconds.
    delay_ms: Option<u64>,
}

pub fn enqueue(tasks: BackgroundTasks, Query(q): Query<Enqueue>) -> Result<Json<Value>, HttpError> {
    let mut options = JobOptions::new();
    if let Some(queue) = q.queue {
        options = options.queue(queue);
    }
    if let Some(key) = q.unique {
        options = options.unique(key);
    }
    if let Some(ms) = q.delay_ms {
        options = options.delay(std::time::Duration::from_millis(ms));
    }
    let probe = Probe {
        tag: q.tag,
        held: q.held,
    };
    let id = tasks.enqueue_with(probe, options)?;
    Ok(Json(json!({"id": id.as_str()})))
}

/// The app of the probes: `Probe`, `POST /probe`, `GET /jobs/{id}`.
pub fn app(log: &Arc<Log>) -> App {
    App::new()
        .state(log.clone())
        .job::<Probe>()
        .post("/probe", enqueue)
        .get("/jobs/{id}", afterward::job_status_handler)
}

/// Posts to `path` (an enqueue answering `{"id"}` with 200): the id.
pub fn post(server: &TestServer, path: &str) -> String {
    let response = server.post(path).send();
    assert_eq!(response.status(), 200, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}

/// A job that runs until it is cancelled, looking every millisecond.
#[derive(Serialize, Deserialize)]
pub struct Patient;

impl Job for Patient {
    const NAME: &'static str = "patient";
    fn run(self, job: &JobContext) -> JobResult {
        let log = job.state::<Arc<Log>>().expect("the log");
        log.state.lock().unwrap().order.push("patient".into());
        log.release("patient", 0); // wakes the test's wait
        while !job.is_cancelled() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err("stopped: cancelled".into())
    }
}

pub fn patient(tasks: BackgroundTasks) -> Result<String, HttpError> {
    Ok(tasks.enqueue(Patient)?.to_string())
}

/// A job that always fails for good, with the markup it carries as error.
#[derive(Serialize, Deserialize)]
pub struct Evil {
    pub note: String,
}

impl afterward::Job for Evil {
    const NAME: &'static str = "evil";
    fn run(self, _: &afterward::JobContext) -> afterward::JobResult {
        Err(afterward::GiveUp::new(self.note).into())
    }
}

pub fn evil(tasks: afterward::BackgroundTasks) -> Result<String, afterward::HttpError> {
    let note = "<img src=x onerror=alert(1)>".to_owned();
    Ok(tasks.enqueue(Evil { note })?.to_string())
}
