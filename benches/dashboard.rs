//! The dashboard's pages with 100,000 jobs kept (issue: "answer in
//! milliseconds with 100,000 jobs in the store; paging never loads them
//! all"): a server keeping 100,000 statuses and 1,000 dead letters, each page
//! fetched 20 times; the median and the slowest, in milliseconds.
//!
//! ```text
//! cargo bench --bench dashboard
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use afterward::testing::TestServer;
use afterward::{
    dashboard, App, BackgroundTasks, Dashboard, GiveUp, HttpError, Job, JobContext, JobResult,
    Server,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Noop {
    fail: bool,
}

impl Job for Noop {
    const NAME: &'static str = "noop";
    fn run(self, _: &JobContext) -> JobResult {
        if self.fail {
            return Err(GiveUp::new("<b>failed</b> on purpose").into());
        }
        Ok(())
    }
}

/// Enqueues `n` jobs, of which every 100th fails for good.
fn many(
    tasks: BackgroundTasks,
    afterward::Query(q): afterward::Query<Many>,
) -> Result<&'static str, HttpError> {
    for i in 0..q.n {
        tasks.enqueue(Noop {
            fail: (q.from + i) % 100 == 0,
        })?;
    }
    Ok("ok")
}

#[derive(Deserialize)]
struct Many {
    from: usize,
    n: usize,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let jobs: usize = if full { 100_000 } else { 2_000 };
    let app = App::new()
        .job::<Noop>()
        .post("/many", many)
        .nest("/afterward", dashboard(Dashboard::open().actions(true)));
    let builder = Server::builder()
        .job_status_capacity(jobs)
        .dead_letter_capacity(1_000)
        .job_max_attempts(1);
    let server = TestServer::with_builder(builder, app);
    for from in (0..jobs).step_by(1_000) {
        assert_eq!(
            server
                .post(&format!("/many?from={from}&n=1000"))
                .send()
                .status(),
            200
        );
        server.wait_idle();
    }
    let _ = Arc::new(()); // keep imports honest across configurations
                          // A dead job's page: the first id the dead list links to.
    let list = server.get("/afterward/jobs?state=dead").send().text();
    let at = list.find("href=\"/afterward/jobs/").expect("a job's link") + 6;
    let job_page = list[at..at + list[at..].find('"').unwrap()].to_owned();
    let mut rows = Vec::new();
    for path in [
        job_page.as_str(),
        "/afterward",
        "/afterward/api/overview",
        "/afterward/jobs?state=done",
        "/afterward/jobs?state=done&page=1000",
        "/afterward/jobs?q=noop&page=3",
        "/afterward/dead",
    ] {
        let mut times: Vec<Duration> = (0..20)
            .map(|_| {
                let started = Instant::now();
                let response = server.get(path).send();
                assert_eq!(response.status(), 200, "{path}");
                started.elapsed()
            })
            .collect();
        times.sort();
        rows.push(format!(
            "| `{}` | {:.1} | {:.1} |",
            if path == job_page {
                "/afterward/jobs/{id}"
            } else {
                path
            },
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0
        ));
    }
    println!("| page ({jobs} statuses, 1,000 dead letters kept; 20 fetches) | median ms | slowest ms |\n|---|---:|---:|");
    for row in rows {
        println!("{row}");
    }
}
