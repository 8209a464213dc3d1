//! The consumer's fetching thread, `afterward-worker-fetch`: on a second
//! handle on the store ([`Backend::fetcher`]), it reads the new jobs the I/O
//! thread asks for, so that a batch's read overlaps the previous batch's
//! record (each a round trip the other no longer waits behind).
//!
//! It decides nothing: the I/O thread sends one request at a time (which
//! queues, how many), waits for its reply before the next, and hands the
//! jobs out or, at the stop, counts them as left pending. A call that fails
//! drops the handle's connection; the next request connects again (the I/O
//! thread spaces requests after a failure).

use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::backend::{Backend, Delivery, Want};

/// What the I/O thread asks for: [`Backend::fetch`]'s arguments.
pub(super) struct Request {
    pub(super) wants: Vec<Want>,
    pub(super) budget: usize,
    pub(super) wait: bool,
}

/// A fetch's outcome: the jobs it took (now held by this consumer), or why
/// it failed.
pub(super) type Reply = Result<Vec<Delivery>, String>;

/// The I/O thread's side of the fetching thread.
pub(super) struct Fetcher {
    requests: Option<Sender<Request>>,
    pub(super) replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl Fetcher {
    /// Starts the thread on `backend` (not connected yet).
    pub(super) fn start<B: Backend>(backend: B) -> std::io::Result<Fetcher> {
        let (requests, incoming) = crossbeam_channel::bounded::<Request>(1);
        let (reply, replies) = crossbeam_channel::bounded::<Reply>(1);
        let thread = thread::Builder::new()
            .name("afterward-worker-fetch".into())
            .spawn(move || serve(backend, &incoming, &reply))?;
        Ok(Fetcher {
            requests: Some(requests),
            replies,
            thread: Some(thread),
        })
    }

    /// Sends a request; its reply comes on [`replies`](Self::replies).
    /// False when the thread is gone (it panicked).
    pub(super) fn ask(&self, request: Request) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|requests| requests.send(request).is_ok())
    }
}

impl Drop for Fetcher {
    /// Ends the thread: no more requests. It is joined when idle; one busy
    /// with a call ends once the call returns (within the store's timeout).
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// The thread: one request, one call, one reply, until the I/O thread is
/// gone.
fn serve<B: Backend>(mut backend: B, requests: &Receiver<Request>, replies: &Sender<Reply>) {
    let mut connected = false;
    for request in requests {
        let reply = if !connected {
            backend.connect()
        } else {
            Ok(())
        }
        .and_then(|()| {
            connected = true;
            backend.fetch(&request.wants, request.budget, request.wait)
        });
        if reply.is_err() {
            connected = false;
        }
        if replies.send(reply).is_err() {
            return;
        }
    }
}
