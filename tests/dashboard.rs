//! The dashboard over HTTP (`afterward::dashboard`, mounted with
//! `App::nest`): authentication (a hook, or a token with a login form),
//! read-only unless actions are enabled, actions only with the CSRF token
//! from the same origin, every job value escaped, lists paged and searched.

#[path = "support/probe.rs"]
mod probe;
mod support;

use std::sync::Arc;

use afterward::testing::{TestResponse, TestServer};
use afterward::{dashboard, Dashboard, Server};
use probe::{evil, post, Evil, Log};

fn server(board: Dashboard) -> (TestServer, Arc<Log>) {
    let log = Arc::new(Log::default());
    let app = probe::app(&log)
        .job::<Evil>()
        .post("/evil", evil)
        .nest("/afterward", dashboard(board));
    (TestServer::with_builder(Server::builder(), app), log)
}

fn admin_only() -> Dashboard {
    Dashboard::new(|request| request.headers().get("x-role") == Some("admin"))
}

fn page(server: &TestServer, path: &str) -> TestResponse {
    server.get(path).header("x-role", "admin").send()
}

/// The CSRF token a page's forms carry.
fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with the token")
        + 19;
    html[at..at + 32].to_owned()
}

#[test]
fn every_page_needs_the_hook_and_is_html_with_a_strict_policy() {
    let (server, _) = server(admin_only());
    for path in [
        "/afterward",
        "/afterward/jobs",
        "/afterward/dead",
        "/afterward/schedules",
        "/afterward/api/overview",
    ] {
        assert_eq!(server.get(path).send().status(), 401, "{path}");
        let response = page(&server, path);
        assert_eq!(response.status(), 200, "{path}: {}", response.text());
    }
    let response = page(&server, "/afterward");
    assert!(
        response.text().contains("<svg class=\"chart\""),
        "the jobs-per-minute chart"
    );
    let per_minute = page(&server, "/afterward/api/overview").json()["per_minute"].clone();
    assert_eq!(per_minute.as_array().unwrap().len(), 60);
    assert_eq!(
        response.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let csp = response.header("Content-Security-Policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(response
        .text()
        .contains("href=\"/afterward/assets/dashboard.css\""));
    assert_eq!(
        server
            .get("/afterward/assets/dashboard.css")
            .send()
            .status(),
        200
    );
    assert_eq!(page(&server, "/afterward/jobs/nope").status(), 404);
}

#[test]
fn a_token_is_a_bearer_header_or_the_login_forms_cookie() {
    let (server, _) = server(Dashboard::with_token("s3cret"));
    let response = server.get("/afterward").send();
    assert_eq!(response.status(), 303);
    assert_eq!(response.header("Location"), Some("/afterward/login"));
    assert_eq!(server.get("/afterward/api/overview").send().status(), 401);
    let bearer = server
        .get("/afterward")
        .header("Authorization", "Bearer s3cret")
        .send();
    assert_eq!(bearer.status(), 200);
    assert_eq!(server.get("/afterward/login").send().status(), 200);
    let form = "application/x-www-form-urlencoded";
    let wrong = server
        .post("/afterward/login")
        .header("Content-Type", form)
        .body("token=nope")
        .send();
    assert_eq!(wrong.status(), 401);
    let right = server
        .post("/afterward/login")
        .header("Content-Type", form)
        .body("token=s3cret")
        .send();
    assert_eq!(right.status(), 303);
    let cookie = right.header("Set-Cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("s3cret"), "the cookie is not the token");
    let value = cookie.split(';').next().unwrap();
    let with_cookie = server.get("/afterward").header("Cookie", value).send();
    assert_eq!(with_cookie.status(), 200);
}

#[test]
fn job_values_are_shown_as_text_never_as_markup() {
    let (server, _) = server(admin_only());
    let id = server.post("/evil").send().text();
    server.wait_idle();
    let dead = page(&server, "/afterward/dead").text();
    assert!(
        dead.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{dead}"
    );
    assert!(!dead.contains("<img"), "{dead}");
    let job = page(&server, &format!("/afterward/jobs/{id}")).text();
    assert!(job.contains("&lt;img src=x onerror=alert(1)&gt;") && !job.contains("<img"));
    // The payload, kept with the status, shown (as text) on the job's page.
    let payload = job.find("<td>payload</td>").expect("a payload row");
    assert!(
        job[payload..].starts_with(
            "<td>payload</td><td><pre>{\n  &quot;note&quot;: &quot;&lt;img src=x onerror=alert(1)&gt;&quot;\n}</pre>"
        ),
        "{job}"
    );
    // Its history: queued, running, dead, each with its time.
    let queued = job.find("<li>queued").expect("the history");
    let running = job.find("<li>running").unwrap();
    let dead = job.find("<li>dead").unwrap();
    assert!(queued < running && running < dead, "{job}");
}

#[test]
fn a_server_told_to_keep_no_payloads_shows_none() {
    let log = Arc::new(Log::default());
    let app = probe::app(&log)
        .job::<Evil>()
        .post("/evil", evil)
        .nest("/afterward", dashboard(admin_only()));
    let builder = Server::builder().job_status_payload_bytes(0);
    let server = TestServer::with_builder(builder, app);
    let id = server.post("/evil").send().text();
    server.wait_idle();
    let job = page(&server, &format!("/afterward/jobs/{id}")).text();
    assert!(
        job.contains("<td>payload</td><td>— <span class=\"at\">(not kept)</span>"),
        "{job}"
    );
    assert!(!job.contains("&quot;note&quot;"), "{job}");
}

#[test]
fn actions_are_off_unless_enabled_and_need_the_token_from_the_same_origin() {
    let (server, _) = server(admin_only());
    let id = server.post("/evil").send().text();
    server.wait_idle();
    let requeue = format!("/afterward/dead/{id}/requeue");
    let off = server.post(&requeue).header("x-role", "admin").send();
    assert_eq!(off.status(), 403, "read-only by default");
    assert!(!page(&server, "/afterward/dead").text().contains("Requeue"));

    let (server, _) = server_with_actions();
    let id = server.post("/evil").send().text();
    server.wait_idle();
    let html = page(&server, "/afterward/dead").text();
    let token = csrf(&html);
    let requeue = format!("/afterward/dead/{id}/requeue");
    let form = "application/x-www-form-urlencoded";
    let send = |origin: &str, body: &str| {
        server
            .post(&requeue)
            .header("x-role", "admin")
            .header("Origin", origin)
            .header("Content-Type", form)
            .body(body.to_owned())
            .send()
    };
    let host = format!("http://{}", server.addr());
    assert_eq!(send(&host, "csrf=wrong").status(), 403, "a wrong token");
    assert_eq!(send(&host, "").status(), 403, "no token");
    assert_eq!(
        send("http://evil.example", &format!("csrf={token}")).status(),
        403,
        "another origin"
    );
    let done = send(&host, &format!("csrf={token}"));
    assert_eq!(done.status(), 303, "{}", done.text());
    assert_eq!(done.header("Location"), Some("/afterward/dead"));
    // Requeued, it ran again (and died again: its payload always fails).
    server.wait_idle();
    assert_eq!(server.stats().jobs_dead, 2);
    assert_eq!(server.jobs().dead_letters().len(), 1);
}

fn server_with_actions() -> (TestServer, Arc<Log>) {
    server(admin_only().actions(true))
}

#[test]
fn lists_are_paged_and_searched_and_a_running_job_is_cancelled_from_its_page() {
    let (server, log) = server_with_actions();
    let ids: Vec<String> = (0..120)
        .map(|i| post(&server, &format!("/probe?tag=t{i}")))
        .collect();
    server.wait_idle();
    let done = page(&server, "/afterward/jobs?state=done").text();
    assert!(done.contains("120 in all · page 1 of 3"), "{done}");
    let third = page(&server, "/afterward/jobs?state=done&page=3").text();
    assert_eq!(
        third.matches("/afterward/jobs/").count(),
        20,
        "the last page's 20 links"
    );
    let found = page(&server, &format!("/afterward/jobs?q={}", ids[7])).text();
    assert!(found.contains("1 in all"), "{found}");

    let held = post(&server, "/probe?tag=held&held=true");
    drop(log.wait_until(|s| s.order.iter().any(|t| t == "held")));
    let html = page(&server, &format!("/afterward/jobs/{held}")).text();
    let status = server.get(&format!("/jobs/{held}")).send().json();
    assert!(status["started_at_ms"].as_u64().is_some(), "{status}");
    assert!(html.contains("running for"), "{html}");
    assert!(
        html.contains("running") && html.contains("Cancel"),
        "{html}"
    );
    let cancel = server
        .post(&format!("/afterward/jobs/{held}/cancel"))
        .header("x-role", "admin")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf(&html)))
        .send();
    assert_eq!(cancel.status(), 303);
    assert_eq!(
        server.jobs().status(&held).unwrap().state.as_str(),
        "running",
        "told, still running"
    );
    let api = page(&server, "/afterward/api/overview").json();
    assert_eq!(api["mode"], "in-process");
    assert_eq!(api["queues"][0]["queue"], "default");
    assert_eq!(api["queues"][0]["running"], 1);
    log.release("held", 1);
    server.wait_idle();
}

#[test]
fn a_delayed_job_is_run_now_from_its_page() {
    let (server, log) = server_with_actions();
    let later = post(&server, "/probe?tag=later&delay_ms=600000");
    let html = page(&server, &format!("/afterward/jobs/{later}")).text();
    assert!(
        html.contains("delayed") && html.contains("Run now"),
        "{html}"
    );
    let run = server
        .post(&format!("/afterward/jobs/{later}/run-now"))
        .header("x-role", "admin")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf(&html)))
        .send();
    assert_eq!(run.status(), 303, "{}", run.text());
    drop(log.wait_until(|s| s.done("later") == 1));
    // Not waiting any more: a second run-now is a conflict.
    let again = server
        .post(&format!("/afterward/jobs/{later}/run-now"))
        .header("x-role", "admin")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf(&html)))
        .send();
    assert_eq!(again.status(), 409);
}
