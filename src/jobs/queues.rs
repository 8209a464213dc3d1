//! Named queues: which a worker (or the server's pool) serves and how it
//! chooses among them ([`Queues`]: strict priority or weights, with an
//! optional limit of jobs running at once per queue), and the chooser both
//! backends share ([`QueueSet`]).
//!
//! Its size: a fifth of it is the unit tests of both.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::error::Error;

/// The queue a job goes to unless its type or its enqueue says otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// The longest queue name.
const MAX_QUEUE_NAME: usize = 64;

/// Whether `name` can name a queue: 1 to 64 ASCII letters, digits, `_`, `-`
/// or `.` (it is part of Redis keys, of flags like `--queues a=2,b=1`, and
/// of metric labels, so nothing there needs escaping).
pub(crate) fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn check_name(name: &str) -> Result<(), Error> {
    if valid_queue_name(name) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid queue name {name:?}: 1 to {MAX_QUEUE_NAME} letters, digits, '_', '-' or '.'"
        )))
    }
}

/// How a worker chooses the next job among the queues it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueOrder {
    /// Always the first queue, in the order given, that has a job ready
    /// (and room under its limit): a lower queue waits while a higher one
    /// has work.
    Strict,
    /// Each queue by its weight: a queue of weight 3 is chosen three times
    /// as often as one of weight 1 while both have jobs ready, and a queue
    /// with nothing ready gives its turns to the others. No queue starves.
    Weighted,
}

/// The queues a worker or the server's pool serves, and how it chooses
/// among them: in strict order, or by weights (as Sidekiq does), with an
/// optional limit of jobs of a queue running at once on this worker.
///
/// ```
/// use afterward::Queues;
///
/// // Two `default` jobs for one `slow` job, at most one `slow` job at once.
/// let queues = Queues::weighted([("default", 2), ("slow", 1)]).limit("slow", 1);
/// // `critical` first, always; `low` only when nothing else waits.
/// let strict = Queues::strict(["critical", "default", "low"]);
/// // The same, as the binary's flags give them.
/// assert_eq!(Queues::parse("default=2,slow=1", false)?.parse_limits("slow=1")?, queues);
/// assert_eq!(Queues::parse("critical,default,low", true)?, strict);
/// # Ok::<(), afterward::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    order: QueueOrder,
    queues: Vec<QueueSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueSpec {
    name: Arc<str>,
    weight: u32,
    limit: Option<usize>,
}

impl Queues {
    /// The queues `names`, served in that order, strictly.
    pub fn strict<I, S>(names: I) -> Queues
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Queues {
            order: QueueOrder::Strict,
            queues: names
                .into_iter()
                .map(|name| QueueSpec {
                    name: name.as_ref().into(),
                    weight: 1,
                    limit: None,
                })
                .collect(),
        }
    }

    /// The queues with their weights.
    pub fn weighted<I, S>(queues: I) -> Queues
    where
        I: IntoIterator<Item = (S, u32)>,
        S: AsRef<str>,
    {
        Queues {
            order: QueueOrder::Weighted,
            queues: queues
                .into_iter()
                .map(|(name, weight)| QueueSpec {
                    name: name.as_ref().into(),
                    weight,
                    limit: None,
                })
                .collect(),
        }
    }

    /// At most `max_running` jobs of `queue` run at once on this worker (or
    /// pool). A worker also holds no more of its jobs than that: the others
    /// stay in the queue for other workers.
    pub fn limit(mut self, queue: &str, max_running: usize) -> Queues {
        match self.queues.iter_mut().find(|q| &*q.name == queue) {
            Some(spec) => spec.limit = Some(max_running),
            // Checked at start: a limit on a queue not served is an error.
            None => self.queues.push(QueueSpec {
                name: queue.into(),
                weight: 0,
                limit: Some(max_running),
            }),
        }
        self
    }

    /// Reads the form the binary's `--queues` takes: `a=3,b=1` (weights) or
    /// `a,b,c` (with `strict`, in that order; without, weight 1 each).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming what is wrong: an empty list, a bad name, a
    /// queue twice, a weight that is not a whole number above zero, or a
    /// weight with `strict`.
    pub fn parse(spec: &str, strict: bool) -> Result<Queues, Error> {
        let mut queues = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let (name, weight) = match part.split_once('=') {
                Some(_) if strict => {
                    return Err(Error::Config(format!(
                        "queue {part:?}: strict order takes no weights"
                    )))
                }
                Some((name, weight)) => {
                    let weight = weight.trim().parse::<u32>().ok().filter(|w| *w > 0);
                    let Some(weight) = weight else {
                        return Err(Error::Config(format!(
                            "queue {part:?}: the weight must be a whole number above zero"
                        )));
                    };
                    (name.trim(), weight)
                }
                None => (part, 1),
            };
            queues.push((name.to_owned(), weight));
        }
        let queues = if strict {
            Queues::strict(queues.into_iter().map(|(name, _)| name))
        } else {
            Queues::weighted(queues)
        };
        queues.check()?;
        Ok(queues)
    }

    /// Adds the limits of the binary's `--queue-limit`: `a=1,b=2`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a limit that is not a whole number above zero,
    /// or on a queue not served.
    pub fn parse_limits(mut self, spec: &str) -> Result<Queues, Error> {
        for part in spec.split(',').map(str::trim) {
            let limit = part
                .split_once('=')
                .and_then(|(name, n)| Some((name.trim(), n.trim().parse::<usize>().ok()?)))
                .filter(|(_, n)| *n > 0);
            let Some((name, n)) = limit else {
                return Err(Error::Config(format!(
                    "queue limit {part:?}: expected QUEUE=N, N a whole number above zero"
                )));
            };
            self = self.limit(name, n);
        }
        self.check()?;
        Ok(self)
    }

    /// How the next job is chosen.
    pub fn order(&self) -> QueueOrder {
        self.order
    }

    /// The queues served, in the order given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().map(|q| &*q.name)
    }

    /// Whether `queue` is served.
    pub fn serves(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| &*q.name == queue)
    }

    /// The limit of jobs of `queue` running at once, if any.
    pub fn limit_of(&self, queue: &str) -> Option<usize> {
        self.queues
            .iter()
            .find(|q| &*q.name == queue)
            .and_then(|q| q.limit)
    }

    /// The queues with `queue` served as its `n` partitions `queue.0` …
    /// `queue.{n-1}` in its place, with the same share of turns: in strict
    /// order, one after the other; by weights, each partition with the
    /// queue's weight and every other queue's weight times `n`; a limit
    /// split among them (at least 1 each). Unchanged if `queue` is not
    /// served or `n` is below 2.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn split(&self, queue: &str, n: usize) -> Queues {
        let Some(at) = self.queues.iter().position(|q| &*q.name == queue) else {
            return self.clone();
        };
        if n < 2 {
            return self.clone();
        }
        let spec = &self.queues[at];
        let weighted = self.order == QueueOrder::Weighted;
        let mut queues: Vec<QueueSpec> = Vec::with_capacity(self.queues.len() + n);
        for (i, other) in self.queues.iter().enumerate() {
            if i != at {
                let weight = if weighted {
                    other.weight.saturating_mul(n as u32)
                } else {
                    other.weight
                };
                queues.push(QueueSpec {
                    weight,
                    ..other.clone()
                });
                continue;
            }
            for k in 0..n {
                queues.push(QueueSpec {
                    name: format!("{}.{k}", spec.name).into(),
                    weight: spec.weight,
                    limit: spec.limit.map(|l| l.div_ceil(n).max(1)),
                });
            }
        }
        Queues {
            order: self.order,
            queues,
        }
    }

    /// Checks the queues, as a builder does before it starts.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.queues.is_empty() {
            return Err(Error::Config("no queue to serve".into()));
        }
        for (i, queue) in self.queues.iter().enumerate() {
            check_name(&queue.name)?;
            if self.queues[..i].iter().any(|q| q.name == queue.name) {
                return Err(Error::Config(format!("queue {:?} given twice", queue.name)));
            }
            if queue.weight == 0 {
                return Err(Error::Config(match queue.limit {
                    Some(_) => format!("a limit on queue {:?}, which is not served", queue.name),
                    None => format!("queue {:?}: a weight must be above zero", queue.name),
                }));
            }
            if queue.limit == Some(0) {
                return Err(Error::Config(format!(
                    "queue {:?}: a limit must be above zero",
                    queue.name
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Queues {
    /// The form [`parse`](Queues::parse) reads (limits apart).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, queue) in self.queues.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match self.order {
                QueueOrder::Strict => f.write_str(&queue.name)?,
                QueueOrder::Weighted => write!(f, "{}={}", queue.name, queue.weight)?,
            }
        }
        Ok(())
    }
}

/// Items waiting per queue, and what runs of each: the chooser of the next
/// item by the [`Queues`]' order, weights and limits. Used under a lock by
/// its owner (the consumer's runner threads, the in-process runner).
pub(crate) struct QueueSet<T> {
    order: QueueOrder,
    lanes: Vec<Lane<T>>,
    /// A xorshift state, for weighted choices.
    random: u64,
}

struct Lane<T> {
    name: Arc<str>,
    weight: u32,
    limit: usize,
    waiting: VecDeque<T>,
    running: usize,
}

impl<T> Lane<T> {
    fn eligible(&self) -> bool {
        !self.waiting.is_empty() && self.running < self.limit
    }
}

impl<T> QueueSet<T> {
    pub(crate) fn new(queues: &Queues) -> QueueSet<T> {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        QueueSet {
            order: queues.order,
            lanes: queues
                .queues
                .iter()
                .map(|q| Lane {
                    name: q.name.clone(),
                    weight: q.weight.max(1),
                    limit: q.limit.unwrap_or(usize::MAX),
                    waiting: VecDeque::new(),
                    running: 0,
                })
                .collect(),
            random: seed | 1,
        }
    }

    pub(crate) fn lane(&self, name: &str) -> Option<usize> {
        self.lanes.iter().position(|l| &*l.name == name)
    }

    pub(crate) fn push(&mut self, lane: usize, item: T) {
        self.lanes[lane].waiting.push_back(item);
    }

    /// Items waiting in all lanes.
    pub(crate) fn waiting(&self) -> usize {
        self.lanes.iter().map(|l| l.waiting.len()).sum()
    }

    /// How many more items `lane` may hold (waiting and running) under its
    /// limit.
    #[cfg_attr(not(any(feature = "redis", test)), allow(dead_code))]
    pub(crate) fn room(&self, lane: usize) -> usize {
        let lane = &self.lanes[lane];
        lane.limit.saturating_sub(lane.running + lane.waiting.len())
    }

    /// The next item to run, by the order and weights, from a lane under
    /// its limit; it counts as running in its lane until
    /// [`finished`](Self::finished).
    pub(crate) fn pop(&mut self) -> Option<(usize, T)> {
        let lane = match self.order {
            QueueOrder::Strict => self.lanes.iter().position(Lane::eligible)?,
            QueueOrder::Weighted => {
                let total: u64 = self
                    .lanes
                    .iter()
                    .filter(|l| l.eligible())
                    .map(|l| u64::from(l.weight))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut point = self.next_random() % total;
                self.lanes
                    .iter()
                    .position(|l| {
                        if !l.eligible() {
                            return false;
                        }
                        let weight = u64::from(l.weight);
                        if point < weight {
                            return true;
                        }
                        point -= weight;
                        false
                    })
                    .expect("the point falls in an eligible lane")
            }
        };
        let lane_ref = &mut self.lanes[lane];
        let item = lane_ref.waiting.pop_front()?;
        lane_ref.running += 1;
        Some((lane, item))
    }

    /// An item of `lane` has finished running.
    pub(crate) fn finished(&mut self, lane: usize) {
        let lane = &mut self.lanes[lane];
        lane.running = lane.running.saturating_sub(1);
    }

    /// The lanes in the order to fetch from now: strict order, or a weighted
    /// shuffle (a lane comes first as often as its share of the weights).
    #[cfg_attr(not(any(feature = "redis", test)), allow(dead_code))]
    pub(crate) fn fetch_order(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.lanes.len()).collect();
        if self.order == QueueOrder::Weighted {
            // Each lane draws a key: u^(1/w), largest first (Efraimidis and
            // Spirakis), with u uniform in (0, 1].
            let mut keys: Vec<(f64, usize)> = order
                .iter()
                .map(|&lane| {
                    let u = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
                    let u = u.max(f64::MIN_POSITIVE);
                    (u.powf(1.0 / f64::from(self.lanes[lane].weight)), lane)
                })
                .collect();
            keys.sort_by(|a, b| b.0.total_cmp(&a.0));
            order = keys.into_iter().map(|(_, lane)| lane).collect();
        }
        order
    }

    /// Takes every item waiting, lane by lane.
    pub(crate) fn drain(&mut self) -> Vec<(usize, T)> {
        let mut out = Vec::new();
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            out.extend(lane.waiting.drain(..).map(|item| (index, item)));
        }
        out
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough for choosing among queues.
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_split_in_partitions_keeps_its_share_and_its_limit() {
        let weighted = Queues::weighted([("hot", 1), ("b", 2)]).limit("hot", 6);
        let split = weighted.split("hot", 3);
        assert_eq!(split.to_string(), "hot.0=1,hot.1=1,hot.2=1,b=6");
        assert_eq!(split.limit_of("hot.1"), Some(2));
        assert!(split.check().is_ok());
        let strict = Queues::strict(["a", "hot", "z"]).split("hot", 2);
        assert_eq!(strict.to_string(), "a,hot.0,hot.1,z");
        assert_eq!(weighted.split("other", 3), weighted);
        assert_eq!(weighted.split("hot", 1), weighted);
    }

    #[test]
    fn strict_order_takes_the_first_queue_with_work_under_its_limit() {
        let queues = Queues::strict(["critical", "default", "low"]).limit("critical", 1);
        queues.check().unwrap();
        let mut set = QueueSet::new(&queues);
        set.push(2, "low-1");
        set.push(1, "default-1");
        set.push(0, "critical-1");
        set.push(0, "critical-2");
        assert_eq!(set.pop(), Some((0, "critical-1")));
        // `critical` is at its limit: the next queue's job comes first.
        assert_eq!(set.pop(), Some((1, "default-1")));
        assert_eq!(set.pop(), Some((2, "low-1")));
        assert_eq!(set.pop(), None, "critical-2 waits for critical-1");
        set.finished(0);
        assert_eq!(set.pop(), Some((0, "critical-2")));
        assert_eq!(set.waiting(), 0);
    }

    #[test]
    fn weights_share_the_turns_and_an_empty_queue_gives_its_turns_away() {
        let queues = Queues::weighted([("default", 3), ("slow", 1)]);
        let mut set = QueueSet::new(&queues);
        let mut taken = [0usize; 2];
        for i in 0..40_000 {
            set.push(0, i);
            set.push(1, i);
            let (lane, _) = set.pop().unwrap();
            set.finished(lane);
            taken[lane] += 1;
        }
        let share = taken[0] as f64 / 40_000.0;
        assert!(
            (0.72..0.78).contains(&share),
            "default took {share} of the turns"
        );
        // Only `slow` has work: it gets every turn.
        let mut only = QueueSet::new(&queues);
        for i in 0..10 {
            only.push(1, i);
        }
        assert!((0..10).all(|_| only.pop().is_some_and(|(lane, _)| lane == 1)));
    }

    #[test]
    fn a_weighted_fetch_order_puts_each_queue_first_by_its_share() {
        let queues = Queues::weighted([("a", 3), ("b", 1)]);
        let mut set = QueueSet::<()>::new(&queues);
        let first_a = (0..20_000).filter(|_| set.fetch_order()[0] == 0).count();
        let share = first_a as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "a first {share} of the time");
        let strict = Queues::strict(["x", "y", "z"]);
        assert_eq!(QueueSet::<()>::new(&strict).fetch_order(), [0, 1, 2]);
    }

    #[test]
    fn room_counts_what_a_limited_queue_holds() {
        let queues = Queues::strict(["a", "b"]).limit("a", 2);
        let mut set = QueueSet::new(&queues);
        assert_eq!(set.room(0), 2);
        set.push(0, 1);
        assert_eq!(set.room(0), 1);
        set.pop();
        set.push(0, 2);
        assert_eq!(set.room(0), 0);
        assert_eq!(set.room(1), usize::MAX);
    }

    #[test]
    fn the_flags_form_reads_back_and_mistakes_are_named() {
        let queues = Queues::parse(" default=3 , slow=1", false).unwrap();
        assert_eq!(queues, Queues::weighted([("default", 3), ("slow", 1)]));
        assert_eq!(queues.to_string(), "default=3,slow=1");
        assert_eq!(Queues::parse("a,b", false).unwrap().to_string(), "a=1,b=1");
        assert_eq!(Queues::parse("a,b", true).unwrap().to_string(), "a,b");
        let limited = queues.clone().parse_limits("slow=1").unwrap();
        assert_eq!(limited.limit_of("slow"), Some(1));
        for (spec, strict, expected) in [
            ("", false, "invalid queue name"),
            ("a=0", false, "above zero"),
            ("a=x", false, "above zero"),
            ("a=2", true, "strict order takes no weights"),
            ("a,a", false, "given twice"),
            ("a{b}", false, "invalid queue name"),
            (&"q".repeat(65), false, "invalid queue name"),
        ] {
            let error = Queues::parse(spec, strict).unwrap_err().to_string();
            assert!(error.contains(expected), "{spec:?}: {error}");
        }
        for (spec, expected) in [
            ("nope=1", "not served"),
            ("slow=0", "above zero"),
            ("slow", "expected QUEUE=N"),
        ] {
            let error = queues.clone().parse_limits(spec).unwrap_err().to_string();
            assert!(error.contains(expected), "{spec:?}: {error}");
        }
    }

    #[test]
    fn waiting_items_can_be_taken_out() {
        let queues = Queues::strict(["a", "b"]);
        let mut set = QueueSet::new(&queues);
        for i in 0..6 {
            set.push(i % 2, i);
        }
        assert_eq!(
            set.drain(),
            [(0, 0), (0, 2), (0, 4), (1, 1), (1, 3), (1, 5)]
        );
        assert_eq!(set.waiting(), 0);
    }
}
