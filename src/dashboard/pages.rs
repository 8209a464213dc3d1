//! The dashboard's pages, rendered on the server from a [`View`]: every
//! value a job carries is escaped ([`escape`]), lists are paged and read no
//! more than one page's worth of HTML.
//!
//! Its size: one function per page, each its own table.

use std::fmt::Write;

use super::history::chart;
use super::html::{action, escape, page, table, time, url_part};
use super::source::{QueueRow, View};
use crate::jobs::{JobState, JobStatus};
use crate::stats::Stats;

/// Rows per page of a list.
pub(crate) const PAGE_SIZE: usize = 50;

/// What every page knows of its request.
pub(crate) struct Ctx<'a> {
    /// Where the dashboard is mounted (`/afterward`).
    pub(crate) base: &'a str,
    pub(crate) csrf: &'a str,
    pub(crate) actions: bool,
}

/// `/`: the queues, the pool and the server, the schedules.
pub(crate) fn overview(ctx: &Ctx<'_>, view: &View<'_>, stats: &Stats) -> Result<String, String> {
    let queues = view.queues()?;
    let mut body = format!("<p class=\"mode\">Jobs: {}</p>", view.mode());
    body.push_str("<h2>Queues</h2>");
    body.push_str(&queue_table(&queues, view.mode() == "Redis"));
    body.push_str("<h2>Jobs per minute</h2>");
    body.push_str(&chart(&view.per_minute()?));
    #[cfg(feature = "redis")]
    if view.mode() == "Redis" {
        body.push_str("<h2>Workers</h2>");
        body.push_str(&workers(&view.workers()?));
    }
    let _ = write!(
        body,
        "<h2>This process</h2>{}",
        table(
            &["", "value"],
            &[
                row2("tasks scheduled", stats.scheduled),
                row2("tasks completed", stats.completed),
                row2("tasks failed", stats.failed + stats.panicked),
                row2("tasks discarded", stats.discarded),
                row2("background queue depth", stats.queued),
                row2("jobs succeeded", stats.jobs_succeeded),
                row2("jobs dead", stats.jobs_dead),
                row2("jobs cancelled", stats.jobs_cancelled),
                row2("HTTP requests", stats.requests),
                row2("HTTP 5xx", stats.requests_by_class[4]),
                row2("connections open", stats.connections_open),
            ]
        )
    );
    let schedules = view.schedules()?;
    if !schedules.is_empty() {
        let _ = write!(
            body,
            "<h2>Schedules</h2>{}",
            schedule_table(ctx, &schedules)
        );
    }
    Ok(page(ctx.base, "Overview", &body))
}

/// The workers seen recently (their heartbeats).
#[cfg(feature = "redis")]
fn workers(workers: &[crate::redis::WorkerInfo]) -> String {
    let now = crate::jobs::envelope::now_ms();
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                escape(&w.name),
                escape(&w.host),
                w.pid.to_string(),
                escape(&w.queues.join(", ")),
                w.concurrency.to_string(),
                w.in_flight.to_string(),
                format!(
                    "{:.1} s ago",
                    now.saturating_sub(w.last_heartbeat_ms) as f64 / 1000.0
                ),
            ]
        })
        .collect();
    table(
        &[
            "worker",
            "host",
            "pid",
            "queues",
            "concurrency",
            "in flight",
            "last heartbeat",
        ],
        &rows,
    )
}

fn row2(label: &str, value: u64) -> Vec<String> {
    vec![escape(label), value.to_string()]
}

fn queue_table(queues: &[QueueRow], redis: bool) -> String {
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                escape(&q.queue),
                q.ready.to_string(),
                q.running.to_string(),
                q.delayed.to_string(),
                if redis {
                    "—".into()
                } else {
                    q.retrying.to_string()
                },
                q.dead.to_string(),
            ]
        })
        .collect();
    table(
        &["queue", "ready", "running", "delayed", "retrying", "dead"],
        &rows,
    )
}

fn schedule_table(ctx: &Ctx<'_>, schedules: &[crate::ScheduleInfo]) -> String {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            let mut cells = vec![
                escape(&s.name),
                escape(&s.spec),
                s.last_run_ms.map_or("—".into(), time),
                s.next_run_ms.map_or("—".into(), time),
                if s.paused {
                    "paused".into()
                } else {
                    "running".into()
                },
            ];
            if ctx.actions {
                let (verb, label) = if s.paused {
                    ("resume", "Resume")
                } else {
                    ("pause", "Pause")
                };
                let to = format!("{}/schedules/{}/{verb}", ctx.base, url_part(&s.name));
                cells.push(action(&to, label, ctx.csrf));
            }
            cells
        })
        .collect();
    let mut head = vec!["schedule", "spec", "last run", "next run", "state"];
    if ctx.actions {
        head.push("");
    }
    table(&head, &rows)
}

/// `/schedules`.
pub(crate) fn schedules(ctx: &Ctx<'_>, view: &View<'_>) -> Result<String, String> {
    let schedules = view.schedules()?;
    Ok(page(
        ctx.base,
        "Schedules",
        &schedule_table(ctx, &schedules),
    ))
}

/// The filters of a list: a state, a search (an id, or part of a name),
/// a page (from 1).
#[derive(Default)]
pub(crate) struct ListQuery {
    pub(crate) state: String,
    pub(crate) q: String,
    pub(crate) page: usize,
}

impl ListQuery {
    fn matches(&self, id: &str, name: &str) -> bool {
        self.q.is_empty() || id == self.q || name.contains(self.q.as_str())
    }

    fn link(&self, base: &str, path: &str, page: usize) -> String {
        format!(
            "{base}{path}?state={}&amp;q={}&amp;page={page}",
            url_part(&self.state),
            url_part(&self.q)
        )
    }
}

/// The search form and the page links of a list of `total` rows.
fn paging(ctx: &Ctx<'_>, query: &ListQuery, path: &str, total: usize) -> (String, String, usize) {
    let page = query.page.max(1);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let form = format!(
        "<form method=\"get\" action=\"{base}{path}\" class=\"search\">\
         <input type=\"hidden\" name=\"state\" value=\"{state}\">\
         <input type=\"search\" name=\"q\" value=\"{q}\" placeholder=\"id or name\">\
         <button type=\"submit\">Search</button></form>",
        base = escape(ctx.base),
        state = escape(&query.state),
        q = escape(&query.q),
    );
    let mut nav = format!("<p class=\"paging\">{total} in all · page {page} of {pages}");
    if page > 1 {
        let _ = write!(
            nav,
            " · <a href=\"{}\">previous</a>",
            query.link(&escape(ctx.base), path, page - 1)
        );
    }
    if page < pages {
        let _ = write!(
            nav,
            " · <a href=\"{}\">next</a>",
            query.link(&escape(ctx.base), path, page + 1)
        );
    }
    nav.push_str("</p>");
    (form, nav, (page - 1) * PAGE_SIZE)
}

/// The states a list can show.
const STATES: [&str; 8] = [
    "running",
    "retrying",
    "delayed",
    "queued",
    "done",
    "dead",
    "cancelled",
    "discarded",
];

/// `/jobs`: the statuses kept in this process, by state, searched, paged.
pub(crate) fn jobs(ctx: &Ctx<'_>, view: &View<'_>, query: &ListQuery) -> String {
    let mut body = String::from("<p class=\"states\">");
    for state in STATES {
        let mark = if query.state == state {
            " class=\"on\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<a{mark} href=\"{}/jobs?state={state}\">{state}</a> ",
            escape(ctx.base)
        );
    }
    body.push_str("</p>");
    #[cfg(feature = "redis")]
    if view.mode() == "Redis" {
        return match redis_jobs(ctx, view, query) {
            Ok(lists) => {
                body.push_str(&lists);
                page(ctx.base, "Jobs", &body)
            }
            Err(error) => page(
                ctx.base,
                "Jobs",
                &format!("<p class=\"error\">{}</p>", escape(&error)),
            ),
        };
    }
    let skip = (query.page.max(1) - 1) * PAGE_SIZE;
    let (total, all) = view.statuses(&query.state, &query.q, skip, PAGE_SIZE);
    let (form, nav, _) = paging(ctx, query, "/jobs", total);
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                job_link(ctx, &s.id),
                escape(&s.name),
                escape(&s.queue),
                escape(s.state.as_str()),
                s.attempts.to_string(),
                when(s),
                escape(s.error.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    let _ = write!(
        body,
        "{form}{}{nav}",
        table(
            &["id", "name", "queue", "state", "attempts", "next run", "error"],
            &rows
        )
    );
    page(ctx.base, "Jobs", &body)
}

/// A link to job `id`'s page.
fn job_link(ctx: &Ctx<'_>, id: &str) -> String {
    format!(
        "<a href=\"{}/jobs/{}\">{}</a>",
        escape(ctx.base),
        url_part(id),
        escape(id)
    )
}

/// Over Redis: the jobs held by workers (`running`), and those delayed or
/// waiting for a retry, the first page of each queue; other states are
/// looked up by id (a job's page).
#[cfg(feature = "redis")]
fn redis_jobs(ctx: &Ctx<'_>, view: &View<'_>, query: &ListQuery) -> Result<String, String> {
    let (held, delayed) = view.redis_lists(PAGE_SIZE)?;
    let matches = |e: &crate::Envelope| query.matches(&e.id, &e.name);
    let mut out = String::new();
    if query.state.is_empty() || query.state == "running" {
        let rows: Vec<Vec<String>> = held
            .iter()
            .filter(|(e, ..)| matches(e))
            .map(|(e, worker, idle)| {
                vec![
                    job_link(ctx, &e.id),
                    escape(&e.name),
                    escape(&e.queue),
                    (e.attempts + 1).to_string(),
                    escape(worker),
                    format!("{:.1} s", *idle as f64 / 1000.0),
                ]
            })
            .collect();
        out.push_str("<h2>Held by workers (running, or about to)</h2>");
        out.push_str(&table(
            &[
                "id",
                "name",
                "queue",
                "attempt",
                "worker",
                "since last renewal",
            ],
            &rows,
        ));
    }
    let waiting = |retries: bool| -> Vec<Vec<String>> {
        delayed
            .iter()
            .filter(|(e, _)| matches(e) && (e.attempts > 0) == retries)
            .map(|(e, due)| {
                vec![
                    job_link(ctx, &e.id),
                    escape(&e.name),
                    escape(&e.queue),
                    e.attempts.to_string(),
                    time(*due),
                    escape(e.last_error.as_deref().unwrap_or("")),
                ]
            })
            .collect()
    };
    let head = ["id", "name", "queue", "attempts", "due", "last error"];
    if query.state.is_empty() || query.state == "retrying" {
        out.push_str("<h2>Waiting for a retry</h2>");
        out.push_str(&table(&head, &waiting(true)));
    }
    if query.state.is_empty() || query.state == "delayed" {
        out.push_str("<h2>Delayed</h2>");
        out.push_str(&table(&head, &waiting(false)));
    }
    if query.state == "done" {
        let skip = (query.page.max(1) - 1) * PAGE_SIZE;
        let mut longest = 0;
        for (queue, total, statuses) in view.recent_done(skip, PAGE_SIZE)? {
            longest = longest.max(total as usize);
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .filter(|s| query.matches(&s.id, &s.name))
                .map(|s| {
                    vec![
                        job_link(ctx, &s.id),
                        escape(&s.name),
                        s.attempts.to_string(),
                        s.history.last().map_or("—".into(), |(_, at)| {
                            time(
                                at.duration_since(std::time::UNIX_EPOCH)
                                    .map_or(0, |d| d.as_millis() as u64),
                            )
                        }),
                        s.result.as_deref().map_or("—".into(), |r| {
                            escape(&crate::jobs::status::clip_payload(r, 120).unwrap_or_default())
                        }),
                    ]
                })
                .collect();
            let _ = write!(
                out,
                "<h2>Done last in {} ({total} kept)</h2>{}",
                escape(&queue),
                table(&["id", "name", "attempts", "done at", "result"], &rows)
            );
        }
        let (form, nav, _) = paging(ctx, query, "/jobs", longest);
        return Ok(format!("{form}{out}{nav}"));
    }
    if out.is_empty() {
        out.push_str("<p>Over Redis, jobs in this state are looked up by id (<code>/jobs/ID</code>); the overview counts them.</p>");
    }
    let _ = write!(
        out,
        "<p class=\"paging\">The first {PAGE_SIZE} of each queue.</p>"
    );
    Ok(out)
}

/// JSON text, indented when it parses (a payload cut short does not: it
/// shows as it is), escaped, in a `<pre>`.
fn pretty_json(text: &str) -> String {
    let pretty = serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_owned());
    format!("<pre>{}</pre>", escape(&pretty))
}

/// A job's states and when each began, as a list.
fn history(status: &JobStatus) -> String {
    if status.history.is_empty() {
        return "—".into();
    }
    let mut out = String::from("<ol class=\"history\">");
    for (state, at) in &status.history {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = write!(
            out,
            "<li>{} <span class=\"at\">{}</span></li>",
            escape(state),
            time(ms)
        );
    }
    out.push_str("</ol>");
    out
}

/// When a job runs next, or how long it has been running.
fn when(status: &JobStatus) -> String {
    match (&status.state, status.started_at) {
        (JobState::Running, Some(started)) => {
            let age = started.elapsed().unwrap_or_default();
            format!("{:.1} s", age.as_secs_f64())
        }
        (state, _) => next_run(state),
    }
}

fn next_run(state: &JobState) -> String {
    match state {
        JobState::Delayed { next_run } | JobState::Retrying { next_run } => next_run
            .duration_since(std::time::UNIX_EPOCH)
            .map_or("—".into(), |d| time(d.as_millis() as u64)),
        _ => "—".into(),
    }
}

/// `/jobs/{id}`: one job's status, result and error; cancel while it has
/// not ended. `None` for an unknown id.
pub(crate) fn job(ctx: &Ctx<'_>, view: &View<'_>, id: &str) -> Result<Option<String>, String> {
    let Some(status) = view.status(id)? else {
        return Ok(None);
    };
    let result = status.result.as_deref().map_or("—".into(), pretty_json);
    let payload = status.payload.as_deref().map_or_else(
        || "— <span class=\"at\">(not kept)</span>".into(),
        pretty_json,
    );
    let children: Vec<String> = status
        .children
        .iter()
        .map(|c| {
            format!(
                "<a href=\"{}/jobs/{}\">{}</a>",
                escape(ctx.base),
                url_part(c),
                escape(c)
            )
        })
        .collect();
    let rows = vec![
        vec!["id".into(), escape(&status.id)],
        vec!["name".into(), escape(&status.name)],
        vec!["queue".into(), escape(&status.queue)],
        vec!["state".into(), escape(status.state.as_str())],
        vec!["attempts".into(), status.attempts.to_string()],
        vec!["next run, or running for".into(), when(&status)],
        vec![
            "error".into(),
            status
                .error
                .as_deref()
                .map_or("—".into(), |e| format!("<pre>{}</pre>", escape(e))),
        ],
        vec!["payload".into(), payload],
        vec!["result".into(), result],
        vec![
            "follow-ups".into(),
            if children.is_empty() {
                "—".into()
            } else {
                children.join(" ")
            },
        ],
        vec!["history".into(), history(&status)],
    ];
    let mut body = table(&["", ""], &rows);
    if ctx.actions && !status.state.has_ended() {
        let to = format!("{}/jobs/{}/cancel", ctx.base, url_part(&status.id));
        body.push_str(&action(&to, "Cancel", ctx.csrf));
    }
    if ctx.actions
        && matches!(
            status.state,
            JobState::Delayed { .. } | JobState::Retrying { .. }
        )
    {
        let to = format!("{}/jobs/{}/run-now", ctx.base, url_part(&status.id));
        body.push_str(&action(&to, "Run now", ctx.csrf));
    }
    Ok(Some(page(ctx.base, &format!("Job {}", status.name), &body)))
}

/// `/dead`: dead letters (error, attempts, payload), searched, paged;
/// requeue or discard each, or requeue a queue's all.
pub(crate) fn dead(ctx: &Ctx<'_>, view: &View<'_>, query: &ListQuery) -> Result<String, String> {
    let all: Vec<_> = view
        .dead()?
        .into_iter()
        .filter(|d| query.matches(&d.id, &d.name))
        .collect();
    let (form, nav, skip) = paging(ctx, query, "/dead", all.len());
    let rows: Vec<Vec<String>> = all
        .iter()
        .skip(skip)
        .take(PAGE_SIZE)
        .map(|d| {
            let mut cells = vec![
                job_link(ctx, &d.id),
                escape(&d.name),
                escape(&d.queue),
                d.attempts.to_string(),
                format!("<pre>{}</pre>", escape(&d.error)),
                format!("<pre>{}</pre>", escape(&d.payload)),
            ];
            if ctx.actions {
                let base = format!("{}/dead/{}", ctx.base, url_part(&d.id));
                cells.push(format!(
                    "{}{}",
                    action(&format!("{base}/requeue"), "Requeue", ctx.csrf),
                    action(&format!("{base}/discard"), "Discard", ctx.csrf)
                ));
            }
            cells
        })
        .collect();
    let mut head = vec!["id", "name", "queue", "attempts", "error", "payload"];
    if ctx.actions {
        head.push("");
    }
    let mut body = format!("{form}{}{nav}", table(&head, &rows));
    if ctx.actions {
        let mut queues: Vec<&str> = all.iter().map(|d| d.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for queue in queues {
            let to = format!("{}/dead/requeue-all/{}", ctx.base, url_part(queue));
            body.push_str(&action(
                &to,
                &format!("Requeue every dead job of {queue}"),
                ctx.csrf,
            ));
        }
    }
    Ok(page(ctx.base, "Dead letters", &body))
}
