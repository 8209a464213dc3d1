//! Running the real `afterward` binary as a child process on port 0.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use afterward::testing::{TestRequest, TestResponse};

use super::{TempDir, TEST_TIMEOUT};

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_afterward");

/// A running `afterward` process, killed on drop if still running.
pub struct Afterward {
    child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Afterward {
    /// Starts the binary with `--port 0`, `--log-file` in a temp dir, and
    /// `args`; waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Afterward {
        Afterward::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Afterward {
        let dir = TempDir::new();
        let stderr = std::fs::File::create(dir.file("stderr.log")).unwrap();
        let mut child = Command::new(BIN)
            .args(["--port", "0", "--log-file"])
            .arg(dir.file("log.txt"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the afterward binary");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the first line");
        let addr = line
            .split("listening on http://")
            .nth(1)
            .unwrap_or_else(|| panic!("no `listening on` line: {line:?}"))
            .trim()
            .parse()
            .expect("an address after `listening on http://`");
        Afterward { child, addr, dir }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn request(&self, method: &str, path: &str) -> TestRequest {
        TestRequest::new(self.addr, method, path)
    }

    pub fn get(&self, path: &str) -> TestResponse {
        self.request("GET", path).send()
    }

    pub fn post(&self, path: &str) -> TestResponse {
        self.request("POST", path).send()
    }

    /// The current value of an unlabelled metric from `GET /metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// Polls `GET /metrics` until `name` equals `value` ([`TEST_TIMEOUT`] guard).
    pub fn wait_for_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        while self.metric(name) != value {
            assert!(Instant::now() < deadline, "{name} never reached {value}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls `GET /metrics` until `name` is at least `value` ([`TEST_TIMEOUT`] guard).
    pub fn wait_for_metric_at_least(&self, name: &str, value: f64) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        while self.metric(name) < value {
            assert!(Instant::now() < deadline, "{name} never reached {value}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` (`TERM`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        // The shell's built-in `kill`: no procps needed on the machine.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.child.id())])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; a watchdog kills it after
    /// [`TEST_TIMEOUT`], failing the test.
    pub fn wait(&mut self) -> ExitStatus {
        let pid = self.child.id();
        let (exited, watched) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let timed_out = watched.recv_timeout(TEST_TIMEOUT).is_err();
            if timed_out {
                let _ = Command::new("sh")
                    .args(["-c", &format!("kill -KILL {pid}")])
                    .status();
            }
            timed_out
        });
        let status = self.child.wait().expect("wait for afterward");
        let _ = exited.send(());
        assert!(
            !watchdog.join().unwrap(),
            "afterward did not exit within {TEST_TIMEOUT:?}"
        );
        status
    }

    /// SIGTERM, then the exit status once it has drained.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.file("log.txt")
    }

    /// What the process has logged to stderr so far.
    pub fn stderr(&self) -> String {
        super::read(&self.dir.file("stderr.log"))
    }
}

impl Drop for Afterward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args`; returns status, stdout, stderr.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the afterward binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `afterward worker` running in the background, with a log file of its own;
/// killed on drop.
pub struct WorkerProcess {
    child: Child,
    dir: TempDir,
    /// Where its `/metrics` is served, with `--metrics-address`.
    pub metrics: Option<SocketAddr>,
    /// Its first line on standard output (`worker running jobs from …`).
    pub banner: String,
}

impl WorkerProcess {
    /// Starts `afterward worker --redis-url URL` with `args`; returns once it
    /// runs (its first line on standard output).
    pub fn start(redis_url: &str, args: &[&str]) -> WorkerProcess {
        let dir = TempDir::new();
        let stderr = std::fs::File::create(dir.file("stderr.log")).unwrap();
        let mut child = Command::new(BIN)
            .args(["worker", "--redis-url", redis_url, "--log-file"])
            .arg(dir.file("log.txt"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start afterward worker");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the first line");
        assert!(line.contains("worker running jobs"), "{line:?}");
        let metrics = line.split("metrics on http://").nth(1).map(|rest| {
            rest.trim()
                .trim_end_matches("/metrics")
                .parse()
                .expect("an address after `metrics on http://`")
        });
        WorkerProcess {
            child,
            dir,
            metrics,
            banner: line,
        }
    }

    /// The worker's `/metrics` page.
    pub fn metrics_text(&self) -> String {
        let addr = self.metrics.expect("started with --metrics-address");
        TestRequest::new(addr, "GET", "/metrics").send().text()
    }

    /// Polls the worker's `/metrics` until it has the line `sample` (with
    /// its newline): counters are updated after what they count is seen
    /// elsewhere (a line written, a status in Redis). [`TEST_TIMEOUT`] guard.
    pub fn wait_for_sample(&self, sample: &str) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            let metrics = self.metrics_text();
            if metrics.contains(sample) {
                return;
            }
            assert!(Instant::now() < deadline, "{sample} never in\n{metrics}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The lines the worker's jobs appended to its log file.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.file("log.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the log file has `line`.
    pub fn wait_for_line(&self, line: &str) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        while !self.lines().iter().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "the worker never wrote {line:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.child.id())])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit (after a signal).
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for the worker")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.file("stderr.log")).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
