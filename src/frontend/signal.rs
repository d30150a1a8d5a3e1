//! How a client session is told to end: drain (the proxy is shutting down; the session
//! ends at its next transaction boundary) or now (KILL CLIENT, a suspended or removed
//! tenant). The proxy's session registry holds each session's signal and sets it; the
//! relay loop reads it each time it wakes.
//!
//! Two atomics per session instead of a cancellation token per session plus a wait on
//! the shutdown token: those registered in and left a lock-protected waiter list on
//! every login and logout (~2k instructions per login), for signals that almost never fire.

use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Context;

use futures_util::task::AtomicWaker;

const DRAIN: u8 = 1;
const END: u8 = 2;

/// One session's end signal.
#[derive(Default)]
pub struct SessionSignal {
    state: AtomicU8,
    waker: AtomicWaker,
}

/// What [`SessionSignal::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signalled(u8);

impl Signalled {
    /// End at the next transaction boundary.
    pub fn drain(self) -> bool {
        self.0 & DRAIN != 0
    }

    /// End now.
    pub fn end(self) -> bool {
        self.0 & END != 0
    }
}

impl SessionSignal {
    /// The proxy is shutting down: end at the next transaction boundary.
    pub fn drain(&self) {
        self.set(DRAIN);
    }

    /// End the session now.
    pub fn end(&self) {
        self.set(END);
    }

    fn set(&self, bit: u8) {
        self.state.fetch_or(bit, Ordering::AcqRel);
        self.waker.wake();
    }

    /// The signals set so far; the task is woken when one is set later.
    pub fn poll(&self, cx: &Context<'_>) -> Signalled {
        // Registered before the read, so a signal set in between is not lost.
        self.waker.register(cx.waker());
        Signalled(self.state.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Poll;

    #[tokio::test]
    async fn a_signal_set_later_wakes_the_waiting_task() {
        let sig = Arc::new(SessionSignal::default());
        let waiting = {
            let sig = sig.clone();
            tokio::spawn(async move {
                std::future::poll_fn(|cx| {
                    let s = sig.poll(cx);
                    if s.end() {
                        Poll::Ready(s)
                    } else {
                        Poll::Pending
                    }
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        sig.drain();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "draining alone does not end it");
        sig.end();
        let s = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by end")
            .unwrap();
        assert!(s.end() && s.drain());
    }

    #[test]
    fn a_signal_set_before_the_first_poll_is_seen() {
        let sig = SessionSignal::default();
        let cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(sig.poll(&cx), Signalled(0));
        sig.drain();
        let s = sig.poll(&cx);
        assert!(s.drain() && !s.end());
    }
}
