//! [`HttpError`]: a failure answered as `{"detail": ...}` with a status code.

use std::fmt;

use crate::response::{IntoResponse, Response};

/// An error answered to the client as JSON `{"detail": "..."}`: FastAPI's
/// `HTTPException`.
///
/// Extractors reject bad input with one (`404`, `405`, `413`, `415`, `422`...),
/// and handlers can return one, alone or as the `Err` of a `Result`.
///
/// ```
/// use afterward::{HttpError, Json, Path};
/// use serde_json::{json, Value};
///
/// fn read_item(Path(id): Path<u32>) -> Result<Json<Value>, HttpError> {
///     if id != 1 {
///         return Err(HttpError::new(404, "Item not found"));
///     }
///     Ok(Json(json!({"id": id})))
/// }
/// # let _ = read_item;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    status: u16,
    detail: String,
    headers: Vec<(String, String)>,
    /// Why a `500` happened: logged, never sent (a test server prints it).
    reason: Option<String>,
}

impl HttpError {
    /// `503` with `Retry-After: 1` and `Connection: close`: the answer to a
    /// request that arrives once shutdown has begun.
    pub(crate) fn shutting_down() -> HttpError {
        HttpError::new(503, "the server is shutting down")
            .with_header("Retry-After", "1")
            .with_header("Connection", "close")
    }

    /// An error with `status` and a human-readable `detail`.
    pub fn new(status: u16, detail: impl Into<String>) -> HttpError {
        HttpError {
            status,
            detail: detail.into(),
            headers: Vec::new(),
            reason: None,
        }
    }

    /// Adds a header to the error response (`Allow` on a `405`, say).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpError {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The detail message.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// `422 Unprocessable Entity`: the input is malformed or invalid.
    pub(crate) fn unprocessable(detail: impl Into<String>) -> HttpError {
        HttpError::new(422, detail)
    }

    /// `500 Internal Server Error`, with the real reason logged, not sent.
    pub(crate) fn internal(reason: impl fmt::Display) -> HttpError {
        let reason = reason.to_string();
        log::error!("{reason}");
        HttpError {
            reason: Some(reason),
            ..HttpError::new(500, "Internal Server Error")
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

impl std::error::Error for HttpError {}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "detail": self.detail });
        let mut response = Response::json(&body).with_status(self.status);
        for (name, value) in self.headers {
            response = response.with_header(name, value);
        }
        response.set_reason(self.reason);
        response
    }
}
