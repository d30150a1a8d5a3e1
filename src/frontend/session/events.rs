//! Turning the session's statements into telemetry events: the context shared by a
//! session's events, events for statements the proxy answered itself, and for statements
//! left open when a server connection is lost.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::frontend::stmt_log::Done;
use crate::protocol::PgError;
use crate::telemetry::event::{EventContext, StmtEvent};
use crate::telemetry::Telemetry;

/// Build the event of a completed statement.
pub(super) fn event(
    ctx: &Arc<EventContext>,
    d: Done,
    rows: u64,
    sqlstate: Option<&[u8]>,
) -> StmtEvent {
    StmtEvent {
        ctx: ctx.clone(),
        text: d.text,
        start: SystemTime::now() - Duration::from_micros(d.latency_us),
        latency_us: d.latency_us,
        wait_us: d.wait_us,
        rows,
        bytes_in: d.bytes_in,
        bytes_out: d.bytes_out,
        sqlstate: sqlstate.and_then(|c| c.try_into().ok()),
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// The event context for the current tenant, rebuilt when the tenant (service users)
    /// or the application name changed. `None` without telemetry or tenant.
    pub(super) fn event_ctx(&mut self) -> Option<Arc<EventContext>> {
        self.tele.as_ref()?;
        let pool = self.pool.as_ref()?;
        if let Some(c) = &self.ev_ctx {
            if c.tenant == pool.tenant.key {
                return Some(c.clone());
            }
        }
        let t = &pool.tenant;
        let ctx = Arc::new(EventContext {
            tenant: t.key.clone(),
            plan: t.plan.clone(),
            rates: t.rates,
            user: self.user.clone(),
            application: crate::frontend::relay::setting(&self.settings, "application_name")
                .unwrap_or_default()
                .to_owned(),
            session: self.session_id,
            pg_instance: t.placement.instance.clone(),
        });
        self.ev_ctx = Some(ctx.clone());
        Some(ctx)
    }

    /// A Query, Parse or Execute the proxy answered itself: refused or failed with `err`,
    /// or served from the result cache (`None`).
    pub(super) fn record_local(&mut self, tag: u8, msg: &[u8], err: Option<&PgError>) {
        let Some(ctx) = self.event_ctx() else { return };
        let Some(text) = self.capture.local_text(tag, msg) else {
            return;
        };
        let ev = StmtEvent {
            ctx,
            text,
            start: SystemTime::now(),
            latency_us: 0,
            wait_us: 0,
            rows: 0,
            bytes_in: msg.len() as u64,
            bytes_out: 0,
            sqlstate: err.and_then(|e| e.code.as_bytes().try_into().ok()),
        };
        if let Some(t) = &self.tele {
            t.record(ev);
        }
    }

    /// The attached server is gone: its open statements failed with `code`.
    pub(super) fn record_abandoned(&mut self, code: &str) {
        let Some(done) = self
            .server
            .as_mut()
            .map(|a| a.relay.t.log.abandon())
            .filter(|d| !d.is_empty())
        else {
            return;
        };
        let Some(ctx) = self.event_ctx() else { return };
        if let Some(t) = &self.tele {
            for d in done {
                t.record(event(&ctx, d, 0, Some(code.as_bytes())));
            }
        }
    }
}

/// Record `d` if telemetry is on; log it when slower than `slow_ms` (0 = off).
pub(super) fn record(
    tele: &Option<Telemetry>,
    ctx: &Option<Arc<EventContext>>,
    d: Option<Done>,
    rows: u64,
    sqlstate: Option<&[u8]>,
    slow_ms: u64,
) {
    if let (Some(t), Some(c), Some(d)) = (tele, ctx, d) {
        if slow_ms > 0 && d.latency_us >= slow_ms * 1000 {
            ::metrics::counter!(crate::telemetry::metrics::SLOW_QUERIES).increment(1);
            tracing::warn!(
                tenant = %c.tenant,
                user = %c.user,
                latency_ms = d.latency_us / 1000,
                slow_query_ms = slow_ms,
                "slow statement"
            );
        }
        t.record(event(c, d, rows, sqlstate));
    }
}
