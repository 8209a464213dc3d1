//! The scheduler: a thread of the background pool that fires the app's
//! schedules (`schedule.rs`) at their ticks. Each tick is claimed before it
//! is enqueued ([`Ticks`]): in-process this server always wins; over Redis,
//! the one server whose `SET NX` of the tick's key succeeds, so any number
//! of servers carrying the same schedules enqueue each tick once, with no
//! scheduler process to fail over.
//!
//! Invariants, kept in [`Scheduler::turn`]: a tick is considered once (the
//! last tick considered only moves forward, so a clock stepped back fires
//! nothing twice); at most one tick fires per schedule per turn, the latest
//! due (a pause or a clock stepped forward never makes a burst: the others
//! are counted missed); and no tick is claimed once the stop has begun.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::envelope::now_ms;
use super::runner::JobRunner;
use super::schedule::{
    plan, Claim, Missed, ScheduleControl, ScheduleEntry, ScheduleInfo, Spec, Ticks,
};
use crate::pool::PoolSubmitter;
use crate::prometheus::label_value;
use crate::stats::Counters;
use crate::tasks::BackgroundTasks;

/// The longest the thread sleeps between looks at the clock: how soon a
/// clock stepped forward or back is noticed.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The scheduler of a pool: its thread, and what it keeps of each schedule.
pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    entries: Vec<Entry>,
    ticks: Arc<dyn Ticks>,
    runner: Arc<JobRunner>,
    submit: PoolSubmitter,
    counters: Arc<Counters>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

struct Entry {
    name: String,
    spec: Spec,
    missed: Missed,
    schedule: ScheduleEntry,
    state: Mutex<EntryState>,
}

#[derive(Default)]
struct EntryState {
    /// The last tick considered: never considered again.
    considered: u64,
    /// The last tick this process enqueued.
    last_run: Option<u64>,
    runs: u64,
    missed: u64,
    not_enqueued: u64,
    /// Ticks not enqueued because the schedule was paused.
    paused: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    /// Starts the thread `afterward-scheduler` for `schedules` (their specs
    /// valid: checked at build), claiming ticks in `ticks` (this process's
    /// own, without a broker).
    pub(crate) fn start(
        schedules: Vec<ScheduleEntry>,
        ticks: Option<Arc<dyn Ticks>>,
        runner: Arc<JobRunner>,
        submit: PoolSubmitter,
        counters: Arc<Counters>,
    ) -> std::io::Result<Arc<Scheduler>> {
        let ticks = ticks.unwrap_or_else(|| Arc::new(LocalTicks::default()));
        let now = now_ms();
        let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
        // A schedule that runs missed ticks once starts from its last run.
        let last_runs = ticks.last_runs(&names).unwrap_or_else(|error| {
            log::warn!("the schedules' last runs could not be read ({error}): no missed tick is run at start");
            vec![None; names.len()]
        });
        let mut entries = Vec::with_capacity(schedules.len());
        for (schedule, last_run) in schedules.into_iter().zip(last_runs) {
            let Ok(spec) = schedule.spec.clone() else {
                continue; // refused at build
            };
            if let Err(error) = ticks.register(&schedule.name, &spec.source()) {
                log::warn!(
                    "schedule {}: not registered for listings ({error})",
                    schedule.name
                );
            }
            let considered = match (schedule.missed, last_run) {
                (Missed::RunOnce, Some(last)) => last.min(now),
                _ => now,
            };
            entries.push(Entry {
                name: schedule.name.clone(),
                spec,
                missed: schedule.missed,
                schedule,
                state: Mutex::new(EntryState {
                    considered,
                    ..EntryState::default()
                }),
            });
        }
        let shared = Arc::new(Shared {
            entries,
            ticks,
            runner,
            submit,
            counters,
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let on_thread = shared.clone();
        let thread = thread::Builder::new()
            .name("afterward-scheduler".into())
            .spawn(move || on_thread.run())?;
        Ok(Arc::new(Scheduler {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Stops the thread: no tick is claimed from now on; a tick being
    /// enqueued is finished first.
    pub(crate) fn stop(&self) {
        *lock(&self.shared.stopped) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn run(&self) {
        let mut stopped = lock(&self.stopped);
        while !*stopped {
            drop(stopped);
            let now = now_ms();
            let mut next = now + LOOK_EVERY.as_millis() as u64;
            for entry in &self.entries {
                self.turn(entry, now);
                let considered = lock(&entry.state).considered;
                if let Some(tick) = entry.spec.next_after(considered.max(now)) {
                    next = next.min(tick);
                }
            }
            stopped = lock(&self.stopped);
            if *stopped {
                break;
            }
            let wait = Duration::from_millis(next.saturating_sub(now_ms()));
            stopped = self
                .wake
                .wait_timeout(stopped, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Considers the ticks of `entry` due by `now`: fires the latest, if
    /// its policy says so, and counts the others missed.
    fn turn(&self, entry: &Entry, now: u64) {
        let mut state = lock(&entry.state);
        let plan = plan(&entry.spec, entry.missed, state.considered, now);
        state.considered = plan.considered_ms;
        if plan.missed > 0 {
            state.missed += plan.missed;
            log::warn!(
                "schedule {}: {} tick(s) missed, up to {} ms ago: the server was down, paused, or its clock jumped",
                entry.name,
                plan.missed,
                now.saturating_sub(plan.considered_ms)
            );
        }
        drop(state);
        if let Some(tick) = plan.fire {
            self.fire(entry, tick);
        }
    }

    /// Claims `tick` of `entry` and, if won, enqueues its job.
    fn fire(&self, entry: &Entry, tick: u64) {
        if *lock(&self.stopped) {
            return; // no new tick once the stop has begun
        }
        let hold = hold_for(&entry.spec, tick);
        match self.ticks.claim(&entry.name, tick, hold) {
            Ok(Claim::Won) => {}
            Ok(Claim::Lost) => return,
            Ok(Claim::Paused) => {
                lock(&entry.state).paused += 1;
                return;
            }
            Err(error) => {
                lock(&entry.state).missed += 1;
                log::warn!(
                    "schedule {}: tick {tick} not claimed ({error}): missed here",
                    entry.name
                );
                return;
            }
        }
        let request_id: Arc<str> = Arc::from(format!("schedule:{}:{tick}", entry.name));
        let tasks = BackgroundTasks::new(request_id, self.counters.clone())
            .with_context(self.runner.clone());
        let enqueued = (entry.schedule.enqueue)(&tasks, tick);
        let mut state = lock(&entry.state);
        match enqueued {
            Ok(id) => {
                state.runs += 1;
                state.last_run = Some(tick);
                drop(state);
                self.submit.submit(tasks.seal(Vec::new()));
                log::debug!("schedule {}: tick {tick} enqueued as job {id}", entry.name);
            }
            Err(error) => {
                state.not_enqueued += 1;
                log::error!(
                    "schedule {}: tick {tick} won and not enqueued: {error}",
                    entry.name
                );
            }
        }
    }
}

/// How long a tick's claim is kept: past any server's look at that tick
/// (twice the gap to the next, at least a minute, at most a day).
fn hold_for(spec: &Spec, tick: u64) -> Duration {
    let gap = spec.next_after(tick).map_or(86_400_000, |next| next - tick);
    Duration::from_millis((gap * 2).clamp(60_000, 86_400_000))
}

impl ScheduleControl for Scheduler {
    fn list(&self) -> Result<Vec<ScheduleInfo>, String> {
        let entries = &self.shared.entries;
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let last_runs = self.shared.ticks.last_runs(&names)?;
        let paused = self.shared.ticks.paused(&names)?;
        let now = now_ms();
        Ok(entries
            .iter()
            .zip(last_runs.into_iter().zip(paused))
            .map(|(entry, (last_run_ms, paused))| ScheduleInfo {
                name: entry.name.clone(),
                spec: entry.spec.source(),
                last_run_ms,
                next_run_ms: entry.spec.next_after(now),
                paused,
            })
            .collect())
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<bool, String> {
        if !self.shared.entries.iter().any(|e| e.name == name) {
            return Ok(false);
        }
        self.shared.ticks.set_paused(name, paused)?;
        log::info!(
            "schedule {name} {}",
            if paused { "paused" } else { "resumed" }
        );
        Ok(true)
    }

    fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let families: [(&str, &str, &str); 5] = [
            ("afterward_schedule_runs_total", "counter", "Ticks this process enqueued, by schedule."),
            ("afterward_schedule_missed_total", "counter", "Ticks not fired here: late past the schedule's grace, or not claimed (Redis unreachable)."),
            ("afterward_schedule_not_enqueued_total", "counter", "Ticks this process won and could not enqueue (logged)."),
            ("afterward_schedule_paused_total", "counter", "Ticks this process let pass because the schedule was paused."),
            ("afterward_schedule_last_run_timestamp_seconds", "gauge", "The last tick this process enqueued, in Unix seconds."),
        ];
        for (index, (name, kind, help)) in families.iter().enumerate() {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for entry in &self.shared.entries {
                let state = lock(&entry.state);
                let value = match index {
                    0 => state.runs as f64,
                    1 => state.missed as f64,
                    2 => state.not_enqueued as f64,
                    3 => state.paused as f64,
                    _ => match state.last_run {
                        Some(ms) => ms as f64 / 1000.0,
                        None => continue,
                    },
                };
                let schedule = label_value(&entry.name);
                let _ = writeln!(out, "{name}{{schedule=\"{schedule}\"}} {value}");
            }
        }
        out
    }
}

/// Ticks claimed in this process alone: every claim is won, unless paused.
#[derive(Default)]
struct LocalTicks {
    paused: Mutex<HashSet<String>>,
    last_runs: Mutex<HashMap<String, u64>>,
}

impl Ticks for LocalTicks {
    fn register(&self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }

    fn claim(&self, name: &str, tick_ms: u64, _: Duration) -> Result<Claim, String> {
        if lock(&self.paused).contains(name) {
            return Ok(Claim::Paused);
        }
        let mut last = lock(&self.last_runs);
        let latest = last.entry(name.to_owned()).or_insert(tick_ms);
        *latest = (*latest).max(tick_ms);
        Ok(Claim::Won)
    }

    fn last_runs(&self, names: &[&str]) -> Result<Vec<Option<u64>>, String> {
        let last = lock(&self.last_runs);
        Ok(names.iter().map(|n| last.get(*n).copied()).collect())
    }

    fn paused(&self, names: &[&str]) -> Result<Vec<bool>, String> {
        let paused = lock(&self.paused);
        Ok(names.iter().map(|n| paused.contains(*n)).collect())
    }

    fn set_paused(&self, name: &str, pause: bool) -> Result<(), String> {
        let mut paused = lock(&self.paused);
        if pause {
            paused.insert(name.to_owned());
        } else {
            paused.remove(name);
        }
        Ok(())
    }
}
