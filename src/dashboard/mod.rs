//! The dashboard: server-rendered pages that show and steer the jobs (the
//! queues, the lists, a job's page, dead letters, schedules), mounted like
//! any routes (`App::nest("/afterward", afterward::dashboard(...))`).
//!
//! Safe by default: every page needs the [`Dashboard`]'s authentication
//! (a hook on the request, or a token); actions are off unless enabled, and
//! each is a POST carrying the dashboard's CSRF token, from the same origin;
//! every value a job carries is escaped (`html.rs`); the pages send a
//! Content-Security-Policy that allows no script and nothing from another
//! host (their one stylesheet is served here).
//!
//! Its size: the safety rules (authentication, the login form, CSRF and
//! origin checks, the headers) are kept together here, where every route
//! goes through them.

mod history;
mod html;
mod pages;
mod source;

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use self::history::History;
use self::pages::{Ctx, ListQuery};
use self::source::{Source, View};
use crate::handler::Handler;
use crate::http_error::HttpError;
use crate::percent;
use crate::request::Request;
use crate::response::{IntoResponse, Response};
use crate::routing::App;

/// How the dashboard is reached, and what it may do.
///
/// ```
/// use afterward::{dashboard, App, Dashboard};
///
/// // Only requests the application lets through; actions enabled.
/// let board = Dashboard::new(|request| {
///     request.headers().get("x-user-role") == Some("admin")
/// })
/// .actions(true);
/// let app = App::new().nest("/afterward", dashboard(board));
/// # let _ = app;
/// ```
pub struct Dashboard {
    auth: Auth,
    actions: bool,
    source: Source,
}

enum Auth {
    /// The application's own check.
    Hook(Arc<dyn Fn(&Request<'_>) -> bool + Send + Sync>),
    /// `Authorization: Bearer TOKEN`, or the cookie the login form sets.
    Token(String),
    /// Everyone: for a loopback address only.
    Open,
}

impl Dashboard {
    /// A dashboard for the requests `auth` lets through (others: `401`).
    pub fn new(auth: impl Fn(&Request<'_>) -> bool + Send + Sync + 'static) -> Dashboard {
        Dashboard::with(Auth::Hook(Arc::new(auth)))
    }

    /// A dashboard for holders of `token`: `Authorization: Bearer TOKEN`,
    /// or the login form (`/login`), which sets an `HttpOnly;
    /// SameSite=Strict` cookie. A browser without either is sent to the form.
    pub fn with_token(token: impl Into<String>) -> Dashboard {
        Dashboard::with(Auth::Token(token.into()))
    }

    /// A dashboard anyone who reaches it may use: only for a server on a
    /// loopback address (the binary refuses otherwise).
    pub fn open() -> Dashboard {
        Dashboard::with(Auth::Open)
    }

    fn with(auth: Auth) -> Dashboard {
        Dashboard {
            auth,
            actions: false,
            source: Source::InProcess,
        }
    }

    /// Enables the actions (cancel, requeue, discard, pause and resume):
    /// off by default (read-only).
    pub fn actions(mut self, enabled: bool) -> Dashboard {
        self.actions = enabled;
        self
    }

    /// Shows a Redis deployment (its queues, dead letters, jobs, schedules)
    /// instead of the serving process's own pool.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, config: crate::redis::RedisConfig) -> Dashboard {
        self.source = Source::Redis(Arc::new(crate::redis::Admin::new(config)));
        self
    }
}

/// The dashboard's routes, to mount with [`App::nest`]: `/` (overview),
/// `/jobs` (`?state=&q=&page=`), `/jobs/{id}`, `/dead` (`?q=&page=`),
/// `/schedules`, `/api/overview` (the overview as JSON), the actions
/// (POST `/jobs/{id}/cancel`, `/jobs/{id}/run-now`, `/dead/{id}/requeue`, `/dead/{id}/discard`,
/// `/dead/requeue-all/{queue}`, `/schedules/{name}/pause` and `/resume`), and
/// `/login` with a token.
pub fn dashboard(config: Dashboard) -> App {
    let inner = Arc::new(Inner {
        secret: std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
        config,
        history: OnceLock::new(),
    });
    // A route's depth (the segments of its own pattern) tells, taken off a
    // request's path, where the dashboard is mounted.
    let page = |kind: Kind, pattern: &str| Page {
        inner: inner.clone(),
        kind,
        depth: pattern.split('/').filter(|s| !s.is_empty()).count(),
    };
    let routes: [(bool, &str, Kind); 16] = [
        (false, "/", Kind::Overview),
        (false, "/jobs", Kind::Jobs),
        (false, "/jobs/{id}", Kind::Job),
        (false, "/dead", Kind::Dead),
        (false, "/schedules", Kind::Schedules),
        (false, "/api/overview", Kind::Api),
        (false, "/assets/dashboard.css", Kind::Css),
        (false, "/login", Kind::LoginForm),
        (true, "/login", Kind::Login),
        (true, "/jobs/{id}/cancel", Kind::Cancel),
        (true, "/jobs/{id}/run-now", Kind::RunNow),
        (true, "/dead/{id}/requeue", Kind::Requeue),
        (true, "/dead/{id}/discard", Kind::Discard),
        (true, "/dead/requeue-all/{queue}", Kind::RequeueAll),
        (true, "/schedules/{name}/pause", Kind::Pause),
        (true, "/schedules/{name}/resume", Kind::Resume),
    ];
    routes
        .into_iter()
        .fold(App::new(), |app, (post, pattern, kind)| {
            if post {
                app.post(pattern, page(kind, pattern))
            } else {
                app.get(pattern, page(kind, pattern))
            }
        })
}

struct Inner {
    config: Dashboard,
    /// This process's jobs per minute, sampled from the first view on.
    history: OnceLock<Arc<History>>,
    /// This process's secret: the CSRF token and the login cookie derive
    /// from it (a restart signs everyone out).
    secret: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Overview,
    Jobs,
    Job,
    Dead,
    Schedules,
    Api,
    Css,
    LoginForm,
    Login,
    Cancel,
    RunNow,
    Requeue,
    Discard,
    RequeueAll,
    Pause,
    Resume,
}

/// One route of the dashboard (`depth`: the segments of its own pattern,
/// which, taken off the path, leave where the dashboard is mounted).
struct Page {
    inner: Arc<Inner>,
    kind: Kind,
    depth: usize,
}

/// [`Page`]'s argument types, for [`Handler`]: it reads the whole request.
struct PageArgs;

impl Handler<PageArgs> for Page {
    fn call(&self, request: &mut Request<'_>) -> Result<Response, HttpError> {
        Ok(self.inner.serve(self.kind, self.depth, request))
    }
}

/// The Content-Security-Policy of every page: no script at all, styles
/// and forms only from here, never framed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl Inner {
    fn hash(&self, what: &str) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        hasher.write_u64(self.secret);
        hasher.write(what.as_bytes());
        let first = hasher.finish();
        hasher.write_u64(first);
        format!("{first:016x}{:016x}", hasher.finish())
    }

    fn csrf(&self) -> String {
        self.hash("csrf")
    }

    fn serve(&self, kind: Kind, depth: usize, request: &mut Request<'_>) -> Response {
        let base = base_of(request.path(), depth);
        if kind == Kind::Css {
            return Response::new(200)
                .with_header("Content-Type", "text/css; charset=utf-8")
                .with_header("Cache-Control", "max-age=3600")
                .with_body(include_str!("dashboard.css"));
        }
        if matches!(kind, Kind::LoginForm | Kind::Login) {
            return self.login(kind, &base, request);
        }
        if !self.allowed(request) {
            return match (&self.config.auth, kind) {
                (
                    Auth::Token(_),
                    Kind::Overview | Kind::Jobs | Kind::Job | Kind::Dead | Kind::Schedules,
                ) => redirect(&format!("{base}/login")),
                _ => HttpError::new(401, "the dashboard needs authentication")
                    .into_response()
                    .with_header("WWW-Authenticate", "Bearer"),
            };
        }
        let history = self
            .history
            .get_or_init(|| History::start(request.background_tasks().counters()));
        let view = View {
            source: &self.config.source,
            jobs: request.background_tasks().jobs(),
            history,
        };
        let csrf = self.csrf();
        let ctx = Ctx {
            base: &base,
            csrf: &csrf,
            actions: self.config.actions,
        };
        let rendered = match kind {
            Kind::Overview => pages::overview(&ctx, &view, &request.server_stats()).map(html),
            Kind::Jobs => Ok(html(pages::jobs(&ctx, &view, &list_query(request)))),
            Kind::Job => {
                let id = param(request, "id");
                match pages::job(&ctx, &view, &id) {
                    Ok(Some(page)) => Ok(html(page)),
                    Ok(None) => {
                        Ok(HttpError::new(404, format!("no job with id {id}")).into_response())
                    }
                    Err(error) => Err(error),
                }
            }
            Kind::Dead => pages::dead(&ctx, &view, &list_query(request)).map(html),
            Kind::Schedules => pages::schedules(&ctx, &view).map(html),
            Kind::Api => api(&view, request),
            _ => Ok(self.act(kind, &base, &view, request)),
        };
        rendered.unwrap_or_else(|error| {
            log::warn!("dashboard: {error}");
            HttpError::new(503, "the job store is unavailable, try again later").into_response()
        })
    }

    fn allowed(&self, request: &Request<'_>) -> bool {
        match &self.config.auth {
            Auth::Open => true,
            Auth::Hook(allow) => allow(request),
            Auth::Token(token) => {
                let bearer = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.strip_prefix("Bearer "));
                bearer.is_some_and(|given| same(given, token))
                    || cookie(request, COOKIE).is_some_and(|c| same(&c, &self.hash(token)))
            }
        }
    }

    /// The login form, and its POST: the right token sets the cookie.
    fn login(&self, kind: Kind, base: &str, request: &mut Request<'_>) -> Response {
        let Auth::Token(token) = &self.config.auth else {
            return HttpError::new(404, "this dashboard has no login form").into_response();
        };
        let form = |error: &str| {
            let body = format!(
                "{error}<form method=\"post\" action=\"{}/login\"><input type=\"password\" \
                 name=\"token\" placeholder=\"token\" autofocus> <button type=\"submit\">Sign in</button></form>",
                html::escape(base)
            );
            html::page(base, "Sign in", &body)
        };
        if kind == Kind::LoginForm {
            return html(form(""));
        }
        let fields = form_fields(request);
        let given = fields
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.as_str());
        if !given.is_some_and(|given| same(given, token)) {
            return html(form("<p class=\"error\">Wrong token.</p>")).with_status(401);
        }
        let path = if base.is_empty() { "/" } else { base };
        redirect(path).with_header(
            "Set-Cookie",
            format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path={path}",
                self.hash(token)
            ),
        )
    }

    /// An action: enabled, same origin, with the CSRF token; then a
    /// redirect to the page it was taken from.
    fn act(&self, kind: Kind, base: &str, view: &View<'_>, request: &mut Request<'_>) -> Response {
        if !self.config.actions {
            return HttpError::new(403, "the dashboard's actions are off").into_response();
        }
        if !same_origin(request) {
            return HttpError::new(403, "an action must come from the dashboard's own origin")
                .into_response();
        }
        let fields = form_fields(request);
        let csrf = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        if !csrf.is_some_and(|given| same(given, &self.csrf())) {
            return HttpError::new(403, "missing or wrong CSRF token").into_response();
        }
        let outcome: Result<String, (u16, String)> = match kind {
            Kind::Cancel => {
                let id = param(request, "id");
                match view.cancel(&id) {
                    Ok(_) => Ok(format!("{base}/jobs/{}", html::url_part(&id))),
                    Err(crate::jobs::CancelError::NotFound) => {
                        Err((404, format!("no job with id {id}")))
                    }
                    Err(error @ crate::jobs::CancelError::Ended(_)) => {
                        Err((409, error.to_string()))
                    }
                    Err(error) => Err((503, error.to_string())),
                }
            }
            Kind::RunNow => {
                let id = param(request, "id");
                match view.run_now(&id) {
                    Ok(true) => Ok(format!("{base}/jobs/{}", html::url_part(&id))),
                    Ok(false) => Err((409, format!("job {id} is not waiting for its time"))),
                    Err(error) => Err((503, error)),
                }
            }
            Kind::Requeue | Kind::Discard => {
                let id = param(request, "id");
                let done = if kind == Kind::Requeue {
                    view.requeue(&id)
                } else {
                    view.discard(&id)
                };
                match done {
                    Ok(true) => Ok(format!("{base}/dead")),
                    Ok(false) => Err((404, format!("no dead job with id {id}"))),
                    Err(error) => Err((503, error)),
                }
            }
            Kind::RequeueAll => match view.requeue_all(&param(request, "queue")) {
                Ok(_) => Ok(format!("{base}/dead")),
                Err(error) => Err((503, error)),
            },
            Kind::Pause | Kind::Resume => {
                let name = param(request, "name");
                match view.pause(&name, kind == Kind::Pause) {
                    Ok(true) => Ok(format!("{base}/schedules")),
                    Ok(false) => Err((404, format!("no schedule named {name}"))),
                    Err(error) => Err((503, error)),
                }
            }
            _ => Err((404, "no such action".into())),
        };
        match outcome {
            Ok(to) => redirect(&to),
            Err((status, detail)) => HttpError::new(status, detail).into_response(),
        }
    }
}

/// The name of the login cookie.
const COOKIE: &str = "afterward_dashboard";

/// `path` without its last `depth` segments: where the dashboard is mounted.
fn base_of(path: &str, depth: usize) -> String {
    let mut base = path.trim_end_matches('/');
    for _ in 0..depth {
        base = base.rfind('/').map_or("", |at| &base[..at]);
    }
    base.to_owned()
}

/// Equal, comparing every byte (no early exit on the first difference).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie(request: &Request<'_>, name: &str) -> Option<String> {
    request.headers().get_all("cookie").find_map(|header| {
        header.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
    })
}

/// Whether a POST comes from the page's own origin: its `Origin` (sent by
/// every browser on a POST) names the `Host` it was sent to, and its
/// `Sec-Fetch-Site`, if any, is not `cross-site`. (The pages' referrer
/// policy is `same-origin`: under `no-referrer` a browser sends
/// `Origin: null`, which this refuses.)
fn same_origin(request: &Request<'_>) -> bool {
    let headers = request.headers();
    if headers.get("sec-fetch-site") == Some("cross-site") {
        return false;
    }
    match (headers.get("origin"), headers.get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
    }
}

fn param(request: &Request<'_>, name: &str) -> String {
    request
        .path_params()
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// `?state=&q=&page=` (each optional; a page that is not a number: 1).
fn list_query(request: &Request<'_>) -> ListQuery {
    let mut query = ListQuery::default();
    for pair in request.query_string().unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(value) = percent::decode(value, true) else {
            continue;
        };
        match key {
            "state" => query.state = value.into_owned(),
            "q" => query.q = value.into_owned(),
            "page" => query.page = value.parse().unwrap_or(1),
            _ => {}
        }
    }
    query
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form_fields(request: &mut Request<'_>) -> Vec<(String, String)> {
    let Ok(body) = request.body() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(body).into_owned();
    text.split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent::decode(key, true).ok()?.into_owned();
            let value = percent::decode(value, true).ok()?.into_owned();
            Some((key, value))
        })
        .collect()
}

fn html(body: String) -> Response {
    Response::new(200)
        .with_header("Content-Type", "text/html; charset=utf-8")
        .with_header("Content-Security-Policy", CSP)
        .with_header("Cache-Control", "no-store")
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "same-origin")
        .with_body(body)
}

fn redirect(to: &str) -> Response {
    Response::new(303)
        .with_header("Location", if to.is_empty() { "/" } else { to })
        .with_header("Cache-Control", "no-store")
}

/// `/api/overview`: what the overview shows, as JSON.
fn api(view: &View<'_>, request: &Request<'_>) -> Result<Response, String> {
    let stats = request.server_stats();
    let schedules: Vec<serde_json::Value> = view.schedules()?.iter().map(|s| s.to_json()).collect();
    let per_minute: Vec<serde_json::Value> = view
        .per_minute()?
        .iter()
        .map(|(minute, succeeded, failed)| {
            serde_json::json!({"minute": minute, "succeeded": succeeded, "failed": failed})
        })
        .collect();
    #[allow(unused_mut)]
    let mut workers: Vec<serde_json::Value> = Vec::new();
    #[cfg(feature = "redis")]
    for w in view.workers()? {
        workers.push(serde_json::json!({
            "name": w.name, "host": w.host, "pid": w.pid, "queues": w.queues,
            "concurrency": w.concurrency, "in_flight": w.in_flight,
            "last_heartbeat_ms": w.last_heartbeat_ms,
        }));
    }
    let body = serde_json::json!({
        "per_minute": per_minute,
        "workers": workers,
        "mode": view.mode(),
        "queues": view.queues()?.iter().map(|q| q.to_json()).collect::<Vec<_>>(),
        "process": {
            "tasks_scheduled": stats.scheduled,
            "tasks_completed": stats.completed,
            "tasks_failed": stats.failed + stats.panicked,
            "tasks_discarded": stats.discarded,
            "queue_depth": stats.queued,
            "jobs_succeeded": stats.jobs_succeeded,
            "jobs_dead": stats.jobs_dead,
            "jobs_cancelled": stats.jobs_cancelled,
            "requests": stats.requests,
            "requests_5xx": stats.requests_by_class[4],
            "connections_open": stats.connections_open,
        },
        "schedules": schedules,
    });
    Ok(Response::json(&body).with_header("Cache-Control", "no-store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_point_is_the_path_without_the_routes_own_segments() {
        assert_eq!(base_of("/afterward", 0), "/afterward");
        assert_eq!(base_of("/afterward/", 0), "/afterward");
        assert_eq!(base_of("/afterward/jobs/abc", 2), "/afterward");
        assert_eq!(base_of("/jobs/abc/cancel", 3), "");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("ab", "abc"));
    }
}
