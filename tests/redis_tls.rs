//! Production Redis (feature `redis-tls`): TLS verified against a CA file,
//! client certificates, ACL users and passwords in the URL, against real
//! `redis-server`s with certificates made by `openssl`; and each way a
//! connection is refused is a clear error that names Redis, its address
//! and the cause, never the password.
#![cfg(feature = "redis-tls")]

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::sync::Arc;
use std::time::Duration;

use afterward::redis::{RedisConfig, Worker};
use afterward::testing::TestServer;
use afterward::Server;
use probe::{post, Log};
use support::redis::{acl_flags, RedisServer};
use support::tls::Certs;
use support::TEST_TIMEOUT;

const PASSWORD: &str = support::redis::ACL_PASSWORD;

fn config(url: &str) -> RedisConfig {
    let mut config = RedisConfig::new(url).expect("a valid URL");
    config.timeout = Duration::from_millis(500);
    config
}

/// What `verify` says, checked to hold the address and never the password.
fn refusal(config: &RedisConfig, port: u16) -> String {
    let error = config.verify().expect_err("refused").to_string();
    assert!(!error.contains(PASSWORD), "{error}");
    assert!(
        error.contains("Redis") && error.contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    error
}

#[test]
fn jobs_run_over_tls_with_an_acl_user_and_a_ca_file() {
    let certs = Certs::make();
    let mut flags = certs.server_flags("optional");
    flags.extend(acl_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let redis = RedisServer::start_tcp(true, &flags);
    let url = format!("rediss://jobs:{PASSWORD}@localhost:{}", redis.port());
    let tls = config(&url).ca_file(certs.file("ca.crt")).unwrap();
    tls.verify().expect("TLS, the CA, the user");
    assert_eq!(
        tls.redacted_url(),
        format!("rediss://jobs:***@localhost:{}", redis.port())
    );
    assert!(!format!("{tls:?}").contains(PASSWORD));

    let log = Arc::new(Log::default());
    let server = TestServer::with_builder(Server::builder().redis(tls.clone()), probe::app(&log));
    let id = post(&server, "/probe?tag=over-tls");
    let worker = Worker::builder(tls).app(&probe::app(&log)).start().unwrap();
    drop(log.wait_until(|s| s.done("over-tls") == 1));
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 1));
    assert_eq!(
        server.get(&format!("/jobs/{id}")).send().json()["status"],
        "done"
    );
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}

#[test]
fn a_server_that_asks_for_a_client_certificate_gets_one() {
    let certs = Certs::make();
    let flags = certs.server_flags("yes");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let redis = RedisServer::start_tcp(true, &flags);
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let without = config(&url).ca_file(certs.file("ca.crt")).unwrap();
    let error = refusal(&without, redis.port());
    assert!(error.contains("CertificateRequired"), "{error}");
    let with = without
        .client_cert(certs.file("client.crt"), certs.file("client.key"))
        .unwrap();
    with.verify().expect("the client certificate is accepted");
}

#[test]
fn each_refusal_at_start_names_redis_its_address_and_the_cause() {
    let certs = Certs::make();
    let mut flags = certs.server_flags("optional");
    flags.extend(acl_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tls = RedisServer::start_tcp(true, &flags);
    let acl = acl_flags();
    let plain = RedisServer::start_tcp(false, &acl.iter().map(String::as_str).collect::<Vec<_>>());
    let (tls_port, plain_port) = (tls.port(), plain.port());
    let ca = certs.file("ca.crt");

    // A wrong password, a wrong user, none at all.
    let wrong = config(&format!(
        "redis://jobs:not-{PASSWORD}@127.0.0.1:{plain_port}"
    ));
    assert!(refusal(&wrong, plain_port).contains("wrong user or password"));
    let nobody = config(&format!("redis://nobody:{PASSWORD}@127.0.0.1:{plain_port}"));
    assert!(refusal(&nobody, plain_port).contains("wrong user or password"));
    let none = config(&format!("redis://127.0.0.1:{plain_port}"));
    assert!(refusal(&none, plain_port).contains("asks for a password"));
    // The right ones, the password alone too (the default user's).
    config(&format!("redis://jobs:{PASSWORD}@127.0.0.1:{plain_port}"))
        .verify()
        .unwrap();
    config(&format!("redis://:default-pw@127.0.0.1:{plain_port}"))
        .verify()
        .unwrap();

    // Plain TCP to the TLS port; TLS to the plain port.
    let plain_to_tls = config(&format!("redis://jobs:{PASSWORD}@127.0.0.1:{tls_port}"));
    assert!(refusal(&plain_to_tls, tls_port).contains("use rediss://"));
    let tls_to_plain = config(&format!("rediss://jobs:{PASSWORD}@127.0.0.1:{plain_port}"))
        .ca_file(&ca)
        .unwrap();
    assert!(refusal(&tls_to_plain, plain_port).contains("use redis://"));

    // A certificate no root vouches for: the system's roots, another CA.
    let url = format!("rediss://jobs:{PASSWORD}@127.0.0.1:{tls_port}");
    assert!(refusal(&config(&url), tls_port).contains("invalid peer certificate"));
    let other = config(&url).ca_file(certs.file("other-ca.crt")).unwrap();
    assert!(refusal(&other, tls_port).contains("--redis-ca-file"));
    config(&url).ca_file(&ca).unwrap().verify().unwrap();

    // Files that are not what they should be: named, at once.
    let error = config(&url).ca_file(certs.file("server.key")).unwrap_err();
    assert!(error.to_string().contains("server.key"), "{error}");
    let error = config(&url).ca_file(certs.file("missing.crt")).unwrap_err();
    assert!(error.to_string().contains("missing.crt"), "{error}");
    let error = config(&url)
        .client_cert(certs.file("client.crt"), certs.file("client.crt"))
        .unwrap_err();
    assert!(error.to_string().contains("client key"), "{error}");
    // TLS files for a plain URL: a mistake, said.
    let error = config(&format!("redis://127.0.0.1:{plain_port}"))
        .ca_file(&ca)
        .unwrap_err();
    assert!(error.to_string().contains("rediss://"), "{error}");
}

#[test]
fn jobs_run_over_a_tls_cluster_its_nodes_reached_with_the_ca_file() {
    let certs = Certs::make();
    let cluster = support::cluster::Cluster::start_tls(3, &certs);
    let mut config = RedisConfig::new(&cluster.url()).unwrap();
    config.timeout = Duration::from_millis(500);
    assert!(config.redacted_url().starts_with("rediss+cluster://"));
    // Without the CA, no node is trusted.
    let error = config.verify().unwrap_err().to_string();
    assert!(error.contains("invalid peer certificate"), "{error}");
    let config = config.ca_file(certs.file("ca.crt")).unwrap();
    config.verify().expect("every primary over TLS");
    let log = Arc::new(Log::default());
    let server =
        TestServer::with_builder(Server::builder().redis(config.clone()), probe::app(&log));
    let tags = ["a", "b", "c", "d", "e", "f"];
    for tag in tags {
        post(&server, &format!("/probe?tag={tag}&queue=q-{tag}"));
    }
    let queues = afterward::Queues::weighted(tags.map(|t| (format!("q-{t}"), 1)));
    let worker = Worker::builder(config)
        .app(&probe::app(&log))
        .queues(queues)
        .start()
        .unwrap();
    drop(log.wait_until(|s| tags.iter().all(|t| s.done(t) == 1)));
    assert!(worker.wait_for(TEST_TIMEOUT, |s| s.succeeded == 6));
    assert!(worker.stop(TEST_TIMEOUT).is_complete());
}
