//! FastAPI-style background tasks on a small, synchronous, thread-pool HTTP
//! server.
//!
//! A handler answers the client at once and leaves slow follow-up work (sending
//! an email, processing an upload, writing an audit line) to run *after the
//! response has been sent*, on a dedicated background pool.
//!
//! ```no_run
//! use afterward::{App, BackgroundTasks, Json, Path, Server};
//! use serde_json::{json, Value};
//! use std::io::Write;
//!
//! fn write_notification(email: &str, message: &str) -> std::io::Result<()> {
//!     let mut log = std::fs::OpenOptions::new().create(true).append(true).open("log.txt")?;
//!     // One write per line: tasks of different requests run in parallel.
//!     log.write_all(format!("notification for {email}: {message}\n").as_bytes())
//! }
//!
//! fn send_notification(Path(email): Path<String>, tasks: BackgroundTasks) -> Json<Value> {
//!     tasks.add_task(move || write_notification(&email, "some notification"));
//!     Json(json!({"message": "Notification sent in the background"}))
//! }
//!
//! let app = App::new().post("/send-notification/{email}", send_notification);
//! Server::builder().address("127.0.0.1:8000").build(app)?.run()?;
//! # Ok::<(), afterward::Error>(())
//! ```
//!
//! # Background tasks: the semantics
//!
//! - **A task is any `FnOnce() + Send + 'static`** returning `()` or
//!   `Result<(), E: Display>`; the closure captures its arguments, as FastAPI's
//!   `add_task(func, *args)` passes them. A future works too
//!   ([`BackgroundTasks::add_async_task`]), driven to completion on the pool
//!   without an async runtime. Name a task with [`BackgroundTask::named`].
//! - **One list per request.** Every [`BackgroundTasks`] obtained during one
//!   request (by the handler, its dependencies, their sub-dependencies) is the
//!   same list, and every task in it runs, in the order added. (This is what
//!   FastAPI does too; we make it an invariant you can rely on.)
//! - **Tasks start only after the response is sent.** The server hands the list
//!   to the pool only after writing and flushing the response, so the client
//!   never waits for a task.
//! - **One request's tasks run in order on one background thread**; different
//!   requests' tasks run in parallel across the pool.
//! - **A failing or panicking task does not stop the next.** It is logged with
//!   its name and the request id and counted; the request's later tasks still
//!   run. (Starlette skips them; we deliberately do not.)
//! - **A response can carry its own tasks** ([`Response::with_background`],
//!   Starlette's `BackgroundTask`). They run after the request's list and never
//!   replace it. (FastAPI silently drops the injected tasks in that case.)
//! - **A handler that returns `Err` does not run its tasks**, as in FastAPI
//!   (`raise HTTPException` after `add_task`): they are discarded, logged and
//!   counted. An error response returned on purpose keeps them;
//!   [`BackgroundTasks::clear`] drops what was added so far.
//! - **A handler that panics** answers `500` with `{"detail": ...}`; the worker
//!   thread survives; the request's tasks are discarded, logged and counted.
//!   So are the tasks of a request rejected before its handler ran (a `422`
//!   from an extractor, say).
//! - **Nothing is lost silently.** A task added after its request's list was
//!   dispatched, or still queued when the shutdown deadline passes, is not run:
//!   it is logged with its name and request id and counted as
//!   [`discarded`](Stats::discarded). When the server is idle,
//!   `scheduled == completed + failed + panicked + discarded`.
//!
//! # The pool and its limits
//!
//! A fixed number of named threads (`afterward-bg-N`) read a bounded queue of
//! request task lists. When the queue is full, the request worker that has just
//! responded waits for room: backpressure slows new requests down, and nothing
//! is dropped. Every limit is set on the [`ServerBuilder`], which documents its
//! defaults. [`ServerHandle::stats`] reads the counters at any time, and
//! [`ServerHandle::wait_idle`] waits until no work is left.
//!
//! # Named jobs
//!
//! For work that needs more than a closure (retries, a status to poll, a
//! payload that could travel to another machine), a handler enqueues a
//! [`Job`]: a serde type with a `NAME`, registered with [`App::job`]. The
//! job starts after the response like a task; a failed attempt is retried
//! with exponential backoff and jitter (the wait happens in a timer, not on
//! a pool thread), then the job is dead and kept in the dead letters.
//! [`Jobs`] and [`job_status_handler`] tell where each job is; every job
//! ends once as succeeded, dead or discarded. [`JobMode`] makes tests run
//! jobs at once or capture them. README "Tasks or jobs?" compares the two.
//!
//! # Background tasks in your own server
//!
//! The pool is public: [`BackgroundPool`] gives any synchronous server (a
//! tiny_http loop, say) the same guarantees. Make a list per request with
//! [`BackgroundPool::tasks`], let the handler fill it, respond, then hand it
//! over with [`BackgroundPool::dispatch`]; [`BackgroundPool::shutdown`] drains
//! and reports. `examples/tiny_http_loop.rs` is a whole server in that shape.
//!
//! # Engines
//!
//! The server speaks HTTP/1.1 through its own engine ([`Engine::Builtin`]:
//! timeouts, limits, a connection cap, strict framing). With the cargo feature
//! `tiny-http`, [`ServerBuilder::engine`] can put it on tiny_http 0.12 instead,
//! the engine this crate was designed on; everything above the engine behaves
//! the same, but tiny_http has no timeouts or limits (see SECURITY.md).
//!
//! # Shutdown
//!
//! With the `signals` feature, `Server::run_until_signal` serves until
//! SIGINT or SIGTERM, then shuts down gracefully, as the binary does. Without
//! it, [`Server::run`] listens for no signal: Ctrl-C kills the process with
//! its queued tasks.
//!
//! # Logging
//!
//! Access lines, task and job failures, retries and the shutdown report go
//! through the [`log`](https://docs.rs/log) crate. Install a logger
//! (`env_logger::init()`, say) or they go nowhere.
//!
//! [`ServerHandle::shutdown`] (or a [`Stopper`] for [`Server::run`]) stops taking
//! requests, lets those in flight finish and dispatch their tasks, and drains
//! the queue until the deadline. The [`ShutdownReport`] lists every task not
//! run by then, and each is logged.
//!
//! # Handlers and extractors
//!
//! A handler is a function whose arguments are extractors ([`FromRequest`]) and
//! whose return value is an [`IntoResponse`]: [`Path`], [`Query`], [`Json`],
//! [`RawBody`], [`Headers`], [`State`], [`BackgroundTasks`], and your own
//! dependencies through [`Depends`] and [`Dependency`] (resolved once per
//! request, as FastAPI caches them). Bad input answers a `4xx` with a JSON
//! `{"detail": ...}` body: `422` for invalid input, `413` for a body over the
//! limit, `404` and `405` from the router.
//!
//! # Testing
//!
//! [`testing::TestServer`] serves an app on `127.0.0.1:0` inside the test
//! process and waits for background work deterministically.
//!
//! # Panic handling
//!
//! Handler and task panics are caught, logged and counted; the threads that ran
//! them carry on. The process's panic hook still runs first, so the default
//! hook also prints the panic to standard error.

// Denied everywhere but `engine::limits` (two system calls that std does not
// wrap: getrlimit and setrlimit, each with its proof of soundness).
#![deny(unsafe_code)]
#![deny(missing_docs)]
// Calls that cannot take a job give it back (`Result<(), Envelope>`): the
// job is moved, never copied, and the `Err` path is the rare one; boxing
// the envelope would cost an allocation per job on the common path.
#![allow(clippy::result_large_err)]

mod access;
mod background;
mod block_on;
mod dashboard;
mod de;
mod engine;
mod error;
mod extract;
mod handler;
mod headers;
mod http_error;
mod jobs;
mod json;
pub mod logging;
mod method;
mod metrics;
mod percent;
mod pool;
mod prometheus;
#[cfg(feature = "redis")]
pub mod redis;
mod request;
mod response;
mod routing;
mod server;
mod state;
mod stats;
mod tasks;
pub mod testing;
mod unwind;

pub use crate::background::{BackgroundPool, BackgroundPoolBuilder};
pub use crate::dashboard::{dashboard, Dashboard};
pub use crate::engine::Engine;
pub use crate::error::Error;
pub use crate::extract::{Dependency, Depends, Path, Query, RawBody};
pub use crate::handler::Handler;
pub use crate::headers::Headers;
pub use crate::http_error::HttpError;
pub use crate::jobs::{
    job_cancel_handler, job_status_handler, CancelError, Cancellation, DeadLetter, EnqueueError,
    Envelope, GiveUp, Job, JobContext, JobId, JobMode, JobOptions, JobResult, JobSettings,
    JobState, JobStatus, Jobs, Missed, QueueOrder, Queues, ResultError, Schedule, ScheduleInfo,
    DEFAULT_JOB_STATUS_CAPACITY, DEFAULT_MAX_RESULT_BYTES, DEFAULT_QUEUE,
    DEFAULT_STATUS_PAYLOAD_BYTES, ENVELOPE_VERSION,
};
pub use crate::json::Json;
pub use crate::method::Method;
pub use crate::metrics::{metrics_handler, PROMETHEUS_CONTENT_TYPE};
pub use crate::pool::{OnFull, ShutdownReport, DEFAULT_QUEUE_CAPACITY};
pub use crate::request::{FromRequest, OptionalFromRequest, Request};
pub use crate::response::{IntoResponse, Response};
pub use crate::routing::App;
pub use crate::server::{
    Server, ServerBuilder, ServerHandle, Stopper, DEFAULT_ADDRESS, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use crate::state::State;
pub use crate::stats::{DurationHistogram, Stats, TaskInfo, DURATION_BUCKETS};
pub use crate::tasks::{BackgroundTask, BackgroundTasks, IntoTaskResult};

/// Entry points for the `cargo fuzz` targets in `fuzz/`; built only with
/// `--cfg fuzzing`, which `cargo fuzz` sets. Not part of the API.
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;

/// README.md's Rust examples, compiled as doctests (and run, those that do
/// not serve), so that the README never shows code that does not build. They
/// need every feature the README shows (`signals`, `redis`).
#[cfg(all(doctest, feature = "signals", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
