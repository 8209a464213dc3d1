//! The binary against a Redis Cluster (feature `redis`): the server, a
//! worker and `afterward jobs` given `redis+cluster://` run the demo's jobs
//! and read their queues from the node that serves each.
#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, Instant};

use support::cli::{run, Afterward, WorkerProcess};
use support::cluster::Cluster;
use support::TEST_TIMEOUT;

#[test]
fn the_server_a_worker_and_jobs_run_over_a_cluster() {
    let cluster = Cluster::start(3, 0);
    let url = cluster.url();
    let server = Afterward::start(&["--redis-url", &url]);
    let _worker = WorkerProcess::start(&url, &[]);
    let ids: Vec<String> = (0..5)
        .map(|_| {
            let response = server.post("/flaky?fail=1");
            assert_eq!(response.status(), 202, "{}", response.text());
            response.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let deadline = Instant::now() + TEST_TIMEOUT;
    for id in &ids {
        while server.get(&format!("/jobs/{id}")).json()["status"] != "done" {
            assert!(Instant::now() < deadline, "job {id} never done");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let (status, out, err) = run(&["jobs", "--redis-url", &url, "queues"], &[]);
    assert!(status.success(), "{err}");
    let default: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(default["queue"], "default", "{out}");
    assert_eq!(
        (&default["ready"], &default["dead"]),
        (&0.into(), &0.into()),
        "{out}"
    );
}
