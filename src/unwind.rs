//! Panics caught where user code runs (handlers, tasks, jobs), told in words.
//!
//! Architecture invariant: no thread of ours dies of a user's panic. User code
//! runs under `catch_unwind` in three places only: `server::worker` (handlers),
//! `tasks` (background tasks), `jobs` (a job's attempt); each turns the panic
//! into an outcome with [`panic_message`].

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
