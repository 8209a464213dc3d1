//! Periodic jobs in-process (`App::every`, `App::cron`, `App::schedule`):
//! each tick enqueued once, as a job; listed with its last and next run;
//! paused and resumed; no tick after the stop began; a bad expression is an
//! error at build.

mod support;
#[path = "support/ticks.rs"]
mod ticks;

use std::sync::Arc;
use std::time::Duration;

use afterward::testing::TestServer;
use afterward::{App, Missed, Schedule, Server};
use support::TEST_TIMEOUT;
use ticks::{each_once, Seen, Tick};

fn app(seen: &Arc<Seen>, every_ms: u64) -> App {
    let schedule = Schedule::every(Duration::from_millis(every_ms)).missed(Missed::RunOnce);
    App::new()
        .state(seen.clone())
        .schedule(schedule, |at| Tick { at })
        .get("/metrics", afterward::metrics_handler)
}

#[test]
fn each_tick_is_enqueued_once_as_a_job_and_listed() {
    let seen = Arc::new(Seen::default());
    let server = TestServer::with_builder(Server::builder(), app(&seen, 50));
    let ticks = seen.wait_until(|t| t.len() >= 5).clone();
    let sorted = each_once(&ticks, 50);
    // One after another: each tick fired, or counted missed (a late wake).
    let span = (sorted[sorted.len() - 1] - sorted[0]) / 50 + 1;
    let metrics = server.get("/metrics").send().text();
    let missed = metric(
        &metrics,
        "afterward_schedule_missed_total{schedule=\"tick\"}",
    );
    assert!(
        span <= sorted.len() as u64 + missed,
        "{sorted:?}, {missed} missed"
    );
    assert!(metrics.contains("afterward_schedule_runs_total{schedule=\"tick\"}"));
    assert!(metrics.contains("afterward_schedule_last_run_timestamp_seconds{schedule=\"tick\"}"));
    let listed = server.jobs().schedules().unwrap();
    assert_eq!(listed.len(), 1);
    let tick = &listed[0];
    assert_eq!(
        (tick.name.as_str(), tick.spec.as_str(), tick.paused),
        ("tick", "50ms", false)
    );
    let (last, next) = (tick.last_run_ms.unwrap(), tick.next_run_ms.unwrap());
    assert!(
        last >= sorted[0] && next > last && next % 50 == 0,
        "{tick:?}"
    );
    // The ticks ran as jobs do: counted (once each job has returned).
    let counted = |s: &afterward::Stats| s.jobs_succeeded >= 5;
    assert!(server.handle().wait_for(TEST_TIMEOUT, counted));
}

fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{text}")) as u64
}

#[test]
fn a_paused_schedule_enqueues_nothing_until_resumed() {
    let seen = Arc::new(Seen::default());
    let server = TestServer::with_builder(Server::builder(), app(&seen, 20));
    drop(seen.wait_until(|t| !t.is_empty()));
    let jobs = server.jobs();
    assert_eq!(jobs.pause_schedule("tick"), Ok(true));
    assert_eq!(jobs.pause_schedule("nope"), Ok(false));
    assert!(jobs.schedules().unwrap()[0].paused);
    // Whatever was enqueued before the pause has run.
    server.wait_idle();
    let before = seen.ticks().len();
    let paused_at = afterward_now_ms();
    // Three ticks let pass, by the server's own count: none enqueued.
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    let sample = "afterward_schedule_paused_total{schedule=\"tick\"}";
    while metric(&server.get("/metrics").send().text(), sample) < 3 {
        assert!(std::time::Instant::now() < deadline, "never paused");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.wait_idle();
    assert_eq!(seen.ticks().len(), before, "nothing enqueued while paused");
    assert_eq!(jobs.resume_schedule("tick"), Ok(true));
    let after = seen.wait_until(|t| t.len() > before).clone();
    // Ticks resume on the schedule's own clock, after the pause.
    assert!(
        after[before..].iter().all(|t| *t > paused_at - 20),
        "{after:?}"
    );
}

fn afterward_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_stopping_server_claims_no_tick_and_discards_none() {
    let seen = Arc::new(Seen::default());
    let server = TestServer::with_builder(Server::builder(), app(&seen, 10));
    drop(seen.wait_until(|t| t.len() >= 3));
    let report = server.shutdown(TEST_TIMEOUT);
    let stats = report.stats;
    // The scheduler stopped first: every tick enqueued had run by the end.
    assert_eq!(stats.jobs_discarded, 0, "{report:?}");
    assert_eq!(stats.jobs_enqueued, stats.jobs_succeeded);
    assert_eq!(seen.ticks().len() as u64, stats.jobs_succeeded);
}

#[test]
fn a_bad_schedule_is_an_error_at_build_naming_the_field() {
    let seen = Arc::new(Seen::default());
    let app = App::new().state(seen).cron("61 * * * *", Tick { at: 0 });
    let error = Server::builder().address("127.0.0.1:0").build(app);
    let Err(error) = error else {
        panic!("a bad expression was accepted")
    };
    let message = error.to_string();
    assert!(
        message.contains("invalid minute field: 61 is outside 0-59"),
        "{message}"
    );
    let twice = App::new()
        .every(Duration::from_secs(1), Tick { at: 0 })
        .every(Duration::from_secs(2), Tick { at: 0 });
    let error = Server::builder().address("127.0.0.1:0").build(twice);
    assert!(error
        .err()
        .unwrap()
        .to_string()
        .contains("two schedules are named \"tick\""));
}

#[test]
fn a_job_enqueued_at_a_time_runs_no_sooner() {
    use afterward::BackgroundTasks;
    let seen = Arc::new(Seen::default());
    let app = App::new()
        .state(seen.clone())
        .job::<Tick>()
        .post("/at", |tasks: BackgroundTasks| {
            let when = std::time::SystemTime::now() + Duration::from_millis(100);
            let at = when
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            tasks
                .enqueue_at(Tick { at }, when)
                .map(|id| id.to_string())
                .map_err(afterward::HttpError::from)
        });
    let server = TestServer::new(app.get("/jobs/{id}", afterward::job_status_handler));
    let response = server.post("/at").send();
    assert_eq!(response.status(), 200);
    let status = server
        .get(&format!("/jobs/{}", response.text()))
        .send()
        .json();
    assert_eq!(status["status"], "delayed", "{status}");
    assert!(status["next_run_ms"].as_u64().is_some(), "{status}");
    let ticks = seen.wait_until(|t| t.len() == 1).clone();
    assert!(seen.ran_at()[0] >= ticks[0], "it ran before its time");
}
