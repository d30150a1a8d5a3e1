//! Idle limits on the client side: `limits.idle_transaction_timeout_ms` for a client that
//! holds a server connection inside a transaction and sends nothing (its tenant's other
//! clients may be waiting for that connection), and `limits.client_idle_timeout_ms` for
//! one idle between transactions.
//!
//! One timer per session, made on first use. It is armed when the session starts waiting
//! on its client and left alone while the wait goes on, so an enabled limit costs a timer
//! reset per idle period; with both limits off the relay reads two config values per turn.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::Session;
use crate::protocol::PgError;

/// What the session is idle in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idle {
    /// A transaction is open on the server connection the client holds.
    Transaction,
    /// No transaction: between transactions, or a session-pooled client at rest.
    Session,
}

impl Idle {
    /// The error the client is closed with.
    pub(super) fn error(self) -> PgError {
        match self {
            Idle::Transaction => PgError::idle_in_transaction_timeout(),
            Idle::Session => PgError::idle_session_timeout(),
        }
    }
}

#[derive(Default)]
pub(super) struct IdleTimer {
    timer: Option<Pin<Box<Sleep>>>,
    /// The idle period the timer runs for; `None` while the client is active.
    armed: Option<Idle>,
}

impl IdleTimer {
    /// Watch for `state` (its kind and limit), keeping the deadline of an idle period
    /// already running; `None` stops watching.
    fn watch(&mut self, state: Option<(Idle, u64)>) {
        let Some((kind, ms)) = state else {
            self.armed = None;
            return;
        };
        if self.armed == Some(kind) {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(ms);
        match &mut self.timer {
            Some(t) => t.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = Some(kind);
    }

    /// Ready with the kind of idle period whose limit has passed.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Idle> {
        match (self.armed, self.timer.as_mut()) {
            (Some(kind), Some(t)) => t.as_mut().poll(cx).map(|()| kind),
            _ => Poll::Pending,
        }
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Start or stop the idle timer for what the session is waiting on now.
    pub(super) fn watch_idle(&mut self) {
        let state = self.idle_state();
        self.idle.watch(state);
    }

    /// The idle period the session is in and its limit, if one applies: nothing pending
    /// from or to the client, and the server (if held) has answered everything.
    fn idle_state(&mut self) -> Option<(Idle, u64)> {
        let limits = &self.cfg.load().limits;
        let (in_tx, between) = (
            limits.idle_transaction_timeout_ms,
            limits.client_idle_timeout_ms,
        );
        if in_tx == 0 && between == 0 {
            return None;
        }
        if self.terminating
            || self.switch_waits
            || self.c_remaining > 0
            || !self.cin.is_empty()
            || !self.cout.is_empty()
        {
            return None;
        }
        let (kind, ms) = match &self.server {
            None => (Idle::Session, between),
            Some(a) if !a.settled() => return None,
            Some(a) if a.t.tx_status != b'I' => (Idle::Transaction, in_tx),
            Some(_) => (Idle::Session, between),
        };
        (ms > 0).then_some((kind, ms))
    }
}
