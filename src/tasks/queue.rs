//! [`TaskQueue`]: tasks in order, the first one kept inline. Most lists hold
//! one task; with the first inline, such a list allocates no buffer of its
//! own, which would be allocated on the request worker and freed on a pool
//! thread (a free across threads is what a busy allocator pays most for).

use std::collections::VecDeque;

use super::BackgroundTask;

/// Tasks in order: `first`, then `rest`. When `first` is empty, so is the
/// front of the queue: `rest` may still hold tasks (after a `pop_front`),
/// and they come next.
#[derive(Default)]
pub(crate) struct TaskQueue {
    first: Option<BackgroundTask>,
    rest: VecDeque<BackgroundTask>,
}

impl TaskQueue {
    /// A queue of one task, with no allocation.
    pub(crate) fn one(task: BackgroundTask) -> TaskQueue {
        TaskQueue {
            first: Some(task),
            rest: VecDeque::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    pub(crate) fn push_back(&mut self, task: BackgroundTask) {
        if self.is_empty() {
            self.first = Some(task);
        } else {
            self.rest.push_back(task);
        }
    }

    pub(crate) fn push_front(&mut self, task: BackgroundTask) {
        if let Some(first) = self.first.replace(task) {
            self.rest.push_front(first);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<BackgroundTask> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    pub(crate) fn front(&self) -> Option<&BackgroundTask> {
        self.first.as_ref().or_else(|| self.rest.front())
    }
}

impl Extend<BackgroundTask> for TaskQueue {
    fn extend<I: IntoIterator<Item = BackgroundTask>>(&mut self, tasks: I) {
        for task in tasks {
            self.push_back(task);
        }
    }
}

impl IntoIterator for TaskQueue {
    type Item = BackgroundTask;
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<BackgroundTask>,
        std::collections::vec_deque::IntoIter<BackgroundTask>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> BackgroundTask {
        BackgroundTask::new(|| {}).named(name)
    }

    fn names(queue: TaskQueue) -> Vec<String> {
        queue
            .into_iter()
            .map(|task| task.name.to_string())
            .collect()
    }

    #[test]
    fn tasks_keep_their_order_through_every_operation() {
        let mut queue = TaskQueue::default();
        assert!(queue.is_empty() && queue.front().is_none());
        queue.push_back(named("a"));
        queue.extend([named("b"), named("c")]);
        assert_eq!(queue.len(), 3);
        let a = queue.pop_front().unwrap();
        // The front is now in `rest`; pushing back and front keeps order.
        queue.push_back(named("d"));
        queue.push_front(a);
        queue.push_front(named("z"));
        assert_eq!(queue.len(), 5);
        assert_eq!(names(queue), ["z", "a", "b", "c", "d"]);
    }

    #[test]
    fn a_queue_of_one_is_inline() {
        let queue = TaskQueue::one(named("only"));
        assert_eq!((queue.len(), queue.rest.capacity()), (1, 0));
        assert_eq!(names(queue), ["only"]);
    }
}
