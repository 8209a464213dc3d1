//! A chain of follow-up jobs, for the results tests (in-process and over
//! Redis): [`Step`] keeps a result, enqueues the next step (in the `next`
//! queue) and fails its first attempts as told; each run is logged in the
//! app's [`Runs`].

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use afterward::testing::TestServer;
use afterward::testing::TEST_TIMEOUT;
use afterward::{App, BackgroundTasks, HttpError, Job, JobContext, JobResult, Json, Query};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The runs seen: (step, attempt), in order.
#[derive(Default)]
pub struct Runs {
    runs: Mutex<Vec<(u32, u32)>>,
    changed: Condvar,
}

impl Runs {
    /// Waits until `condition` holds for the runs (the jobs' own signal).
    pub fn wait_until(
        &self,
        condition: impl Fn(&[(u32, u32)]) -> bool,
    ) -> MutexGuard<'_, Vec<(u32, u32)>> {
        let (runs, waited) = self
            .changed
            .wait_timeout_while(self.runs.lock().unwrap(), TEST_TIMEOUT, |r| !condition(r))
            .unwrap();
        assert!(!waited.timed_out(), "never happened: {:?}", *runs);
        runs
    }
}

/// Step `left` of a chain: keeps `{"left", "attempt"}` as its result and,
/// while `left > 0`, enqueues step `left - 1` in the queue `next`; its first
/// `fail_first` attempts then fail (their follow-ups must not go out).
#[derive(Serialize, Deserialize)]
pub struct Step {
    pub left: u32,
    #[serde(default)]
    pub fail_first: u32,
}

impl Job for Step {
    const NAME: &'static str = "step";
    fn run(self, job: &JobContext) -> JobResult {
        let runs = job.state::<Arc<Runs>>().expect("the runs");
        runs.runs.lock().unwrap().push((self.left, job.attempt()));
        runs.changed.notify_all();
        job.set_result(&json!({"left": self.left, "attempt": job.attempt()}))?;
        if self.left > 0 {
            let next = Step {
                left: self.left - 1,
                fail_first: 0,
            };
            job.enqueue_with(next, afterward::JobOptions::new().queue("next"))?;
        }
        if job.attempt() <= self.fail_first {
            return Err(format!("attempt {} fails on purpose", job.attempt()).into());
        }
        Ok(())
    }
}

/// `POST /chain?left=N&fail_first=K`: enqueues step N, answers its id.
pub fn start(tasks: BackgroundTasks, Query(step): Query<Step>) -> Result<Json<Value>, HttpError> {
    let id = tasks.enqueue(step)?;
    Ok(Json(json!({"id": id.to_string()})))
}

/// The app: `Step`, `POST /chain`, and `GET /jobs/{id}`.
pub fn app(runs: &Arc<Runs>) -> App {
    App::new()
        .state(runs.clone())
        .job::<Step>()
        .post("/chain", start)
        .get("/jobs/{id}", afterward::job_status_handler)
}

/// Starts a chain (`query`: `left=N[&fail_first=K]`); returns its head's id.
pub fn post_chain(server: &TestServer, query: &str) -> String {
    let response = server.post(&format!("/chain?{query}")).send();
    assert_eq!(response.status(), 200, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}
