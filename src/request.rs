//! [`Request`]: the request as extractors see it, and [`FromRequest`], the
//! trait extractors implement.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::engine::BodySource;
use crate::headers::Headers;
use crate::http_error::HttpError;
use crate::method::Method;
use crate::state::StateMap;
use crate::stats::{Counters, Stats};
use crate::tasks::BackgroundTasks;

/// A type that can be built from a request: a handler argument.
///
/// Implement it for a type of your own to make it an extractor. To build a
/// value once per request and share it between the handler and other
/// dependencies, implement [`Dependency`](crate::Dependency) instead and take [`Depends<T>`](crate::Depends).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a handler argument",
    label = "not an extractor",
    note = "handler arguments must implement `FromRequest`: `Path<T>`, `Query<T>`, `Json<T>`, `RawBody`, `Headers`, `State<T>`, `BackgroundTasks`, `Depends<T>`, ..."
)]
pub trait FromRequest: Sized {
    /// Extracts `Self`, or rejects the request with an error response.
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError>;
}

/// An extractor that may be absent from a request: what an `Option<T>`
/// handler argument needs.
///
/// `Ok(None)` means the thing is missing (no query string, no body); an
/// invalid value or a server-side failure still rejects the request (`422`,
/// `413`, `415`, `500`, a failed dependency), as a plain `T` would. So
/// `Option<Query<T>>` is `None` for `/items` but answers `422` for
/// `/items?id=abc`. This is axum 0.8's `OptionalFromRequest`.
#[diagnostic::on_unimplemented(
    message = "`Option<{Self}>` cannot be used as a handler argument",
    label = "`{Self}` cannot be absent",
    note = "`Option<T>` needs `T: OptionalFromRequest` (`Query`, `Json`, `RawBody`, `Path`, `Headers`, `Method`, `Depends`, ...); a missing `State<T>` is a server error, not an absent value"
)]
pub trait OptionalFromRequest: Sized {
    /// Extracts `Self`, `None` if it is absent, or rejects the request.
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError>;
}

/// One request, as [`FromRequest`] implementations see it.
///
/// Handlers do not take it directly: they take extractors, which read from it.
/// Write your own extractor or [`Dependency`](crate::Dependency) against it.
pub struct Request<'a> {
    method: Method,
    /// The target as sent; the path is what comes before `query_at`.
    target: &'a str,
    /// Where the query string starts (after `?`), if there is one.
    query_at: Option<usize>,
    headers: Headers,
    remote_addr: Option<SocketAddr>,
    request_id: Arc<str>,
    path_params: Vec<(String, String)>,
    body: BodyState<'a>,
    tasks: BackgroundTasks,
    state: &'a StateMap,
    counters: &'a Counters,
    /// Resolved dependencies by type; `None` while one is being resolved.
    dependencies: HashMap<TypeId, Option<Box<dyn Any>>>,
}

/// The body is read on first use, at most once, and kept.
enum BodyState<'a> {
    Unread {
        reader: &'a mut dyn Read,
        declared_length: Option<u64>,
        limit: usize,
    },
    Read(Vec<u8>),
    Failed(HttpError),
}

/// Everything [`Request::new`] needs.
pub(crate) struct RequestInit<'a> {
    pub(crate) method: Method,
    pub(crate) target: &'a str,
    pub(crate) headers: Headers,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) request_id: Arc<str>,
    pub(crate) body: BodySource<'a>,
    pub(crate) declared_length: Option<u64>,
    pub(crate) body_limit: usize,
    pub(crate) tasks: BackgroundTasks,
    pub(crate) state: &'a StateMap,
    pub(crate) counters: &'a Counters,
}

impl<'a> Request<'a> {
    pub(crate) fn new(init: RequestInit<'a>) -> Request<'a> {
        Request {
            method: init.method,
            target: init.target,
            query_at: init.target.find('?').map(|at| at + 1),
            headers: init.headers,
            remote_addr: init.remote_addr,
            request_id: init.request_id,
            path_params: Vec::new(),
            body: match init.body {
                BodySource::Bytes(bytes) => BodyState::Read(bytes),
                BodySource::Reader(reader) => BodyState::Unread {
                    reader,
                    declared_length: init.declared_length,
                    limit: init.body_limit,
                },
            },
            tasks: init.tasks,
            state: init.state,
            counters: init.counters,
            dependencies: HashMap::new(),
        }
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, still percent-encoded, without the query string.
    pub fn path(&self) -> &str {
        match self.query_at {
            Some(at) => &self.target[..at - 1],
            None => self.target,
        }
    }

    /// The raw query string (after `?`), if there is one.
    pub fn query_string(&self) -> Option<&str> {
        self.query_at.map(|at| &self.target[at..])
    }

    /// The request headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The client's address, when known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The request id: the client's `X-Request-Id`, or one the server made up.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The route's `{name}` parameters, percent-decoded, in path order.
    pub fn path_params(&self) -> &[(String, String)] {
        &self.path_params
    }

    pub(crate) fn set_path_params(&mut self, params: Vec<(String, String)>) {
        self.path_params = params;
    }

    /// This request's background tasks (the same list every time).
    pub fn background_tasks(&self) -> &BackgroundTasks {
        &self.tasks
    }

    /// The application state of type `T`, if the app has one.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    /// A snapshot of the server's counters (for a metrics endpoint, say).
    pub fn server_stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Runs the extractor `T` against this request.
    pub fn extract<T: FromRequest>(&mut self) -> Result<T, HttpError> {
        T::from_request(self)
    }

    /// The whole body, read (once) up to the server's body limit.
    ///
    /// Fails with `413` when the body is larger than the limit (without reading
    /// it when `Content-Length` says so up front) and `400` when it cannot be
    /// read.
    pub fn body(&mut self) -> Result<&[u8], HttpError> {
        if let BodyState::Unread {
            reader,
            declared_length,
            limit,
        } = &mut self.body
        {
            self.body = match read_limited(&mut **reader, *declared_length, *limit) {
                Ok(bytes) => BodyState::Read(bytes),
                Err(error) => BodyState::Failed(error),
            };
        }
        match &self.body {
            BodyState::Read(bytes) => Ok(bytes),
            BodyState::Failed(error) => Err(error.clone()),
            BodyState::Unread { .. } => unreachable!("the body was read just above"),
        }
    }

    /// The cached value of dependency `T`, or resolves it with `resolve` and
    /// caches it for the rest of the request.
    pub(crate) fn cached<T: Clone + 'static>(
        &mut self,
        resolve: impl FnOnce(&mut Self) -> Result<T, HttpError>,
    ) -> Result<T, HttpError> {
        let key = TypeId::of::<T>();
        match self.dependencies.get(&key) {
            Some(Some(value)) => {
                let value = value.downcast_ref::<T>().expect("cache keyed by TypeId");
                return Ok(value.clone());
            }
            Some(None) => {
                return Err(HttpError::internal(format!(
                    "dependency cycle: {} depends on itself",
                    std::any::type_name::<T>()
                )))
            }
            None => {}
        }
        self.dependencies.insert(key, None);
        let result = resolve(self);
        match &result {
            Ok(value) => {
                self.dependencies.insert(key, Some(Box::new(value.clone())));
            }
            Err(_) => {
                self.dependencies.remove(&key);
            }
        }
        result
    }
}

fn read_limited(
    reader: &mut dyn Read,
    declared_length: Option<u64>,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let too_large = || {
        HttpError::new(
            413,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if declared_length.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared_length.unwrap_or(0) as usize);
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| HttpError::new(400, format!("cannot read the request body: {e}")))?;
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path())
            .field("query", &self.query_string())
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::read_limited;

    #[test]
    fn a_declared_length_over_the_limit_is_refused_unread() {
        let mut never_read: &[u8] = &[];
        let error = read_limited(&mut never_read, Some(11), 10).unwrap_err();
        assert_eq!(error.status(), 413);
    }

    #[test]
    fn an_undeclared_body_is_cut_at_the_limit() {
        let mut body: &[u8] = b"0123456789A";
        assert_eq!(read_limited(&mut body, None, 10).unwrap_err().status(), 413);
        let mut body: &[u8] = b"0123456789";
        assert_eq!(read_limited(&mut body, None, 10).unwrap(), b"0123456789");
    }
}
