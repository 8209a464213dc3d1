//! Jobs succeeded and failed per minute in this process, for the
//! overview's chart: a thread samples the server's counters every few
//! seconds (from the dashboard's first view on) into an hour of minutes.
//! Over Redis, the workers count per minute in Redis instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::Duration;

use crate::jobs::envelope::now_ms;
use crate::stats::Counters;

/// How often the counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Minutes kept.
pub(crate) const MINUTES: u64 = 60;

/// (Unix minute, succeeded, failed) for the last hour, oldest first.
#[derive(Default)]
pub(crate) struct History {
    minutes: Mutex<VecDeque<(u64, u64, u64)>>,
}

impl History {
    /// Starts sampling `counters` until their server is gone.
    pub(crate) fn start(counters: &Arc<Counters>) -> Arc<History> {
        let history = Arc::new(History::default());
        let (weak, on_thread) = (Arc::downgrade(counters), history.clone());
        let started = thread::Builder::new()
            .name("afterward-dashboard".into())
            .spawn(move || on_thread.sample(&weak));
        if let Err(error) = started {
            log::warn!("the dashboard's chart has no sampler thread: {error}");
        }
        history
    }

    fn sample(&self, counters: &Weak<Counters>) {
        let mut last: Option<(u64, u64)> = None;
        while let Some(counters) = counters.upgrade() {
            let stats = counters.snapshot();
            drop(counters);
            let totals = (stats.jobs_succeeded, stats.jobs_retried + stats.jobs_dead);
            if let Some((succeeded, failed)) = last {
                self.add(
                    now_ms() / 60_000,
                    totals.0.saturating_sub(succeeded),
                    totals.1.saturating_sub(failed),
                );
            }
            last = Some(totals);
            thread::sleep(SAMPLE_EVERY);
        }
    }

    fn add(&self, minute: u64, succeeded: u64, failed: u64) {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        match minutes.back_mut() {
            Some(last) if last.0 == minute => {
                last.1 += succeeded;
                last.2 += failed;
            }
            _ => minutes.push_back((minute, succeeded, failed)),
        }
        while minutes.front().is_some_and(|m| m.0 + MINUTES <= minute) {
            minutes.pop_front();
        }
    }

    /// The last hour, a row per minute (zeros where nothing was sampled).
    pub(crate) fn hour(&self) -> Vec<(u64, u64, u64)> {
        let now = now_ms() / 60_000;
        let minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        (now + 1 - MINUTES..=now)
            .map(|m| {
                minutes
                    .iter()
                    .find(|x| x.0 == m)
                    .copied()
                    .unwrap_or((m, 0, 0))
            })
            .collect()
    }
}

/// An inline SVG chart of `hour` (succeeded and failed per minute): markup
/// only, no script.
pub(crate) fn chart(hour: &[(u64, u64, u64)]) -> String {
    use std::fmt::Write;
    let (width, height) = (600.0, 120.0);
    let top = hour.iter().map(|m| m.1.max(m.2)).max().unwrap_or(0).max(1) as f64;
    let step = width / (hour.len().max(2) - 1) as f64;
    let line = |pick: fn(&(u64, u64, u64)) -> u64| {
        let mut points = String::new();
        for (i, m) in hour.iter().enumerate() {
            let y = height - pick(m) as f64 / top * (height - 10.0);
            let _ = write!(points, "{:.1},{:.1} ", i as f64 * step, y);
        }
        points
    };
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" \
         aria-label=\"jobs succeeded and failed per minute, last hour\">\
         <line x1=\"0\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\" stroke=\"#d9dee7\"/>\
         <polyline fill=\"none\" stroke=\"#2e7d32\" stroke-width=\"2\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"#b3261e\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"4\" y=\"12\" font-size=\"11\" fill=\"#5d6677\">{} per minute at most</text></svg>\
         <p class=\"legend\"><span class=\"ok\">■</span> succeeded <span class=\"bad\">■</span> failed attempts, per minute over the last hour</p>",
        line(|m| m.1),
        line(|m| m.2),
        top as u64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_add_up_and_an_hour_is_kept() {
        let history = History::default();
        history.add(100, 3, 1);
        history.add(100, 2, 0);
        history.add(130, 1, 1);
        history.add(161, 4, 0); // 100 and 130 are more than an hour before
        let minutes = history.minutes.lock().unwrap().clone();
        assert_eq!(minutes, [(130, 1, 1), (161, 4, 0)]);
        let svg = chart(&[(1, 0, 0), (2, 5, 1), (3, 2, 0)]);
        assert!(svg.starts_with("<svg") && svg.contains("5 per minute at most"));
    }
}
