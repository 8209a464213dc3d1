//! The binary against production-like Redis (feature `redis`, which the
//! binary builds with TLS): `rediss://` with `--redis-ca-file` and an ACL
//! user for the server, `afterward worker` and `afterward jobs`; a Redis
//! that refuses them at start is exit status 2 naming Redis, its address
//! and the cause; the password appears in no output.
#![cfg(feature = "redis")]

mod support;

use support::cli::{run, Afterward, WorkerProcess};
use support::redis::{acl_flags, RedisServer};
use support::tls::Certs;

const PASSWORD: &str = support::redis::ACL_PASSWORD;

#[test]
fn over_tls_with_an_acl_user_jobs_run_and_no_output_shows_the_password() {
    let certs = Certs::make();
    let mut flags = certs.server_flags("optional");
    flags.extend(acl_flags());
    let redis = RedisServer::start_tcp(true, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("rediss://jobs:{PASSWORD}@localhost:{}", redis.port());
    let ca = certs.file("ca.crt").display().to_string();
    let server = Afterward::start(&["--redis-url", &url, "--redis-ca-file", &ca]);
    let response = server.post("/flaky?fail=0");
    assert_eq!(response.status(), 202, "{}", response.text());
    let worker = WorkerProcess::start(&url, &["--redis-ca-file", &ca]);
    assert!(
        worker
            .banner
            .contains(&format!("rediss://jobs:***@localhost:{}", redis.port())),
        "{}",
        worker.banner
    );
    // Done, as the server reads it back from Redis.
    let id = response.json()["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + support::TEST_TIMEOUT;
    while server.get(&format!("/jobs/{id}")).json()["status"] != "done" {
        assert!(std::time::Instant::now() < deadline, "never done");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // `afterward jobs`, with the CA file from its variable.
    let (status, out, err) = run(
        &["jobs", "--redis-url", &url, "pending"],
        &[("AFTERWARD_REDIS_CA_FILE", &ca)],
    );
    assert!(status.success(), "{err}");
    let counts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&counts["ready"], &counts["dead"]),
        (&0.into(), &0.into()),
        "{out}"
    );
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    for output in [worker.banner.clone(), worker.stderr(), server.stderr()] {
        assert!(!output.contains(PASSWORD), "{output}");
    }
}

#[test]
fn a_redis_that_refuses_us_at_start_is_exit_2_naming_it_for_every_command() {
    // A wrong password, nothing listening: for the server, worker, jobs and dashboard.
    let acl = acl_flags();
    let redis = RedisServer::start_tcp(false, &acl.iter().map(String::as_str).collect::<Vec<_>>());
    let port = redis.port();
    let wrong = format!("redis://jobs:not-{PASSWORD}@127.0.0.1:{port}");
    let nothing = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        format!("redis://jobs:{PASSWORD}@127.0.0.1:{port}")
    };
    for (url, cause) in [(&wrong, "wrong user or password"), (&nothing, "refused")] {
        for command in [
            vec!["--port", "0", "--redis-url", url],
            vec!["worker", "--redis-url", url],
            vec!["jobs", "--redis-url", url, "pending"],
            vec!["dashboard", "--redis-url", url, "--address", "127.0.0.1:0"],
        ] {
            let (status, out, err) = run(&command, &[]);
            assert_eq!(status.code(), Some(2), "{command:?}: {err}");
            assert!(
                err.contains("cannot connect to Redis at redis://jobs:***@127.0.0.1:")
                    && err.contains(cause),
                "{command:?}: {err}"
            );
            assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD), "{err}");
            assert!(!out.contains("listening on"), "{command:?} started: {out}");
        }
    }
    // A bad certificate, and plain TCP to a TLS port: exit 2, what failed named.
    let certs = Certs::make();
    let tls = RedisServer::start_tcp(
        true,
        &certs
            .server_flags("optional")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let untrusted = format!("rediss://127.0.0.1:{}", tls.port());
    let plain = format!("redis://127.0.0.1:{}", tls.port());
    for (url, cause) in [
        (&untrusted, "invalid peer certificate"),
        (&plain, "use rediss://"),
    ] {
        let (status, _, err) = run(&["jobs", "--redis-url", url, "pending"], &[]);
        assert_eq!(status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(cause), "{url}: {err}");
    }
    // TLS flags are checked as flags: a client certificate without its key.
    let (status, _, err) = run(
        &[
            "worker",
            "--redis-url",
            &wrong,
            "--redis-client-cert",
            "c.pem",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--redis-client-cert needs --redis-client-key"),
        "{err}"
    );
}
