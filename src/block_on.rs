//! A minimal executor: runs one future to completion on the current thread.
//!
//! Background tasks may be futures (FastAPI accepts `async def` tasks). We do not
//! want an async runtime as a dependency, so a background worker polls the future
//! and parks its own thread between polls; the waker unparks it.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Wakes the thread that is blocked in [`block_on`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` until it completes, parking the current thread while it is pending.
///
/// A spurious unpark only causes one extra poll, which futures must tolerate.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::block_on;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::thread;

    /// A future that is ready only once another thread has set its flag and woken it.
    struct WokenFromElsewhere {
        flag: Arc<AtomicBool>,
        started: bool,
    }

    impl Future for WokenFromElsewhere {
        type Output = &'static str;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            if self.flag.load(Ordering::SeqCst) {
                return Poll::Ready("done");
            }
            if !self.started {
                self.started = true;
                let flag = self.flag.clone();
                let waker = cx.waker().clone();
                thread::spawn(move || {
                    flag.store(true, Ordering::SeqCst);
                    waker.wake();
                });
            }
            Poll::Pending
        }
    }

    #[test]
    fn runs_a_ready_future() {
        assert_eq!(block_on(async { 40 + 2 }), 42);
    }

    #[test]
    fn waits_for_a_wake_from_another_thread() {
        let future = WokenFromElsewhere {
            flag: Arc::new(AtomicBool::new(false)),
            started: false,
        };
        assert_eq!(block_on(future), "done");
    }
}
