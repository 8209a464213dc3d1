//! The binary's dashboard (`--dashboard`): off unless asked; without a
//! token only on a loopback address; with one, a page without it goes to
//! the login form and `Authorization: Bearer` opens it; actions only with
//! `--dashboard-actions`, and then only with the CSRF token.

mod support;

use support::cli::{run, Afterward};

#[test]
fn the_dashboard_is_off_unless_asked_and_read_only_unless_actions_are_on() {
    let plain = Afterward::start(&[]);
    assert_eq!(plain.get("/afterward").status(), 404);
    let server = Afterward::start(&["--dashboard"]);
    let page = server.get("/afterward");
    assert_eq!(page.status(), 200, "{}", page.text());
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("Queues"));
    let action = server.request("POST", "/afterward/dead/x/requeue").send();
    assert_eq!(action.status(), 403);
}

#[test]
fn with_a_token_the_dashboard_asks_for_it_and_actions_need_the_csrf_token() {
    let server = Afterward::start(&[
        "--dashboard",
        "--dashboard-token",
        "t0k",
        "--dashboard-actions",
    ]);
    let page = server.get("/afterward");
    assert_eq!(page.status(), 303);
    assert_eq!(page.header("Location"), Some("/afterward/login"));
    let open = server
        .request("GET", "/afterward")
        .header("Authorization", "Bearer t0k")
        .send();
    assert_eq!(open.status(), 200);
    let action = server
        .request("POST", "/afterward/dead/x/requeue")
        .header("Authorization", "Bearer t0k")
        .send();
    assert_eq!(action.status(), 403, "no CSRF token");
}

#[test]
fn a_jobs_page_shows_its_payload_unless_told_to_keep_none() {
    for (flags, shown) in [(&[][..], true), (&["--job-payload-bytes", "0"][..], false)] {
        let server = Afterward::start(&[&["--dashboard"][..], flags].concat());
        let id = server.post("/flaky?fail=0").json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        server.wait_for_metric("afterward_jobs_succeeded_total", 1.0);
        let page = server.get(&format!("/afterward/jobs/{id}")).text();
        assert_eq!(
            page.contains("&quot;fail&quot;: 0"),
            shown,
            "{flags:?}: {page}"
        );
        assert_eq!(page.contains("(not kept)"), !shown, "{flags:?}: {page}");
    }
    let (status, _, err) = run(&["--job-payload-bytes", "1k"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--job-payload-bytes"), "{err}");
}

#[test]
fn unsafe_dashboard_flags_are_usage_errors_naming_them() {
    let (status, _, err) = run(&["--host", "0.0.0.0", "--dashboard"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--dashboard-token"), "{err}");
    let (status, _, err) = run(&["--dashboard-token", "t"], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--dashboard-token needs --dashboard"), "{err}");
}
