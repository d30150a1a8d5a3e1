//! Idle limits on the client side: `limits.idle_transaction_timeout_ms` for a client that
//! holds a server connection inside a transaction and sends nothing (its tenant's other
//! clients may be waiting for that connection), and `limits.client_idle_timeout_ms` for
//! one idle between transactions.
//!
//! One timer per session, made on first use (see [`IdleTimer`]); with both limits off the
//! relay reads one flag per turn. A reload's new limits apply to idle periods
//! already under way.

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
    /// Index of its `tenantgate_client_idle_timeouts_total` counter.
    pub(super) fn metric(self) -> usize {
        match self {
            Idle::Transaction => 0,
            Idle::Session => 1,
        }
    }

    /// The error the client is closed with.
    pub(super) fn error(self) -> PgError {
        match self {
            Idle::Transaction => PgError::idle_in_transaction_timeout(),
            Idle::Session => PgError::idle_session_timeout(),
        }
    }
}

/// The session's idle period and the timer that ends it. The timer is only ever moved
/// earlier: a new idle period (one per transaction in transaction pooling) costs a clock
/// read, and a timer that fires before the period's deadline (left from an earlier period,
/// or the limit was raised by a reload) is set again then.
#[derive(Default)]
pub(super) struct IdleTimer {
    timer: Option<Pin<Box<Sleep>>>,
    /// When the timer fires; `None` when it is not set or has fired.
    timer_at: Option<Instant>,
    /// The idle period under way, when it began and its limit; `None` while active.
    period: Option<(Idle, Instant, u64)>,
}

impl IdleTimer {
    /// Watch for `state` (its kind and limit): a new idle period starts when the kind
    /// changes; `None` ends it.
    fn watch(&mut self, state: Option<(Idle, u64)>) {
        let Some((kind, ms)) = state else {
            self.period = None;
            return;
        };
        let since = match self.period {
            Some((k, since, _)) if k == kind => since,
            _ => Instant::now(),
        };
        self.period = Some((kind, since, ms));
        let deadline = since + Duration::from_millis(ms);
        if self.timer_at.is_none_or(|at| deadline < at) {
            self.set(deadline);
        }
    }

    fn set(&mut self, at: Instant) {
        match &mut self.timer {
            Some(t) => t.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.timer_at = Some(at);
    }

    /// Ready when the timer fires during an idle period; [`Self::expired`] tells whether
    /// the period's limit has passed.
    #[inline]
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.period.is_none() || self.timer_at.is_none() {
            return Poll::Pending;
        }
        let Some(t) = self.timer.as_mut() else {
            return Poll::Pending;
        };
        if t.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// The idle period whose limit has passed; otherwise the timer is set for the
    /// period's deadline.
    fn expired(&mut self) -> Option<Idle> {
        let (kind, since, ms) = self.period?;
        let deadline = since + Duration::from_millis(ms);
        if Instant::now() >= deadline {
            return Some(kind);
        }
        self.set(deadline);
        None
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Start or stop the idle timer for what the session is waiting on now.
    #[inline]
    pub(super) fn watch_idle(&mut self) {
        if !self.proxy.idle_limits_on() {
            self.idle.period = None;
            return;
        }
        let state = self.idle_state();
        self.idle.watch(state);
    }

    /// The timer fired: the idle period whose limit (as the config says now) has passed.
    pub(super) fn idle_expired(&mut self) -> Option<Idle> {
        self.watch_idle();
        self.idle.expired()
    }

    /// The idle period the session is in and its limit, if one applies: nothing owed to
    /// the client, and the server (if held) has answered everything. A message the client
    /// has only begun to send does not count as activity (as in PostgreSQL, whose timer
    /// runs while a command is being read).
    fn idle_state(&mut self) -> Option<(Idle, u64)> {
        let limits = &self.cfg.load().limits;
        let (in_tx, between) = (
            limits.idle_transaction_timeout_ms,
            limits.client_idle_timeout_ms,
        );
        if in_tx == 0 && between == 0 {
            return None;
        }
        if self.terminating || self.switch_waits || self.c_remaining > 0 || !self.cout.is_empty() {
            return None;
        }
        let (kind, ms) = match &self.server {
            None => (Idle::Session, between),
            Some(a) if !a.relay.settled() => return None,
            Some(a) if a.relay.t.tx_status != b'I' => (Idle::Transaction, in_tx),
            Some(_) => (Idle::Session, between),
        };
        (ms > 0).then_some((kind, ms))
    }
}
