//! Running the statement guard on the relay path: a shared cache of analyses by statement
//! text, the decision for the session's tenant, and how a refusal reaches the client in
//! protocol order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use foldhash::HashMap;
use parking_lot::Mutex;

use crate::config::GuardConfig;
use crate::protocol::frame;
use crate::router::facts::TextFacts;
use crate::router::guard::{analyze, check, Analysis, GuardContext, Verdict};

/// Analyses by statement text, shared by all sessions (the analysis is tenant-independent).
#[derive(Default)]
pub struct GuardCache {
    map: Mutex<HashMap<Box<str>, Arc<Analysis>>>,
    /// Statements the parser did not understand (passed unless strict).
    pub unparsed: AtomicU64,
    pub refused: AtomicU64,
}

impl GuardCache {
    /// The analysis of `sql`, computed once per distinct text (bounded: the cache is
    /// emptied when it reaches `cap` entries).
    pub fn analysis(&self, sql: &str, cap: usize) -> Arc<Analysis> {
        if let Some(a) = self.map.lock().get(sql) {
            return a.clone();
        }
        let a = Arc::new(analyze(sql));
        if !a.parsed {
            self.unparsed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::telemetry::metrics::GUARD_UNPARSED).increment(1);
        }
        let mut m = self.map.lock();
        if m.len() >= cap {
            m.clear();
        }
        m.insert(sql.into(), a.clone());
        a
    }

    /// The verdict for `sql` (whose `facts` the caller has read) run by a tenant with
    /// `tenant_schema`.
    pub fn verdict(
        &self,
        cfg: &GuardConfig,
        tenant_schema: Option<&str>,
        sql: &[u8],
        facts: &TextFacts,
    ) -> Verdict {
        if !cfg.enabled {
            return Verdict::Allow;
        }
        if !cfg.strict && facts.trivially_allowed() {
            return Verdict::Allow;
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return Verdict::Refuse("statement text is not valid UTF-8".into());
        };
        let a = self.analysis(
            &crate::router::guard::cache_key(text),
            cfg.cache_size.max(1),
        );
        let v = check(
            &a,
            &GuardContext {
                tenant_schema,
                logical_schema: &cfg.logical_schema,
                strict: cfg.strict,
            },
        );
        if v != Verdict::Allow {
            self.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::telemetry::metrics::GUARD_REFUSED).increment(1);
        }
        v
    }
}

/// The client-visible message of a refusal.
pub fn refusal_message(reason: &str) -> String {
    format!("permission denied by tenantgate: {reason}")
}

/// A statement that makes the server raise `e` itself, so the error arrives in order with
/// replies to earlier pipelined messages and aborts an open transaction, as a PostgreSQL
/// error would.
pub fn raising_statement(e: &crate::protocol::PgError) -> String {
    let q = |s: &str| crate::backend::server::quote_literal(&s.replace("$tg_guard$", ""));
    let code: String = e.code.chars().filter(char::is_ascii_alphanumeric).collect();
    let mut opts = format!("ERRCODE = '{code}', MESSAGE = {}", q(&e.message));
    if let Some(h) = &e.hint {
        opts.push_str(&format!(", HINT = {}", q(h)));
    }
    format!("DO $tg_guard$BEGIN RAISE EXCEPTION USING {opts}; END$tg_guard$")
}

/// Rewrite a Query message to raise `e`.
pub fn rewrite_query(e: &crate::protocol::PgError) -> BytesMut {
    let mut out = BytesMut::new();
    frame::write_query(&mut out, &raising_statement(e));
    out
}

/// The relation a refused Parse is rewritten to name: it does not exist, so the server fails
/// the Parse itself (in order, skipping to Sync like any failed Parse), and the relay
/// replaces that error with the refusal.
pub const PARSE_MARKER: &str = "tenantgate_refused_statement";

/// Is this server ErrorResponse the failure of a marker Parse?
pub fn is_marker_error(body: &[u8]) -> bool {
    let (code, _) = crate::protocol::error::parse_error_fields(body);
    code == Some(&b"42P01"[..])
        && body
            .windows(PARSE_MARKER.len())
            .any(|w| w == PARSE_MARKER.as_bytes())
}

/// A Parse (statement `tenantgate_refused`, no parameters) that the server fails, to
/// refuse an Execute in order with the replies pending before it.
pub fn marker_parse() -> BytesMut {
    let sql = format!("SELECT FROM pg_catalog.{PARSE_MARKER}");
    let mut out = BytesMut::new();
    frame::write_parse(
        &mut out,
        b"tenantgate_refused",
        &frame::ParseMsg {
            name: b"tenantgate_refused",
            query: sql.as_bytes(),
            rest: &[0, 0],
        },
    );
    out
}

/// Rewrite a Parse message (same name and parameter types) so that the server fails it.
pub fn rewrite_parse(body: &[u8]) -> Option<BytesMut> {
    let m = frame::parse_parse(body)?;
    let sql = format!("SELECT FROM pg_catalog.{PARSE_MARKER}");
    let mut out = BytesMut::new();
    frame::write_parse(
        &mut out,
        m.name,
        &frame::ParseMsg {
            name: m.name,
            query: sql.as_bytes(),
            rest: m.rest,
        },
    );
    Some(out)
}
