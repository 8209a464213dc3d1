//! [`BackgroundTask`] and [`BackgroundTasks`]: the per-request list that handlers
//! and dependencies fill, and that the server hands to the pool after responding.

use std::any::type_name;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::block_on::block_on;
use crate::jobs::{EnqueueError, Job, JobId, JobMode, JobRunner, JobStep, Jobs};
use crate::stats::{Counters, TaskInfo, TaskOutcome};
use crate::unwind::panic_message;

/// What a background task may return: `()`, or `Result<(), E>` where `E: Display`.
///
/// An `Err` is logged with the task's name and request id and counted as
/// [`failed`](crate::Stats::failed); it does not stop the request's later tasks.
#[diagnostic::on_unimplemented(
    message = "a background task must return `()` or `Result<(), E>` with `E: Display`, not `{Self}`",
    label = "this task returns `{Self}`"
)]
pub trait IntoTaskResult {
    /// Converts the task's return value; `Err` carries the message to log.
    fn into_task_result(self) -> Result<(), String>;
}

impl IntoTaskResult for () {
    fn into_task_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> IntoTaskResult for Result<(), E> {
    fn into_task_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

type TaskFn = Box<dyn FnOnce() -> Result<(), String> + Send + 'static>;

/// One unit of background work: a closure or a future, with a name for logs.
///
/// This is Starlette's `BackgroundTask`. Add it to a request's list with
/// [`BackgroundTasks::add`], or attach it to a response with
/// [`Response::with_background`](crate::Response::with_background), where it runs
/// after the request's list.
///
/// The default name is the closure's or future's type name (which names the
/// function it was written in); set a shorter one with [`named`](Self::named).
///
/// A task must be `Send + 'static`, because it runs on another thread after the
/// handler has returned:
///
/// ```compile_fail
/// use std::rc::Rc;
/// let shared = Rc::new(5);
/// // error: `Rc<i32>` cannot be sent between threads safely
/// afterward::BackgroundTask::new(move || println!("{shared}"));
/// ```
pub struct BackgroundTask {
    name: TaskName,
    work: Work,
}

/// What a task runs.
enum Work {
    /// A closure, or a future wrapped in one.
    Closure(TaskFn),
    /// A named job's next step (an attempt, or its wait in the timer): no
    /// box, no name to format, and the runner accounts for it if it is
    /// discarded.
    Job(JobStep),
}

/// A task's name as logs and shutdown reports show it, cheap to keep: a
/// borrowed type name by default, and for a job its name and id, formatted
/// only when shown.
#[derive(Clone)]
pub(crate) enum TaskName {
    Text(Cow<'static, str>),
    Job {
        name: Cow<'static, str>,
        id: Arc<str>,
    },
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskName::Text(text) => f.write_str(text),
            TaskName::Job { name, id } => write!(f, "job {name} ({id})"),
        }
    }
}

impl BackgroundTask {
    /// A task that calls `f`. Capture its arguments in the closure, as
    /// FastAPI's `add_task(func, *args)` passes them.
    pub fn new<F, R>(f: F) -> BackgroundTask
    where
        F: FnOnce() -> R + Send + 'static,
        R: IntoTaskResult,
    {
        BackgroundTask {
            name: TaskName::Text(type_name::<F>().into()),
            work: Work::Closure(Box::new(move || f().into_task_result())),
        }
    }

    /// A task that drives `future` to completion on a background thread
    /// (FastAPI's `async def` tasks).
    ///
    /// No async runtime is involved: the background thread polls the future and
    /// parks between polls. Futures that need a particular runtime (a Tokio
    /// timer or socket, say) must be given one, for instance by calling that
    /// runtime's `block_on` inside a plain closure task instead.
    pub fn future<Fut>(future: Fut) -> BackgroundTask
    where
        Fut: Future + Send + 'static,
        Fut::Output: IntoTaskResult,
    {
        BackgroundTask {
            name: TaskName::Text(type_name::<Fut>().into()),
            work: Work::Closure(Box::new(move || block_on(future).into_task_result())),
        }
    }

    /// The task of a job's next step.
    pub(crate) fn job(step: JobStep) -> BackgroundTask {
        BackgroundTask {
            name: step.name(),
            work: Work::Job(step),
        }
    }

    /// Sets the name used in logs, counters and shutdown reports.
    pub fn named(mut self, name: impl Into<String>) -> BackgroundTask {
        self.name = TaskName::Text(Cow::Owned(name.into()));
        self
    }

    /// The name, cheap to keep.
    pub(crate) fn shared_name(&self) -> TaskName {
        self.name.clone()
    }

    /// The task's name (for a job's task, the job's name).
    pub fn name(&self) -> &str {
        match &self.name {
            TaskName::Text(text) => text,
            TaskName::Job { name, .. } => name,
        }
    }

    /// Tells its job, if it has one, that the task will not run here (a
    /// job may be spilled to Redis instead), and logs it as not run (a
    /// spilled job was logged as such).
    fn discard(
        self,
        level: log::Level,
        request_id: &str,
        reason: &str,
        counters: &Counters,
    ) -> TaskInfo {
        let spilled = match self.work {
            Work::Job(step) => step.discarded(),
            Work::Closure(_) => false,
        };
        let info = TaskInfo {
            name: self.name.to_string(),
            request_id: request_id.to_owned(),
            spilled,
        };
        counters.not_run(level, &info, reason);
        info
    }

    /// Runs the task (already counted as started), then counts how it ended
    /// and how long it took.
    pub(crate) fn run_counted(self, request_id: &str, counters: &Counters) {
        let started = Instant::now();
        let outcome = self.run(request_id);
        counters.finished(outcome, started.elapsed());
    }

    /// Runs the task, catching a panic, and logs a failure. Returns how it ended.
    ///
    /// Architecture invariant: no thread dies of a task's panic; this is the
    /// one place tasks run.
    pub(crate) fn run(self, request_id: &str) -> TaskOutcome {
        let BackgroundTask { name, work } = self;
        let run = || match work {
            Work::Closure(f) => f(),
            Work::Job(step) => {
                step.run();
                Ok(())
            }
        };
        match panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(())) => TaskOutcome::Completed,
            Ok(Err(message)) => {
                log::error!("background task {name} (request {request_id}) failed: {message}");
                TaskOutcome::Failed
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                log::error!("background task {name} (request {request_id}) panicked: {message}");
                TaskOutcome::Panicked
            }
        }
    }
}

impl fmt::Debug for BackgroundTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTask")
            .field("name", &self.name.to_string())
            .finish_non_exhaustive()
    }
}

/// The background tasks of one request: FastAPI's `BackgroundTasks`.
///
/// Take it as a handler argument or in a [`Dependency`](crate::Dependency). Every
/// `BackgroundTasks` obtained during one request is a handle to the same list, so
/// tasks added by the handler, its dependencies and their sub-dependencies all
/// run, in the order they were added, one after another on one background
/// thread, after the response has been sent.
///
/// Cloning the handle is cheap and does not copy the list. Outside the server,
/// [`BackgroundPool::tasks`](crate::BackgroundPool::tasks) makes a list and
/// [`BackgroundPool::dispatch`](crate::BackgroundPool::dispatch) hands it over.
///
/// # Common mistakes
///
/// Keeping a clone and adding to it after the handler has returned (from a
/// thread the handler started, say) is too late: the list is handed to the pool
/// once the response is sent. Such a task is not run; it is logged with its
/// name and request id and counted as [`discarded`](crate::Stats::discarded).
/// So is every task of a list dropped without ever being dispatched.
#[derive(Clone)]
pub struct BackgroundTasks {
    list: Arc<TaskList>,
}

struct TaskList {
    request_id: Arc<str>,
    counters: Arc<Counters>,
    /// The pool's job runner, for [`BackgroundTasks::enqueue`].
    jobs: Option<Arc<JobRunner>>,
    /// `None` once the list has been sealed (for dispatch, or to discard it).
    tasks: Mutex<Option<Vec<BackgroundTask>>>,
}

impl BackgroundTasks {
    /// A new, open list; it counts as open (the server is not idle) until it
    /// is sealed or dropped.
    pub(crate) fn new(request_id: Arc<str>, counters: Arc<Counters>) -> BackgroundTasks {
        counters.list_opened();
        BackgroundTasks {
            list: Arc::new(TaskList {
                request_id,
                counters,
                jobs: None,
                tasks: Mutex::new(Some(Vec::new())),
            }),
        }
    }

    /// The list, able to enqueue `runner`'s jobs (only before it is shared).
    pub(crate) fn with_jobs(mut self, runner: Arc<JobRunner>) -> BackgroundTasks {
        if let Some(list) = Arc::get_mut(&mut self.list) {
            list.jobs = Some(runner);
        }
        self
    }

    /// The jobs of the server (or pool) this list belongs to, if it has any.
    pub(crate) fn jobs(&self) -> Option<Jobs> {
        self.list.jobs.clone().map(Jobs::new)
    }

    /// Enqueues the named job `job`, to start after the response like every
    /// task (and to be discarded with the other tasks if the handler fails),
    /// and returns its id. Its payload is serialized now; a failed attempt is
    /// retried with backoff; [`Jobs::status`] tells where it is.
    ///
    /// # Errors
    ///
    /// When `J` is not registered ([`App::job`](crate::App::job)) or its
    /// value does not serialize: a mistake found now, not when it would run.
    /// An [`EnqueueError`] converts into a `500` [`HttpError`](crate::HttpError).
    pub fn enqueue<J: Job>(&self, job: J) -> Result<JobId, EnqueueError> {
        self.enqueue_after(job, None)
    }

    /// [`enqueue`](Self::enqueue), to start `delay` after the response (it
    /// waits in a timer, not on a pool thread).
    pub fn enqueue_in<J: Job>(&self, job: J, delay: Duration) -> Result<JobId, EnqueueError> {
        self.enqueue_after(job, Some(delay))
    }

    /// [`enqueue`](Self::enqueue), for a `202 Accepted` that promises the
    /// job: with a broker (Redis), it returns only once the broker has the
    /// job, so a crash of this process after the response loses nothing.
    /// A crash of Redis loses nothing only with `appendonly yes` and
    /// `appendfsync always`: under `everysec`, Redis may acknowledge a write
    /// up to 2 s before it is in its AOF file.
    /// The job is sent now, before the response, and runs even if the
    /// handler fails afterwards. Without a broker it is
    /// [`enqueue`](Self::enqueue).
    ///
    /// # Errors
    ///
    /// Those of [`enqueue`](Self::enqueue), and
    /// [`EnqueueError::Unavailable`] when the broker could not be reached in
    /// time (a `503`): the job is then discarded, counted and logged. A
    /// broker that timed out may still have received it (a duplicate, if the
    /// client retries; see the job's id).
    pub fn enqueue_durable<J: Job>(&self, job: J) -> Result<JobId, EnqueueError> {
        let runner = self.runner::<J>()?;
        if !runner.has_broker() || runner.mode() != JobMode::Normal {
            return self.enqueue(job);
        }
        let envelope = runner.envelope(&job, &self.list.request_id)?;
        runner
            .send_now(&envelope, None)
            .map_err(EnqueueError::Unavailable)?;
        Ok(JobId::new(envelope.id.clone()))
    }

    /// The job runner, if the app registers jobs (else `J` is unregistered).
    fn runner<J: Job>(&self) -> Result<&Arc<JobRunner>, EnqueueError> {
        self.list
            .jobs
            .as_ref()
            .ok_or(EnqueueError::Unregistered(J::NAME))
    }

    fn enqueue_after<J: Job>(
        &self,
        job: J,
        delay: Option<Duration>,
    ) -> Result<JobId, EnqueueError> {
        let runner = self.runner::<J>()?;
        let envelope = runner.envelope(&job, &self.list.request_id)?;
        let id = JobId::new(envelope.id.clone());
        match (runner.mode(), delay) {
            (JobMode::Eager, _) => runner.run_now(envelope),
            (JobMode::Capture, _) => runner.capture(envelope),
            _ if runner.has_broker() => self.add(runner.send_task(envelope, delay)),
            (_, None) => self.add(runner.attempt_task(envelope)),
            (_, Some(delay)) => self.add(runner.delayed_task(envelope, delay)),
        }
        Ok(id)
    }

    /// Adds a closure to run after the response is sent.
    ///
    /// `f` returns `()` or `Result<(), E: Display>`; see [`IntoTaskResult`].
    pub fn add_task<F, R>(&self, f: F)
    where
        F: FnOnce() -> R + Send + 'static,
        R: IntoTaskResult,
    {
        self.add(BackgroundTask::new(f));
    }

    /// Adds a future to drive to completion after the response is sent; see
    /// [`BackgroundTask::future`] for what "no runtime" means.
    pub fn add_async_task<Fut>(&self, future: Fut)
    where
        Fut: Future + Send + 'static,
        Fut::Output: IntoTaskResult,
    {
        self.add(BackgroundTask::future(future));
    }

    /// Adds a task built with [`BackgroundTask`], for instance a named one.
    pub fn add(&self, task: BackgroundTask) {
        let mut tasks = self.lock();
        match tasks.as_mut() {
            Some(tasks) => tasks.push(task),
            None => {
                drop(tasks);
                let late = Batch::seal(&self.list.request_id, vec![task], &self.list.counters);
                late.discard("it was added after the request's tasks were dispatched");
            }
        }
    }

    /// Drops the tasks added so far, before they run: for a handler that
    /// decides, after its dependencies added tasks, that none should run.
    /// Returns how many were dropped; each is counted as discarded and
    /// logged (at debug level: it was asked for). Tasks added afterwards run
    /// as usual. After dispatch there is nothing left to clear.
    pub fn clear(&self) -> usize {
        let Some(tasks) = self.lock().as_mut().map(std::mem::take) else {
            return 0;
        };
        let n = tasks.len();
        Batch::seal(&self.list.request_id, tasks, &self.list.counters)
            .discard_at(log::Level::Debug, "the handler cleared its tasks");
        n
    }

    /// How many tasks are waiting in the list (0 once it has been dispatched).
    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::len)
    }

    /// Whether no task is waiting in the list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of the request this list belongs to.
    pub fn request_id(&self) -> &str {
        &self.list.request_id
    }

    /// Seals the list, followed by `more` (a response's own tasks), into the
    /// [`Batch`] the pool runs; tasks added from now on are discarded.
    pub(crate) fn seal(&self, more: Vec<BackgroundTask>) -> Batch {
        self.list.seal(more)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<BackgroundTask>>> {
        self.list.lock()
    }
}

impl TaskList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<BackgroundTask>>> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seal(&self, more: Vec<BackgroundTask>) -> Batch {
        let taken = self.lock().take();
        let was_open = taken.is_some();
        let mut tasks = taken.unwrap_or_default();
        tasks.extend(more);
        // Counted as scheduled before the list stops counting as open, so that
        // no observer sees the server idle in between.
        let batch = Batch::seal(&self.request_id, tasks, &self.counters);
        if was_open {
            self.counters.list_closed();
        }
        batch
    }
}

impl Drop for TaskList {
    /// A list dropped without being sealed (its request was abandoned, or a
    /// [`BackgroundPool`](crate::BackgroundPool) user forgot to dispatch it)
    /// does not lose its tasks silently.
    fn drop(&mut self) {
        if self.lock().is_some() {
            self.seal(Vec::new())
                .discard("its list was dropped without being dispatched");
        }
    }
}

impl fmt::Debug for BackgroundTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasks")
            .field("request_id", &self.list.request_id)
            .field("len", &self.len())
            .finish()
    }
}

/// One request's tasks, sealed: what the pool runs, in order, on one thread.
///
/// Architecture invariant: every task is counted as `scheduled` exactly once,
/// here in [`Batch::seal`], and as `discarded` only in [`Batch::discard`]
/// (which a `Batch` dropped with tasks left also calls), so each task added
/// ends in exactly one outcome.
pub(crate) struct Batch {
    request_id: Arc<str>,
    tasks: VecDeque<BackgroundTask>,
    counters: Arc<Counters>,
    /// Whether the tasks left are counted in the `queued` gauge.
    queued: bool,
}

impl Batch {
    pub(crate) fn seal(
        request_id: &Arc<str>,
        tasks: Vec<BackgroundTask>,
        counters: &Arc<Counters>,
    ) -> Batch {
        counters.scheduled(tasks.len() as u64);
        Batch {
            request_id: request_id.clone(),
            tasks: tasks.into(),
            counters: counters.clone(),
            queued: false,
        }
    }

    pub(crate) fn request_id(&self) -> &Arc<str> {
        &self.request_id
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Counts the tasks left in the `queued` gauge, once they are handed to the pool.
    pub(crate) fn mark_queued(&mut self) {
        if !self.queued {
            self.queued = true;
            self.counters.queued(self.tasks.len() as u64);
        }
    }

    /// The next task to run, counted as running (and no longer queued).
    pub(crate) fn start_next(&mut self) -> Option<BackgroundTask> {
        let task = self.tasks.pop_front()?;
        self.counters.started(self.queued);
        Some(task)
    }

    /// Hands the list's leading job sends to their broker on this thread,
    /// while its buffer takes them without waiting: no pool thread to wake
    /// for work that is only a hand-off. What is left (a closure, a send
    /// behind one, or a send the full buffer refused) goes to the pool as
    /// before, in order, under its [`OnFull`](crate::OnFull) policy.
    pub(crate) fn send_jobs_now(&mut self) {
        while self
            .tasks
            .front()
            .is_some_and(|task| matches!(&task.work, Work::Job(step) if step.sends()))
        {
            let Some(BackgroundTask {
                name,
                work: Work::Job(step),
            }) = self.tasks.pop_front()
            else {
                unreachable!("the front task is a job send");
            };
            let started = Instant::now();
            match step.try_send() {
                None => {
                    self.counters.started(self.queued);
                    self.counters
                        .finished(TaskOutcome::Completed, started.elapsed());
                }
                Some(step) => {
                    self.tasks.push_front(BackgroundTask {
                        name,
                        work: Work::Job(step),
                    });
                    return;
                }
            }
        }
    }

    /// Runs every task left, in order, on this thread.
    pub(crate) fn run_all(mut self) {
        while let Some(task) = self.start_next() {
            task.run_counted(&self.request_id, &self.counters);
        }
    }

    /// Logs each task left as not run, with `reason`, counts them as
    /// discarded, and lists them.
    pub(crate) fn discard(self, reason: &str) -> Vec<TaskInfo> {
        self.discard_at(log::Level::Warn, reason)
    }

    /// [`discard`](Self::discard), logging at `level`.
    pub(crate) fn discard_at(mut self, level: log::Level, reason: &str) -> Vec<TaskInfo> {
        self.discard_rest(level, reason)
    }

    fn discard_rest(&mut self, level: log::Level, reason: &str) -> Vec<TaskInfo> {
        // Each job hears of it before the tasks stop counting as pending:
        // no observer sees the server idle with a job's outcome missing.
        let discarded: Vec<TaskInfo> = std::mem::take(&mut self.tasks)
            .into_iter()
            .map(|task| task.discard(level, &self.request_id, reason, &self.counters))
            .collect();
        let n = discarded.len() as u64;
        if self.queued {
            self.counters.unqueued(n);
        }
        self.counters.discarded(n);
        discarded
    }
}

impl Drop for Batch {
    /// A batch is run or discarded on purpose; one dropped with tasks left
    /// (a channel torn down mid-shutdown, say) still accounts for them.
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.discard_rest(log::Level::Warn, "it was dropped before it could run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> (BackgroundTasks, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        (
            BackgroundTasks::new("r1".into(), counters.clone()),
            counters,
        )
    }

    #[test]
    fn clones_share_one_list_in_order() {
        let (tasks, _) = list();
        let other = tasks.clone();
        tasks.add(BackgroundTask::new(|| ()).named("first"));
        other.add(BackgroundTask::new(|| ()).named("second"));
        let names: Vec<_> = tasks
            .seal(Vec::new())
            .discard("test")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["first", "second"]);
    }

    #[test]
    fn a_task_added_after_take_is_counted_as_discarded() {
        let (tasks, counters) = list();
        tasks.add_task(|| ());
        let batch = tasks.seal(Vec::new());
        assert_eq!(batch.len(), 1);
        tasks.add_task(|| ());
        let stats = counters.snapshot();
        assert_eq!((stats.scheduled, stats.discarded), (2, 1));
        assert!(tasks.is_empty());
    }

    #[test]
    fn a_list_or_batch_dropped_with_tasks_counts_them_as_discarded() {
        let (tasks, counters) = list();
        tasks.add_task(|| ());
        drop(tasks);
        let other = BackgroundTasks::new("r2".into(), counters.clone());
        other.add_task(|| ());
        other.add_task(|| ());
        drop(other.seal(Vec::new()));
        let stats = counters.snapshot();
        assert_eq!(
            (stats.scheduled, stats.discarded, stats.pending()),
            (3, 3, 0)
        );
        assert_eq!(counters.lists_open(), 0);
    }

    #[test]
    fn run_reports_each_outcome() {
        assert_eq!(BackgroundTask::new(|| ()).run("r"), TaskOutcome::Completed);
        assert_eq!(
            BackgroundTask::new(|| Err::<(), _>("boom")).run("r"),
            TaskOutcome::Failed
        );
        assert_eq!(
            BackgroundTask::new(|| -> () { panic!("boom") }).run("r"),
            TaskOutcome::Panicked
        );
        assert_eq!(
            BackgroundTask::future(async { Ok::<(), String>(()) }).run("r"),
            TaskOutcome::Completed
        );
    }

    #[test]
    fn the_default_name_points_at_the_enclosing_function() {
        let task = BackgroundTask::new(|| ());
        assert!(
            task.name()
                .contains("the_default_name_points_at_the_enclosing_function"),
            "{}",
            task.name()
        );
    }
}
