//! A test harness: serve an [`App`] on `127.0.0.1:0` inside the test process,
//! send it requests, and wait for its background work deterministically.
//!
//! ```
//! use afterward::testing::TestServer;
//! use afterward::{App, BackgroundTasks};
//! use std::sync::{Arc, Mutex};
//!
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let written = log.clone();
//! let app = App::new().post("/hello", move |tasks: BackgroundTasks| {
//!     let log = written.clone();
//!     tasks.add_task(move || log.lock().unwrap().push("after the response"));
//!     "hello"
//! });
//!
//! let server = TestServer::new(app);
//! let response = server.post("/hello").send();
//! assert_eq!((response.status(), response.text()), (200, "hello".to_owned()));
//! server.wait_idle(); // every task of that request has run
//! assert_eq!(*log.lock().unwrap(), ["after the response"]);
//! ```
//!
//! The client is deliberately small: one HTTP/1.1 request per connection, with
//! `Connection: close`, reading a `Content-Length` or chunked body. It panics
//! on I/O errors, which is what a test wants.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::headers::Headers;
use crate::pool::ShutdownReport;
use crate::routing::App;
use crate::server::{Server, ServerBuilder, ServerHandle};
use crate::stats::{Counters, Stats};

/// The environment variable that picks the engine of a [`TestServer`] whose
/// builder names none (the binary reads the same one).
pub const ENGINE_VARIABLE: &str = "AFTERWARD_ENGINE";

/// How long [`TestServer::wait_idle`] and the client wait before failing the test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A server running an app on a free port of `127.0.0.1`, shut down on drop.
///
/// Why a response is a `500` (a missing `State<T>`, a dependency cycle, a
/// handler's panic message) is added to its body as `"reason"` and printed
/// to standard error, so that a failing test shows it, no logger needed.
/// (A server outside the harness never sends it.)
#[derive(Debug)]
pub struct TestServer {
    handle: Option<ServerHandle>,
    addr: SocketAddr,
    /// Whether requests wait for the background tasks (FastAPI's TestClient).
    wait_for_tasks: bool,
}

impl TestServer {
    /// Serves `app` with small test settings: 4 request workers, 2 background
    /// workers, and a 5 s shutdown timeout on drop, on the engine
    /// `AFTERWARD_ENGINE` names (see [`with_builder`](Self::with_builder)).
    ///
    /// # Panics
    ///
    /// If the server cannot start.
    pub fn new(app: App) -> TestServer {
        TestServer::with_builder(
            Server::builder()
                .workers(4)
                .background_workers(2)
                .shutdown_timeout(Duration::from_secs(5)),
            app,
        )
    }

    /// Serves `app` with `builder`'s settings, on `127.0.0.1:0` whatever its
    /// address says.
    ///
    /// The engine is the builder's if it names one; else the one the
    /// environment variable `AFTERWARD_ENGINE` names (`builtin`, or
    /// `tiny-http` in a build with that feature), so that one test suite can
    /// run on each engine; else the builtin engine.
    ///
    /// # Panics
    ///
    /// If the server cannot start, or `AFTERWARD_ENGINE` names no engine of
    /// this build.
    pub fn with_builder(builder: ServerBuilder, app: App) -> TestServer {
        let builder = match std::env::var(ENGINE_VARIABLE) {
            Ok(name) if !builder.engine_is_set() => {
                let engine: Engine = name
                    .parse()
                    .unwrap_or_else(|e| panic!("{ENGINE_VARIABLE}={name}: {e}"));
                builder.engine(engine)
            }
            _ => builder,
        };
        let server = builder
            .echo_errors(true)
            .address("127.0.0.1:0")
            .build(app)
            .expect("the test server binds 127.0.0.1:0");
        let addr = server.local_addr();
        let handle = server.spawn().expect("the test server starts");
        TestServer {
            handle: Some(handle),
            addr,
            wait_for_tasks: false,
        }
    }

    /// Makes every request of this server wait, once its response has been
    /// read, for the background tasks to finish: FastAPI's `TestClient`
    /// behaviour, so a test can read what the tasks wrote right after the
    /// call. (Concretely: until the server is idle; with several clients at
    /// once, that is until all their tasks have run.) Per request:
    /// [`TestRequest::wait_for_tasks`].
    ///
    /// ```
    /// # use afterward::{App, BackgroundTasks};
    /// # use std::sync::{Arc, Mutex};
    /// # let log = Arc::new(Mutex::new(Vec::new()));
    /// # let written = log.clone();
    /// # let app = App::new().post("/hello", move |tasks: BackgroundTasks| {
    /// #     let log = written.clone();
    /// #     tasks.add_task(move || log.lock().unwrap().push("written"));
    /// #     "hello"
    /// # });
    /// use afterward::testing::TestServer;
    ///
    /// let server = TestServer::new(app).waiting_for_tasks();
    /// server.post("/hello").send();
    /// assert_eq!(*log.lock().unwrap(), ["written"]); // no wait_idle needed
    /// ```
    pub fn waiting_for_tasks(mut self) -> TestServer {
        self.wait_for_tasks = true;
        self
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The running server's handle.
    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("the server runs until dropped")
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.handle().stats()
    }

    /// The app's jobs: statuses, dead letters, and the jobs captured under
    /// [`JobMode::Capture`](crate::JobMode::Capture)
    /// (`Server::builder().job_mode(...)`).
    ///
    /// # Panics
    ///
    /// If the app registers no job.
    pub fn jobs(&self) -> crate::jobs::Jobs {
        self.handle()
            .jobs()
            .expect("the app registers no job (App::job)")
    }

    /// Waits until every request has been answered and every background task
    /// has finished or been discarded.
    ///
    /// # Panics
    ///
    /// After [`TEST_TIMEOUT`], with the counters in the message.
    pub fn wait_idle(&self) {
        assert!(
            self.handle().wait_idle(TEST_TIMEOUT),
            "the server did not become idle within {TEST_TIMEOUT:?}: {:?}",
            self.stats()
        );
    }

    /// Shuts down with `timeout` and returns the report.
    pub fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.handle
            .take()
            .expect("the server runs until dropped")
            .shutdown(timeout)
    }

    /// A request with any method.
    pub fn request(&self, method: &str, path: &str) -> TestRequest {
        let mut request = TestRequest::new(self.addr, method, path);
        request.counters = Some(self.handle().counters().clone());
        request.wait_for_tasks = self.wait_for_tasks;
        request
    }

    /// A `GET` request.
    pub fn get(&self, path: &str) -> TestRequest {
        self.request("GET", path)
    }

    /// A `HEAD` request.
    pub fn head(&self, path: &str) -> TestRequest {
        self.request("HEAD", path)
    }

    /// A `POST` request.
    pub fn post(&self, path: &str) -> TestRequest {
        self.request("POST", path)
    }

    /// A `PUT` request.
    pub fn put(&self, path: &str) -> TestRequest {
        self.request("PUT", path)
    }

    /// A `PATCH` request.
    pub fn patch(&self, path: &str) -> TestRequest {
        self.request("PATCH", path)
    }

    /// A `DELETE` request.
    pub fn delete(&self, path: &str) -> TestRequest {
        self.request("DELETE", path)
    }
}

/// A request being built; [`send`](Self::send) it.
#[derive(Debug, Clone)]
pub struct TestRequest {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Headers,
    body: Vec<u8>,
    /// The server's counters, when a [`TestServer`] made the request.
    counters: Option<Arc<Counters>>,
    wait_for_tasks: bool,
}

impl TestRequest {
    /// A request to the server at `addr` (when the [`TestServer`] itself is
    /// busy elsewhere, shutting down for instance).
    pub fn new(addr: SocketAddr, method: &str, path: &str) -> TestRequest {
        TestRequest {
            addr,
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Headers::new(),
            body: Vec::new(),
            counters: None,
            wait_for_tasks: false,
        }
    }

    /// Makes [`send`](Self::send) wait, once the response has been read, for
    /// the background tasks to finish, as FastAPI's `TestClient` does (see
    /// [`TestServer::waiting_for_tasks`]).
    ///
    /// # Panics
    ///
    /// In `send`, for a request not made by a [`TestServer`] (made with
    /// [`TestRequest::new`]): it has no server to wait on.
    pub fn wait_for_tasks(mut self) -> TestRequest {
        self.wait_for_tasks = true;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> TestRequest {
        self.headers.append(name, value);
        self
    }

    /// Sets the body (sent with `Content-Length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> TestRequest {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> TestRequest {
        self.header("Content-Type", "application/json")
            .body(value.to_string())
    }

    /// The request as it goes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, self.path, self.addr
        );
        for (name, value) in self.headers.iter() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.headers.contains("Connection") {
            head.push_str("Connection: close\r\n");
        }
        if !self.headers.contains("Content-Length") && !self.headers.contains("Transfer-Encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Sends the request and reads the whole response.
    ///
    /// # Panics
    ///
    /// On a connection error, a malformed response, or no response within
    /// [`TEST_TIMEOUT`].
    pub fn send(self) -> TestResponse {
        let mut stream = connect(self.addr);
        stream
            .write_all(&self.to_bytes())
            .expect("send the request");
        let head_only = self.method == "HEAD";
        let response =
            read_response(&mut BufReader::new(stream), head_only).expect("read the response");
        if self.wait_for_tasks {
            let counters = self
                .counters
                .expect("only a request made by a TestServer can wait for its tasks");
            assert!(
                counters.wait_idle(TEST_TIMEOUT),
                "the background tasks did not finish within {TEST_TIMEOUT:?}: {:?}",
                counters.snapshot()
            );
        }
        response
    }
}

/// Opens a connection to `addr` with [`TEST_TIMEOUT`] on reads and writes.
///
/// # Panics
///
/// If the connection cannot be made.
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the test server");
    stream
        .set_read_timeout(Some(TEST_TIMEOUT))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(TEST_TIMEOUT))
        .expect("set a write timeout");
    stream
}

/// A response: status, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResponse {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl TestResponse {
    /// Reads one response from a connection you drive yourself: the status
    /// line, the headers, and a body framed by `Content-Length`, chunked
    /// encoding, or the end of the connection. Pass `to_head: true` for the
    /// answer to a `HEAD` request, which has no body whatever its headers say.
    ///
    /// For tests that write exact bytes (keep-alive, pipelining, malformed
    /// requests); [`TestRequest::send`] covers the rest. Keep the same
    /// `reader` across responses on one connection: it buffers what follows.
    ///
    /// ```no_run
    /// use std::io::{BufReader, Write};
    /// use afterward::testing::TestResponse;
    ///
    /// # let addr: std::net::SocketAddr = "127.0.0.1:8000".parse().unwrap();
    /// let mut stream = std::net::TcpStream::connect(addr)?;
    /// stream.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")?;
    /// let mut reader = BufReader::new(stream);
    /// let first = TestResponse::read_from(&mut reader, false)?;
    /// let second = TestResponse::read_from(&mut reader, false)?;
    /// # let _ = (first, second);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_from(reader: &mut impl BufRead, to_head: bool) -> io::Result<TestResponse> {
        read_response(reader, to_head)
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    ///
    /// If the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Reads one response from `reader`: status line, headers, and a body framed
/// by `Content-Length`, chunked encoding, or the end of the connection.
/// `head_only` is for a response to `HEAD`, which has no body whatever it says.
fn read_response(reader: &mut impl BufRead, head_only: bool) -> io::Result<TestResponse> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let status_line = read_line(reader)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Headers::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.append(name.trim(), value.trim());
    }
    let mut body = Vec::new();
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
    } else if let Some(length) = headers.get("Content-Length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else if headers
        .get("Transfer-Encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(reader)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(TestResponse {
        status,
        headers,
        body,
    })
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed mid-response",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
