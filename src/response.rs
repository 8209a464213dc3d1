//! [`Response`] and [`IntoResponse`]: what handlers return.

use std::borrow::Cow;

use serde::Serialize;

use crate::headers::Headers;
use crate::tasks::BackgroundTask;

/// An HTTP response: status, headers, body, and optionally background tasks of
/// its own.
///
/// Handlers usually return something that converts into a `Response` (see
/// [`IntoResponse`]); build one directly to set headers or attach a task.
#[derive(Debug)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    background: Vec<BackgroundTask>,
    /// Made from the `Err` of a handler's `Result`: the request failed, and
    /// its background tasks are discarded, as FastAPI does after an
    /// `HTTPException`.
    from_err: bool,
    /// Why this is a `500`, when the server made it so: logged, never sent.
    reason: Option<String>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Headers::new(),
            body: Vec::new(),
            background: Vec::new(),
            from_err: false,
            reason: None,
        }
    }

    /// `200 OK` with a UTF-8 `text/plain` body.
    pub fn text(body: impl Into<String>) -> Response {
        Response::new(200)
            .with_static_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with `value` serialized as JSON.
    ///
    /// If `value` cannot be serialized (a map with non-string keys, say), the
    /// response is a `500` and the error is logged.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(200)
                .with_static_header("Content-Type", "application/json")
                .with_body(body),
            Err(e) => {
                log::error!("cannot serialize the response body as JSON: {e}");
                // What `HttpError::internal` answers, written out: this file
                // sits below `http_error.rs`.
                Response::new(500)
                    .with_static_header("Content-Type", "application/json")
                    .with_body(&br#"{"detail":"Internal Server Error"}"#[..])
            }
        }
    }

    /// Sets the status code.
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// Sets a header, replacing any of the same name.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.insert(name, value);
        self
    }

    /// [`with_header`](Self::with_header) with static text, not copied.
    pub(crate) fn with_static_header(
        mut self,
        name: &'static str,
        value: &'static str,
    ) -> Response {
        self.headers.set(Cow::Borrowed(name), Cow::Borrowed(value));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Attaches a task to run after this response is sent: Starlette's
    /// `Response(background=...)`.
    ///
    /// It runs after the tasks of the request's [`BackgroundTasks`] list, on
    /// the same thread, and never replaces them. Calling this again adds
    /// another task after the first.
    ///
    /// [`BackgroundTasks`]: crate::BackgroundTasks
    pub fn with_background(mut self, task: BackgroundTask) -> Response {
        self.background.push(task);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The tasks attached with [`with_background`](Self::with_background).
    pub fn background(&self) -> &[BackgroundTask] {
        &self.background
    }

    /// Whether this response was made from the `Err` of a handler's `Result`
    /// (the request's background tasks are then discarded).
    pub fn is_from_err(&self) -> bool {
        self.from_err
    }

    /// Why the server made this a `500` (never sent to the client).
    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    pub(crate) fn set_reason(&mut self, reason: Option<String>) {
        self.reason = reason;
    }

    /// Takes the attached tasks out, leaving none.
    pub(crate) fn take_background(&mut self) -> Vec<BackgroundTask> {
        std::mem::take(&mut self.background)
    }

    /// Splits into status, headers and body, for the engine to write.
    pub(crate) fn into_wire(self) -> (u16, Headers, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

/// Anything a handler can return.
///
/// | type | response |
/// |---|---|
/// | [`Response`] | as is |
/// | `()` | `200`, empty body |
/// | `&'static str`, `String` | `200`, `text/plain` |
/// | `Vec<u8>` | `200`, `application/octet-stream` |
/// | [`Json<T>`](crate::Json), `serde_json::Value` | `200`, `application/json` |
/// | [`HttpError`](crate::HttpError) | its status, `{"detail": ...}` |
/// | `(u16, T)` | `T`'s response with that status |
/// | `Result<T, E>` | `T`'s or `E`'s response; `Err` also discards the request's tasks |
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be turned into an HTTP response",
    note = "return a `Response`, `Json<T>`, `serde_json::Value`, `String`, `(u16, T)`, or `Result<T, E>` of those"
)]
pub trait IntoResponse {
    /// Converts `self` into a response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::new(200)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        Response::new(200)
            .with_static_header("Content-Type", "application/octet-stream")
            .with_body(self)
    }
}

impl IntoResponse for serde_json::Value {
    fn into_response(self) -> Response {
        Response::json(&self)
    }
}

impl<T: IntoResponse> IntoResponse for (u16, T) {
    fn into_response(self) -> Response {
        self.1.into_response().with_status(self.0)
    }
}

/// `Err` means the request failed: the server discards the request's
/// background tasks (logged and counted), as FastAPI does when a handler
/// raises `HTTPException` after `add_task`. An error response returned on
/// purpose (an `HttpError` or a `(404, ...)`, not inside `Err`) keeps them.
impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(value) => value.into_response(),
            Err(error) => {
                let mut response = error.into_response();
                response.from_err = true;
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HttpError;

    #[test]
    fn tuples_and_results_set_the_status() {
        let response = (202, serde_json::json!({"ok": true})).into_response();
        assert_eq!(response.status(), 202);
        assert_eq!(
            response.headers().get("content-type"),
            Some("application/json")
        );
        assert_eq!(response.body(), br#"{"ok":true}"#);

        let failed: Result<String, HttpError> = Err(HttpError::new(409, "taken"));
        let response = failed.into_response();
        assert_eq!(response.status(), 409);
        assert_eq!(response.body(), br#"{"detail":"taken"}"#);
    }

    #[test]
    fn an_unserializable_value_is_a_500() {
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(Response::json(&map).status(), 500);
    }
}
