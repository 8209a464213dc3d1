//! The binary against a Redis Cluster (feature `redis`): the server, a
//! worker and `afterward jobs` given `redis+cluster://` run the demo's jobs,
//! its queue split in partitions (`--queue-partitions`), and read the
//! queues from the node that serves each.
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
    let partitions = ["--queue-partitions", "default=3"];
    let server = Afterward::start(&[&["--redis-url", url.as_str()][..], &partitions].concat());
    let _worker = WorkerProcess::start(&url, &partitions);
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
    let queues: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let names: Vec<&str> = queues
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default.0", "default.1", "default.2"], "{out}");
    assert!(
        queues.iter().all(|q| q["ready"] == 0 && q["dead"] == 0),
        "{out}"
    );
    // A worker not told of the partitions says it would miss their jobs.
    let unaware = WorkerProcess::start(&url, &[]);
    let warning =
        "queue default has partitions this worker does not serve (default.0, default.1, default.2)";
    let deadline = Instant::now() + TEST_TIMEOUT;
    while !unaware.stderr().contains(warning) {
        assert!(Instant::now() < deadline, "{}", unaware.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
}
