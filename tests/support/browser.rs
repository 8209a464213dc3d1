#![allow(dead_code)] // Each test file uses a different part of this module.

//! Headless Chromium for tests (the dashboard's), driven over the Chrome DevTools Protocol through a pipe.
//!
//! std + serde_json only, and no `unsafe`. Transport: `--remote-debugging-pipe`, where
//! chromium reads NUL-terminated JSON messages from its fd 3 and writes them to its fd 4
//! (`kReadFD = 3`, `kWriteFD = 4` in Chromium's components/devtools/devtools_pipe). std's
//! `Command` can only place fds 0..=2, so chromium is started through `/bin/sh`, whose
//! redirections move our pipes from its stdin/stdout to fds 3/4 before it execs chromium:
//! `exec chromium ... 3<&0 4>&1 0</dev/null 1>&2`. The pipes std creates are close-on-exec in
//! the parent, so no other child spawned meanwhile (parallel tests) inherits them, and
//! chromium sees EOF — and closes itself — as soon as this process is gone, however it dies.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Chromium's path unless `CHROMIUM` is set.
pub const CHROMIUM: &str = "/usr/bin/chromium";
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
    "--hide-scrollbars",
    // Nothing but loopback is reached: every other host goes to a proxy that is not there
    // (loopback bypasses proxies implicitly), so a page under test cannot leak traffic.
    "--proxy-server=127.0.0.1:9",
];
/// Name of the binding through which pages report `securitypolicyviolation` events.
const BINDING: &str = "__cdpReport";
const ON_NEW_DOCUMENT: &str = "document.addEventListener('securitypolicyviolation', e =>
  __cdpReport(JSON.stringify({directive: e.effectiveDirective, blocked: e.blockedURI,
    source: e.sourceFile, line: e.lineNumber, sample: e.sample, disposition: e.disposition})));";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the reader thread has received: responses by id, events in arrival order.
#[derive(Default)]
struct Inbox {
    responses: HashMap<u64, Value>,
    events: Vec<Value>,
    closed: Option<String>,
}

#[derive(Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    arrived: Condvar,
}

pub struct Browser {
    child: Child,
    to_chromium: Mutex<ChildStdin>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    dir: PathBuf,
    /// Bound on every wait (a response, a load, a condition), in ms.
    timeout_ms: AtomicU64,
    /// From spawn to the first DevTools answer.
    pub startup: Duration,
}

/// Installs chromium with apt-get when it is missing (root only; once per process).
pub fn ensure_chromium() -> Result<PathBuf, String> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let exe = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    let _once = lock(&INSTALL);
    if exe.is_file() {
        return Ok(exe);
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-q", "-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("apt-get: {e}"))
            .and_then(|s| {
                if s.success() {
                    Ok(())
                } else {
                    Err(format!("apt-get {args:?}: {s}"))
                }
            })
    };
    apt(&["update"])?;
    apt(&["install", "-y", "chromium"])?;
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!("{} still missing after apt-get", exe.display()))
    }
}

impl Browser {
    /// Starts `$CHROMIUM`, else /usr/bin/chromium.
    pub fn launch() -> Result<Browser, String> {
        let exe =
            std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
        Self::launch_with(&exe, &[])
    }

    /// `extra` flags follow the default ones.
    pub fn launch_with(exe: &Path, extra: &[&str]) -> Result<Browser, String> {
        if !exe.is_file() {
            return Err(format!(
                "chromium not found at {}: install it with `DEBIAN_FRONTEND=\
                noninteractive apt-get install -y -q chromium` (or set CHROMIUM, or call \
                browser::ensure_chromium())",
                exe.display()
            ));
        }
        let dir = fresh_dir()?;
        let log = File::create(dir.join("chromium.log")).map_err(|e| format!("log file: {e}"))?;
        let started = Instant::now();
        let spawned = Command::new("/bin/sh")
            .args(["-c", r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#])
            .arg(exe)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("starting {}: {e}", exe.display()));
            }
        };
        let (to_chromium, from_chromium) = (child.stdin.take(), child.stdout.take());
        let shared = Arc::new(Shared::default());
        let reader = Arc::clone(&shared);
        let from_chromium = from_chromium.expect("stdout was piped");
        std::thread::spawn(move || read_loop(from_chromium, reader));
        let mut browser = Browser {
            child,
            to_chromium: Mutex::new(to_chromium.expect("stdin was piped")),
            shared,
            next_id: AtomicU64::new(1),
            dir,
            timeout_ms: AtomicU64::new(20_000),
            startup: Duration::ZERO,
        };
        if let Err(e) = browser.call(None, "Browser.getVersion", json!({})) {
            std::thread::sleep(Duration::from_millis(100)); // lets a crash show its status
            let status = browser.child.try_wait().ok().flatten();
            let status = status.map_or("still running".into(), |s| s.to_string());
            let log = browser.log();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            let tail: Vec<_> = tail.into_iter().rev().collect();
            return Err(format!(
                "chromium did not start ({e}; {status}); its stderr ends with:\n{}",
                tail.join("\n")
            ));
        }
        browser.startup = started.elapsed();
        browser.set_timeout(Duration::from_secs(10));
        Ok(browser)
    }

    /// Opens a tab with the Page, Runtime, Log and Network domains on.
    pub fn new_page(&self) -> Result<Page<'_>, String> {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target = target["targetId"]
            .as_str()
            .ok_or("no targetId")?
            .to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_string();
        let page = Page {
            browser: self,
            session,
            target,
        };
        for domain in ["Page", "Runtime", "Log", "Network"] {
            page.call(&format!("{domain}.enable"), json!({}))?;
        }
        page.call("Page.setLifecycleEventsEnabled", json!({"enabled": true}))?;
        // --window-size sizes the window, not the viewport: pin the viewport itself.
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1024, "height": 768,
            "deviceScaleFactor": 1, "mobile": false}),
        )?;
        page.call("Runtime.addBinding", json!({"name": BINDING}))?;
        page.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": ON_NEW_DOCUMENT}),
        )?;
        Ok(page)
    }

    /// Chromium's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default()
    }

    /// Bound on every wait: a response, a load, a condition (10 s unless set).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Chromium's pid, and the temporary directory holding its profile and log.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every event received so far, for debugging a test.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared.inbox).events.clone()
    }

    fn send(&self, session: Option<&str>, method: &str, params: Value) -> Result<u64, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        bytes.push(0);
        lock(&self.to_chromium)
            .write_all(&bytes)
            .map_err(|e| format!("{method}: writing to chromium: {e}"))?;
        Ok(id)
    }

    fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.send(session, method, params)?;
        let mut reply = self.wait(method, self.timeout(), |inbox| inbox.responses.remove(&id))?;
        match reply.get("error") {
            Some(error) => Err(format!("{method}: {error}")),
            None => Ok(reply["result"].take()),
        }
    }

    /// Waits until `found` returns something, chromium is gone, or `timeout` has passed.
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&mut Inbox) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        let mut inbox = lock(&self.shared.inbox);
        loop {
            if let Some(it) = found(&mut inbox) {
                return Ok(it);
            }
            if let Some(why) = &inbox.closed {
                return Err(format!("{what}: {why}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{what}: no answer from chromium within {timeout:?}"
                ));
            }
            inbox = self
                .shared
                .arrived
                .wait_timeout(inbox, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn events_len(&self) -> usize {
        lock(&self.shared.inbox).events.len()
    }
}

impl Drop for Browser {
    /// Asks chromium to close, then kills it by pid if it has not exited within 2 s; then
    /// removes the profile. Chromium's helpers (zygote, renderers) go with the browser.
    fn drop(&mut self) {
        let _ = self.send(None, "Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // After a kill, chromium's helpers may still write to the profile for a moment.
        for _ in 0..40 {
            let _ = std::fs::remove_dir_all(&self.dir);
            if !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_loop(from_chromium: ChildStdout, shared: Arc<Shared>) {
    let mut reader = BufReader::with_capacity(1 << 16, from_chromium);
    let mut message = Vec::new();
    let why = loop {
        message.clear();
        match reader.read_until(0, &mut message) {
            Ok(0) => break "chromium closed the DevTools pipe (it exited or crashed)".to_string(),
            Err(e) => break format!("reading from chromium: {e}"),
            Ok(_) if message.pop() != Some(0) => break "chromium's pipe ended mid-message".into(),
            Ok(_) => {}
        }
        let value: Value = match serde_json::from_slice(&message) {
            Ok(value) => value,
            Err(e) => break format!("unreadable message from chromium: {e}"),
        };
        let mut inbox = lock(&shared.inbox);
        match value.get("id").and_then(Value::as_u64) {
            Some(id) => {
                inbox.responses.insert(id, value);
            }
            None => inbox.events.push(value),
        }
        drop(inbox);
        shared.arrived.notify_all();
    };
    lock(&shared.inbox).closed = Some(why);
    shared.arrived.notify_all();
}

/// A tab, attached in flat mode: its messages carry its session id.
pub struct Page<'b> {
    browser: &'b Browser,
    session: String,
    target: String,
}

impl Page<'_> {
    pub fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.browser.call(Some(&self.session), method, params)
    }

    /// Navigates and waits for the new document's load event.
    pub fn goto(&self, url: &str) -> Result<(), String> {
        let navigated = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = navigated["errorText"].as_str() {
            return Err(format!("navigating to {url}: {error}"));
        }
        match navigated["loaderId"].as_str() {
            Some(loader) => self.wait_load(Some(loader), 0, &format!("load of {url}")),
            None => Ok(()), // same-document navigation: there is no load event
        }
    }

    /// Value of a JS expression; promises are awaited, exceptions are errors.
    pub fn eval(&self, js: &str) -> Result<Value, String> {
        let mut done = self.call(
            "Runtime.evaluate",
            json!({"expression": js,
            "returnByValue": true, "awaitPromise": true, "userGesture": true}),
        )?;
        if let Some(e) = done.get("exceptionDetails") {
            let text = e["exception"]["description"]
                .as_str()
                .or(e["text"].as_str());
            return Err(format!("JS exception: {}", text.unwrap_or("?")));
        }
        Ok(done["result"]["value"].take())
    }

    /// Clicks the first element that matches; if that starts a navigation of the page (a form
    /// submits, a link is followed), waits for the new document's load event.
    pub fn click(&self, selector: &str) -> Result<(), String> {
        let since = self.browser.events_len();
        self.eval(&format!("{}.click()", query(selector)))?;
        // The navigation starts after the click's task ends (form submission is queued), so
        // allow it a moment to be requested.
        let settle = Duration::from_millis(150);
        let requested = self.browser.wait("navigation", settle, |inbox| {
            self.event_since(inbox, since, |e| {
                matches!(
                    e["method"].as_str(),
                    Some(
                        "Page.frameRequestedNavigation"
                            | "Page.frameStartedNavigating"
                            | "Page.frameStartedLoading"
                    )
                ) && e["params"]["frameId"] == self.target.as_str()
            })
        });
        match requested {
            Ok(_) => self.wait_load(
                None,
                since,
                &format!("navigation after clicking {selector}"),
            ),
            Err(_) => Ok(()),
        }
    }

    /// The rendered text of the first element that matches.
    pub fn text(&self, selector: &str) -> Result<String, String> {
        let text = self.eval(&format!("{}.innerText", query(selector)))?;
        text.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{selector}: no text"))
    }

    /// Polls a JS condition every 20 ms until it is truthy.
    pub fn wait_for(&self, condition: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.browser.timeout();
        loop {
            let value = self.eval(condition)?;
            if !(value.is_null() || value == false || value == 0 || value == "") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "`{condition}` still falsy after {:?}",
                    self.browser.timeout()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes a PNG of the viewport to `path` and returns its bytes.
    pub fn screenshot_png(&self, path: impl AsRef<Path>) -> Result<Vec<u8>, String> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let png = base64_decode(shot["data"].as_str().ok_or("no screenshot data")?)?;
        std::fs::write(path.as_ref(), &png)
            .map_err(|e| format!("writing {}: {e}", path.as_ref().display()))?;
        Ok(png)
    }

    /// Console errors, uncaught exceptions and the browser's own error entries (failed
    /// loads, CSP reports) of this tab so far.
    pub fn console_errors(&self) -> Vec<String> {
        self.events(|method, p| match method {
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                let args = p["args"].as_array().into_iter().flatten();
                Some(
                    args.map(|a| {
                        a["value"]
                            .as_str()
                            .map_or(a["value"].to_string(), str::to_string)
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                )
            }
            "Runtime.exceptionThrown" => Some(
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .unwrap_or(p["exceptionDetails"]["text"].as_str().unwrap_or("?"))
                    .into(),
            ),
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                Some(format!("{}: {}", p["entry"]["source"], p["entry"]["text"]))
            }
            _ => None,
        })
    }

    /// `securitypolicyviolation` events of this tab so far, as the page saw them.
    pub fn csp_violations(&self) -> Vec<Value> {
        self.events(|method, p| {
            (method == "Runtime.bindingCalled" && p["name"] == BINDING)
                .then(|| serde_json::from_str(p["payload"].as_str()?).ok())
                .flatten()
        })
    }

    /// URLs of every request this tab has started (blocked ones included).
    pub fn requests(&self) -> Vec<String> {
        self.events(|method, p| {
            (method == "Network.requestWillBeSent")
                .then(|| p["request"]["url"].as_str().map(str::to_string))
                .flatten()
        })
    }

    /// Requests to hosts other than loopback ones; data:, blob: and about: URLs are local.
    pub fn foreign_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|url| !is_local(url))
            .collect()
    }

    fn events<T>(&self, mut pick: impl FnMut(&str, &Value) -> Option<T>) -> Vec<T> {
        let inbox = lock(&self.browser.shared.inbox);
        inbox
            .events
            .iter()
            .filter(|e| e["sessionId"] == self.session.as_str())
            .filter_map(|e| pick(e["method"].as_str().unwrap_or(""), &e["params"]))
            .collect()
    }

    fn event_since(&self, inbox: &Inbox, since: usize, is: impl Fn(&Value) -> bool) -> Option<()> {
        inbox.events[since..]
            .iter()
            .find(|e| e["sessionId"] == self.session.as_str() && is(e))
            .map(|_| ())
    }

    /// The main frame's load event: of the document `loader` if given, else any after `since`.
    fn wait_load(&self, loader: Option<&str>, since: usize, what: &str) -> Result<(), String> {
        self.browser.wait(what, self.browser.timeout(), |inbox| {
            self.event_since(inbox, since, |e| match loader {
                Some(loader) => {
                    e["method"] == "Page.lifecycleEvent"
                        && e["params"]["name"] == "load"
                        && e["params"]["loaderId"] == loader
                }
                None => e["method"] == "Page.loadEventFired",
            })
        })
    }
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        let _ = self
            .browser
            .send(None, "Target.closeTarget", json!({"targetId": self.target}));
    }
}

/// JS for the first element matching `selector`, throwing if there is none.
fn query(selector: &str) -> String {
    let quoted = Value::from(selector).to_string();
    format!(
        "(document.querySelector({quoted}) ?? (() => {{ throw new Error('no element matches ' \
        + {quoted}) }})())"
    )
}

fn is_local(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return true;
    }; // data:, about:
    if scheme.starts_with("blob:") || scheme == "chrome" || scheme == "devtools" {
        return true;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A new `$TMPDIR/cdp-<pid>-<n>-<nanos>`; first removes those of processes that are gone (a
/// test killed by a signal leaves its chromium exiting by itself, but its directory behind).
fn fresh_dir() -> Result<PathBuf, String> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("cdp-")
            .and_then(|rest| rest.split('-').next());
        if pid
            .is_some_and(|pid| pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists())
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "cdp-{}-{}-{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().take_while(|&c| c != b'=') {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: byte {c}")),
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a b").is_err());
    }

    #[test]
    fn local_urls() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://localhost/",
            "http://[::1]:3/",
            "data:,x",
            "about:blank",
            "http://u@127.0.0.1/",
            "blob:http://127.0.0.1/uuid",
        ] {
            assert!(is_local(url), "{url}");
        }
        for url in [
            "http://example.invalid/x",
            "https://127.0.0.1.evil.com/",
            "http://[::2]/",
            "http://localhost.evil.com/",
        ] {
            assert!(!is_local(url), "{url}");
        }
    }
}
