//! Reading the server's side of the relay: forward replies to the client, swallow the
//! replies to messages the proxy injected, track ReadyForQuery, ParameterStatus, errors
//! and COPY state. Only message headers are read for everything else.

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{events, Session};
use crate::config::PoolMode;
use crate::frontend::relay::{self, Reply, TagEffect};
use crate::protocol::{frame, PgError};
use crate::telemetry::event;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Scan server data: forward it, swallowing replies to the proxy's own messages.
    pub(super) fn on_server_data(&mut self) -> Result<(), PgError> {
        let transaction_mode = self.mode == PoolMode::Transaction;
        let ctx = if self.tele.is_some() {
            self.event_ctx()
        } else {
            None
        };
        let Session {
            server,
            cout,
            stmts,
            settings,
            proxy,
            tele,
            ev_ctx,
            lim,
            cache_fill,
            ..
        } = self;
        let tele = &*tele;
        let (slow_ms, query_cache) = lim.as_mut().map_or((0, false), |l| {
            let f = l.flags.load();
            (f.slow_query_ms, f.query_cache)
        });
        let lim = &*lim;
        let metrics = proxy.metrics();
        let query_errors = &metrics.query_errors;
        let a = server.as_mut().expect("attached");
        // One allocation for the reply rather than growth message by message.
        if cout.capacity() - cout.len() < a.sbuf.len() {
            cout.reserve(a.sbuf.len());
        }
        loop {
            if a.s_remaining > 0 {
                let n = a.s_remaining.min(a.sbuf.len());
                if n == 0 {
                    return Ok(());
                }
                cout.extend_from_slice(&a.sbuf[..n]);
                if let Some(f) = cache_fill.as_mut() {
                    f.add(&a.sbuf[..n]);
                }
                a.sbuf.advance(n);
                a.s_remaining -= n;
                a.t.log.sent_out(n);
                continue;
            }
            let h = match frame::peek_header(&a.sbuf) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(()),
                Err(_) => return Err(PgError::server_lost()),
            };
            let inspect = matches!(
                h.tag,
                b'Z' | b'1' | b'3' | b'C' | b'S' | b'E' | b'G' | b'W' | b'I' | b's'
            );
            if !inspect {
                let n = h.total().min(a.sbuf.len());
                a.t.log.sent_out(n);
                cout.extend_from_slice(&a.sbuf[..n]);
                if let Some(f) = cache_fill.as_mut() {
                    f.add(&a.sbuf[..n]);
                }
                a.sbuf.advance(n);
                a.s_remaining = h.total() - n;
                continue;
            }
            if a.sbuf.len() < h.total() {
                a.sbuf.reserve(h.total() - a.sbuf.len());
                return Ok(());
            }
            let body = &a.sbuf[frame::HEADER_LEN..h.total()];
            let forward = match h.tag {
                b'Z' => {
                    let status = body.first().copied().unwrap_or(b'I');
                    if let Some((started, kind)) =
                        relay::on_ready(status, &mut a.t, stmts, &mut a.conn.prepared)
                    {
                        // One clock read: the statement's latency and the connection's
                        // last use (the pool's idle and liveness checks go by it).
                        let now = std::time::Instant::now();
                        a.conn.last_used = now;
                        metrics.query_seconds[kind]
                            .record(now.saturating_duration_since(started).as_secs_f64());
                    }
                    // Marker Parses skipped by an earlier error never answer.
                    if a.t.quiet() {
                        a.refusals.clear();
                    }
                    if let Some(l) = lim {
                        if let Some(f) = cache_fill.take().filter(|f| !f.spoiled) {
                            l.limits.cache_put(
                                &l.state,
                                &f.text,
                                f.salt,
                                f.buf.freeze(),
                                f.ttl,
                                f.gen,
                            );
                        }
                        // Writes are visible to others once their transaction ends.
                        if a.wrote && status == b'I' {
                            a.wrote = false;
                            l.limits.cache_invalidate(&l.state);
                        }
                    }
                    true
                }
                b'1' | b'3' => relay::on_complete(h.tag, &mut a.t) == Reply::Forward,
                b'G' | b'W' => {
                    a.t.copy_in_started();
                    true
                }
                b'C' => {
                    let tag = frame::cstr(body).map_or(body, |(t, _)| t);
                    if tele.is_some() {
                        a.t.log.sent_out(h.total());
                        let done = a.t.log.complete(a.t.completion_limit());
                        events::record(tele, &ctx, done, event::tag_rows(tag), None, slow_ms);
                    }
                    if query_cache && super::limits::tag_writes(tag) {
                        if let Some(l) = lim {
                            l.limits.cache_invalidate(&l.state);
                            a.wrote = true;
                        }
                    }
                    if transaction_mode {
                        match relay::tag_effect(tag) {
                            TagEffect::Dirty => a.conn.dirty = true,
                            TagEffect::DroppedStatements => {
                                a.conn.dirty = true;
                                a.conn.prepared.clear();
                            }
                            TagEffect::None => {}
                        }
                    }
                    true
                }
                b'S' => {
                    if let Some((k, v)) = frame::parse_parameter_status(body) {
                        let k = k.to_ascii_lowercase();
                        if k == "application_name" {
                            *ev_ctx = None;
                        }
                        if relay::is_carried_setting(&k) {
                            match settings.iter_mut().find(|(sk, _)| *sk == k) {
                                Some(s) => s.1 = v.to_owned(),
                                None => settings.push((k.clone(), v.to_owned())),
                            }
                        }
                        a.conn.note_parameter(k, v.to_owned());
                    }
                    true
                }
                b'E' => {
                    query_errors.increment(1);
                    let (code, sev) = crate::protocol::error::parse_error_fields(body);
                    if matches!(sev, Some(b"FATAL") | Some(b"PANIC")) {
                        // Before the client hears of it: what ended this connection (a
                        // shutdown, a restart) has likely ended idle ones too.
                        if !a.fatal_seen {
                            a.conn.pool().server_lost();
                        }
                        a.fatal_seen = true;
                    }
                    let refusal = if !a.refusals.is_empty()
                        && crate::frontend::guard::is_marker_error(body)
                    {
                        a.refusals.pop_front()
                    } else {
                        None
                    };
                    if tele.is_some() {
                        a.t.log.sent_out(h.total());
                        let done = a.t.log.complete(a.t.completion_limit());
                        let code = refusal.as_ref().map_or(code, |e| Some(e.code.as_bytes()));
                        events::record(tele, &ctx, done, 0, code, slow_ms);
                    }
                    if let Some(f) = cache_fill.as_mut() {
                        f.spoiled = true;
                    }
                    match refusal {
                        Some(err) => {
                            err.encode(cout);
                            false
                        }
                        None => true,
                    }
                }
                b'I' | b's' => {
                    if tele.is_some() {
                        a.t.log.sent_out(h.total());
                        let done = a.t.log.complete(a.t.completion_limit());
                        events::record(tele, &ctx, done, 0, None, slow_ms);
                    }
                    true
                }
                _ => true,
            };
            if forward {
                if !matches!(h.tag, b'C' | b'E' | b'I' | b's') {
                    a.t.log.sent_out(h.total());
                }
                if h.tag != b'Z' {
                    if let Some(f) = cache_fill.as_mut() {
                        f.add(&a.sbuf[..h.total()]);
                    }
                }
                cout.extend_from_slice(&a.sbuf[..h.total()]);
            }
            a.sbuf.advance(h.total());
        }
    }
}
