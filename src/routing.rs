//! [`App`]: the route table (method + path pattern with `{name}` captures) and
//! the application state.

use std::borrow::Cow;
use std::time::Duration;

use crate::handler::{self, BoxedHandler, Handler};
use crate::http_error::HttpError;
use crate::jobs::schedule::ScheduleEntry;
use crate::jobs::{Job, Registry, Schedule};
use crate::method::Method;
use crate::percent;
use crate::request::Request;
use crate::response::Response;
use crate::state::StateMap;

/// An application: routes and shared state, ready to be served by a
/// [`Server`](crate::Server) or a [`TestServer`](crate::testing::TestServer).
///
/// Patterns are paths whose segments are literals or `{name}` captures:
/// `/items/{id}`. A request is matched against the routes in the order they
/// were added; the first route whose pattern matches and that has a handler for
/// the method wins. A path that matches no pattern answers `404`; a path that
/// matches but not for this method answers `405` with an `Allow` header. Both
/// have a JSON body `{"detail": ...}`. `HEAD` is answered by the `GET` handler,
/// without the body.
///
/// # Panics
///
/// Adding a route panics on a programming error: a pattern that does not start
/// with `/`, a capture that is not a whole segment or is named twice, or the
/// same method and pattern added twice.
#[derive(Default)]
pub struct App {
    routes: Vec<Route>,
    state: StateMap,
    jobs: Registry,
    schedules: Vec<ScheduleEntry>,
}

struct Route {
    pattern: String,
    segments: Vec<Segment>,
    handlers: Vec<(Method, BoxedHandler)>,
}

#[derive(PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
}

/// Why [`App::handle`] did not produce the handler's response.
pub(crate) enum Routed {
    /// The handler ran and returned this.
    Handled(Response),
    /// No handler ran: routing or an extractor rejected the request.
    Rejected(HttpError),
}

impl App {
    /// An app with no routes and no state.
    pub fn new() -> App {
        App::default()
    }

    /// Adds `handler` for `method` requests to paths matching `pattern`.
    pub fn route<H: Handler<Args>, Args>(
        mut self,
        method: Method,
        pattern: &str,
        handler: H,
    ) -> App {
        self.add(method, pattern, handler::boxed(handler));
        self
    }

    /// Adds a type-erased handler; panics if the method and path shape are
    /// already routed (whatever the capture names).
    fn add(&mut self, method: Method, pattern: &str, handler: BoxedHandler) {
        let segments = parse_pattern(pattern);
        let taken = self.routes.iter().find(|r| {
            same_shape(&r.segments, &segments) && r.handlers.iter().any(|(m, _)| *m == method)
        });
        if let Some(route) = taken {
            panic!(
                "{method} {pattern} is already routed (as {method} {})",
                route.pattern
            );
        }
        let index = match self.routes.iter().position(|r| r.segments == segments) {
            Some(index) => index,
            None => {
                self.routes.push(Route {
                    pattern: pattern.to_owned(),
                    segments,
                    handlers: Vec::new(),
                });
                self.routes.len() - 1
            }
        };
        self.routes[index].handlers.push((method, handler));
    }

    /// Adds every route and state of `other` to this app: composing an app
    /// from parts, as FastAPI's `include_router(router)` does.
    ///
    /// # Panics
    ///
    /// If a method and path are routed by both apps (a route defined twice),
    /// or both have state of the same type.
    ///
    /// ```
    /// use afterward::App;
    /// let users = App::new().get("/users", || "users");
    /// let items = App::new().get("/items", || "items");
    /// let app = App::new().merge(users).merge(items);
    /// # let _ = app;
    /// ```
    pub fn merge(self, other: App) -> App {
        self.include(None, other)
    }

    /// Adds every route of `other` under `prefix`, and its state: FastAPI's
    /// `include_router(router, prefix="/items")`. `other`'s `/` becomes
    /// `prefix` itself, its `/{id}` becomes `prefix/{id}`. The prefix may
    /// have captures of its own (`/users/{user}`).
    ///
    /// # Panics
    ///
    /// If `prefix` does not start with `/` or ends with one, on a route
    /// defined twice, or on state of the same type in both apps.
    ///
    /// ```
    /// use afterward::{App, Path};
    /// let items = App::new()
    ///     .get("/", || "all items")
    ///     .get("/{id}", |Path(id): Path<u32>| format!("item {id}"));
    /// let app = App::new().nest("/items", items); // GET /items, GET /items/{id}
    /// # let _ = app;
    /// ```
    pub fn nest(self, prefix: &str, other: App) -> App {
        assert!(
            prefix.starts_with('/') && !prefix.ends_with('/'),
            "nest prefix {prefix:?} must start with '/' and not end with one"
        );
        self.include(Some(prefix), other)
    }

    fn include(mut self, prefix: Option<&str>, other: App) -> App {
        let App {
            routes,
            state,
            jobs,
            schedules,
        } = other;
        self.jobs.merge(jobs);
        self.schedules.extend(schedules);
        for route in routes {
            let pattern = match (prefix, route.pattern.as_str()) {
                (None, pattern) => pattern.to_owned(),
                (Some(prefix), "/") => prefix.to_owned(),
                (Some(prefix), pattern) => format!("{prefix}{pattern}"),
            };
            for (method, handler) in route.handlers {
                self.add(method, &pattern, handler);
            }
        }
        self.state.merge(state);
        self
    }

    /// Adds a `GET` route (which also answers `HEAD`).
    pub fn get<H: Handler<Args>, Args>(self, pattern: &str, handler: H) -> App {
        self.route(Method::Get, pattern, handler)
    }

    /// Adds a `POST` route.
    pub fn post<H: Handler<Args>, Args>(self, pattern: &str, handler: H) -> App {
        self.route(Method::Post, pattern, handler)
    }

    /// Adds a `PUT` route.
    pub fn put<H: Handler<Args>, Args>(self, pattern: &str, handler: H) -> App {
        self.route(Method::Put, pattern, handler)
    }

    /// Adds a `PATCH` route.
    pub fn patch<H: Handler<Args>, Args>(self, pattern: &str, handler: H) -> App {
        self.route(Method::Patch, pattern, handler)
    }

    /// Adds a `DELETE` route.
    pub fn delete<H: Handler<Args>, Args>(self, pattern: &str, handler: H) -> App {
        self.route(Method::Delete, pattern, handler)
    }

    /// Adds shared state, read by handlers with [`State<T>`](crate::State).
    /// One value per type; adding a second of the same type replaces the first.
    ///
    /// `T` must be what [`State<T>`](crate::State) needs, `Clone + Send +
    /// Sync + 'static`, so that a mistake shows here rather than as a handler
    /// that "is not a valid handler":
    ///
    /// ```compile_fail
    /// struct NotClone;
    /// // error: the trait bound `NotClone: Clone` is not satisfied
    /// let app = afterward::App::new().state(NotClone);
    /// ```
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> App {
        self.state.insert(value);
        self
    }

    /// Registers the job type `J` ([`Job`](crate::Job)), so that handlers can
    /// [`enqueue`](crate::BackgroundTasks::enqueue) it.
    ///
    /// # Panics
    ///
    /// If another job type is registered under the same name.
    pub fn job<J: Job>(mut self) -> App {
        self.jobs.register::<J>();
        self
    }

    /// Enqueues `job` at every multiple of `interval` since the Unix epoch
    /// while the server runs (registering its type): a periodic job, named
    /// after the job. See [`schedule`](Self::schedule).
    pub fn every<J: Job + Clone + Sync>(self, interval: Duration, job: J) -> App {
        self.schedule(Schedule::every(interval), move |_| job.clone())
    }

    /// Enqueues `job` at each time the cron `expression` matches, in UTC
    /// (see [`Schedule::cron`]; a bad expression fails the server's build,
    /// naming the field).
    pub fn cron<J: Job + Clone + Sync>(self, expression: &str, job: J) -> App {
        self.schedule(Schedule::cron(expression), move |_| job.clone())
    }

    /// Enqueues the job `make` builds for each tick of `schedule` (given
    /// the tick's time, in Unix milliseconds) while the server runs. It then
    /// runs as any job does (queue, retries, status, metrics).
    ///
    /// With Redis, every server may carry the same schedules: each tick is
    /// enqueued by exactly one of them (the first to claim it in Redis), so
    /// there is no scheduler process to run or fail over. Without, the
    /// server enqueues each tick once. A stopping server claims no tick
    /// after its stop began. README, "Jobs on a clock".
    ///
    /// # Panics
    ///
    /// If another job type is registered under the job's name.
    pub fn schedule<J: Job>(
        mut self,
        schedule: Schedule,
        make: impl Fn(u64) -> J + Send + Sync + 'static,
    ) -> App {
        self.jobs.register::<J>();
        self.schedules.push(ScheduleEntry::new(schedule, make));
        self
    }

    /// The schedules, for the server's pool.
    pub(crate) fn schedules(&self) -> Vec<ScheduleEntry> {
        self.schedules.clone()
    }

    /// The registered jobs, for the server's pool.
    pub(crate) fn job_registry(&self) -> Registry {
        self.jobs.clone()
    }

    pub(crate) fn state_map(&self) -> &StateMap {
        &self.state
    }

    /// Routes `request` and runs its handler, if `admit` lets the routed
    /// request through (`Some(error)` refuses it: load shedding).
    ///
    /// A method no route has and that is not a standard one (`BREW`) is `501`;
    /// a path no route matches `404`; a known path with another method `405`.
    pub(crate) fn handle(
        &self,
        request: &mut Request<'_>,
        admit: &dyn Fn(&Request<'_>) -> Option<HttpError>,
    ) -> Routed {
        let method = request.method();
        if matches!(method, Method::Other(_))
            && !self
                .routes
                .iter()
                .any(|route| route.handlers.iter().any(|(m, _)| m == method))
        {
            return Routed::Rejected(HttpError::new(501, "Not Implemented"));
        }
        let segments = match decode_path(request.path()) {
            Ok(segments) => segments,
            Err(error) => return Routed::Rejected(error),
        };
        let mut allowed: Vec<&Method> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.capture(&segments) else {
                continue;
            };
            if let Some(handler) = route.handler_for(request.method()) {
                if let Some(refusal) = admit(request) {
                    return Routed::Rejected(refusal);
                }
                request.set_path_params(params);
                return match handler(request) {
                    Ok(response) => Routed::Handled(response),
                    Err(error) => Routed::Rejected(error),
                };
            }
            allowed.extend(route.handlers.iter().map(|(m, _)| m));
            if route.handler_for(&Method::Get).is_some() {
                allowed.push(&Method::Head);
            }
        }
        if allowed.is_empty() {
            return Routed::Rejected(HttpError::new(404, "Not Found"));
        }
        let mut allow: Vec<&str> = Vec::new();
        for method in allowed {
            if !allow.contains(&method.as_str()) {
                allow.push(method.as_str());
            }
        }
        Routed::Rejected(
            HttpError::new(405, "Method Not Allowed").with_header("Allow", allow.join(", ")),
        )
    }
}

impl Route {
    fn handler_for(&self, method: &Method) -> Option<&BoxedHandler> {
        let find = |wanted: &Method| {
            self.handlers
                .iter()
                .find(|(m, _)| m == wanted)
                .map(|(_, h)| h)
        };
        find(method).or_else(|| match method {
            Method::Head => find(&Method::Get),
            _ => None,
        })
    }

    /// The captures, if `segments` match this route's pattern.
    fn capture(&self, segments: &[Cow<'_, str>]) -> Option<Vec<(String, String)>> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (pattern, segment) in self.segments.iter().zip(segments) {
            match pattern {
                Segment::Literal(literal) if *literal == **segment => {}
                Segment::Literal(_) => return None,
                // Like Starlette's `[^/]+`: a capture never matches an empty segment.
                Segment::Capture(_) if segment.is_empty() => return None,
                Segment::Capture(name) => params.push((name.clone(), segment.to_string())),
            }
        }
        Some(params)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for route in &self.routes {
            for (method, _) in &route.handlers {
                list.entry(&format_args!("{method} {}", route.pattern));
            }
        }
        list.finish()
    }
}

/// Whether two patterns match the same paths: the same literals, captures
/// in the same places (whatever their names).
fn same_shape(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            (Segment::Capture(_), Segment::Capture(_)) => true,
            _ => false,
        })
}

fn parse_pattern(pattern: &str) -> Vec<Segment> {
    let rest = pattern
        .strip_prefix('/')
        .unwrap_or_else(|| panic!("route pattern {pattern:?} must start with '/'"));
    let mut names: Vec<&str> = Vec::new();
    rest.split('/')
        .map(|segment| {
            match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    assert!(
                        !name.is_empty() && !name.contains(['{', '}']),
                        "route pattern {pattern:?}: bad capture {segment:?}"
                    );
                    assert!(
                        !names.contains(&name),
                        "route pattern {pattern:?}: {{{name}}} appears twice"
                    );
                    names.push(name);
                    Segment::Capture(name.to_owned())
                }
                None => {
                    assert!(
                        !segment.contains(['{', '}']),
                        "route pattern {pattern:?}: a capture must be a whole segment, not {segment:?}"
                    );
                    Segment::Literal(segment.to_owned())
                }
            }
        })
        .collect()
}

/// Splits a request path into percent-decoded segments. A `%2F` inside a
/// segment stays inside it.
fn decode_path(path: &str) -> Result<Vec<Cow<'_, str>>, HttpError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(HttpError::new(404, "Not Found"));
    };
    rest.split('/')
        .map(|segment| {
            percent::decode(segment, false)
                .map_err(|e| HttpError::new(400, format!("invalid request path: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{decode_path, parse_pattern, Segment};

    #[test]
    fn patterns_split_into_literals_and_captures() {
        assert!(matches!(
            parse_pattern("/items/{id}").as_slice(),
            [Segment::Literal(a), Segment::Capture(b)] if a == "items" && b == "id"
        ));
    }

    #[test]
    #[should_panic(expected = "appears twice")]
    fn a_capture_named_twice_is_a_programming_error() {
        parse_pattern("/{id}/{id}");
    }

    #[test]
    #[should_panic(expected = "whole segment")]
    fn a_partial_capture_is_a_programming_error() {
        parse_pattern("/file.{ext}");
    }

    #[test]
    fn an_encoded_slash_stays_in_its_segment() {
        assert_eq!(decode_path("/a%2Fb/c%20d").unwrap(), ["a/b", "c d"]);
        assert_eq!(decode_path("/%FF").unwrap_err().status(), 400);
    }
}
