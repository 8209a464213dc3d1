//! Jobs as a web app meets them: the [`Jobs`] extractor, the ready-made
//! status route ([`job_status_handler`]), and an enqueue's error as a
//! response.

use super::cancel::CancelError;
use super::handle::Jobs;
use super::job::EnqueueError;
use crate::extract::Path;
use crate::http_error::HttpError;
use crate::request::{FromRequest, OptionalFromRequest, Request};
use crate::response::{IntoResponse, Response};

/// The server's jobs; a `500` if the app registers none.
impl FromRequest for Jobs {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        request.background_tasks().jobs().ok_or_else(|| {
            HttpError::internal("a handler asked for Jobs, but the app registers no job (App::job)")
        })
    }
}

/// `None` when the app registers no job.
impl OptionalFromRequest for Jobs {
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
        Ok(request.background_tasks().jobs())
    }
}

/// A ready-made handler for `GET /jobs/{id}`: `200` with
/// [`JobStatus::to_json`](super::JobStatus::to_json) (`{"id", "name", "queue", "status", "attempts", "error"?}`),
/// or `404 {"detail"}` for an id the store does not know (never enqueued, or
/// evicted). Responses say `Cache-Control: no-store`.
///
/// ```
/// # use afterward::App;
/// let app = App::new().get("/jobs/{id}", afterward::job_status_handler);
/// # let _ = app;
/// ```
pub fn job_status_handler(Path(id): Path<String>, jobs: Jobs) -> Response {
    let response = match jobs.lookup(&id) {
        Ok(Some(status)) => Response::json(&status.to_json()),
        Ok(None) => HttpError::new(404, format!("no job with id {id}")).into_response(),
        Err(error) => {
            log::warn!("job {id}: its status could not be read: {error}");
            HttpError::new(503, "job statuses are unavailable, try again later").into_response()
        }
    };
    response.with_header("Cache-Control", "no-store")
}

/// A ready-made handler for `DELETE /jobs/{id}`
/// ([`Jobs::cancel`](super::Jobs::cancel)): `200 {"id", "status"}`, the
/// status `cancelled` (it will not start) or `cancelling` (it runs, and is
/// told); `404 {"detail"}` for an unknown id; `409 {"detail"}` for a job
/// that has ended; `503` when Redis cannot be asked.
///
/// ```
/// # use afterward::App;
/// let app = App::new().delete("/jobs/{id}", afterward::job_cancel_handler);
/// # let _ = app;
/// ```
pub fn job_cancel_handler(Path(id): Path<String>, jobs: Jobs) -> Response {
    let response = match jobs.cancel(&id) {
        Ok(done) => Response::json(&serde_json::json!({"id": id, "status": done.as_str()})),
        Err(CancelError::NotFound) => {
            HttpError::new(404, format!("no job with id {id}")).into_response()
        }
        Err(error @ CancelError::Ended(_)) => {
            HttpError::new(409, format!("job {id}: {error}")).into_response()
        }
        Err(error) => {
            log::warn!("job {id}: could not be cancelled: {error}");
            HttpError::new(503, "the job queue is unavailable, try again later").into_response()
        }
    };
    response.with_header("Cache-Control", "no-store")
}

/// A handler can `?` an enqueue: a `500` for a mistake of the program, with
/// the reason logged; a `503` when the broker is unavailable; a `400` naming
/// the queue for a queue that is not valid or not served (a queue chosen by
/// the request, most likely).
impl From<EnqueueError> for HttpError {
    fn from(error: EnqueueError) -> HttpError {
        match error {
            EnqueueError::Unavailable(_) => {
                log::warn!("{error}");
                HttpError::new(503, "the job queue is unavailable, try again later")
            }
            EnqueueError::Queue { .. } => HttpError::new(400, error.to_string()),
            _ => HttpError::internal(error),
        }
    }
}
