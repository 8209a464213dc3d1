//! Job modes for tests, as Celery's eager mode and Laravel's `Queue::fake()`:
//! run jobs at once, before the response, or capture them without running.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTasks, HttpError, Job, JobContext, JobMode, JobResult, Server};
use serde::{Deserialize, Serialize};
use serde_json::json;

static SENT: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn sent(to: &str) -> Vec<String> {
    SENT.lock()
        .unwrap()
        .iter()
        .filter(|s| s.starts_with(to))
        .cloned()
        .collect()
}

/// Fails its first `fail` attempts.
#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
    fail: u32,
}

impl Job for SendEmail {
    const NAME: &'static str = "send_email";
    fn run(self, job: &JobContext) -> JobResult {
        SENT.lock()
            .unwrap()
            .push(format!("{} attempt {}", self.to, job.attempt()));
        if job.attempt() <= self.fail {
            return Err("the mail server is busy".into());
        }
        Ok(())
    }
}

fn app() -> App {
    App::new().job::<SendEmail>().post(
        "/signup/{to}/{fail}",
        |afterward::Path((to, fail)): afterward::Path<(String, u32)>,
         tasks: BackgroundTasks|
         -> Result<String, HttpError> {
            Ok(tasks.enqueue(SendEmail { to, fail })?.to_string())
        },
    )
}

#[test]
fn captured_jobs_are_listed_and_never_run() {
    let builder = Server::builder().job_mode(JobMode::Capture);
    let server = TestServer::with_builder(builder, app());
    let id = server.post("/signup/ada@capture/0").send().text();
    server.wait_idle();
    let captured = server.jobs().captured();
    assert_eq!(captured.len(), 1);
    assert_eq!((&*captured[0].id, &*captured[0].name), (&*id, "send_email"));
    let payload: serde_json::Value = serde_json::from_str(&captured[0].payload).unwrap();
    assert_eq!(payload, json!({"to": "ada@capture", "fail": 0}));
    assert!(sent("ada@capture").is_empty(), "a captured job ran");
    assert_eq!(
        server.stats().jobs_enqueued,
        0,
        "captured jobs are not counted"
    );
}

#[test]
fn eager_jobs_run_every_attempt_before_the_response() {
    // A backoff of a minute: only an attempt run at once could be seen here.
    let builder = Server::builder()
        .job_mode(JobMode::Eager)
        .job_backoff(Duration::from_secs(60));
    let server = TestServer::with_builder(builder, app());
    let id = server.post("/signup/bob@eager/2").send().text();
    assert_eq!(
        sent("bob@eager"),
        [
            "bob@eager attempt 1",
            "bob@eager attempt 2",
            "bob@eager attempt 3"
        ]
    );
    let status = server.jobs().status(&id).unwrap();
    assert_eq!((status.state.as_str(), status.attempts), ("done", 3));
    let stats = server.stats();
    assert_eq!(
        (stats.jobs_succeeded, stats.jobs_retried, stats.jobs_delayed),
        (1, 2, 0)
    );
}
