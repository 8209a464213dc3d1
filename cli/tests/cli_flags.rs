//! The `afterward` binary's flags: `--help`, environment variables, usage errors.

mod support;

use support::cli::{run, Afterward};

const FLAGS: [&str; 14] = [
    "job-timeout",
    "job-max-attempts",
    "job-backoff-ms",
    "host",
    "engine",
    "port",
    "workers",
    "background-workers",
    "queue-capacity",
    "on-full",
    "max-body-bytes",
    "shutdown-timeout",
    "log-file",
    "notify-delay-ms",
];

#[test]
fn help_lists_every_flag_and_its_variable() {
    let (status, stdout, _) = run(&["--help"], &[]);
    assert!(status.success());
    for flag in FLAGS {
        assert!(stdout.contains(&format!("--{flag} ")), "--{flag} missing");
        let var = format!("AFTERWARD_{}", flag.to_uppercase().replace('-', "_"));
        assert!(stdout.contains(&var), "{var} missing");
    }
}

#[test]
fn a_bad_value_is_a_usage_error_with_status_2() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 9] = [
        (&["--port", "eighty"], &[]),
        (&["--host", "not-a-host.invalid"], &[]),
        (&[], &[("AFTERWARD_HOST", "not a host")]),
        (&[], &[("AFTERWARD_WORKERS", "0")]),
        (&["--on-full", "drop"], &[]),
        (&["--workers", "0"], &[]),
        (&["--shutdown-timeout", "soon"], &[]),
        (&["--frobnicate"], &[]),
        (&[], &[("AFTERWARD_QUEUE_CAPACITY", "lots")]),
    ];
    for (args, env) in cases {
        let (status, stdout, stderr) = run(args, env);
        assert_eq!(status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.starts_with("error: "), "{stderr}");
        // The message names where the bad value came from.
        let source = match (args.first(), env.first()) {
            (Some(flag), _) => flag.to_string(),
            (None, Some((var, _))) => var.to_string(),
            (None, None) => unreachable!(),
        };
        assert!(stderr.contains(&source), "{source}: {stderr}");
    }
}

#[test]
fn help_tells_the_second_signals_exit_status() {
    let (_, stdout, _) = run(&["--help"], &[]);
    assert!(
        stdout.contains("a second one exits at once, with status 130"),
        "{stdout}"
    );
}

#[test]
fn environment_variables_set_options() {
    let server = Afterward::start_with_env(
        &[],
        &[
            ("AFTERWARD_MAX_BODY_BYTES", "4"),
            ("AFTERWARD_QUEUE_CAPACITY", "9"),
        ],
    );
    let response = server.request("POST", "/files").body("12345").send();
    assert_eq!(response.status(), 413);
    assert_eq!(server.metric("afterward_queue_capacity"), 9.0);
}

#[test]
fn a_flag_beats_its_environment_variable() {
    let server = Afterward::start_with_env(
        &["--queue-capacity", "3"],
        &[("AFTERWARD_QUEUE_CAPACITY", "9")],
    );
    assert_eq!(server.metric("afterward_queue_capacity"), 3.0);
}

#[test]
fn a_port_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, _, stderr) = run(&["--port", &port], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("cannot listen on 127.0.0.1:"), "{stderr}");
}
