//! The binary over Redis (feature `redis`), against a real `redis-server`:
//! `afterward --redis-url` sends the demo's jobs, `afterward worker`
//! processes run them, and no job is lost when a worker is killed or
//! stalled, when Redis is killed and restarted, or when the web server stops
//! with jobs it has not sent yet. `afterward jobs` reads and repairs the
//! queues.
#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, Instant};

use support::cli::{run, Afterward, WorkerProcess};
use support::redis::RedisServer;
use support::TEST_TIMEOUT;

fn accepted_id(server: &Afterward, path: &str) -> String {
    let response = server.post(path);
    assert_eq!(response.status(), 202, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}

/// Waits until `GET /jobs/{id}` says `status`.
fn wait_for_status(server: &Afterward, id: &str, status: &str) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let now = server.get(&format!("/jobs/{id}")).json();
        if now["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "job {id} never {status}: {now}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn flaky_jobs_run_on_a_worker_and_their_status_comes_from_redis() {
    let redis = RedisServer::start();
    let server = Afterward::start(&["--redis-url", &redis.url()]);
    let id = accepted_id(&server, "/flaky?fail=1");
    server.wait_for_metric("afterward_jobs_sent_total", 1.0);
    assert_eq!(
        server.get(&format!("/jobs/{id}")).json()["status"],
        "queued"
    );

    let worker = WorkerProcess::start(
        &redis.url(),
        &["--job-backoff-ms", "1", "--metrics-address", "127.0.0.1:0"],
    );
    worker.wait_for_line(&format!("flaky {id} done"));
    wait_for_status(&server, &id, "done");
    for sample in [
        "afterward_worker_jobs_total{outcome=\"claimed\"} 2\n",
        "afterward_worker_jobs_total{outcome=\"succeeded\"} 1\n",
        "afterward_worker_jobs_total{outcome=\"retried\"} 1\n",
        "afterward_worker_jobs_total{outcome=\"promoted\"} 1\n",
        "afterward_worker_jobs_in_flight 0\n",
    ] {
        worker.wait_for_sample(sample);
    }
    let status = server.get(&format!("/jobs/{id}")).json();
    assert_eq!(status["attempts"], 2);
    assert_eq!(status["status"], "done");
    assert_eq!(
        status["error"],
        serde_json::Value::Null,
        "a done job carries no stale error"
    );
    // The job ran on the worker, not in the server.
    assert!(
        !server.log_file().exists()
            || !std::fs::read_to_string(server.log_file())
                .unwrap()
                .contains("flaky")
    );
    assert_eq!(server.metric("afterward_jobs_succeeded_total"), 0.0);

    let (status, out, _) = run(&["jobs", "--redis-url", &redis.url(), "pending"], &[]);
    assert!(status.success());
    let counts: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        counts,
        serde_json::json!({"ready": 0, "pending": 0, "delayed": 0, "dead": 0})
    );
}

#[test]
fn an_upload_is_counted_by_a_worker_and_its_result_read_by_the_server() {
    let redis = RedisServer::start();
    let server = Afterward::start(&["--redis-url", &redis.url()]);
    let accepted = server
        .request("POST", "/files")
        .body("one two\nthree")
        .send();
    assert_eq!(accepted.status(), 202, "{}", accepted.text());
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get(&format!("/files/{id}")).json()["status"],
        "queued"
    );
    let _worker = WorkerProcess::start(&redis.url(), &[]);
    wait_for_status(&server, &id, "done");
    let deadline = Instant::now() + TEST_TIMEOUT;
    let file = loop {
        let file = server.get(&format!("/files/{id}")).json();
        if file["status"] == "done" || Instant::now() > deadline {
            break file;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        file,
        serde_json::json!({"id": id, "status": "done",
                           "result": {"bytes": 13, "lines": 1, "words": 3}})
    );
    // Redis gone: the server says so, rather than "no such file".
    drop(redis);
    assert_eq!(server.get(&format!("/files/{id}")).status(), 503);
}

#[test]
fn a_dead_job_is_listed_and_requeued_with_afterward_jobs() {
    let redis = RedisServer::start();
    // The attempts allowed are the web server's, carried by the job.
    let server = Afterward::start(&["--redis-url", &redis.url(), "--job-max-attempts", "2"]);
    let id = accepted_id(&server, "/flaky?fail=2");
    let worker = WorkerProcess::start(&redis.url(), &["--job-backoff-ms", "1"]);
    wait_for_status(&server, &id, "dead");

    let url = redis.url();
    let (status, out, _) = run(&["jobs", "--redis-url", &url, "dead"], &[]);
    assert!(status.success());
    let dead: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (dead["id"].as_str(), dead["attempts"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    assert_eq!(dead["error"], "attempt 2 failed on purpose");

    // Requeued with its attempts reset, it runs twice more (its payload
    // still fails its first two attempts): dead again.
    let (status, out, _) = run(&["jobs", "--redis-url", &url, "requeue", &id], &[]);
    assert!(status.success(), "{out}");
    assert_eq!(out.trim(), format!("{{\"requeued\":\"{id}\"}}"));
    let mut worker = worker;
    let deadline = Instant::now() + TEST_TIMEOUT;
    // Dead a second time: listed again, once, and the worker counts two.
    loop {
        let (_, out, _) = run(&["jobs", "--redis-url", &url, "dead"], &[]);
        let (_, counts, _) = run(&["jobs", "--redis-url", &url, "pending"], &[]);
        if out.lines().count() == 1
            && counts.contains("\"dead\":1")
            && counts.contains("\"delayed\":0,")
            && server.get(&format!("/jobs/{id}")).json()["status"] == "dead"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never dead again: {out} {counts}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    worker.signal("TERM");
    assert!(worker.wait().success());
    assert!(
        worker.stderr().contains("2 retried, 2 dead"),
        "{}",
        worker.stderr()
    );
    let (status, _, err) = run(&["jobs", "--redis-url", &url, "requeue", "nope"], &[]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no dead job with id nope"), "{err}");
}

#[test]
fn a_job_of_a_worker_killed_mid_job_completes_on_another_worker() {
    let redis = RedisServer::start();
    let server = Afterward::start(&["--redis-url", &redis.url()]);
    let first = WorkerProcess::start(&redis.url(), &["--visibility-timeout", "1"]);
    let id = accepted_id(&server, "/flaky?sleep_ms=2000");
    wait_for_status(&server, &id, "running");
    first.signal("KILL");

    let second = WorkerProcess::start(&redis.url(), &["--visibility-timeout", "1"]);
    second.wait_for_line(&format!("flaky {id} done"));
    assert!(first.lines().is_empty(), "the killed worker finished it");
    wait_for_status(&server, &id, "done");
    assert!(
        second.stderr().contains("took over 1 jobs"),
        "{}",
        second.stderr()
    );
}

#[test]
fn a_worker_stalled_past_the_visibility_timeout_loses_its_job_to_another_and_the_duplicate_shows() {
    let redis = RedisServer::start();
    let server = Afterward::start(&["--redis-url", &redis.url()]);
    let mut stalled = WorkerProcess::start(&redis.url(), &["--visibility-timeout", "1"]);
    let id = accepted_id(&server, "/flaky?sleep_ms=1500");
    wait_for_status(&server, &id, "running");
    stalled.signal("STOP");

    let mut other = WorkerProcess::start(&redis.url(), &["--visibility-timeout", "1"]);
    other.wait_for_line(&format!("flaky {id} done"));
    // Resumed, the stalled worker finishes its copy too: at least once,
    // here twice, and both are visible.
    stalled.signal("CONT");
    stalled.wait_for_line(&format!("flaky {id} done"));
    for worker in [&mut stalled, &mut other] {
        worker.signal("TERM");
        assert!(worker.wait().success());
    }
    assert!(
        other.stderr().contains("1 taken over from other workers"),
        "{}",
        other.stderr()
    );
    let (_, out, _) = run(&["jobs", "--redis-url", &redis.url(), "pending"], &[]);
    assert!(out.contains("\"pending\":0"), "{out}");
}

#[test]
fn every_job_acknowledged_survives_redis_killed_and_restarted_with_aof() {
    // `always`: Redis writes and fsyncs the AOF before it replies. Under
    // `everysec` it may reply while the write still waits in its memory for
    // a slow background fsync (up to 2 s; `flushAppendOnlyFile` in aof.c),
    // and a kill -9 then loses jobs it acknowledged.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let server = Afterward::start(&["--redis-url", &redis.url()]);
    let before: Vec<String> = (0..50).map(|_| accepted_id(&server, "/flaky")).collect();
    server.wait_for_metric("afterward_jobs_sent_total", 50.0);
    redis.kill();
    // Redis down: the server answers at once, and holds the jobs.
    let during: Vec<String> = (0..50).map(|_| accepted_id(&server, "/flaky")).collect();
    assert_eq!(server.metric("afterward_jobs_sent_total"), 50.0);
    redis.restart();
    server.wait_for_metric("afterward_jobs_sent_total", 100.0);

    let worker = WorkerProcess::start(&redis.url(), &[]);
    for id in before.iter().chain(&during) {
        worker.wait_for_line(&format!("flaky {id} done"));
    }
    assert_eq!(worker.lines().len(), 100);
}

#[test]
fn a_server_stopped_with_jobs_unsent_sends_them_before_it_exits() {
    let redis = RedisServer::start();
    let mut server = Afterward::start(&["--redis-url", &redis.url(), "--shutdown-timeout", "30"]);
    // Redis paused: sends time out, the jobs wait in the server's buffer.
    redis.signal("-STOP");
    let ids: Vec<String> = (0..20).map(|_| accepted_id(&server, "/flaky")).collect();
    assert_eq!(server.metric("afterward_jobs_sent_total"), 0.0);
    server.signal("TERM");
    redis.signal("-CONT");
    assert!(server.wait().success(), "{}", server.stderr());

    let worker = WorkerProcess::start(&redis.url(), &[]);
    for id in &ids {
        worker.wait_for_line(&format!("flaky {id} done"));
    }
}

#[test]
fn in_spill_mode_jobs_not_run_by_the_shutdown_deadline_go_to_redis_for_a_worker() {
    let redis = RedisServer::start();
    let mut server = Afterward::start(&[
        "--redis-url",
        &redis.url(),
        "--redis-mode",
        "spill",
        "--background-workers",
        "1",
        "--notify-delay-ms",
        "60000",
        "--shutdown-timeout",
        "0.5",
    ]);
    // The one pool thread is held by a slow notification; jobs run here, so
    // these queue behind it, and nothing is sent.
    assert_eq!(
        server.post("/send-notification/slow@example.com").status(),
        200
    );
    // Its task has the thread before the jobs come (a job dispatched first
    // would run here).
    server.wait_for_metric("afterward_tasks_running", 1.0);
    let ids: Vec<String> = (0..3).map(|_| accepted_id(&server, "/flaky")).collect();
    assert_eq!(server.metric("afterward_jobs_sent_total"), 0.0);
    server.signal("TERM");
    // Not complete (the notification still runs at the deadline), but the
    // jobs are not lost: spilled to Redis, and listed.
    assert!(!server.wait().success());
    let stderr = server.stderr();
    assert!(stderr.contains("3 jobs spilled to Redis"), "{stderr}");
    let worker = WorkerProcess::start(&redis.url(), &[]);
    for id in &ids {
        assert!(stderr.contains(id.as_str()), "{id} not listed: {stderr}");
        worker.wait_for_line(&format!("flaky {id} done"));
    }
    let local = std::fs::read_to_string(server.log_file()).unwrap_or_default();
    assert!(!local.contains("flaky"), "a job ran in the server: {local}");
}

#[test]
fn jobs_wait_in_the_queue_they_name_and_a_worker_serves_only_its_queues() {
    let redis = RedisServer::start();
    let server = Afterward::start(&["--redis-url", &redis.url()]);
    let slow: Vec<String> = (0..3)
        .map(|_| accepted_id(&server, "/flaky?queue=slow"))
        .collect();
    let fast: Vec<String> = (0..2).map(|_| accepted_id(&server, "/flaky")).collect();
    server.wait_for_metric("afterward_jobs_sent_total", 5.0);
    let queues = |redis: &RedisServer| {
        let (status, out, err) = run(&["jobs", "--redis-url", &redis.url(), "queues"], &[]);
        assert!(status.success(), "{err}");
        out.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .map(|q| {
                (
                    q["queue"].as_str().unwrap().to_owned(),
                    q["ready"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(queues(&redis), [("default".into(), 2), ("slow".into(), 3)]);
    assert_eq!(
        server.get(&format!("/jobs/{}", slow[0])).json()["queue"],
        "slow"
    );

    // A worker of `default` alone: the `slow` jobs stay where they are.
    let worker = WorkerProcess::start(&redis.url(), &["--queues", "default"]);
    for id in &fast {
        wait_for_status(&server, id, "done");
    }
    assert_eq!(queues(&redis), [("default".into(), 0), ("slow".into(), 3)]);
    drop(worker);
    let _slow_worker = WorkerProcess::start(
        &redis.url(),
        &[
            "--queues",
            "slow,default",
            "--strict",
            "--queue-limit",
            "slow=1",
        ],
    );
    for id in &slow {
        wait_for_status(&server, id, "done");
    }
    assert_eq!(queues(&redis), [("default".into(), 0), ("slow".into(), 0)]);
}

#[test]
fn a_bad_queue_flag_is_a_usage_error_naming_it() {
    for (args, expected) in [
        (
            &[
                "worker",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--queues",
                "a=x",
            ][..],
            "for --queues",
        ),
        (&["--queues", "slow"], "queue `default`"),
        (
            &[
                "worker",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--queue-limit",
                "a=1",
            ],
            "--queue-limit needs --queues",
        ),
    ] {
        let (status, _, err) = run(args, &[]);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn unique_jobs_cancel_requeue_all_and_discard_from_outside() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Afterward::start(&["--redis-url", &url, "--job-max-attempts", "1"]);
    // Unique: the same id while the first job has not ended.
    let first = accepted_id(&server, "/flaky?unique=k");
    assert_eq!(accepted_id(&server, "/flaky?unique=k"), first);
    // Cancelled over HTTP, and with `afterward jobs cancel`, before any worker.
    let second = accepted_id(&server, "/flaky");
    server.wait_for_metric("afterward_jobs_sent_total", 2.0);
    let response = server.request("DELETE", &format!("/jobs/{first}")).send();
    assert_eq!(response.status(), 200, "{}", response.text());
    assert_eq!(response.json()["status"], "cancelled");
    let (status, out, err) = run(&["jobs", "--redis-url", &url, "cancel", &second], &[]);
    assert!(status.success(), "{err}");
    assert_eq!(
        out.trim(),
        format!("{{\"id\":\"{second}\",\"status\":\"cancelled\"}}")
    );
    let (status, _, err) = run(&["jobs", "--redis-url", &url, "cancel", &second], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("has ended: cancelled"), "{err}");
    let delete = |id: &str| server.request("DELETE", &format!("/jobs/{id}")).send();
    assert_eq!(delete(&second).status(), 409);
    assert_eq!(delete("nope").status(), 404);
    // Freed with its cancel: the key makes a new job.
    assert_ne!(accepted_id(&server, "/flaky?unique=k"), first);

    // Three dead letters: one discarded, the other two requeued at once.
    let doomed: Vec<String> = (0..3)
        .map(|_| accepted_id(&server, "/flaky?fail=1"))
        .collect();
    let worker = WorkerProcess::start(&url, &["--job-backoff-ms", "1"]);
    for id in &doomed {
        wait_for_status(&server, id, "dead");
    }
    let (status, out, err) = run(&["jobs", "--redis-url", &url, "discard", &doomed[0]], &[]);
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), format!("{{\"discarded\":\"{}\"}}", doomed[0]));
    let (status, out, err) = run(
        &[
            "jobs",
            "--redis-url",
            &url,
            "requeue",
            "--all",
            "--queue",
            "default",
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "{\"queue\":\"default\",\"requeued\":2}");
    // Requeued, attempts reset, they run again (and fail again: their
    // payload fails the first attempt): two dead letters, not three.
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let (_, out, _) = run(&["jobs", "--redis-url", &url, "dead"], &[]);
        if out.lines().count() == 2 {
            assert!(
                !out.contains(&doomed[0]),
                "the discarded one is gone: {out}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never dead again: {out}");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(worker);

    // Usage errors name what is wrong, with exit status 2.
    for (args, says) in [
        (&["cancel"][..], "cancel ID"),
        (&["dead", "--queue", "q"][..], "--queue"),
        (&["pending", "--all"][..], "--all"),
    ] {
        let mut full = vec!["jobs", "--redis-url", &url];
        full.extend_from_slice(args);
        let (status, _, err) = run(&full, &[]);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The ticks of the `heartbeat TICK` lines a worker wrote.
fn worker_heartbeats(worker: &WorkerProcess) -> Vec<u64> {
    worker
        .lines()
        .iter()
        .filter_map(|line| line.strip_prefix("heartbeat ")?.parse().ok())
        .collect()
}

fn wait_for_worker_heartbeats(worker: &WorkerProcess, n: usize) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    while worker_heartbeats(worker).len() < n {
        assert!(Instant::now() < deadline, "{:?}", worker_heartbeats(worker));
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn three_servers_with_one_schedule_enqueue_each_tick_once_and_a_stop_loses_none() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut servers: Vec<Afterward> = (0..3)
        .map(|_| Afterward::start(&["--redis-url", &url, "--heartbeat", "200ms"]))
        .collect();
    let worker = WorkerProcess::start(&url, &[]);
    wait_for_worker_heartbeats(&worker, 5);
    // One server stops mid-way; the two others go on.
    let mut stopped = servers.remove(0);
    assert!(stopped.stop().success());
    wait_for_worker_heartbeats(&worker, 10);
    // Another is paused (SIGSTOP) through five ticks and resumes: it fires
    // no burst (its claims of ticks the third server enqueued are refused).
    servers[0].signal("STOP");
    std::thread::sleep(Duration::from_millis(1000)); // the scenario: five ticks pass
    servers[0].signal("CONT");
    let resumed = worker_heartbeats(&worker).len();
    wait_for_worker_heartbeats(&worker, resumed + 3);

    let (status, out, err) = run(&["jobs", "--redis-url", &url, "schedules"], &[]);
    assert!(status.success(), "{err}");
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (listed["name"].as_str(), listed["spec"].as_str()),
        (Some("heartbeat"), Some("200ms"))
    );
    assert_eq!(listed["paused"], false);
    let (last, next) = (
        listed["last_run_ms"].as_u64().unwrap(),
        listed["next_run_ms"].as_u64().unwrap(),
    );
    assert!(next > last && next % 200 == 0, "{listed}");

    // Paused for every server; its listing says so.
    let (status, _, err) = run(&["jobs", "--redis-url", &url, "pause", "heartbeat"], &[]);
    assert!(status.success(), "{err}");
    let (_, out, _) = run(&["jobs", "--redis-url", &url, "schedules"], &[]);
    assert!(out.contains("\"paused\":true"), "{out}");
    for server in &mut servers {
        assert!(server.stop().success());
    }
    let mut worker = worker;
    worker.signal("TERM");
    assert!(worker.wait().success());
    let mut ticks = worker_heartbeats(&worker);
    let count = ticks.len();
    ticks.sort_unstable();
    ticks.dedup();
    assert_eq!(ticks.len(), count, "a tick twice");
    let gaps: Vec<&[u64]> = ticks.windows(2).filter(|w| w[1] - w[0] != 200).collect();
    assert!(gaps.is_empty(), "ticks lost at {gaps:?} of {ticks:?}");
}

#[test]
fn the_dashboard_of_a_redis_deployment_runs_on_its_own_and_requeues_a_dead_letter() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use afterward::testing::TestRequest;

    let redis = RedisServer::start();
    let url = redis.url();
    let server = Afterward::start(&["--redis-url", &url, "--job-max-attempts", "1"]);
    let id = accepted_id(&server, "/flaky?fail=1");
    let worker = WorkerProcess::start(
        &url,
        &["--job-backoff-ms", "1", "--metrics-address", "127.0.0.1:0"],
    );
    wait_for_status(&server, &id, "dead");

    let mut child = Command::new(support::cli::BIN)
        .args(["dashboard", "--redis-url", &url, "--address", "127.0.0.1:0"])
        .args(["--dashboard-token", "t0k", "--dashboard-actions"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start afterward dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.trim().strip_suffix("/afterward"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let get = |path: &str| {
        TestRequest::new(addr, "GET", path)
            .header("Authorization", "Bearer t0k")
            .send()
    };
    assert_eq!(
        TestRequest::new(addr, "GET", "/afterward/api/overview")
            .send()
            .status(),
        401
    );
    let overview = get("/afterward/api/overview").json();
    assert_eq!(overview["mode"], "Redis");
    assert_eq!(overview["queues"][0]["queue"], "default");
    assert_eq!(overview["queues"][0]["dead"], 1);
    // The worker's heartbeat, and its count of the failed attempt this minute.
    let workers = overview["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{overview}");
    assert!(workers[0]["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(workers[0]["queues"][0], "default");
    let failed: u64 = overview["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(failed, 1, "{overview}");
    assert!(get("/afterward").text().contains("<svg class=\"chart\""));
    let dead = get("/afterward/dead").text();
    assert!(
        dead.contains(&id) && dead.contains("attempt 1 failed on purpose"),
        "{dead}"
    );
    let job = get(&format!("/afterward/jobs/{id}")).text();
    assert!(job.contains("dead"), "{job}");
    // Requeued from the page (its payload fails again: dead once more).
    let at = dead.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &dead[at..at + 32];
    let requeued = TestRequest::new(addr, "POST", &format!("/afterward/dead/{id}/requeue"))
        .header("Authorization", "Bearer t0k")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send();
    assert_eq!(requeued.status(), 303, "{}", requeued.text());
    // It ran again on the worker: dead a second time.
    worker.wait_for_sample("afterward_worker_jobs_total{outcome=\"dead\"} 2\n");
    let _ = child.kill();
    let _ = child.wait();
}
