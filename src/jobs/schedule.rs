//! Periodic jobs as an app declares them ([`Schedule`]: every interval, or a
//! cron expression, and what to do about missed ticks), how their ticks fall
//! ([`Spec`]), and what the scheduler shows of them ([`ScheduleInfo`]).
//! The thread that fires them is `scheduler.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::cron::CronExpr;
use super::job::{EnqueueError, Job, JobId};
use super::options::JobOptions;
use crate::error::Error;
use crate::tasks::BackgroundTasks;

/// When a schedule ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Spec {
    /// At every multiple of the interval since the Unix epoch: every server
    /// computes the same ticks.
    Every(Duration),
    /// At each time the expression matches, in UTC.
    Cron(Box<CronExpr>, String),
}

impl Spec {
    /// `1s`, `500ms`, `5m`, `2h` (an interval), or a cron expression.
    pub(crate) fn parse(text: &str) -> Result<Spec, String> {
        let text = text.trim();
        if let Some(interval) = parse_interval(text) {
            return Spec::every(interval);
        }
        let expr = text.parse::<CronExpr>().map_err(|e| e.to_string())?;
        Ok(Spec::Cron(Box::new(expr), text.to_owned()))
    }

    fn every(interval: Duration) -> Result<Spec, String> {
        if interval.as_millis() == 0 {
            return Err("the interval must be at least 1 ms".into());
        }
        Ok(Spec::Every(interval))
    }

    /// The first tick strictly after `after_ms` (Unix milliseconds).
    pub(crate) fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Spec::Every(interval) => {
                let every = interval.as_millis().max(1) as u64;
                Some((after_ms / every + 1) * every)
            }
            Spec::Cron(expr, _) => {
                let next = expr.next_after((after_ms / 1000) as i64)?;
                u64::try_from(next).ok().map(|s| s * 1000)
            }
        }
    }

    /// The ticks in `(after_ms, now_ms]`: how many (counted up to 10,000),
    /// and the latest.
    pub(crate) fn due(&self, after_ms: u64, now_ms: u64) -> (u64, Option<u64>) {
        if let Spec::Every(interval) = self {
            let every = interval.as_millis().max(1) as u64;
            let (first, last) = (after_ms / every, now_ms / every);
            return if last > first {
                (last - first, Some(last * every))
            } else {
                (0, None)
            };
        }
        let (mut count, mut latest, mut at) = (0, None, after_ms);
        while count < 10_000 {
            match self.next_after(at) {
                Some(tick) if tick <= now_ms => {
                    count += 1;
                    latest = Some(tick);
                    at = tick;
                }
                _ => break,
            }
        }
        (count, latest)
    }

    /// How late a tick may fire under [`Missed::Skip`]: half its interval
    /// (a cron expression: its gap to the next tick), at most a minute.
    pub(crate) fn grace(&self, tick_ms: u64) -> u64 {
        let gap = self
            .next_after(tick_ms)
            .map_or(60_000, |next| next - tick_ms);
        (gap / 2).clamp(1, 60_000)
    }
}

impl Spec {
    /// The text it parses from ([`Spec::parse`]): `1s`, or the expression.
    pub(crate) fn source(&self) -> String {
        match self {
            Spec::Every(interval) => interval_text(*interval),
            Spec::Cron(_, text) => text.clone(),
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Every(interval) => write!(f, "every {}", interval_text(*interval)),
            Spec::Cron(_, text) => f.write_str(text),
        }
    }
}

/// `1s`, `500ms`, `5m`, `2h`, `1d`: `None` for anything else.
pub(crate) fn parse_interval(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

fn interval_text(interval: Duration) -> String {
    let ms = interval.as_millis();
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// What a schedule does about ticks that passed while no server could fire
/// them (all were down, paused, or the clock jumped ahead). Never a burst:
/// at most one late tick fires, the latest; the others are counted missed
/// (`afterward_schedule_missed_total`) and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Missed {
    /// Fire a tick only if it is at most half an interval late (at most a
    /// minute); ticks from before a server started are not fired.
    #[default]
    Skip,
    /// Fire the latest missed tick once, however late, including one missed
    /// while every server was down (found from the last run kept, in Redis
    /// or in this process).
    RunOnce,
}

/// What a schedule does at `now_ms`, its ticks up to `considered_ms`
/// considered already: the tick to fire, if any, and how many ticks it lets
/// pass (missed). The last tick considered becomes the latest due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) considered_ms: u64,
    pub(crate) fire: Option<u64>,
    pub(crate) missed: u64,
}

/// The scheduler's rule (see `scheduler.rs`): never a tick twice (the last
/// considered only moves forward: a clock stepped back fires nothing), and
/// never a burst (at most the latest due tick fires; the policy says
/// whether a late one does).
pub(crate) fn plan(spec: &Spec, missed: Missed, considered_ms: u64, now_ms: u64) -> Plan {
    let (due, latest) = spec.due(considered_ms, now_ms);
    let Some(tick) = latest else {
        return Plan {
            considered_ms,
            fire: None,
            missed: 0,
        };
    };
    let late = now_ms.saturating_sub(tick);
    let fire = missed == Missed::RunOnce || late <= spec.grace(tick);
    Plan {
        considered_ms: tick,
        fire: fire.then_some(tick),
        missed: due - u64::from(fire),
    }
}

/// A periodic job's timing: [`App::every`](crate::App::every),
/// [`App::cron`](crate::App::cron), or [`App::schedule`](crate::App::schedule)
/// for a name and a policy of one's own.
///
/// ```
/// use afterward::{Missed, Schedule};
/// use std::time::Duration;
///
/// let nightly = Schedule::cron("30 2 * * *").named("nightly-report").missed(Missed::RunOnce);
/// let often = Schedule::every(Duration::from_secs(10));
/// # let _ = (nightly, often);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub(crate) name: Option<String>,
    pub(crate) spec: Result<Spec, String>,
    pub(crate) missed: Missed,
}

impl Schedule {
    /// Ticks at every multiple of `interval` since the Unix epoch (so every
    /// server agrees on them): `every(1 minute)` ticks on each whole minute.
    pub fn every(interval: Duration) -> Schedule {
        Schedule::of(Spec::every(interval))
    }

    /// Ticks when the cron `expression` matches, in UTC: five fields
    /// (minute hour day-of-month month day-of-week) or six with seconds
    /// first; lists, ranges, steps, names, `@daily` and the like. A bad
    /// expression is an error at the server's build, naming the field.
    pub fn cron(expression: &str) -> Schedule {
        Schedule::of(
            expression
                .parse::<CronExpr>()
                .map(|expr| Spec::Cron(Box::new(expr), expression.trim().to_owned()))
                .map_err(|e| e.to_string()),
        )
    }

    /// An interval (`1s`, `500ms`, `5m`, `2h`, `1d`) or a cron expression.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying what is wrong (the cron field, or why the
    /// interval is not one).
    pub fn parse(spec: &str) -> Result<Schedule, Error> {
        Spec::parse(spec)
            .map(|spec| Schedule::of(Ok(spec)))
            .map_err(|e| Error::Config(format!("schedule {spec:?}: {e}")))
    }

    fn of(spec: Result<Spec, String>) -> Schedule {
        Schedule {
            name: None,
            spec,
            missed: Missed::default(),
        }
    }

    /// Its name (default: the job's name), unique among the app's
    /// schedules: metrics, listings and pause/resume use it.
    pub fn named(mut self, name: impl Into<String>) -> Schedule {
        self.name = Some(name.into());
        self
    }

    /// What to do about missed ticks (default [`Missed::Skip`]).
    pub fn missed(mut self, missed: Missed) -> Schedule {
        self.missed = missed;
        self
    }
}

/// What makes a tick's job and enqueues it on a task list.
pub(crate) type Enqueue =
    Arc<dyn Fn(&BackgroundTasks, u64) -> Result<JobId, EnqueueError> + Send + Sync>;

/// A schedule as the app registered it.
#[derive(Clone)]
pub(crate) struct ScheduleEntry {
    pub(crate) name: String,
    pub(crate) spec: Result<Spec, String>,
    pub(crate) missed: Missed,
    pub(crate) enqueue: Enqueue,
}

impl ScheduleEntry {
    /// `schedule` of the jobs `make` builds for each tick (given the tick's
    /// time in Unix milliseconds).
    pub(crate) fn new<J: Job>(
        schedule: Schedule,
        make: impl Fn(u64) -> J + Send + Sync + 'static,
    ) -> ScheduleEntry {
        ScheduleEntry {
            name: schedule.name.unwrap_or_else(|| J::NAME.to_owned()),
            spec: schedule.spec,
            missed: schedule.missed,
            // Durable: with a broker, sent before the enqueue returns, so a
            // tick won is in Redis one round trip after its claim.
            enqueue: Arc::new(move |tasks: &BackgroundTasks, tick| {
                tasks.enqueue_with(make(tick), JobOptions::new().durable())
            }),
        }
    }
}

/// A schedule as [`Jobs::schedules`](crate::Jobs::schedules) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// Its name.
    pub name: String,
    /// When it ticks (`every 1s`, or the cron expression).
    pub spec: String,
    /// The last tick enqueued (by any server, over Redis), in Unix ms.
    pub last_run_ms: Option<u64>,
    /// The next tick, in Unix ms.
    pub next_run_ms: Option<u64>,
    /// Whether it is paused (over Redis: for every server).
    pub paused: bool,
}

impl ScheduleInfo {
    /// `{"name", "spec", "last_run_ms", "next_run_ms", "paused"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "spec": self.spec,
            "last_run_ms": self.last_run_ms,
            "next_run_ms": self.next_run_ms,
            "paused": self.paused,
        })
    }
}

/// How a tick's claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This server enqueues it.
    Won,
    /// Another server has it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Lost,
    /// The schedule is paused.
    Paused,
}

/// Where ticks are claimed, and schedules paused and their last runs kept:
/// this process, or a broker shared by every server (Redis).
pub(crate) trait Ticks: Send + Sync {
    /// Makes a schedule known (for listings made elsewhere: its spec).
    fn register(&self, name: &str, spec: &str) -> Result<(), String>;
    /// Claims tick `tick_ms` of schedule `name`, for `hold` (past any
    /// server's look at it), and keeps it as the last run if won.
    fn claim(&self, name: &str, tick_ms: u64, hold: Duration) -> Result<Claim, String>;
    /// The last tick claimed of each schedule.
    fn last_runs(&self, names: &[&str]) -> Result<Vec<Option<u64>>, String>;
    /// Whether each schedule is paused.
    fn paused(&self, names: &[&str]) -> Result<Vec<bool>, String>;
    fn set_paused(&self, name: &str, paused: bool) -> Result<(), String>;
}

/// The schedules of a running pool, as [`Jobs`](crate::Jobs) reaches them
/// (the scheduler, above the runner, implements it).
pub(crate) trait ScheduleControl: Send + Sync {
    fn list(&self) -> Result<Vec<ScheduleInfo>, String>;
    /// `Ok(false)` for a name no schedule has.
    fn set_paused(&self, name: &str, paused: bool) -> Result<bool, String>;
    fn to_prometheus(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_tick_on_multiples_since_the_epoch() {
        let spec = Spec::parse("500ms").unwrap();
        assert_eq!(spec.next_after(1_000), Some(1_500));
        assert_eq!(spec.next_after(1_499), Some(1_500));
        assert_eq!(spec.due(1_000, 2_700), (3, Some(2_500)));
        assert_eq!(spec.due(2_500, 2_700), (0, None));
        assert_eq!(spec.grace(1_500), 250);
        assert_eq!(spec.to_string(), "every 500ms");
        assert_eq!(Spec::parse("5m").unwrap().to_string(), "every 5m");
        assert!(Spec::parse("0s").is_err());
    }

    #[test]
    fn a_late_wake_fires_one_tick_never_a_burst_and_a_clock_stepped_back_none() {
        let spec = Spec::parse("100ms").unwrap();
        let plan_at = |missed, now| plan(&spec, missed, 1_000, now);
        // On time: the tick fires.
        let on_time = plan_at(Missed::Skip, 1_110);
        assert_eq!(
            (on_time.fire, on_time.missed, on_time.considered_ms),
            (Some(1_100), 0, 1_100)
        );
        // Paused for ten ticks: one fires (RunOnce) or none (Skip, too late).
        let run_once = plan_at(Missed::RunOnce, 2_070);
        assert_eq!((run_once.fire, run_once.missed), (Some(2_000), 9));
        let skip = plan_at(Missed::Skip, 2_070);
        assert_eq!(
            (skip.fire, skip.missed, skip.considered_ms),
            (None, 10, 2_000)
        );
        // A clock stepped back: nothing, and nothing forgotten.
        let back = plan(&spec, Missed::RunOnce, 2_000, 1_500);
        assert_eq!(
            (back.fire, back.missed, back.considered_ms),
            (None, 0, 2_000)
        );
        // Again at the same time: the tick considered is not fired twice.
        let again = plan(&spec, Missed::RunOnce, 1_100, 1_150);
        assert_eq!(again.fire, None);
    }

    #[test]
    fn cron_ticks_are_counted_and_the_latest_named() {
        let spec = Spec::parse("*/10 * * * * *").unwrap();
        assert_eq!(spec.next_after(1_000), Some(10_000));
        assert_eq!(spec.due(0, 35_000), (3, Some(30_000)));
        assert_eq!(spec.grace(30_000), 5_000);
        let bad = Spec::parse("61 * * * *").unwrap_err();
        assert_eq!(bad, "invalid minute field: 61 is outside 0-59");
    }
}
