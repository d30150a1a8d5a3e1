//! Statement policy on the relay path: which tenant a Query/Parse runs for (header
//! comments), the logical-schema rewrite, and the guard's verdict. Decisions are made by
//! the pure modules in `crate::router`; this file applies them to the session.

use std::ops::Range;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::config::PoolMode;
use crate::frontend::relay::Statements;
use crate::protocol::{frame, PgError};
use crate::router::facts::TextFacts;

/// Where the statement text of a whole Query or Parse message lies in it: found once
/// per message for every check. Empty when malformed (or another message).
pub(super) fn text_span(tag: u8, msg: &[u8]) -> Range<usize> {
    let body = &msg[frame::HEADER_LEN..];
    let text = match tag {
        b'Q' => frame::parse_query(body),
        b'P' => frame::parse_parse(body).map(|m| m.query),
        _ => None,
    };
    // The text is a subslice of `msg`: its offset is the distance between the starts.
    text.map_or(0..0, |t| {
        let start = t.as_ptr() as usize - msg.as_ptr() as usize;
        start..start + t.len()
    })
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// The Query/Parse with the logical schema mapped to the tenant's, if anything changes.
    /// `text` is the message's statement text ([`text_span`]).
    pub(super) fn rewrite(
        &mut self,
        tag: u8,
        msg: &[u8],
        text: &[u8],
        facts: &TextFacts,
    ) -> Option<BytesMut> {
        let cfg = self.cfg.load();
        let logical = &cfg.guard.logical_schema;
        let schema = self.pool.as_ref()?.tenant.placement.schema.as_deref()?;
        if !crate::router::rewrite::may_rewrite(text, facts, logical, schema) {
            return None;
        }
        let sql = std::str::from_utf8(text).ok()?;
        let new = crate::router::rewrite::rewrite(sql, logical, schema)?;
        let mut out = BytesMut::new();
        if tag == b'Q' {
            frame::write_query(&mut out, &new);
        } else {
            let m = frame::parse_parse(&msg[frame::HEADER_LEN..])?;
            frame::write_parse(
                &mut out,
                m.name,
                &frame::ParseMsg {
                    name: m.name,
                    query: new.as_bytes(),
                    rest: m.rest,
                },
            );
        }
        Some(out)
    }

    /// The guard's reason to refuse a Query or Parse (`sql` its text), if any.
    pub(super) fn refusal(&mut self, sql: &[u8], facts: &TextFacts) -> Option<String> {
        let cfg = self.cfg.load();
        let schema = self.pool.as_ref()?.tenant.placement.schema.as_deref();
        match self.proxy.guard().verdict(&cfg.guard, schema, sql, facts) {
            crate::router::guard::Verdict::Allow => None,
            crate::router::guard::Verdict::Refuse(r) => Some(r),
        }
    }

    pub(super) fn tenant_key(&self) -> &str {
        self.pool.as_ref().map_or("", |p| p.tenant.key.as_str())
    }

    /// A service user's Query or Parse naming another tenant while the server still owes
    /// replies to finished work before it (a driver's background Close + Sync, pipelined
    /// statements): it waits until they are in. The server then goes back to the pool if
    /// the transaction is over and the switch is made, else [`Self::route`] refuses it as
    /// inside a transaction. Not mid-batch (no Sync yet) or mid-COPY: refused at once.
    #[inline]
    pub(super) fn defers_switch(&self, tag: u8, msg: &[u8]) -> bool {
        if !self.trusted || !matches!(tag, b'Q' | b'P') {
            return false;
        }
        let Some(a) = self.server.as_ref() else {
            return false;
        };
        if a.relay.t.quiet() || a.relay.t.unsynced || a.relay.t.in_copy {
            return false;
        }
        let text = &msg[text_span(tag, msg)];
        crate::router::header::tenant_header(text)
            .is_some_and(|key| self.pool.as_ref().is_some_and(|p| p.tenant.key != key))
    }

    /// Apply a statement's tenant header (`sql` is its text): switch tenants at a
    /// transaction boundary for trusted service users, refuse a switch otherwise.
    pub(super) fn route(&mut self, sql: &[u8]) -> Result<(), PgError> {
        let Some(key) = crate::router::header::tenant_header(sql) else {
            return if self.pool.is_some() {
                Ok(())
            } else {
                Err(PgError::no_tenant())
            };
        };
        if self.pool.as_ref().is_some_and(|p| p.tenant.key == key) {
            return Ok(());
        }
        if !self.trusted {
            return Err(PgError::tenant_not_allowed(key));
        }
        // A server still held between transactions (its release waited for this message
        // to arrive whole) goes back first.
        self.release_if_idle();
        if self.server.is_some() {
            if self.mode == PoolMode::Session {
                return Err(PgError::tenant_switch_in_session(key, self.tenant_key()));
            }
            return Err(PgError::tenant_switch_in_transaction(key));
        }
        let dir = self.proxy.directory();
        let tenant = dir
            .tenant(key)
            .ok_or_else(|| PgError::unknown_tenant(key))?;
        if !tenant.status.may_connect() {
            return Err(PgError::tenant_unavailable(key, tenant.status.as_str()).recoverable());
        }
        // Statements prepared for the previous tenant must never run for this one: forget
        // them (a Bind of one now fails with 26000 at the server).
        self.stmts = Statements::default();
        self.mode = PoolMode::Transaction;
        self.pool = Some(self.proxy.pools().for_tenant(&tenant));
        Ok(())
    }
}
