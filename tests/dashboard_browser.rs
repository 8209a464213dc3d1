//! The dashboard in a real browser (headless Chromium, driven over the
//! DevTools protocol through a pipe: `support/browser.rs`): signing in with
//! the token, the overview, a job carrying markup shown as text, a dead
//! letter requeued by a click; no script, no CSP violation, no request to
//! another host. Screenshots go to `target/screenshots/` (the README's are
//! copies, in `docs/screenshots/`).

#[path = "support/browser.rs"]
mod browser;
#[path = "support/probe.rs"]
mod probe;
mod support;

use std::sync::Arc;

use afterward::testing::TestServer;
use afterward::{dashboard, Dashboard, Server};
use browser::Browser;
use probe::{evil, post, Evil, Log};

fn screenshot(page: &browser::Page<'_>, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = page.screenshot_png(dir.join(name)).unwrap();
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"), "{name}");
}

#[test]
fn a_browser_signs_in_sees_markup_as_text_and_requeues_a_dead_letter_by_a_click() {
    let log = Arc::new(Log::default());
    let app = probe::app(&log).job::<Evil>().post("/evil", evil).nest(
        "/afterward",
        dashboard(Dashboard::with_token("t0k").actions(true)),
    );
    let server = TestServer::with_builder(Server::builder(), app);
    for i in 0..12 {
        post(&server, &format!("/probe?tag=t{i}"));
    }
    let id = server.post("/evil").send().text();
    server.wait_idle();

    let browser = Browser::launch().expect("headless chromium (apt-get install chromium)");
    let page = browser.new_page().unwrap();
    page.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({
            "width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": false
        }),
    )
    .unwrap();
    let base = format!("http://{}/afterward", server.addr());
    // Not signed in: the login form; the token signs in.
    page.goto(&base).unwrap();
    assert_eq!(page.eval("location.pathname").unwrap(), "/afterward/login");
    page.eval("document.querySelector('input[name=token]').value = 't0k'")
        .unwrap();
    page.click("form button").unwrap();
    assert_eq!(page.eval("location.pathname").unwrap(), "/afterward");
    assert!(page.text("main").unwrap().contains("Queues"));
    screenshot(&page, "dashboard-overview.png");

    // The job's page: its error, markup, is text; no image was made of it.
    page.goto(&format!("{base}/jobs/{id}")).unwrap();
    let shown = page.text("main").unwrap();
    assert!(shown.contains("<img src=x onerror=alert(1)>"), "{shown}");
    assert_eq!(
        page.eval("document.querySelectorAll('img').length")
            .unwrap(),
        0
    );
    screenshot(&page, "dashboard-job.png");

    // A click on Requeue: the job runs again (and dies again).
    page.goto(&format!("{base}/dead")).unwrap();
    page.click("form[action$='/requeue'] button").unwrap();
    let at = page.eval("location.pathname").unwrap();
    assert_eq!(
        at,
        "/afterward/dead",
        "{}",
        page.eval("document.body.innerText").unwrap()
    );
    server.wait_idle();
    assert_eq!(server.stats().jobs_dead, 2, "requeued, it ran again");

    assert_eq!(page.csp_violations(), Vec::<serde_json::Value>::new());
    assert_eq!(page.foreign_requests(), Vec::<String>::new());
    assert_eq!(page.console_errors(), Vec::<String>::new());
}
