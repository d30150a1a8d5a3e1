//! Plan limits, feature flags and the result cache on the relay path: admission of
//! statements under the tenant's rate and quota, the `read_only` / `max_statement_ms`
//! checks, cached answers for `/* cache: 30s */` reads, and invalidation on writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::backend::pool::TenantPool;
use crate::config::PoolMode;
use crate::limits::flags::Flags;
use crate::limits::{FlagsCache, Limits, TenantState};
use crate::protocol::{frame, write, PgError};
use crate::router::readonly::{self, Held, Violation};

/// How the tenant's limits take a statement ([`Session::admit_quick`]).
pub enum Admission {
    /// Decided in place: admitted, or refused with this error.
    Decided(Result<(), PgError>),
    /// The statement is counted; a token must come from the shared bucket in Redis.
    Shared(Pin<Box<dyn Future<Output = Result<(), PgError>> + Send>>),
    /// The limits context must be loaded first ([`Session::admit`]).
    Stale,
}

/// The limits of the tenant the session runs for.
pub struct LimCtx {
    pub limits: Limits,
    pub state: Arc<TenantState>,
    /// The tenant's flags, read on every statement.
    pub flags: FlagsCache,
    /// The pool this context was made for: the context is current while the session's
    /// pool is this one (an address comparison per statement instead of the tenant keys;
    /// the `Weak` keeps the address from being reused). Dangling when unknown.
    for_pool: Weak<TenantPool>,
}

impl LimCtx {
    fn new(limits: Limits, state: Arc<TenantState>, pool: Option<&Arc<TenantPool>>) -> Self {
        let flags = state.flags_cache();
        let for_pool = pool
            .filter(|p| p.tenant.key == state.key())
            .map_or_else(Weak::new, Arc::downgrade);
        LimCtx {
            limits,
            state,
            flags,
            for_pool,
        }
    }
}

/// The flags of a session without limits.
fn no_flags() -> Arc<Flags> {
    static NONE: std::sync::LazyLock<Arc<Flags>> = std::sync::LazyLock::new(Default::default);
    NONE.clone()
}

/// A cached answer being collected from the server.
pub struct CacheFill {
    pub text: Bytes,
    pub salt: u64,
    pub ttl: Duration,
    pub gen: u64,
    pub buf: BytesMut,
    pub max: usize,
    /// An error or an oversized answer: do not store.
    pub spoiled: bool,
}

impl CacheFill {
    pub fn add(&mut self, b: &[u8]) {
        if self.spoiled {
            return;
        }
        if self.buf.len() + b.len() > self.max {
            self.spoiled = true;
            self.buf = BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(b);
    }
}

/// Does a CommandComplete tag mean the tenant's data may have changed?
pub fn tag_writes(tag: &[u8]) -> bool {
    let word = tag.split(|&c| c == b' ').next().unwrap_or(tag);
    !matches!(
        word,
        b"SELECT"
            | b"SHOW"
            | b"BEGIN"
            | b"START"
            | b"COMMIT"
            | b"ROLLBACK"
            | b"SET"
            | b"RESET"
            | b"FETCH"
            | b"MOVE"
            | b"CLOSE"
            | b"DECLARE"
            | b"LISTEN"
            | b"UNLISTEN"
            | b"NOTIFY"
            | b"DISCARD"
            | b"DEALLOCATE"
            | b"PREPARE"
            | b"EXPLAIN"
            | b"SAVEPOINT"
            | b"RELEASE"
    )
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    pub fn set_limits(&mut self, limits: Limits, state: Arc<TenantState>) {
        self.lim = Some(LimCtx::new(limits, state, self.pool.as_ref()));
    }

    /// The limits context for the current tenant (service users switch tenants).
    pub(super) async fn lim_ctx(&mut self) -> Option<&LimCtx> {
        if self.lim_stale() {
            // Boxed: only when the tenant changes; the relay's future stays small.
            Box::pin(self.load_lim_ctx()).await;
        }
        self.lim.as_ref()
    }

    /// The limits context is missing or another tenant's.
    pub(super) fn lim_stale(&self) -> bool {
        self.pool.as_ref().is_some_and(|pool| {
            self.proxy.limits().is_some()
                && self
                    .lim
                    .as_ref()
                    .is_none_or(|l| !std::ptr::eq(l.for_pool.as_ptr(), Arc::as_ptr(pool)))
        })
    }

    async fn load_lim_ctx(&mut self) {
        let Some(pool) = self.pool.as_ref() else {
            return;
        };
        let key = pool.tenant.key.clone();
        let Some(limits) = self.proxy.limits().cloned() else {
            return;
        };
        let state = limits.tenant(&key);
        limits.warm(&state).await;
        self.lim = Some(LimCtx::new(limits, state, self.pool.as_ref()));
    }

    /// The tenant's flags (defaults without limits).
    pub(super) fn flags(&mut self) -> Arc<Flags> {
        self.lim
            .as_mut()
            .map_or_else(no_flags, |l| l.flags.load().clone())
    }

    /// The settings the tenant's flags hold (`None` when none).
    fn held(&mut self) -> Option<Held> {
        let f = self.lim.as_mut()?.flags.load();
        let held = Held {
            read_only: f.read_only,
            statement_timeout: f.max_statement_ms > 0,
        };
        held.any().then_some(held)
    }

    /// Refuse a Query/Parse that breaks the tenant's read_only or max_statement_ms flag.
    pub(super) fn flag_violation(&mut self, sql: &[u8]) -> Option<PgError> {
        let held = self.held()?;
        self.held_violation(sql, held)
    }

    /// Transaction pooling: refuse a Bind or Describe of a named statement that breaks a
    /// flag set after the statement was prepared (its Parse was checked against the flags
    /// of then; either message prepares it on a server connection that lacks it). A
    /// statement is read again only when more settings are held than when it last passed.
    pub(super) fn prepared_violation(&mut self, tag: u8, msg: &[u8]) -> Option<PgError> {
        if self.mode != PoolMode::Transaction {
            // Session pooling ends the session when a held setting changes.
            return None;
        }
        let held = self.held()?;
        let body = &msg[frame::HEADER_LEN..];
        let name = match tag {
            b'B' => frame::parse_bind(body)?.1,
            _ => frame::parse_target(body).filter(|(k, _)| *k == b'S')?.1,
        };
        let s = self.stmts.get(name)?;
        if held.within(s.held_checked) {
            return None;
        }
        let parse = s.parse.clone();
        let text = frame::parse_parse(&parse[frame::HEADER_LEN..])?.query;
        let refused = self.held_violation(text, held);
        if refused.is_none() {
            if let Some(s) = self.stmts.get_mut(name) {
                s.held_checked = s.held_checked.union(held);
            }
        }
        refused
    }

    fn held_violation(&mut self, sql: &[u8], held: Held) -> Option<PgError> {
        // Text in another client encoding is checked as far as it reads as UTF-8 (the
        // names checked for are ASCII).
        let sql = String::from_utf8_lossy(sql);
        let tenant = self.tenant_key();
        Some(match readonly::check(&sql, held)? {
            Violation::ReadOnly(what) => PgError::tenant_read_only(tenant, &what),
            Violation::Setting(name) => PgError::setting_held(tenant, name),
        })
    }

    /// Session pooling: the tenant's flags changed since their settings were applied to
    /// the held server connection (or that is not known yet), and the connection is
    /// between transactions with nothing unanswered and no Sync owed, so they can be
    /// applied now (never inside the client's pipeline). In transaction pooling each
    /// checkout applies them, and a changed held setting renews the pool's connections
    /// ([`crate::backend::pool::TenantPool::hold_settings`]).
    pub(super) fn flags_unapplied(&mut self) -> bool {
        if self.mode != PoolMode::Session {
            return false;
        }
        let idle = self.server.as_ref().is_some_and(|a| {
            a.relay.sout.is_empty() && a.relay.t.quiet() && a.relay.t.tx_status == b'I'
        });
        if !idle {
            return false;
        }
        let Some(l) = self.lim.as_mut() else {
            return false;
        };
        let current = l.flags.load();
        match &self.flags_applied {
            Some(f) if Arc::ptr_eq(f, current) => false,
            // Flags read again (a periodic refresh) without a change to their settings.
            Some(f) if f.settings == current.settings => {
                self.flags_applied = Some(current.clone());
                false
            }
            _ => true,
        }
    }

    /// May the flags' settings go before this Bind (`msg`, whole)? Not before a Bind of
    /// the unnamed statement: the settings' statements (simple queries) would drop it;
    /// they go before the next Parse or Query instead.
    pub(super) fn binds_named_statement(msg: &[u8]) -> bool {
        frame::parse_bind(&msg[frame::HEADER_LEN..]).is_some_and(|(_, name, _)| !name.is_empty())
    }

    /// Bring the held server connection's settings in line with the client's and the
    /// tenant's current flags (`SET default_transaction_read_only`, `statement_timeout`,
    /// `tenantgate.*`; `RESET` for a flag that was unset).
    pub(super) async fn apply_flags(&mut self) -> Result<(), PgError> {
        let flags = self.flags();
        let merged = flags.merge_settings(&self.settings);
        let tenant = self.tenant_key().to_owned();
        let Session {
            server, settings, ..
        } = self;
        let Some(conn) = server.as_mut() else {
            return Ok(());
        };
        // Connections opened from now on start with the held ones. This session's own
        // connection started with other values, which RESET ALL would return to: the
        // session ends, and the client reconnects to one that starts with them.
        conn.pool().hold_settings(&flags.held);
        if *conn.started_held != *flags.held {
            return Err(PgError::tenant_settings_changed(&tenant));
        }
        if let Err(e) = conn
            .sync_settings(merged.as_ref().unwrap_or(settings))
            .await
        {
            tracing::warn!(tenant = %tenant, error = %e, "could not apply the tenant's flags");
            return Err(PgError::server_unavailable(&tenant));
        }
        self.flags_applied = Some(flags);
        Ok(())
    }

    /// What besides the text shapes a cached answer: the tenant's incarnation (its backend
    /// secret is new each time a tenant is created) and the session settings.
    fn cache_salt(&self) -> u64 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        if let Some(p) = &self.pool {
            h.update(p.tenant.placement.backend_password.as_bytes());
            h.update(
                p.tenant
                    .placement
                    .schema
                    .as_deref()
                    .unwrap_or("")
                    .as_bytes(),
            );
        }
        for (k, v) in self.settings.iter() {
            if k != "application_name" {
                h.update(k.as_bytes());
                h.update(b"=");
                h.update(v.as_bytes());
                h.update(b";");
            }
        }
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
    }

    /// For tenants using the result cache: does this statement text write? Checked before
    /// it is forwarded, so writes whose command tag looks like a read (a writing CTE,
    /// `CREATE TABLE AS`, `EXPLAIN ANALYZE UPDATE`) still invalidate at transaction end.
    /// Writes made by functions called from a SELECT cannot be seen from the text.
    pub(super) fn text_writes(&mut self, tag: u8, msg: &[u8]) -> bool {
        if !self
            .lim
            .as_mut()
            .is_some_and(|l| l.flags.load().query_cache)
        {
            return false;
        }
        let body = &msg[frame::HEADER_LEN..];
        let sql = match tag {
            b'Q' => frame::parse_query(body),
            b'P' => frame::parse_parse(body).map(|m| m.query),
            _ => None,
        };
        sql.and_then(|s| std::str::from_utf8(s).ok())
            .is_some_and(|s| readonly::writes(s).is_some())
    }

    /// [`Self::admit`] decided in place when the limits context is current (the common
    /// case: no future is built); otherwise what to wait for (`super::inbound::Wait`).
    pub(super) fn admit_quick(&self) -> Admission {
        if self.lim_stale() {
            return Admission::Stale;
        }
        let (Some(pool), Some(l)) = (self.pool.as_ref(), self.lim.as_ref()) else {
            return Admission::Decided(Ok(()));
        };
        let limits = pool.tenant.limits;
        match l.limits.admit_now(&l.state, &limits) {
            Some(decided) => Admission::Decided(decided),
            None => {
                let (lim, state) = (l.limits.clone(), l.state.clone());
                Admission::Shared(Box::pin(async move {
                    lim.admit_shared(&state, limits.queries_per_second).await
                }))
            }
        }
    }

    /// Admit one statement under the tenant's rate and daily quota.
    pub(super) async fn admit(&mut self) -> Result<(), PgError> {
        let Some(limits) = self.pool.as_ref().map(|p| p.tenant.limits) else {
            return Ok(());
        };
        let Some(l) = self.lim_ctx().await else {
            return Ok(());
        };
        l.limits.admit(&l.state, &limits).await
    }

    /// Answer a `/* cache: … */` read from the cache, or arrange for its answer to be
    /// stored. Returns true when answered. Only outside transactions, for single
    /// read-only statements of tenants with the `query_cache` flag.
    /// `ttl` is what the statement asked for ([`crate::limits::cache::requested_ttl`],
    /// checked by the caller: most statements do not ask, and build no future).
    pub(super) async fn try_cache(&mut self, sql: &[u8], ttl: Duration) -> Result<bool, PgError> {
        // Boxed: the relay's future stays small for the statements that do not ask.
        Box::pin(self.try_cache_requested(sql, ttl)).await
    }

    async fn try_cache_requested(&mut self, sql: &[u8], ttl: Duration) -> Result<bool, PgError> {
        let idle = match &self.server {
            None => true,
            Some(a) => a.relay.t.idle() && a.relay.sout.is_empty(),
        };
        if !idle || !self.flags().query_cache {
            return Ok(false);
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return Ok(false);
        };
        if !readonly::plain_select(text) {
            return Ok(false);
        }
        let Some(l) = self.lim_ctx().await else {
            return Ok(false);
        };
        let (lim, state) = (l.limits.clone(), l.state.clone());
        // Only with a generation known to be current (see `Limits::cache_invalidate`).
        if !state.gen_loaded.load(std::sync::atomic::Ordering::Acquire) {
            lim.warm(&state).await;
            if !state.gen_loaded.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(false);
            }
        }
        let salt = self.cache_salt();
        let gen = state.cache_gen.load(std::sync::atomic::Ordering::Acquire);
        if let Some(hit) = lim.cache_get(&state, sql, salt).await {
            self.cout.extend_from_slice(&hit);
            let status = self.tx_status();
            write::ready_for_query(&mut self.cout, status);
            return Ok(true);
        }
        self.cache_fill = Some(Box::new(CacheFill {
            text: Bytes::copy_from_slice(sql),
            salt,
            ttl,
            gen,
            buf: BytesMut::new(),
            max: self.proxy.config().redis.cache_entry_max_bytes,
            spoiled: false,
        }));
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn write_tags() {
        for t in [
            "INSERT 0 1",
            "UPDATE 3",
            "DELETE 0",
            "CREATE TABLE",
            "TRUNCATE TABLE",
            "COPY 5",
        ] {
            assert!(super::tag_writes(t.as_bytes()), "{t}");
        }
        for t in ["SELECT 1", "BEGIN", "COMMIT", "SET", "SHOW", "FETCH 10"] {
            assert!(!super::tag_writes(t.as_bytes()), "{t}");
        }
    }
}
