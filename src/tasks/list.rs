//! [`BackgroundTasks`]: one request's list of tasks, shared by every handle
//! obtained during the request, sealed into a [`Batch`] after the response.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::batch::Batch;
use super::queue::TaskQueue;
use super::{BackgroundTask, IntoTaskResult};
use crate::stats::Counters;

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
    /// What the list's pool attaches for code built on tasks (the jobs'
    /// runner, for `enqueue`): this file never looks inside.
    context: Option<Arc<dyn Any + Send + Sync>>,
    /// `None` once the list has been sealed (for dispatch, or to discard it).
    tasks: Mutex<Option<TaskQueue>>,
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
                context: None,
                tasks: Mutex::new(Some(TaskQueue::default())),
            }),
        }
    }

    /// The list, carrying `context` for code built on tasks (only before
    /// it is shared).
    pub(crate) fn with_context(mut self, context: Arc<dyn Any + Send + Sync>) -> BackgroundTasks {
        if let Some(list) = Arc::get_mut(&mut self.list) {
            list.context = Some(context);
        }
        self
    }

    /// The counters the list reports to (its server's).
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.list.counters
    }

    /// The context of type `T` the list carries, if any.
    pub(crate) fn context<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.list.context.clone()?.downcast().ok()
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
            Some(tasks) => tasks.push_back(task),
            None => {
                drop(tasks);
                let late = Batch::seal(
                    &self.list.request_id,
                    TaskQueue::one(task),
                    &self.list.counters,
                );
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
        self.lock().as_ref().map_or(0, TaskQueue::len)
    }

    /// Whether no task is waiting in the list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of the request this list belongs to.
    pub fn request_id(&self) -> &str {
        &self.list.request_id
    }

    /// The request id, shared (a job's envelope keeps it).
    pub(crate) fn shared_request_id(&self) -> &Arc<str> {
        &self.list.request_id
    }

    /// Seals the list, followed by `more` (a response's own tasks), into the
    /// [`Batch`] the pool runs; tasks added from now on are discarded.
    pub(crate) fn seal(&self, more: Vec<BackgroundTask>) -> Batch {
        self.list.seal(more)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TaskQueue>> {
        self.list.lock()
    }
}

impl TaskList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TaskQueue>> {
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
