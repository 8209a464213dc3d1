//! The background pool: named threads fed by a bounded channel of request task
//! lists, with panic isolation and a shutdown that reports what it could not run.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::stats::Counters;
use crate::tasks::{self, BackgroundTask};

/// What happens to a request when the background queue is full.
///
/// Whatever the policy, no task is dropped: a task list that meets a full
/// queue after its handler ran is run or waited for, never lost.
///
/// Non-exhaustive: more policies may come; match with a wildcard arm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnFull {
    /// The request worker, having responded, waits for room in the queue.
    /// New requests wait for a free worker meanwhile (backpressure).
    #[default]
    Block,
    /// The request worker, having responded, runs the tasks itself, in
    /// order. Counted in [`Stats::ran_by_caller`](crate::Stats::ran_by_caller).
    CallerRuns,
    /// While the queue is full, new requests are refused with `503 Service
    /// Unavailable` and `Retry-After` before their handler runs (paths
    /// exempted with [`ServerBuilder::shed_exempt`](crate::ServerBuilder::shed_exempt)
    /// are still served). Counted in [`Stats::rejected`](crate::Stats::rejected).
    /// A request admitted just before the queue filled up waits for room, as
    /// with `Block`.
    Shed,
}

/// One request's tasks, run in order on one background thread.
pub(crate) struct Job {
    pub(crate) request_id: Arc<str>,
    pub(crate) tasks: Vec<BackgroundTask>,
}

/// A task that the shutdown deadline caught before it finished, as listed in a
/// [`ShutdownReport`](crate::ShutdownReport).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's name (see [`BackgroundTask::named`]).
    pub name: String,
    /// The id of the request that added it.
    pub request_id: String,
}

/// The pool as the server owns it.
pub(crate) struct Pool {
    /// A receiver of our own, so that shutdown can empty the queue at its deadline.
    receiver: Receiver<Job>,
    shared: Arc<PoolState>,
    threads: Vec<JoinHandle<()>>,
}

/// The sending side, one clone per request worker.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    sender: Sender<Job>,
    shared: Arc<PoolState>,
    on_full: OnFull,
}

struct PoolState {
    counters: Arc<Counters>,
    /// Set at the shutdown deadline: from then on nothing more is started.
    abandoned: AtomicBool,
    /// What each worker holds: the rest of its current job and the running task.
    slots: Vec<Mutex<Slot>>,
}

#[derive(Default)]
struct Slot {
    request_id: Option<Arc<str>>,
    pending: VecDeque<BackgroundTask>,
    running: Option<String>,
}

impl Pool {
    /// Starts `workers` threads reading a queue of `capacity` task lists.
    pub(crate) fn start(
        workers: usize,
        capacity: usize,
        on_full: OnFull,
        counters: Arc<Counters>,
    ) -> io::Result<(Pool, Dispatcher)> {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        let shared = Arc::new(PoolState {
            counters,
            abandoned: AtomicBool::new(false),
            slots: (0..workers).map(|_| Mutex::default()).collect(),
        });
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let receiver = receiver.clone();
            let shared = shared.clone();
            let thread = thread::Builder::new()
                .name(format!("afterward-bg-{index}"))
                .spawn(move || work(index, &receiver, &shared))?;
            threads.push(thread);
        }
        let dispatcher = Dispatcher {
            sender,
            shared: shared.clone(),
            on_full,
        };
        Ok((
            Pool {
                receiver,
                shared,
                threads,
            },
            dispatcher,
        ))
    }

    /// The shutdown deadline has passed: start nothing more, and list what will
    /// not run (queued, or waiting behind a running task of the same request)
    /// and what is still running.
    ///
    /// Tasks already in flight towards a worker at this moment are not listed,
    /// but are still logged and counted as discarded when the worker sees them.
    pub(crate) fn abandon(&self) -> (Vec<TaskInfo>, Vec<TaskInfo>) {
        self.shared.abandoned.store(true, Ordering::SeqCst);
        let mut not_run = Vec::new();
        let mut still_running = Vec::new();
        for slot in &self.shared.slots {
            let mut slot = lock(slot);
            let request_id = slot.request_id.clone().unwrap_or_default();
            if let Some(name) = &slot.running {
                still_running.push(TaskInfo {
                    name: name.clone(),
                    request_id: request_id.to_string(),
                });
            }
            let rest: Vec<_> = slot.pending.drain(..).collect();
            not_run.extend(self.shared.give_up(&rest, &request_id));
        }
        while let Ok(job) = self.receiver.try_recv() {
            not_run.extend(self.shared.give_up(&job.tasks, &job.request_id));
        }
        (not_run, still_running)
    }

    /// Waits for the worker threads to end. Call once every [`Dispatcher`] is
    /// gone and nothing is running, or the wait lasts as long as the tasks do.
    pub(crate) fn join(self) {
        for thread in self.threads {
            // A worker catches every task panic, so it cannot end by panicking.
            let _ = thread.join();
        }
    }
}

impl Dispatcher {
    /// Hands one request's tasks to the pool. When the queue is full, waits
    /// for room, or runs them on this thread under [`OnFull::CallerRuns`].
    pub(crate) fn dispatch(&self, job: Job) {
        if job.tasks.is_empty() {
            return;
        }
        let n = job.tasks.len() as u64;
        self.shared.counters.queued(n);
        if self.shared.abandoned.load(Ordering::SeqCst) {
            self.shared.give_up(&job.tasks, &job.request_id);
            return;
        }
        let job = match self.on_full {
            OnFull::CallerRuns => match self.sender.try_send(job) {
                Ok(()) => return,
                Err(TrySendError::Full(job)) => {
                    self.shared.counters.ran_by_caller(n);
                    for task in job.tasks {
                        run_counted(task, &job.request_id, &self.shared.counters);
                    }
                    return;
                }
                Err(TrySendError::Disconnected(job)) => job,
            },
            OnFull::Block | OnFull::Shed => match self.sender.send(job) {
                Ok(()) => return,
                Err(returned) => returned.into_inner(),
            },
        };
        // Only possible once every worker has gone, which shutdown prevents
        // while a dispatcher exists; still, never lose the tasks silently.
        self.shared.give_up(&job.tasks, &job.request_id);
    }

    /// Whether the queue is full right now.
    pub(crate) fn is_full(&self) -> bool {
        self.sender.is_full()
    }
}

/// Runs a queued task, counting its start, outcome and duration.
fn run_counted(task: BackgroundTask, request_id: &str, counters: &Counters) {
    counters.started();
    let started = Instant::now();
    let outcome = task.run(request_id);
    counters.finished(outcome, started.elapsed());
}

impl PoolState {
    /// Logs and counts queued tasks that will not run, and lists them.
    fn give_up(&self, tasks: &[BackgroundTask], request_id: &str) -> Vec<TaskInfo> {
        tasks::discard(
            tasks,
            request_id,
            "the shutdown deadline passed before it started",
            &self.counters,
        );
        self.counters.unqueued(tasks.len() as u64);
        tasks
            .iter()
            .map(|task| TaskInfo {
                name: task.name().to_owned(),
                request_id: request_id.to_owned(),
            })
            .collect()
    }
}

/// A background worker: runs each received job's tasks in order.
fn work(index: usize, receiver: &Receiver<Job>, shared: &PoolState) {
    let slot = &shared.slots[index];
    for job in receiver {
        {
            let mut slot = lock(slot);
            slot.request_id = Some(job.request_id);
            slot.pending.extend(job.tasks);
        }
        while let Some((task, request_id)) = next_task(slot, shared) {
            run_counted(task, &request_id, &shared.counters);
            lock(slot).running = None;
        }
    }
}

/// Takes the next task of the worker's current job, marking it as running, or
/// gives up the rest of the job if shutdown has abandoned the queue.
fn next_task(slot: &Mutex<Slot>, shared: &PoolState) -> Option<(BackgroundTask, Arc<str>)> {
    let mut slot = lock(slot);
    let request_id = slot.request_id.clone()?;
    if shared.abandoned.load(Ordering::SeqCst) {
        let rest: Vec<_> = slot.pending.drain(..).collect();
        shared.give_up(&rest, &request_id);
        return None;
    }
    let task = slot.pending.pop_front()?;
    slot.running = Some(task.name().to_owned());
    Some((task, request_id))
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // Tasks run outside the lock, so no panic can poison it mid-update.
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::BackgroundTask;
    use std::sync::mpsc;
    use std::time::Duration;

    fn job(request_id: &str, tasks: Vec<BackgroundTask>) -> Job {
        Job {
            request_id: request_id.into(),
            tasks,
        }
    }

    #[test]
    fn runs_a_jobs_tasks_in_order_and_survives_a_panic() {
        let counters = Arc::new(Counters::default());
        let (pool, dispatcher) = Pool::start(1, 4, OnFull::Block, counters.clone()).unwrap();
        let (tx, rx) = mpsc::channel();
        let tasks = (0..3)
            .map(|i| {
                let tx = tx.clone();
                BackgroundTask::new(move || {
                    tx.send(i).unwrap();
                    if i == 1 {
                        panic!("task 1 panics");
                    }
                })
            })
            .collect();
        counters.scheduled(3);
        dispatcher.dispatch(job("r1", tasks));
        assert!(counters.wait_idle(Duration::from_secs(30)));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [0, 1, 2]);
        let stats = counters.snapshot();
        assert_eq!((stats.completed, stats.panicked), (2, 1));
        drop(dispatcher);
        pool.join();
    }

    #[test]
    fn abandon_lists_queued_and_running_tasks() {
        let counters = Arc::new(Counters::default());
        let (pool, dispatcher) = Pool::start(1, 4, OnFull::Block, counters.clone()).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let blocker = BackgroundTask::new(move || {
            started_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(30)).ok();
        })
        .named("blocker");
        counters.scheduled(3);
        dispatcher.dispatch(job(
            "r1",
            vec![blocker, BackgroundTask::new(|| ()).named("after-blocker")],
        ));
        started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        dispatcher.dispatch(job("r2", vec![BackgroundTask::new(|| ()).named("queued")]));

        let (not_run, running) = pool.abandon();
        let names = |list: &[TaskInfo]| list.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&not_run), ["after-blocker", "queued"]);
        assert_eq!(names(&running), ["blocker"]);
        assert_eq!(not_run[1].request_id, "r2");

        release_tx.send(()).unwrap();
        drop(dispatcher);
        pool.join();
        let stats = counters.snapshot();
        assert_eq!((stats.completed, stats.discarded, stats.queued), (1, 2, 0));
    }
}
