//! The relay loop of one authenticated client: forward bytes between the client and the
//! server connection it holds, attaching a server on demand and releasing it at transaction
//! (or session) end. Only message headers are read on the hot path; see [`super::relay`] for
//! the bookkeeping.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

mod events;
mod idle;
mod inbound;
mod limits;
mod policy;
mod server_side;

use super::cancel::CancelTarget;
use super::relay::{self, Statements, READ_CHUNK};
use crate::backend::pool::{Pooled, TenantPool};
use crate::backend::settings::ClientSettings;
use crate::config::PoolMode;
use crate::protocol::{frame, PgError};
use crate::router::facts::TextFacts;
use crate::state::Proxy;

/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 256 * 1024;
/// Client read buffers start small (idle clients are cheap) and grow while reads fill them.
const CLIENT_CHUNK_MIN: usize = 2 * 1024;
const CLIENT_CHUNK_MAX: usize = 64 * 1024;

/// Why the relay ended.
#[derive(Debug)]
pub enum End {
    /// Terminate or EOF from the client.
    ClientGone,
    /// The proxy closed the client (error already sent).
    Closed,
}

/// One client session.
pub struct Session<R, W> {
    pub proxy: Proxy,
    pub cr: R,
    pub cw: W,
    pub cin: BytesMut,
    pub cout: BytesMut,
    c_remaining: usize,
    /// The tenant statements run for; `None` for a service user until a header names one.
    pub pool: Option<Arc<TenantPool>>,
    pub mode: PoolMode,
    /// A trusted service user: may name the tenant per transaction.
    pub trusted: bool,
    /// Settings the client asked for (startup params, options, later SETs).
    pub settings: ClientSettings,
    stmts: Statements,
    pub server: Option<Pooled>,
    pub cancel: Arc<CancelTarget>,
    skip_until_sync: bool,
    /// A service user's statement for another tenant waits at the head of `cin` until
    /// the server has answered what came before it ([`Self::defers_switch`]).
    switch_waits: bool,
    /// The client sent Terminate: nothing more is read from it; the session ends once
    /// the server has answered what came before (as PostgreSQL runs a `COMMIT` sent
    /// just ahead of Terminate) and the client has been sent what it is owed.
    terminating: bool,
    max_message: usize,
    /// Current client read size: doubles while reads fill the buffer, resets when not.
    client_chunk: usize,
    /// Set by the proxy's session registry: drain (shutdown) or end now (KILL CLIENT, a
    /// suspended or removed tenant).
    pub signal: Arc<crate::frontend::signal::SessionSignal>,
    /// Statement telemetry; `None` when off.
    tele: Option<crate::telemetry::Telemetry>,
    capture: crate::frontend::stmt_log::StmtCapture,
    ev_ctx: Option<Arc<crate::telemetry::event::EventContext>>,
    /// Login user name and session id, for telemetry.
    pub user: String,
    pub session_id: u64,
    /// Plan limits, flags and cache of the current tenant.
    lim: Option<limits::LimCtx>,
    /// Session pooling: the flags whose settings the held server connection has; `None`
    /// when not known (checked before the first statement).
    flags_applied: Option<Arc<crate::limits::flags::Flags>>,
    /// A `/* cache */` answer being collected.
    cache_fill: Option<Box<limits::CacheFill>>,
    /// The proxy's config as the statement checks read it (reloads are seen at once).
    cfg: crate::state::ConfigCache,
    /// Facts and kind of the last Parse text.
    last_text: crate::router::facts::LastText<(TextFacts, usize)>,
    /// The client-side idle limits' timer.
    idle: idle::IdleTimer,
}

enum Event {
    ClientRead(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    Shutdown,
    Killed,
    /// The idle timer fired (the limit may not have passed: see `idle_expired`).
    Idle,
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        proxy: Proxy,
        cr: R,
        cw: W,
        cin: BytesMut,
        pool: Option<Arc<TenantPool>>,
        mode: PoolMode,
        settings: ClientSettings,
        cancel: Arc<CancelTarget>,
        server: Option<Pooled>,
        signal: Arc<crate::frontend::signal::SessionSignal>,
    ) -> Self {
        let max_message = proxy.config().limits.max_message_bytes;
        let cfg = proxy.config_cache();
        let tele = proxy.telemetry().filter(|t| t.enabled()).cloned();
        Session {
            proxy,
            cr,
            cw,
            cin,
            cout: BytesMut::new(),
            c_remaining: 0,
            pool,
            mode,
            trusted: false,
            settings,
            stmts: Statements::default(),
            server,
            cancel,
            skip_until_sync: false,
            switch_waits: false,
            terminating: false,
            max_message,
            client_chunk: CLIENT_CHUNK_MIN,
            signal,
            tele,
            capture: Default::default(),
            ev_ctx: None,
            user: String::new(),
            session_id: 0,
            lim: None,
            cache_fill: None,
            cfg,
            last_text: Default::default(),
            flags_applied: None,
            idle: Default::default(),
        }
    }

    /// Relay until the client leaves or the proxy closes it.
    pub async fn run(&mut self) -> End {
        let end = match self.relay().await {
            Ok(end) => end,
            Err(e) => {
                debug!(error = %e, "session closed with error");
                self.record_abandoned(&e.code);
                // Give the server back first: a client that stopped reading must not pin it.
                self.detach_on_exit();
                e.encode(&mut self.cout);
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(5), self.flush_client())
                        .await;
                End::Closed
            }
        };
        self.detach_on_exit();
        end
    }

    async fn relay(&mut self) -> Result<End, PgError> {
        let signal = self.signal.clone();
        // Bytes the client writer accepted may sit in its own buffer (TLS: encrypted
        // records waiting for the socket) until flushed; set after every write to it.
        let mut c_unflushed = false;
        // Anything the client pipelined behind its startup packet.
        if !self.cin.is_empty() {
            if let Some(wait) = self.on_client_data()? {
                // Boxed: the rare case, kept out of the relay's own future.
                Box::pin(self.resume(wait)).await?;
            }
        }
        loop {
            if self.terminating && self.cout.is_empty() && self.server_settled() {
                return Ok(End::ClientGone);
            }
            let attached = self.server.is_some();
            if !attached {
                // Between transactions a client holds no buffers (see `poll_read_client`).
                if self.cin.is_empty() && self.cin.capacity() != 0 {
                    self.cin = BytesMut::new();
                }
                if self.cout.is_empty() && self.cout.capacity() != 0 {
                    self.cout = BytesMut::new();
                }
            }
            let at_boundary = match &self.server {
                None => true,
                Some(a) => {
                    self.mode == PoolMode::Session && a.relay.t.idle() && self.cin.is_empty()
                }
            };
            // A statement waiting for the server to answer earlier ones (a service user's
            // tenant switch) keeps what follows in `cin`, up to the high-water mark.
            let read_client = !self.terminating
                && self.cout.len() < HIGH_WATER
                && !(self.switch_waits && self.cin.len() >= HIGH_WATER)
                && self
                    .server
                    .as_ref()
                    .is_none_or(|a| a.relay.sout.len() < HIGH_WATER);
            let read_server = attached && self.cout.len() < HIGH_WATER;
            if self.cin.capacity() != 0
                && self.cin.capacity() - self.cin.len() < self.client_chunk / 2
            {
                self.cin.reserve(self.client_chunk);
            }
            let client_spare = match self.cin.capacity() {
                0 => self.client_chunk,
                c => c - self.cin.len(),
            };
            let chunk = self.client_chunk;
            self.watch_idle();
            let ev = {
                let Session {
                    cr,
                    cw,
                    cin,
                    cout,
                    server,
                    idle,
                    ..
                } = self;
                let (mut ss, mut sbuf, sout, mut s_unflushed) = match server.as_deref_mut() {
                    Some(a) => {
                        if a.relay.sbuf.capacity() - a.relay.sbuf.len() < 1024 {
                            a.relay.sbuf.reserve(READ_CHUNK);
                        }
                        (
                            Some(&mut a.stream),
                            Some(&mut a.relay.sbuf),
                            Some(&mut a.relay.sout),
                            Some(&mut a.relay.unflushed),
                        )
                    }
                    None => (None, None, None, None),
                };
                let sout_pending = sout.as_ref().is_some_and(|b| !b.is_empty());
                let wait_shutdown = at_boundary && cout.is_empty();
                // The first ready source, in this order: writes before reads, the server
                // before the client, the signals last. A hand-written `select!`: no
                // futures to build per turn, each source polled in place.
                std::future::poll_fn(|cx| {
                    if sout_pending {
                        if let (Some(w), Some(b)) = (ss.as_deref_mut(), sout.as_deref()) {
                            if let Poll::Ready(r) = Pin::new(w).poll_write(cx, b) {
                                return Poll::Ready(Event::ServerWrote(r));
                            }
                        }
                    } else if let (Some(w), Some(u)) =
                        (ss.as_deref_mut(), s_unflushed.as_deref_mut())
                    {
                        // TLS holds what it could not send yet until flushed.
                        if *u {
                            match Pin::new(w).poll_flush(cx) {
                                Poll::Ready(Ok(())) => *u = false,
                                Poll::Ready(Err(e)) => {
                                    return Poll::Ready(Event::ServerWrote(Err(e)))
                                }
                                Poll::Pending => {}
                            }
                        }
                    }
                    if !cout.is_empty() {
                        if let Poll::Ready(r) = Pin::new(&mut *cw).poll_write(cx, cout) {
                            return Poll::Ready(Event::ClientWrote(r));
                        }
                    } else if c_unflushed {
                        // Immediate for a plain socket; a TLS writer sends what it holds.
                        match Pin::new(&mut *cw).poll_flush(cx) {
                            Poll::Ready(Ok(())) => c_unflushed = false,
                            Poll::Ready(Err(e)) => return Poll::Ready(Event::ClientWrote(Err(e))),
                            Poll::Pending => {}
                        }
                    }
                    if read_server {
                        if let (Some(r), Some(b)) = (ss.as_deref_mut(), sbuf.as_deref_mut()) {
                            if let Poll::Ready(r) =
                                tokio_util::io::poll_read_buf(Pin::new(r), cx, b)
                            {
                                return Poll::Ready(Event::ServerRead(r));
                            }
                        }
                    }
                    if read_client {
                        if let Poll::Ready(r) = poll_read_client(cr, cin, chunk, cx) {
                            return Poll::Ready(Event::ClientRead(r));
                        }
                    }
                    let signalled = signal.poll(cx);
                    if signalled.end() {
                        return Poll::Ready(Event::Killed);
                    }
                    if wait_shutdown && signalled.drain() {
                        return Poll::Ready(Event::Shutdown);
                    }
                    if idle.poll(cx).is_ready() {
                        return Poll::Ready(Event::Idle);
                    }
                    Poll::Pending
                })
                .await
            };
            // Set when the client's buffered messages are to be processed: new bytes, or a
            // tenant switch that waited for the server's replies to what came before it.
            let mut client_data = false;
            match ev {
                Event::ServerWrote(r) => {
                    let n = r.map_err(|_| PgError::server_lost())?;
                    let a = self.server.as_deref_mut().expect("attached");
                    a.relay.sout.advance(n);
                    a.relay.unflushed = a.stream.is_tls();
                    self.maybe_release();
                }
                Event::ClientWrote(r) => match r {
                    Ok(n) => {
                        c_unflushed = true;
                        self.cout.advance(n);
                        // Give back memory a large result needed once.
                        if self.cout.is_empty() && self.cout.capacity() > HIGH_WATER {
                            self.cout = BytesMut::new();
                        }
                    }
                    Err(_) => return Ok(End::ClientGone),
                },
                Event::ServerRead(r) => match r {
                    Ok(0) | Err(_) => return self.server_gone().await,
                    Ok(_) => {
                        self.on_server_data()?;
                        // Answer the client now rather than on the next loop turn.
                        if write_now(&mut self.cw, &mut self.cout).is_err() {
                            return Ok(End::ClientGone);
                        }
                        c_unflushed = true;
                        self.maybe_release();
                        if self.switch_waits
                            && self.server.as_ref().is_none_or(|a| a.relay.t.quiet())
                        {
                            self.switch_waits = false;
                            client_data = true;
                        }
                    }
                },
                Event::ClientRead(r) => match r {
                    Ok(0) | Err(_) => return Ok(End::ClientGone),
                    Ok(n) => {
                        self.client_chunk = if n >= client_spare {
                            (self.client_chunk * 2).min(CLIENT_CHUNK_MAX)
                        } else {
                            CLIENT_CHUNK_MIN
                        };
                        client_data = true;
                    }
                },
                Event::Shutdown => return Err(PgError::shutting_down()),
                Event::Killed => return Err(PgError::tenant_ended(self.tenant_key())),
                Event::Idle => {
                    if let Some(kind) = self.idle_expired() {
                        tracing::info!(tenant = %self.tenant_key(), ?kind, "client idle past its limit: closed");
                        self.proxy.metrics().idle_timeouts[kind.metric()].increment(1);
                        return Err(kind.error());
                    }
                }
            }
            if client_data {
                if let Some(wait) = self.on_client_data()? {
                    Box::pin(self.resume(wait)).await?;
                }
                if let Some(a) = self.server.as_deref_mut() {
                    write_now(&mut a.stream, &mut a.relay.sout)
                        .map_err(|_| PgError::server_lost())?;
                    a.relay.unflushed = a.stream.is_tls();
                }
                self.maybe_release();
            }
        }
    }

    /// The server connection ended while attached: pass on its FATAL or report the loss.
    async fn server_gone(&mut self) -> Result<End, PgError> {
        self.record_abandoned(&PgError::server_lost().code);
        let a = self.server.take().expect("attached");
        self.cancel.set(None);
        warn!(tenant = %self.tenant_key(), "server connection lost while in use");
        let fatal_seen = a.relay.fatal_seen;
        if !fatal_seen {
            a.pool().server_lost();
        }
        drop(a);
        if fatal_seen {
            let _ = self.flush_client().await;
            return Ok(End::Closed);
        }
        Err(PgError::server_lost())
    }

    /// Nothing the server still owes can arrive: no server, or it has answered
    /// everything sent, or it cannot finish without more from the client (no Sync yet,
    /// or COPY FROM STDIN).
    fn server_settled(&self) -> bool {
        self.server.as_ref().is_none_or(|a| {
            a.relay.sout.is_empty() && (a.relay.t.quiet() || a.relay.t.awaits_client())
        })
    }

    /// Queue a client message for the attached server, tracking what it will answer and
    /// renaming prepared statements in transaction pooling. `text` has the facts and
    /// statement kind of a Query or Parse's text when the caller has read them.
    fn forward(&mut self, tag: u8, msg: &[u8], text: Option<(TextFacts, usize)>) {
        let transaction_mode = self.mode == PoolMode::Transaction;
        let wrote_text = matches!(tag, b'Q' | b'P') && self.text_writes(tag, msg);
        let Session {
            server,
            stmts,
            proxy,
            tele,
            capture,
            ..
        } = self;
        let metrics = proxy.metrics();
        let a = server.as_deref_mut().expect("attached above");
        let body = &msg[frame::HEADER_LEN..];
        // Latency: a batch starts with the first message forwarded after a Sync.
        let (facts, kind) = match (text, tag) {
            (Some((f, k)), _) => (Some(f), Some(k)),
            (None, b'Q') => (
                None,
                Some(crate::telemetry::metrics::kind_index(
                    frame::parse_query(body).unwrap_or(body),
                )),
            ),
            (None, b'P') => (
                None,
                frame::parse_parse(body).map(|m| crate::telemetry::metrics::kind_index(m.query)),
            ),
            _ => (None, None),
        };
        a.relay.wrote |= wrote_text;
        if !matches!(tag, b'd' | b'c' | b'f') {
            a.relay.t.begin(kind);
            if tele.is_some() {
                capture.on_message(tag, msg, &mut a.relay.t.log);
            }
        }
        match tag {
            b'Q' | b'F' => {
                if let (b'Q', Some(k)) = (tag, kind) {
                    metrics.queries[k].increment(1);
                }
                // A FunctionCall can change anything; a query only when its text says so.
                let dirties = || {
                    facts
                        .unwrap_or_else(|| TextFacts::of(frame::parse_query(body).unwrap_or(body)))
                        .dirties()
                };
                if transaction_mode && (tag == b'F' || dirties()) {
                    a.dirty = true;
                }
                a.relay.sout.extend_from_slice(msg);
                a.relay.t.sent_sync(true);
            }
            b'S' => {
                a.relay.sout.extend_from_slice(msg);
                a.relay.t.sent_sync(false);
            }
            b'c' | b'f' => {
                a.relay.sout.extend_from_slice(msg);
                a.relay.t.copy_ends_sent += 1;
            }
            b'P' => {
                let named = body.first().is_some_and(|&b| b != 0);
                // The text is read again only when the checks did not read it.
                let dirties = || match facts {
                    Some(f) => f.dirties(),
                    None => {
                        frame::parse_parse(body).is_some_and(|m| TextFacts::of(m.query).dirties())
                    }
                };
                if transaction_mode && dirties() {
                    a.dirty = true;
                }
                if !(transaction_mode
                    && named
                    && relay::forward_named_parse(
                        body,
                        stmts,
                        &mut a.prepared,
                        &mut a.relay.t,
                        &mut a.relay.sout,
                    ))
                {
                    a.relay.sout.extend_from_slice(msg);
                    a.relay.t.pending.push_back(relay::Pending::Parse {
                        server_name: None,
                        client_name: None,
                        swallow: false,
                    });
                }
                a.relay.t.unsynced = true;
            }
            b'B' => {
                let mapped = transaction_mode
                    .then(|| frame::parse_bind(body))
                    .flatten()
                    .and_then(|(portal, name, rest)| {
                        stmts.get(name).map(|s| (portal, s.clone(), rest))
                    });
                match mapped {
                    Some((portal, s, rest)) => {
                        if s.dirties {
                            a.dirty = true;
                        }
                        relay::ensure_prepared(
                            &s,
                            &mut a.prepared,
                            &mut a.relay.t,
                            &mut a.relay.sout,
                        );
                        frame::write_bind(
                            &mut a.relay.sout,
                            portal,
                            s.server_name.as_bytes(),
                            rest,
                        );
                    }
                    None => a.relay.sout.extend_from_slice(msg),
                }
                a.relay.t.unsynced = true;
            }
            b'D' | b'C' => {
                let target = frame::parse_target(body).filter(|(k, n)| *k == b'S' && !n.is_empty());
                let mut done = false;
                if let (true, Some((_, name))) = (transaction_mode, target) {
                    if tag == b'D' {
                        if let Some(s) = stmts.get(name).cloned() {
                            relay::ensure_prepared(
                                &s,
                                &mut a.prepared,
                                &mut a.relay.t,
                                &mut a.relay.sout,
                            );
                            frame::write_target(
                                &mut a.relay.sout,
                                b'D',
                                b'S',
                                s.server_name.as_bytes(),
                            );
                            done = true;
                        }
                    } else {
                        done = relay::forward_named_close(
                            name,
                            stmts,
                            &mut a.prepared,
                            &mut a.relay.t,
                            &mut a.relay.sout,
                        );
                    }
                }
                if !done {
                    a.relay.sout.extend_from_slice(msg);
                    if tag == b'C' {
                        a.relay
                            .t
                            .pending
                            .push_back(relay::Pending::Close { swallow: false });
                    }
                }
                a.relay.t.unsynced = true;
            }
            b'E' | b'H' => {
                if tag == b'E' {
                    metrics.executes.increment(1);
                }
                a.relay.sout.extend_from_slice(msg);
                a.relay.t.unsynced = true;
            }
            _ => a.relay.sout.extend_from_slice(msg),
        }
    }

    /// The status a ReadyForQuery the proxy writes itself reports: the held server's
    /// transaction status, `I` when none is held.
    fn tx_status(&self) -> u8 {
        self.server.as_ref().map_or(b'I', |c| c.relay.t.tx_status)
    }

    /// In transaction pooling, give the server back once the transaction is over.
    fn maybe_release(&mut self) {
        if (!self.cin.is_empty() && !self.switch_waits) || self.c_remaining > 0 {
            return;
        }
        self.release_if_idle();
    }

    /// In transaction pooling, give the server back if the transaction is over and the
    /// server owes nothing.
    fn release_if_idle(&mut self) {
        if self.mode != PoolMode::Transaction {
            return;
        }
        let ready = self
            .server
            .as_ref()
            .is_some_and(|a| a.relay.settled() && a.relay.t.tx_status == b'I');
        if !ready {
            return;
        }
        let mut conn = self.server.take().expect("checked");
        self.cancel.set(None);
        conn.relay.recycle();
        checkin(conn, false);
    }

    /// On exit, return a clean server or close it.
    fn detach_on_exit(&mut self) {
        self.cancel.set(None);
        let Some(mut conn) = self.server.take() else {
            return;
        };
        let clean = self.c_remaining == 0 && conn.relay.settled();
        if !clean {
            // Mid-query: closing the server connection is the only safe reset.
            drop(conn);
            return;
        }
        let in_transaction = conn.relay.t.tx_status != b'I';
        let force_reset = self.mode == PoolMode::Session || in_transaction;
        conn.relay.recycle();
        if force_reset {
            conn.dirty = true;
        }
        checkin(conn, in_transaction);
    }

    async fn flush_client(&mut self) -> std::io::Result<()> {
        while !self.cout.is_empty() {
            let n = self.cw.write(&self.cout).await?;
            if n == 0 {
                break;
            }
            self.cout.advance(n);
        }
        self.cw.flush().await
    }
}

thread_local! {
    /// Where a client without a read buffer reads into (one per runtime thread).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; CLIENT_CHUNK_MAX].into_boxed_slice());
}

/// Read from the client into `cin`. When `cin` has no buffer (an idle client), read into
/// the thread's scratch buffer and copy what came: waiting for the next statement costs
/// no memory, as in PgBouncer, which lends buffers only to active clients.
fn poll_read_client<R: AsyncRead + Unpin>(
    r: &mut R,
    cin: &mut BytesMut,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if cin.capacity() != 0 {
        return tokio_util::io::poll_read_buf(Pin::new(r), cx, cin);
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let mut rb = tokio::io::ReadBuf::new(&mut scratch[..chunk.min(CLIENT_CHUNK_MAX)]);
        match Pin::new(r).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                // Allocated at its size in one step (growing an empty buffer costs more).
                *cin = BytesMut::from(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Write as much of `bytes` as the socket takes right now, without waiting: how much was
/// written, and the error that stopped it, if any.
fn write_some<Wr: AsyncWrite + Unpin>(w: &mut Wr, bytes: &[u8]) -> (usize, std::io::Result<()>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = 0;
    while done < bytes.len() {
        match Pin::new(&mut *w).poll_write(&mut cx, &bytes[done..]) {
            Poll::Ready(Ok(0)) => return (done, Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => done += n,
            Poll::Ready(Err(e)) => return (done, Err(e)),
            Poll::Pending => break,
        }
    }
    (done, Ok(()))
}

/// Write as much of `buf` as the socket takes right now, without waiting: saves a turn of
/// the relay loop (and its waker registrations) per message in the common case.
fn write_now<Wr: AsyncWrite + Unpin>(w: &mut Wr, buf: &mut BytesMut) -> std::io::Result<()> {
    let (n, result) = write_some(w, buf);
    buf.advance(n);
    result
}

/// Send `bytes` to the client after what `cout` holds: when nothing is queued, written
/// straight from where they are as far as the socket takes them without waiting; the
/// rest (or all, behind queued bytes) is queued. A write error leaves the rest queued:
/// the relay's next write meets it again and ends the session.
fn send_client<Wr: AsyncWrite + Unpin>(w: &mut Wr, cout: &mut BytesMut, bytes: &[u8]) {
    let written = if cout.is_empty() {
        write_some(w, bytes).0
    } else {
        0
    };
    if written < bytes.len() {
        cout.extend_from_slice(&bytes[written..]);
    }
}

/// Return a connection to its pool, resetting it first (in the background) if dirty.
fn checkin(mut conn: Pooled, in_transaction: bool) {
    if !conn.dirty && !in_transaction {
        conn.release();
        return;
    }
    tokio::spawn(async move {
        match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            conn.reset(in_transaction),
        )
        .await
        {
            Ok(Ok(())) => conn.release(),
            _ => drop(conn),
        }
    });
}
