//! Named queues in-process (`ServerBuilder::queues`): a job waits in its
//! queue from its dispatch and runs when the queues' order, weights and
//! limits give it a turn; a queue not served is refused at enqueue; jobs
//! still waiting at a shutdown's deadline are reported and counted.

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{
    App, BackgroundTasks, EnqueueError, Job, JobContext, JobOptions, JobResult, Query, Queues,
    Server,
};
use probe::{enqueue, post, Log, Probe};
use serde::{Deserialize, Serialize};
use support::TEST_TIMEOUT;

/// A job of its own queue, `reports`.
#[derive(Serialize, Deserialize)]
struct Report;

impl Job for Report {
    const NAME: &'static str = "report";
    const QUEUE: &'static str = "reports";
    fn run(self, _: &JobContext) -> JobResult {
        Ok(())
    }
}

/// Enqueues to a queue named in the query, answering the enqueue's error.
fn try_queue(tasks: BackgroundTasks, Query(q): Query<HashMap<String, String>>) -> (u16, String) {
    let probe = Probe {
        tag: "x".into(),
        held: false,
    };
    match tasks.enqueue_with(probe, JobOptions::new().queue(q["queue"].clone())) {
        Ok(_) => (200, "queued".into()),
        Err(error @ EnqueueError::Queue { .. }) => (400, error.to_string()),
        Err(error) => (500, error.to_string()),
    }
}

fn app(log: &Arc<Log>) -> App {
    App::new()
        .state(log.clone())
        .job::<Probe>()
        .job::<Report>()
        .post("/probe", enqueue)
        .post("/try", try_queue)
        .get("/jobs/{id}", afterward::job_status_handler)
}

fn server(queues: Queues, background_workers: usize) -> (TestServer, Arc<Log>) {
    let log = Arc::default();
    let builder = Server::builder()
        .background_workers(background_workers)
        .queues(queues);
    (TestServer::with_builder(builder, app(&log)), log)
}

#[test]
fn a_critical_job_dispatched_behind_a_backlog_runs_at_the_next_turn() {
    let (server, log) = server(Queues::strict(["critical", "default", "reports"]), 1);
    // The only background thread is held by a job while a backlog forms.
    post(&server, "/probe?tag=hold&held=true");
    drop(log.wait_until(|s| s.order.len() == 1));
    for _ in 0..20 {
        post(&server, "/probe?tag=backlog");
    }
    post(&server, "/probe?tag=urgent&queue=critical");
    // Every job is in its queue (dispatched after its response) first.
    let waiting = |stats: &afterward::Stats| stats.jobs_delayed == 21;
    assert!(server.handle().wait_for(TEST_TIMEOUT, waiting));
    log.release("hold", 1);
    server.wait_idle();
    let state = log.state.lock().unwrap();
    assert_eq!(state.order.len(), 22);
    assert_eq!(&state.order[..2], ["hold", "urgent"], "{:?}", state.order);
}

#[test]
fn weights_share_the_turns_between_queues_with_work() {
    let queues = Queues::weighted([("default", 3), ("slow", 1), ("reports", 1)]);
    let (server, log) = server(queues, 1);
    post(&server, "/probe?tag=hold&held=true");
    drop(log.wait_until(|s| s.order.len() == 1));
    for _ in 0..300 {
        post(&server, "/probe?tag=fast");
        post(&server, "/probe?tag=slow&queue=slow");
    }
    let waiting = |stats: &afterward::Stats| stats.jobs_delayed == 600;
    assert!(server.handle().wait_for(TEST_TIMEOUT, waiting));
    log.release("hold", 1);
    server.wait_idle();
    let state = log.state.lock().unwrap();
    // While both queues had work (the first 300 turns after the hold),
    // about three `default` jobs ran for each `slow` one (225 expected; the
    // bounds are over six standard deviations away).
    let fast = state.order[1..301].iter().filter(|t| *t == "fast").count();
    assert!(
        (190..=260).contains(&fast),
        "{fast} of 300 turns went to default"
    );
    assert_eq!(state.order.len(), 601);
}

#[test]
fn a_limited_queue_runs_one_at_a_time_while_other_queues_keep_flowing() {
    let queues = Queues::weighted([("default", 1), ("slow", 1), ("reports", 1)]).limit("slow", 1);
    let (server, log) = server(queues, 4);
    for _ in 0..5 {
        post(&server, "/probe?tag=slow&queue=slow&held=true");
    }
    drop(log.wait_until(|s| s.order.len() == 1));
    // One `slow` job runs, held; the other four wait their turn. Fast jobs
    // all run meanwhile, on the other threads.
    for _ in 0..50 {
        post(&server, "/probe?tag=fast");
    }
    let state = log.wait_until(|s| s.done("fast") == 50);
    assert_eq!((state.most("slow"), state.done("slow")), (1, 0));
    drop(state);
    log.release("slow", 5);
    server.wait_idle();
    let state = log.state.lock().unwrap();
    assert_eq!(
        (state.most("slow"), state.done("slow")),
        (1, 5),
        "never two at once"
    );
}

#[test]
fn a_queue_not_served_or_not_valid_is_refused_at_enqueue() {
    let (server, _) = server(Queues::strict(["default", "reports"]), 1);
    let unserved = server.post("/try?queue=elsewhere").send();
    assert_eq!(unserved.status(), 400);
    assert!(
        unserved.text().contains("not served here"),
        "{}",
        unserved.text()
    );
    let invalid = server.post("/try?queue=a%7Bb%7D").send();
    assert_eq!(invalid.status(), 400);
    assert!(
        invalid.text().contains("not a valid queue name"),
        "{}",
        invalid.text()
    );
    assert_eq!(server.post("/try?queue=reports").send().status(), 200);
}

#[test]
fn a_registered_jobs_queue_left_unserved_is_a_build_error() {
    let error = Server::builder()
        .address("127.0.0.1:0")
        .queues(Queues::strict(["default"]))
        .build(app(&Arc::default()))
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("queue \"reports\" of a registered job is not among"),
        "{error}"
    );
}

#[test]
fn a_jobs_status_names_its_queue() {
    let (server, _) = server(Queues::strict(["default", "critical", "reports"]), 1);
    let id = post(&server, "/probe?tag=a&queue=critical");
    server.wait_idle();
    let status = server.get(&format!("/jobs/{id}")).send().json();
    assert_eq!(status["queue"], "critical");
    assert_eq!(status["status"], "done");
}

#[test]
fn jobs_waiting_in_a_queue_at_the_deadline_are_reported_and_counted_once() {
    let queues = Queues::weighted([("default", 1), ("slow", 1), ("reports", 1)]).limit("slow", 1);
    let (server, log) = server(queues, 2);
    for _ in 0..3 {
        post(&server, "/probe?tag=slow&queue=slow&held=true");
    }
    drop(log.wait_until(|s| s.order.len() == 1));
    // The running one is still held when the deadline passes.
    let report = server.shutdown(Duration::from_millis(100));
    log.release("slow", 1);
    let waiting: Vec<_> = report
        .not_run
        .iter()
        .filter(|t| t.name.starts_with("job probe"))
        .collect();
    assert_eq!(waiting.len(), 2, "{:?}", report.not_run);
    assert_eq!(report.still_running.len(), 1, "{:?}", report.still_running);
    let stats = report.stats;
    assert_eq!((stats.jobs_discarded, stats.jobs_delayed), (2, 0));
    assert_eq!(stats.jobs_enqueued, 3);
}
