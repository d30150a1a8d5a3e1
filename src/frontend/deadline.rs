//! The login's one deadline (`limits.client_login_timeout_ms`): a single timer from accept
//! until the client is authenticated, shared by every step (startup packets, TLS handshake,
//! authentication exchange). A timer per step cost a timer-wheel entry each and gave every
//! SSLRequest/GSSENCRequest round its own full timeout.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Sleep;

pub struct LoginDeadline(Pin<Box<Sleep>>);

impl LoginDeadline {
    pub fn after(d: Duration) -> Self {
        LoginDeadline(Box::pin(tokio::time::sleep(d)))
    }

    /// `fut`'s output, or `None` when the deadline passes first.
    pub async fn run<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let sleep = &mut self.0;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_share_one_deadline() {
        let mut d = LoginDeadline::after(Duration::from_secs(10));
        let slow = |s| tokio::time::sleep(Duration::from_secs(s));
        assert_eq!(
            d.run(async {
                slow(6).await;
                1
            })
            .await,
            Some(1)
        );
        // 6 s of 10 are gone: a second 6 s step does not fit.
        assert_eq!(
            d.run(async {
                slow(6).await;
                2
            })
            .await,
            None
        );
        // Ready work still completes after the deadline (polled first).
        assert_eq!(d.run(async { 3 }).await, Some(3));
    }
}
