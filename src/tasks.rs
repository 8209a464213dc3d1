//! [`BackgroundTask`] and [`BackgroundTasks`]: the per-request list that handlers
//! and dependencies fill, and that the server hands to the pool after responding.

use std::any::type_name;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::block_on::block_on;
use crate::stats::{Counters, TaskOutcome};

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
    name: String,
    job: TaskFn,
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
            name: type_name::<F>().to_owned(),
            job: Box::new(move || f().into_task_result()),
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
            name: type_name::<Fut>().to_owned(),
            job: Box::new(move || block_on(future).into_task_result()),
        }
    }

    /// Sets the name used in logs, counters and shutdown reports.
    pub fn named(mut self, name: impl Into<String>) -> BackgroundTask {
        self.name = name.into();
        self
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the task, catching a panic, and logs a failure. Returns how it ended.
    pub(crate) fn run(self, request_id: &str) -> TaskOutcome {
        let BackgroundTask { name, job } = self;
        match panic::catch_unwind(AssertUnwindSafe(job)) {
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
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
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
/// Cloning the handle is cheap and does not copy the list.
///
/// # Common mistakes
///
/// Keeping a clone and adding to it after the handler has returned (from a
/// thread the handler started, say) is too late: the list is handed to the pool
/// once the response is sent. Such a task is not run; it is logged with its
/// name and request id and counted as [`discarded`](crate::Stats::discarded).
#[derive(Clone)]
pub struct BackgroundTasks {
    list: Arc<TaskList>,
}

struct TaskList {
    request_id: Arc<str>,
    counters: Arc<Counters>,
    /// `None` once the list has been taken for dispatch (or discarded).
    tasks: Mutex<Option<Vec<BackgroundTask>>>,
}

impl BackgroundTasks {
    pub(crate) fn new(request_id: Arc<str>, counters: Arc<Counters>) -> BackgroundTasks {
        BackgroundTasks {
            list: Arc::new(TaskList {
                request_id,
                counters,
                tasks: Mutex::new(Some(Vec::new())),
            }),
        }
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
        self.list.counters.scheduled(1);
        let mut tasks = self.lock();
        match tasks.as_mut() {
            Some(tasks) => tasks.push(task),
            None => {
                drop(tasks);
                log::warn!(
                    "background task {} (request {}) was added after the request's tasks were \
                     dispatched; it will not run",
                    task.name,
                    self.list.request_id
                );
                self.list.counters.discarded(1);
            }
        }
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

    /// Takes the tasks out for dispatch; later additions are discarded.
    pub(crate) fn take(&self) -> Vec<BackgroundTask> {
        self.lock().take().unwrap_or_default()
    }

    /// Takes the tasks out and discards them, logging each with `reason`.
    pub(crate) fn discard(&self, reason: &str) {
        let tasks = self.take();
        discard(&tasks, &self.list.request_id, reason, &self.list.counters);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<BackgroundTask>>> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.list.tasks.lock().unwrap_or_else(|e| e.into_inner())
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

/// Logs each of `tasks` as not run and counts them as discarded.
pub(crate) fn discard(
    tasks: &[BackgroundTask],
    request_id: &str,
    reason: &str,
    counters: &Counters,
) {
    for task in tasks {
        log::warn!(
            "background task {} (request {request_id}) discarded: {reason}",
            task.name
        );
    }
    counters.discarded(tasks.len() as u64);
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
        let names: Vec<_> = tasks.take().iter().map(|t| t.name().to_owned()).collect();
        assert_eq!(names, ["first", "second"]);
    }

    #[test]
    fn a_task_added_after_take_is_counted_as_discarded() {
        let (tasks, counters) = list();
        tasks.add_task(|| ());
        assert_eq!(tasks.take().len(), 1);
        tasks.add_task(|| ());
        let stats = counters.snapshot();
        assert_eq!((stats.scheduled, stats.discarded), (2, 1));
        assert!(tasks.is_empty());
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
