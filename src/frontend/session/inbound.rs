//! A client's messages on their way to the server: the statement checks, admission under
//! the tenant's limits and attaching a server connection, decided in place. The few
//! steps that must wait (a limits context to load, a token from Redis, a cached answer,
//! a server connection to wait for or bring in line) hand back a [`Wait`] holding what
//! the message still needs, and [`Session::resume`] finishes it.
//!
//! Plain functions rather than one `async fn` per message: an `async fn`'s future is as
//! large as its largest wait (the per-message one was 784 bytes), and building it copied
//! all of it twice per statement into the client's task, cold in the cache by then
//! (callgrind: about 150 instructions and 8 first-level cache write misses per statement).

use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::limits::Admission;
use super::{policy, poll_read_client, Session, HIGH_WATER};
use crate::backend::pool::{PoolError, Pooled};
use crate::config::PoolMode;
use crate::protocol::{frame, write, PgError};
use crate::router::facts::TextFacts;

/// A Query or Parse text's facts and statement kind, when the checks read them.
type Facts = Option<(TextFacts, usize)>;

/// A client message that must wait before it can go on, with what it needs afterwards.
pub(super) enum Wait {
    /// The limits context of the statement's tenant (a service user switched tenants),
    /// before the checks that read its flags.
    Context {
        tag: u8,
        msg: BytesMut,
        span: Range<usize>,
        routed: Result<(), PgError>,
    },
    /// Admission of a Query that passed the checks: a token from the shared bucket, or
    /// the limits context first.
    Query {
        msg: BytesMut,
        span: Range<usize>,
        facts: Facts,
        admission: Admission,
    },
    /// The cached answer a Query asked for (`/* cache: … */`).
    Cache {
        msg: BytesMut,
        span: Range<usize>,
        facts: Facts,
        ttl: Duration,
    },
    /// Admission of an Execute.
    Execute { msg: BytesMut, admission: Admission },
    /// Session pooling: the tenant's flags changed, and their settings are applied to
    /// the held server connection before the next transaction starts.
    Flags {
        tag: u8,
        msg: BytesMut,
        facts: Facts,
    },
    /// A server connection: none idle, its pool replaced, or `conn` (taken) needs the
    /// client's settings applied.
    Attach {
        tag: u8,
        msg: BytesMut,
        facts: Facts,
        conn: Option<Pooled>,
    },
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Process the complete client messages in `cin` until they run out (`None`) or one
    /// must wait. The wait is boxed: the relay's future holds the result of every call,
    /// and a `Wait` in place would be copied into it each time (168 bytes).
    pub(super) fn on_client_data(&mut self) -> Result<Option<Box<Wait>>, PgError> {
        loop {
            if self.terminating {
                // Nothing after Terminate is read.
                self.cin.clear();
                return Ok(None);
            }
            if self.c_remaining > 0 {
                let n = self.c_remaining.min(self.cin.len());
                if n == 0 {
                    return Ok(None);
                }
                let chunk = self.cin.split_to(n);
                if let Some(a) = self.server.as_deref_mut() {
                    a.relay.sout.extend_from_slice(&chunk);
                    a.relay.t.log.add_in(n);
                }
                self.c_remaining -= n;
                continue;
            }
            let h = match frame::peek_header(&self.cin) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(e) => return Err(PgError::protocol_violation(e.to_string())),
            };
            if h.tag == b'd' {
                // CopyData is streamed, never buffered whole.
                let n = h.total().min(self.cin.len());
                let chunk = self.cin.split_to(n);
                if let Some(a) = self.server.as_deref_mut() {
                    a.relay.sout.extend_from_slice(&chunk);
                    a.relay.t.log.add_in(n);
                }
                self.c_remaining = h.total() - n;
                if self.server.is_none() {
                    let skip = self.c_remaining.min(self.cin.len());
                    self.cin.advance(skip);
                    self.c_remaining -= skip;
                }
                continue;
            }
            if h.total() > self.max_message {
                return Err(PgError::message_too_large(h.total(), self.max_message));
            }
            if self.cin.len() < h.total() {
                self.cin.reserve(h.total() - self.cin.len());
                return Ok(None);
            }
            tracing::trace!(tag = %(h.tag as char), len = h.total(), "client message");
            // The Bind/Describe/Execute/Sync of an attached client (an Execute once
            // admitted) go to the server from where they were read: not split off one by
            // one (a reference count each).
            let direct = if h.tag == b'E' && self.server.is_some() && !self.skip_until_sync {
                match self.admit_quick() {
                    Admission::Decided(r) => Some(r),
                    admission => {
                        let msg = self.cin.split_to(h.total());
                        return Ok(Some(Box::new(Wait::Execute { msg, admission })));
                    }
                }
            } else {
                // A session-pooled client's Bind can start a transaction: the flags'
                // settings go first when they changed.
                (self.forwards_directly(h.tag)
                    && !(h.tag == b'B'
                        && self.flags_unapplied()
                        && Self::binds_named_statement(&self.cin[..h.total()])))
                .then_some(Ok(()))
            };
            if let Some(mut admitted) = direct {
                let cin = std::mem::take(&mut self.cin);
                if matches!(h.tag, b'B' | b'D') {
                    if let Some(err) = self.prepared_violation(h.tag, &cin[..h.total()]) {
                        admitted = Err(err);
                    }
                }
                match admitted {
                    Ok(()) => self.forward(h.tag, &cin[..h.total()], None),
                    Err(err) => self.refuse_extended(h.tag, &cin[..h.total()], err),
                }
                self.cin = cin;
                self.cin.advance(h.total());
                continue;
            }
            if self.defers_switch(h.tag, &self.cin[..h.total()]) {
                self.switch_waits = true;
                return Ok(None);
            }
            // The common case is one whole message: taken as it is, not split off (a
            // split turns the buffer into a shared one, an allocation).
            let msg = if self.cin.len() == h.total() {
                std::mem::take(&mut self.cin)
            } else {
                self.cin.split_to(h.total())
            };
            if let Some(wait) = self.on_client_message(h.tag, msg)? {
                return Ok(Some(Box::new(wait)));
            }
        }
    }

    /// Finish a message that had to wait, then go on with the messages behind it.
    pub(super) async fn resume(&mut self, wait: Box<Wait>) -> Result<(), PgError> {
        let mut wait = *wait;
        loop {
            if let Some(next) = self.finish(wait).await? {
                wait = next;
                continue;
            }
            match self.on_client_data()? {
                Some(next) => wait = *next,
                None => return Ok(()),
            }
        }
    }

    /// Wait for what a message waits for and take it on from there.
    async fn finish(&mut self, wait: Wait) -> Result<Option<Wait>, PgError> {
        match wait {
            Wait::Context {
                tag,
                msg,
                span,
                routed,
            } => {
                self.lim_ctx().await;
                self.checked(tag, msg, span, routed)
            }
            Wait::Query {
                msg,
                span,
                facts,
                admission,
            } => {
                let admitted = self.admission(admission).await;
                self.query_admitted(msg, span, facts, admitted.err())
            }
            Wait::Cache {
                msg,
                span,
                facts,
                ttl,
            } => {
                if self.try_cache(&msg[span], ttl).await? {
                    self.record_local(b'Q', &msg, None);
                    return Ok(None);
                }
                self.unless_refused(b'Q', msg, facts, None)
            }
            Wait::Execute { msg, admission } => match self.admission(admission).await {
                Ok(()) => self.attach_and_forward(b'E', msg, None),
                Err(err) => {
                    self.refuse_extended(b'E', &msg, err);
                    Ok(None)
                }
            },
            Wait::Flags { tag, msg, facts } => {
                match self.apply_flags().await {
                    Ok(()) => self.forward(tag, &msg, facts),
                    // The session ends (its connection's startup values are outdated).
                    Err(e) if e.severity == crate::protocol::Severity::Fatal => return Err(e),
                    Err(e) => self.attach_failed(tag, &msg, e),
                }
                Ok(None)
            }
            Wait::Attach {
                tag,
                msg,
                facts,
                conn,
            } => {
                if let Err(e) = self.attach(conn).await {
                    self.attach_failed(tag, &msg, e);
                } else {
                    self.forward(tag, &msg, facts);
                }
                Ok(None)
            }
        }
    }

    async fn admission(&mut self, admission: Admission) -> Result<(), PgError> {
        match admission {
            Admission::Decided(r) => r,
            Admission::Shared(wait) => wait.await,
            Admission::Stale => self.admit().await,
        }
    }

    /// One client message other than CopyData and the directly forwarded ones.
    fn on_client_message(&mut self, tag: u8, msg: BytesMut) -> Result<Option<Wait>, PgError> {
        if tag == b'X' {
            self.terminating = true;
            return Ok(None);
        }
        if self.skip_until_sync {
            if tag == b'S' {
                self.skip_until_sync = false;
                let status = self.tx_status();
                write::ready_for_query(&mut self.cout, status);
            }
            return Ok(None);
        }
        if self.server.is_none() && self.mode == PoolMode::Transaction {
            // Between transactions a Close and a Sync need no server (drivers close a
            // statement they are done with in the background: a checkout each, before).
            match tag {
                b'C' => {
                    // A portal does not outlive its transaction; closing a missing one is
                    // no error, as in PostgreSQL.
                    match frame::parse_target(&msg[frame::HEADER_LEN..]) {
                        Some((b'S', name)) => self.stmts.forget(name),
                        Some((b'P', _)) => {}
                        // As PostgreSQL answers it: an error, then nothing until Sync.
                        _ => {
                            PgError::protocol_violation("invalid Close message")
                                .recoverable()
                                .encode(&mut self.cout);
                            self.skip_until_sync = true;
                            return Ok(None);
                        }
                    }
                    write::empty(&mut self.cout, b'3');
                    return Ok(None);
                }
                b'S' => {
                    write::ready_for_query(&mut self.cout, b'I');
                    return Ok(None);
                }
                _ => {}
            }
        }
        if !matches!(tag, b'Q' | b'P' | b'F') {
            if matches!(tag, b'B' | b'D') {
                if let Some(err) = self.prepared_violation(tag, &msg) {
                    self.refuse_extended(tag, &msg, err);
                    return Ok(None);
                }
            }
            return self.admitted(tag, msg, None);
        }
        // Tenant header routing, logical-schema rewriting, then the statement guard,
        // before anything reaches a server. Where the text is, and what the checks (and
        // `forward`) need from it, is read once.
        let span = policy::text_span(tag, &msg);
        let routed = self.route(&msg[span.clone()]);
        if routed.is_ok() && self.lim_stale() {
            // The flags checked next are the tenant's this statement runs for.
            return Ok(Some(Wait::Context {
                tag,
                msg,
                span,
                routed,
            }));
        }
        self.checked(tag, msg, span, routed)
    }

    /// The checks of a Query, Parse or FunctionCall routed to its tenant (`routed`), with
    /// that tenant's limits context at hand. `span` is where its text is.
    fn checked(
        &mut self,
        tag: u8,
        mut msg: BytesMut,
        mut span: Range<usize>,
        routed: Result<(), PgError>,
    ) -> Result<Option<Wait>, PgError> {
        let mut facts = None;
        let refused = match routed {
            // A FunctionCall names its function by OID (set_config, lo_import, ...), which
            // the guard cannot vet: refused while the guard is on.
            _ if tag == b'F' => self.proxy.config().guard.enabled.then(|| {
                PgError::guard_refused(&super::super::guard::refusal_message(
                    "FunctionCall messages are not allowed; call the function with SQL",
                ))
            }),
            Err(e) => Some(e),
            Ok(()) => {
                let read = |t: &[u8]| (TextFacts::of(t), crate::telemetry::metrics::kind_index(t));
                // Parse texts repeat (drivers re-parse the unnamed statement per
                // execution); Query texts mostly carry their literals and do not, so
                // keeping them would cost a copy per statement for nothing.
                let mut found = if tag == b'P' {
                    self.last_text.get(&msg[span.clone()], read)
                } else {
                    read(&msg[span.clone()])
                };
                if let Some(m) = self.rewrite(tag, &msg, &msg[span.clone()], &found.0) {
                    msg = m;
                    span = policy::text_span(tag, &msg);
                    found = read(&msg[span.clone()]);
                }
                facts = Some(found);
                let (text, f) = (&msg[span.clone()], found.0);
                self.refusal(text, &f)
                    .map(|reason| {
                        PgError::guard_refused(&super::super::guard::refusal_message(&reason))
                    })
                    .or_else(|| self.flag_violation(text))
            }
        };
        if tag != b'Q' || refused.is_some() {
            return self.unless_refused(tag, msg, facts, refused);
        }
        match self.admit_quick() {
            Admission::Decided(r) => self.query_admitted(msg, span, facts, r.err()),
            admission => Ok(Some(Wait::Query {
                msg,
                span,
                facts,
                admission,
            })),
        }
    }

    /// A Query after its checks and admission: answered from the cache when it asks
    /// for that and may be.
    fn query_admitted(
        &mut self,
        msg: BytesMut,
        span: Range<usize>,
        facts: Facts,
        refused: Option<PgError>,
    ) -> Result<Option<Wait>, PgError> {
        let ttl = refused
            .is_none()
            .then(|| crate::limits::cache::requested_ttl(&msg[span.clone()]))
            .flatten();
        match ttl {
            Some(ttl) => Ok(Some(Wait::Cache {
                msg,
                span,
                facts,
                ttl,
            })),
            None => self.unless_refused(b'Q', msg, facts, refused),
        }
    }

    /// A checked Query, Parse or FunctionCall: a refused one is answered with its error,
    /// directly when nothing is pending, else by the server in order (the message is
    /// replaced by one that fails the same way).
    fn unless_refused(
        &mut self,
        tag: u8,
        msg: BytesMut,
        facts: Facts,
        refused: Option<PgError>,
    ) -> Result<Option<Wait>, PgError> {
        let Some(err) = refused else {
            return self.admitted(tag, msg, facts);
        };
        if self.server.is_none() {
            // Nothing pending: answer directly.
            self.record_local(tag, &msg, Some(&err));
            err.encode(&mut self.cout);
            match tag {
                b'Q' | b'F' => write::ready_for_query(&mut self.cout, b'I'),
                _ => self.skip_until_sync = true,
            }
            return Ok(None);
        }
        // Replies are pending: let the server raise it, in order.
        let body = &msg[frame::HEADER_LEN..];
        let msg = match tag {
            b'Q' | b'F' => super::super::guard::rewrite_query(&err),
            _ => {
                let a = self.server.as_deref_mut().expect("attached: checked above");
                if let Err(err) = a.relay.queue_refusal(err) {
                    // The server skips to Sync after the refusal already queued: so would
                    // it skip this Parse.
                    self.record_local(tag, &msg, Some(&err));
                    return Ok(None);
                }
                super::super::guard::rewrite_parse(body)
                    .ok_or_else(|| PgError::protocol_violation("malformed Parse message"))?
            }
        };
        self.admitted(tag, msg, None)
    }

    /// A message cleared by the checks: an Execute is admitted under the tenant's rate
    /// and quota (extended protocol), then it goes to a server.
    fn admitted(&mut self, tag: u8, msg: BytesMut, facts: Facts) -> Result<Option<Wait>, PgError> {
        if tag == b'E' {
            match self.admit_quick() {
                Admission::Decided(Ok(())) => {}
                Admission::Decided(Err(err)) => {
                    self.refuse_extended(b'E', &msg, err);
                    return Ok(None);
                }
                admission => return Ok(Some(Wait::Execute { msg, admission })),
            }
        }
        self.attach_and_forward(tag, msg, facts)
    }

    /// Forward a message, attaching a server first if the client has none.
    fn attach_and_forward(
        &mut self,
        tag: u8,
        msg: BytesMut,
        facts: Facts,
    ) -> Result<Option<Wait>, PgError> {
        if self.server.is_none() {
            // Nothing to flush and no COPY in progress without a server.
            if matches!(tag, b'H' | b'c' | b'f') {
                return Ok(None);
            }
            if let Err(conn) = self.attach_now() {
                return Ok(Some(Wait::Attach {
                    tag,
                    msg,
                    facts,
                    conn,
                }));
            }
        } else if matches!(tag, b'Q' | b'P' | b'B')
            && self.flags_unapplied()
            && (tag != b'B' || Self::binds_named_statement(&msg))
        {
            return Ok(Some(Wait::Flags { tag, msg, facts }));
        }
        self.forward(tag, &msg, facts);
        Ok(None)
    }

    /// No server for a message: the client gets the error in its place.
    fn attach_failed(&mut self, tag: u8, msg: &[u8], e: PgError) {
        self.cache_fill = None;
        if let Some(a) = self.server.as_deref_mut() {
            a.relay.unqueue_unsent_refusal();
        }
        self.record_local(tag, msg, Some(&e));
        e.encode(&mut self.cout);
        match tag {
            b'Q' | b'F' | b'S' => write::ready_for_query(&mut self.cout, b'I'),
            _ => self.skip_until_sync = true,
        }
    }

    /// An Execute refused by the tenant's limits, or a Bind by its flags: the client gets
    /// `err` in its place, and nothing more until Sync.
    pub(super) fn refuse_extended(&mut self, tag: u8, msg: &[u8], err: PgError) {
        self.record_local(tag, msg, Some(&err));
        match self.server.as_deref_mut() {
            None => {
                err.encode(&mut self.cout);
                self.skip_until_sync = true;
            }
            // After a marker since the last Sync the server skips this message anyway.
            Some(a) => {
                if a.relay.queue_refusal(err).is_err() {
                    return;
                }
                // Replies are pending: the server fails a marker Parse in order
                // (skipping to Sync) and the relay swaps in this error.
                a.relay
                    .sout
                    .extend_from_slice(&super::super::guard::marker_parse());
                a.relay
                    .t
                    .pending
                    .push_back(crate::frontend::relay::Pending::Parse {
                        server_name: None,
                        client_name: None,
                        swallow: false,
                    });
                a.relay.t.unsynced = true;
            }
        }
    }

    /// Does a message go straight to [`Self::forward`]? Nothing to check, admit or attach:
    /// the common extended-protocol messages of an attached client.
    fn forwards_directly(&self, tag: u8) -> bool {
        matches!(tag, b'B' | b'D' | b'C' | b'S' | b'H' | b'c' | b'f')
            && self.server.is_some()
            && !self.skip_until_sync
    }

    /// Attach without waiting: an idle connection of the session's current pool whose
    /// settings are the client's already. Otherwise `Err`, with the connection if one was
    /// taken, for [`Self::attach`] to finish.
    fn attach_now(&mut self) -> Result<(), Option<Pooled>> {
        if self.lim_stale() || !self.flags().settings.is_empty() {
            return Err(None);
        }
        let Some(pool) = self.pool.as_ref() else {
            return Err(None);
        };
        if pool.holds_settings() {
            // The flags no longer hold them: the pool must start over without.
            return Err(None);
        }
        if pool.is_retired() || (self.trusted && self.tenant_may_connect(&pool.tenant.key).is_err())
        {
            return Err(None);
        }
        let conn = pool.try_acquire().ok_or(None)?;
        if !conn.is_synced(&self.settings) {
            return Err(Some(conn));
        }
        self.attached(conn, Duration::ZERO);
        Ok(())
    }

    /// A service user's tenant (`key`) is in the directory and may take connections:
    /// checked per transaction, as its tenant can change between statements.
    fn tenant_may_connect(&self, key: &str) -> Result<(), PgError> {
        match self.proxy.directory().tenant(key) {
            Some(t) if t.status.may_connect() => Ok(()),
            Some(t) => Err(PgError::tenant_unavailable(&t.key, t.status.as_str()).recoverable()),
            None => Err(PgError::unknown_tenant(key)),
        }
    }

    /// Get a server connection for this client and bring its settings in line; `taken`
    /// is one already taken from the session's pool.
    async fn attach(&mut self, mut taken: Option<Pooled>) -> Result<(), PgError> {
        // A pool retired while we waited (a tenant move) is replaced and tried again.
        for _ in 0..3 {
            match self.attach_once(taken.take()).await {
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
        Err(PgError::server_unavailable(self.tenant_key()))
    }

    async fn attach_once(&mut self, taken: Option<Pooled>) -> Result<(), Option<PgError>> {
        let mut pool = self.pool.clone().ok_or_else(PgError::no_tenant)?;
        // One reading of the flags for the connection's startup values and its settings.
        let mut flags = None;
        let (mut conn, waited) = match taken {
            Some(c) => (c, Duration::ZERO),
            None => {
                if pool.is_retired() {
                    // The tenant's placement or secret changed: use its current pool.
                    let key = pool.tenant.key.clone();
                    let t = self
                        .proxy
                        .directory()
                        .tenant(&key)
                        .ok_or_else(|| PgError::unknown_tenant(&key))?;
                    pool = self.proxy.pools().for_tenant(&t);
                    self.pool = Some(pool.clone());
                }
                if self.trusted {
                    self.tenant_may_connect(&pool.tenant.key)?;
                }
                if self.lim_stale() {
                    self.lim_ctx().await;
                }
                flags = Some(self.flags());
                pool.hold_settings(&flags.as_ref().expect("just set").held);
                // An idle connection at once (no clock read), else wait for one.
                match pool.try_acquire() {
                    Some(c) => (c, Duration::ZERO),
                    None => {
                        let started = std::time::Instant::now();
                        // Boxed: waiting and connecting are the rare case.
                        let acquired = self
                            .unless_client_leaves(Box::pin(pool.acquire()))
                            .await
                            .ok_or_else(PgError::client_left)?;
                        let c = acquired.map_err(|e| match e {
                            PoolError::Timeout(ms) => {
                                self.proxy.metrics().pool_timeouts.increment(1);
                                Some(PgError::pool_timeout(&pool.tenant.key, ms))
                            }
                            PoolError::Retired => None,
                            PoolError::Backend(e) => {
                                warn!(tenant = %pool.tenant.key, error = %e, "server connection failed");
                                Some(PgError::server_unavailable(&pool.tenant.key))
                            }
                        })?;
                        (c, started.elapsed())
                    }
                }
            }
        };
        if self.lim_stale() {
            self.lim_ctx().await;
        }
        let flags = flags.unwrap_or_else(|| self.flags());
        let merged = flags.merge_settings(&self.settings);
        let synced = conn
            .sync_settings(merged.as_ref().unwrap_or(&self.settings))
            .await;
        if let Err(e) = synced {
            warn!(tenant = %pool.tenant.key, error = %e, "could not apply client settings");
            return Err(Some(PgError::server_unavailable(&pool.tenant.key)));
        }
        self.attached(conn, waited);
        Ok(())
    }

    /// The client holds `conn` from now on.
    fn attached(&mut self, conn: Pooled, waited: Duration) {
        let metrics = self.proxy.metrics();
        metrics.checkouts.increment(1);
        metrics.pool_wait.record(waited.as_secs_f64());
        self.capture.wait_us = waited.as_micros() as u64;
        self.cancel.set(Some(conn.cancel_key()));
        self.flags_applied = None;
        debug_assert!(
            conn.relay.is_fresh(),
            "a pooled connection's relay state is reset"
        );
        self.server = Some(conn);
    }

    /// Wait for `fut` while watching the client: one that hangs up leaves the line at once
    /// (`None`), so its statement never runs and the waiters behind it move up. A client
    /// that said goodbye first (Terminate, then closed) is still served what it sent before,
    /// as PostgreSQL would. What the client sends meanwhile is kept in `cin`, in order, up
    /// to the usual high-water mark.
    async fn unless_client_leaves<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(fut);
        let chunk = self.client_chunk;
        let mut watching = !self.terminating;
        loop {
            let Session { cr, cin, .. } = self;
            let watch = watching && cin.len() < HIGH_WATER;
            tokio::select! {
                biased;
                r = &mut fut => return Some(r),
                r = std::future::poll_fn(|cx| poll_read_client(cr, cin, chunk, cx)), if watch => {
                    if !matches!(r, Ok(n) if n > 0) {
                        if !frame::holds_terminate(cin) {
                            return None;
                        }
                        watching = false;
                    }
                }
            }
        }
    }
}
