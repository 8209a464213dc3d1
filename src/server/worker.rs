//! The request workers: take a request from the engine, run its handler,
//! respond, then dispatch its tasks.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::ServerState;
use crate::access;
use crate::engine::{self, Exchange, Next};
use crate::http_error::HttpError;
use crate::method::Method;
use crate::request::{Request, RequestInit};
use crate::response::{IntoResponse, Response};
use crate::routing::Routed;
use crate::tasks::BackgroundTasks;
use crate::unwind::panic_message;

/// A request worker: takes requests until shutdown wakes it.
pub(super) fn serve(shared: &ServerState) {
    loop {
        match shared.listener.next() {
            Next::Request(exchange) => handle(shared, exchange),
            Next::Woken if shared.stopping.load(Ordering::SeqCst) => return,
            Next::Woken => {}
        }
    }
}

/// Handles one request: extract, run the handler, respond, then dispatch.
fn handle(shared: &ServerState, mut exchange: Exchange) {
    let started = Instant::now();
    shared.counters.request_started();
    let head = exchange.head_mut();
    let request_id = shared.ids.for_request(head.headers.get("X-Request-Id"));
    let method = head.method.clone();
    // Taken, not copied: the engine does not need it again.
    let target = std::mem::take(&mut head.target);
    let tasks = shared.pool.task_list(request_id.clone());

    let mut response = run_handler(shared, &mut exchange, &method, &target, &request_id, &tasks);
    if let (true, Some(reason)) = (shared.echo_errors, response.reason()) {
        // A test server: the reason goes in the body, where an assertion on
        // the response shows it, and to standard error, which the harness
        // shows beside a failing test. Never so in production.
        let status = response.status();
        eprintln!("afterward: request {request_id} answered {status}: {reason}");
        let body = serde_json::json!({"detail": "Internal Server Error", "reason": reason});
        response = Response::json(&body).with_status(status);
    }
    let mut response_tasks = response.take_background();
    if shared.pool.is_abandoned() && !(tasks.is_empty() && response_tasks.is_empty()) {
        // The shutdown deadline passed while the handler ran: its tasks
        // cannot run any more, so the request is refused, not answered as
        // if they would (run it, or refuse it: never a 2xx with its tasks
        // dropped).
        tasks
            .seal(std::mem::take(&mut response_tasks))
            .discard("its handler returned after the shutdown deadline");
        response = HttpError::shutting_down().into_response();
    }
    response
        .headers_mut()
        .set("X-Request-Id".into(), request_id.to_string().into());
    let status = response.status();

    shared.counters.responding(status);
    // Architecture invariant: a request's tasks reach the pool only once its
    // whole response has been handed to the operating system: `finish` runs
    // then (here, or on a worker once the event loop has sent the rest).
    // This is the only place the server seals a list and submits it.
    let (pool, counters, id) = (
        shared.pool.clone(),
        shared.counters.clone(),
        request_id.clone(),
    );
    let finish = move || {
        let batch = tasks.seal(response_tasks);
        let task_count = batch.len();
        pool.submit(batch);
        access::log(&method, &target, status, started, &request_id, task_count);
        counters.request_finished();
    };
    if let Err(e) = exchange.respond_then(response, finish) {
        log::debug!("request {id}: the response could not be sent: {e}");
    }
}

/// Answers a request that arrived once shutdown had begun: `503` with
/// `Retry-After` and `Connection: close`, counted and logged.
pub(super) fn refuse(shared: &ServerState, exchange: Exchange) {
    let started = Instant::now();
    let mut response = HttpError::shutting_down().into_response();
    let (counters, ids) = (&shared.counters, &shared.ids);
    engine::answered_unhandled(counters, ids, Some(exchange.head()), &mut response, started);
    let _ = exchange.respond_then(response, || ());
}

/// Builds the `Request`, routes it and runs its handler, catching a panic.
/// The tasks of a request whose handler never ran, or panicked, are discarded.
fn run_handler(
    shared: &ServerState,
    exchange: &mut Exchange,
    method: &Method,
    target: &str,
    request_id: &Arc<str>,
    tasks: &BackgroundTasks,
) -> Response {
    let (head, body) = exchange.parts();
    let mut request = Request::new(RequestInit {
        method: method.clone(),
        target,
        headers: std::mem::take(&mut head.headers),
        remote_addr: head.remote_addr,
        request_id: request_id.clone(),
        body,
        declared_length: head.content_length,
        body_limit: shared.max_body_bytes,
        tasks: tasks.clone(),
        state: shared.app.state_map(),
        counters: &shared.counters,
    });
    // Architecture invariant: no thread dies of a user panic; handlers run
    // only here, under `catch_unwind` (tasks: `BackgroundTask::run`).
    let admit = |request: &Request<'_>| shared.shed(request);
    match panic::catch_unwind(AssertUnwindSafe(|| shared.app.handle(&mut request, &admit))) {
        Ok(Routed::Handled(mut response)) => {
            if response.is_from_err() {
                // FastAPI's semantics: a handler that fails (returns `Err`)
                // does not run what it added, nor what its response carries.
                tasks
                    .seal(response.take_background())
                    .discard("its handler returned an error");
            }
            response
        }
        Ok(Routed::Rejected(error)) => {
            tasks
                .seal(Vec::new())
                .discard("the request was rejected before its handler ran");
            error.into_response()
        }
        Err(payload) => {
            tasks.seal(Vec::new()).discard("its handler panicked");
            HttpError::internal(format!(
                "handler for {method} {target} (request {request_id}) panicked: {}",
                panic_message(payload.as_ref())
            ))
            .into_response()
        }
    }
}

impl ServerState {
    /// Under [`OnFull::Shed`](crate::OnFull::Shed), the refusal of a routed
    /// request while the queue is full: only requests that may add background
    /// work (not an exempt method, not an exempt path) are shed, and counted.
    fn shed(&self, request: &Request<'_>) -> Option<HttpError> {
        let shed = self.shed.as_ref()?;
        if shed.methods.contains(request.method())
            || shed.paths.iter().any(|p| p == request.path())
            || !self.pool.is_full()
        {
            return None;
        }
        self.counters.rejected();
        Some(HttpError::new(503, "the server is busy; retry later").with_header("Retry-After", "1"))
    }
}
