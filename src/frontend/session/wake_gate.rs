//! A future polled only when it asked to be: the relay loop polls every source it waits on
//! each time the task wakes, and it wakes several times per transaction, while
//! its shutdown and kill signals almost never fire. Each poll of a cancellation future
//! takes its token's lock; behind this gate it is polled once, then again only after it
//! woke the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pin_project_lite::pin_project! {
    pub struct WakeGate<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        // The waker handed to `inner`: sets the flag, then wakes the task.
        waker: Waker,
        polled: bool,
    }
}

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> WakeGate<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        WakeGate {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
            polled: false,
        }
    }
}

impl<F: Future> Future for WakeGate<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read, so a wake in between is not lost.
        this.flag.task.register(cx.waker());
        if *this.polled && !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        *this.polled = true;
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn fires_when_cancelled_before_or_after_the_first_poll() {
        let early = CancellationToken::new();
        early.cancel();
        WakeGate::new(early.cancelled()).await;

        let late = CancellationToken::new();
        let gate = WakeGate::new(late.clone().cancelled_owned());
        let mut gate = std::pin::pin!(gate);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(gate.as_mut().poll(&mut cx).is_pending());
        }
        tokio::spawn(async move { late.cancel() });
        tokio::time::timeout(std::time::Duration::from_secs(5), gate)
            .await
            .expect("woken by the cancel");
    }

    #[tokio::test]
    async fn is_not_polled_again_until_woken() {
        let polls = std::cell::Cell::new(0);
        let inner = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::<()>::Pending
        });
        let mut gate = std::pin::pin!(WakeGate::new(inner));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..5 {
            assert!(gate.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1);
    }
}
