//! The consumer's fetching thread, `afterward-worker-fetch`: on a second
//! handle on the store ([`Backend::fetcher`]), it reads the new jobs the I/O
//! thread asks for and hands them to the runners ([`Held::hand_out`]), so
//! that a batch's read, and its run, overlap the previous batch's record
//! (a round trip the I/O thread waits for).
//!
//! It decides nothing: the I/O thread sends one request at a time (which
//! queues, how many) and waits for its reply before the next; the reply
//! says how many of the jobs the runners refused (the stop has begun: they
//! stay pending in the store, and the I/O thread counts them).
//! A call that fails drops the handle's connection; the next request
//! connects again (the I/O thread spaces requests after a failure).

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::backend::{Backend, Want};
use super::held::Held;
use super::ready::Ready;
use super::stats::Shared;

/// What the I/O thread asks for: [`Backend::fetch`]'s arguments.
pub(super) struct Request {
    pub(super) wants: Vec<Want>,
    pub(super) budget: usize,
    pub(super) wait: bool,
}

/// A fetch's outcome, or why it failed.
pub(super) type Reply = Result<Fetched, String>;

/// A fetch's jobs the runners refused (the stop had begun: not held,
/// pending in the store); the others are held and handed out.
pub(super) struct Fetched {
    pub(super) refused: usize,
}

/// Where the fetching thread hands its jobs.
pub(super) struct Runners {
    pub(super) ready: Arc<Ready>,
    pub(super) held: Arc<Held>,
    pub(super) shared: Arc<Shared>,
    /// The worker's name, for the log.
    pub(super) worker: String,
}

/// The I/O thread's side of the fetching thread.
pub(super) struct Fetcher {
    requests: Option<Sender<Request>>,
    pub(super) replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl Fetcher {
    /// Starts the thread on `backend` (not connected yet), handing its jobs
    /// to `runners`.
    pub(super) fn start<B: Backend>(backend: B, runners: Runners) -> std::io::Result<Fetcher> {
        let (requests, incoming) = crossbeam_channel::bounded::<Request>(1);
        let (reply, replies) = crossbeam_channel::bounded::<Reply>(1);
        let thread = thread::Builder::new()
            .name("afterward-worker-fetch".into())
            .spawn(move || serve(backend, &runners, &incoming, &reply))?;
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
    /// Ends the thread: no more requests. It is joined if it has already
    /// ended; otherwise it ends on its own once its call returns (within
    /// the store's timeout) and it finds no further request.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// The thread: one request, one call, its jobs handed out, one reply,
/// until the I/O thread is gone.
fn serve<B: Backend>(
    mut backend: B,
    runners: &Runners,
    requests: &Receiver<Request>,
    replies: &Sender<Reply>,
) {
    let mut connected = false;
    for request in requests {
        let fetched = if !connected {
            backend.connect()
        } else {
            Ok(())
        }
        .and_then(|()| {
            connected = true;
            backend.fetch(&request.wants, request.budget, request.wait)
        });
        let reply = match fetched {
            Ok(deliveries) => {
                let taken = deliveries.len();
                let mut refused = 0;
                if taken > 0 {
                    runners.shared.update(|s| s.claimed += taken as u64);
                    refused = runners
                        .held
                        .hand_out(deliveries, &runners.ready, &runners.shared)
                        .len();
                }
                Ok(Fetched { refused })
            }
            Err(error) => {
                connected = false;
                Err(error)
            }
        };
        if let Err(unread) = replies.send(reply) {
            // The I/O thread gave up on this fetch at the stop: what it took
            // is pending in the store, and only this thread knows how much.
            if let Ok(Fetched { refused }) = unread.into_inner() {
                if refused > 0 {
                    log::warn!(
                        "worker {}: {refused} jobs fetched after it stopped stay pending in the store, for another worker",
                        runners.worker
                    );
                }
            }
            return;
        }
    }
}
