//! The `afterward` binary's access log has a line for every answer, the
//! engine's own refusals included, with the request id.

mod support;

use support::cli::Afterward;
use support::raw::Raw;

#[test]
fn the_engines_own_answers_have_access_lines() {
    // The engine's own answers: the builtin engine's (tiny_http has no 431).
    let mut server = Afterward::start(&["--engine", support::hardening_engine().name()]);
    let mut raw = Raw::connect(server.addr);
    raw.send(b"GET /health HTTP/1.1\r\nX-Request-Id: forged-1\r\n\r\n")
        .unwrap();
    assert_eq!(raw.response().status(), 400);
    let mut raw = Raw::connect(server.addr);
    raw.send(format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000)).as_bytes())
        .ok();
    assert_eq!(raw.response().status(), 431);
    assert!(server.stop().success());

    let log = server.stderr();
    let access: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("afterward::access"))
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("GET /health 400 ") && l.contains("request_id=forged-1")),
        "{access:#?}"
    );
    assert!(access.iter().any(|l| l.contains("- - 431 ")), "{access:#?}");
}
