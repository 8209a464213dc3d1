//! Background tasks: [`BackgroundTask`] (one unit of work, here), the
//! per-request list that handlers and dependencies fill (`list.rs`), and the
//! sealed [`Batch`] the pool runs (`batch.rs`). Nothing here knows what is
//! built on tasks: a job's steps are opaque [`Step`]s.

mod batch;
mod list;
mod queue;

pub(crate) use self::batch::Batch;
pub use self::list::BackgroundTasks;
pub(crate) use self::queue::TaskQueue;

use std::any::type_name;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crate::block_on::block_on;
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
    /// A step of work built on tasks (a job's attempt, its wait, its send):
    /// told when it will not run, so that its owner accounts for it.
    Step(Box<dyn Step>),
}

/// Work that code built on tasks puts in a task (the jobs' steps), and that
/// this file runs without knowing what it is, as rayon-core's registry runs
/// `JobRef`s.
pub(crate) trait Step: Send + 'static {
    /// Its name in logs and reports.
    fn name(&self) -> TaskName;

    /// Runs it; a panic is caught by the caller, and counts as the task's.
    fn run(self: Box<Self>);

    /// It will not run here (its request failed, shutdown came first), and
    /// says what became of the work it stood for.
    fn discarded(self: Box<Self>) -> Discarded;

    /// Whether it is a hand-over that the thread submitting its batch may
    /// do itself, without waking a pool thread ([`try_now`](Self::try_now)).
    fn hands_over(&self) -> bool {
        false
    }

    /// Does the hand-over now if that takes no waiting.
    fn try_now(self: Box<Self>) -> HandOver;
}

/// What became of a step's work when the step was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discarded {
    /// It will not run: logged and reported as not run.
    NotRun,
    /// It went elsewhere instead (a job spilled to Redis), which logged it;
    /// reported as spilled.
    Spilled,
    /// The work waits elsewhere, which accounts for it (a job waiting in
    /// the in-process queues: the step only stood for its turn): neither
    /// logged nor reported here, only counted as a discarded task.
    Elsewhere,
}

/// What a hand-over did ([`Step::try_now`]).
pub(crate) enum HandOver {
    /// Done: the task is complete.
    Done,
    /// Done in part: this step takes its place in the batch, and the next
    /// leading hand-over is tried.
    Instead(Box<dyn Step>),
    /// Not now (it would wait): the step stays, to run on the pool as
    /// usual, and so does every task after it.
    NotNow(Box<dyn Step>),
}

/// A task's name as logs and shutdown reports show it, cheap to keep: a
/// borrowed type name by default, and for a step of some kind (a job) its
/// kind, name and id, formatted only when shown.
#[derive(Clone)]
pub(crate) enum TaskName {
    Text(Cow<'static, str>),
    Labelled {
        kind: &'static str,
        name: Cow<'static, str>,
        id: Arc<str>,
    },
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskName::Text(text) => f.write_str(text),
            TaskName::Labelled { kind, name, id } => write!(f, "{kind} {name} ({id})"),
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

    /// The task of a step of work built on tasks (a job's).
    pub(crate) fn step(step: Box<dyn Step>) -> BackgroundTask {
        BackgroundTask {
            name: step.name(),
            work: Work::Step(step),
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
            TaskName::Labelled { name, .. } => name,
        }
    }

    /// Tells its job, if it has one, that the task will not run here (a
    /// job may be spilled to Redis instead), and logs it as not run (a
    /// spilled job was logged as such); `None` for a step whose work is
    /// accounted for elsewhere ([`Discarded::Elsewhere`]).
    fn discard(
        self,
        level: log::Level,
        request_id: &str,
        reason: &str,
        counters: &Counters,
    ) -> Option<TaskInfo> {
        let spilled = match self.work {
            Work::Step(step) => match step.discarded() {
                Discarded::NotRun => false,
                Discarded::Spilled => true,
                Discarded::Elsewhere => return None,
            },
            Work::Closure(_) => false,
        };
        let info = TaskInfo {
            name: self.name.to_string(),
            request_id: request_id.to_owned(),
            spilled,
        };
        counters.not_run(level, &info, reason);
        Some(info)
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
            Work::Step(step) => {
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
