//! The built-in extractors: the types handlers take as arguments
//! ([`FromRequest`] itself lives beside [`Request`], which it reads).
//!
//! A handler's arguments are extracted left to right. The first that fails
//! answers the request with its [`HttpError`] and the handler does not run.
//! Because the body is read once and kept (up to the body limit), extractors
//! that read it ([`Json`](crate::Json), [`RawBody`]) may come in any position.

use serde::de::DeserializeOwned;

use crate::de;
use crate::headers::Headers;
use crate::http_error::HttpError;
use crate::method::Method;
use crate::percent;
use crate::request::{FromRequest, OptionalFromRequest, Request};
use crate::state::State;
use crate::stats::Stats;
use crate::tasks::BackgroundTasks;

/// Path parameters: `{name}` segments of the route, percent-decoded.
///
/// `T` is one value (`Path<u32>`) for a route with one parameter, a tuple in
/// path order, or a struct read by name. A value that does not parse answers
/// `422`.
///
/// ```
/// use afterward::Path;
/// fn item(Path((user, id)): Path<(String, u32)>) -> String {
///     format!("{user}/{id}")
/// }
/// let app = afterward::App::new().get("/users/{user}/items/{id}", item);
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Path<T> {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        de::from_pairs(request.path_params())
            .map(Path)
            .map_err(|e| HttpError::unprocessable(format!("invalid path parameter: {e}")))
    }
}

/// Query parameters, deserialized from the query string into `T`.
///
/// Optional parameters are `Option` fields (FastAPI's `q: str | None = None`);
/// a missing required field or a value that does not parse answers `422`.
///
/// ```
/// use afterward::Query;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Search { q: Option<String>, limit: Option<u32> }
///
/// fn search(Query(search): Query<Search>) -> String {
///     format!("{:?} {:?}", search.q, search.limit)
/// }
/// # let _ = search;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let invalid = |e: String| HttpError::unprocessable(format!("invalid query string: {e}"));
        let pairs = percent::parse_query(request.query_string().unwrap_or("")).map_err(invalid)?;
        de::from_pairs(&pairs).map(Query).map_err(invalid)
    }
}

/// The request body as bytes, up to the server's body limit (`413` beyond it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBody(pub Vec<u8>);

impl FromRequest for RawBody {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        request.body().map(|body| RawBody(body.to_vec()))
    }
}

impl FromRequest for Headers {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        Ok(request.headers().clone())
    }
}

impl FromRequest for Method {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        Ok(request.method().clone())
    }
}

/// A snapshot of the server's counters, taken when the request is handled.
impl FromRequest for Stats {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        Ok(request.server_stats())
    }
}

impl FromRequest for BackgroundTasks {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        Ok(request.background_tasks().clone())
    }
}

impl<T: Clone + Send + Sync + 'static> FromRequest for State<T> {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        request.state::<T>().cloned().map(State).ok_or_else(|| {
            HttpError::internal(format!(
                "a handler asked for State<{}>, which the app does not have; add it with App::state",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A value built from the request once and shared: FastAPI's dependencies.
///
/// `resolve` may use any extractor, including [`BackgroundTasks`] (the
/// request's one list) and other dependencies ([`Depends<U>`], FastAPI's
/// sub-dependencies). Each dependency is resolved at most once per request:
/// later [`Depends<T>`] in the same request get a clone of the first value,
/// as FastAPI's per-request cache does.
///
/// ```
/// use afterward::{BackgroundTasks, Dependency, Depends, HttpError, Query, Request};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Q { q: Option<String> }
///
/// /// FastAPI's `get_query(background_tasks, q: str | None = None)`.
/// #[derive(Clone)]
/// struct QueryLogged(Option<String>);
///
/// impl Dependency for QueryLogged {
///     fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
///         let tasks: BackgroundTasks = request.extract()?;
///         let Query(Q { q }) = request.extract()?;
///         if let Some(q) = q.clone() {
///             tasks.add_task(move || println!("found query: {q}"));
///         }
///         Ok(QueryLogged(q))
///     }
/// }
///
/// fn handler(Depends(QueryLogged(q)): Depends<QueryLogged>) -> String {
///     format!("{q:?}")
/// }
/// # let _ = handler;
/// ```
pub trait Dependency: Clone + 'static {
    /// Builds the value from the request.
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError>;
}

/// Extracts the [`Dependency`] `T`, resolving it once per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depends<T>(pub T);

impl<T: Dependency> FromRequest for Depends<T> {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        request.cached(T::resolve).map(Depends)
    }
}

/// `None` when `T` is absent from the request; see [`OptionalFromRequest`].
/// An invalid `T` still rejects the request.
impl<T: OptionalFromRequest> FromRequest for Option<T> {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        T::from_request_optional(request)
    }
}

/// `None` when the route has no path parameters.
impl<T: DeserializeOwned> OptionalFromRequest for Path<T> {
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
        if request.path_params().is_empty() {
            return Ok(None);
        }
        Path::from_request(request).map(Some)
    }
}

/// `None` when the request has no query string (or an empty one).
impl<T: DeserializeOwned> OptionalFromRequest for Query<T> {
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
        if request.query_string().is_none_or(str::is_empty) {
            return Ok(None);
        }
        Query::from_request(request).map(Some)
    }
}

/// `None` when the body is empty; over the limit is still `413`.
impl OptionalFromRequest for RawBody {
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
        let body = request.body()?;
        Ok((!body.is_empty()).then(|| RawBody(body.to_vec())))
    }
}

/// Always there: the dependency resolves or rejects the request (make its
/// value an `Option` to express absence).
impl<T: Dependency> OptionalFromRequest for Depends<T> {
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
        Depends::from_request(request).map(Some)
    }
}

/// Extractors that cannot fail, hence never absent.
macro_rules! always_present {
    ($($ty:ty),*) => {$(
        impl OptionalFromRequest for $ty {
            fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
                <$ty>::from_request(request).map(Some)
            }
        }
    )*};
}

always_present!(Headers, Method, Stats, BackgroundTasks);
