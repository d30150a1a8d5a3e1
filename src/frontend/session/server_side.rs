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
            cw,
            cout,
            stmts,
            settings,
            proxy,
            tele,
            ev_ctx,
            lim,
            cache_fill,
            flags_applied,
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
        let (a, pool) = server.as_mut().expect("attached").parts_mut();
        // Replies are forwarded from where they were read: `pos` is how far `sbuf` has
        // been looked at, and `run` the bytes before it still to send. A run ends at a
        // message the client must not see (a swallowed reply, a swapped error) and is
        // queued then; the last one is written straight to the client when nothing is
        // queued before it, so the common reply is neither copied nor given a buffer.
        let mut pos = 0;
        let mut run = 0..0;
        let result = loop {
            if a.relay.s_remaining > 0 {
                let n = a.relay.s_remaining.min(a.relay.sbuf.len() - pos);
                if n == 0 {
                    break Ok(());
                }
                if let Some(f) = cache_fill.as_mut() {
                    f.add(&a.relay.sbuf[pos..pos + n]);
                }
                extend_run(&mut run, pos, n, &a.relay.sbuf, cout);
                pos += n;
                a.relay.s_remaining -= n;
                a.relay.t.log.sent_out(n);
                continue;
            }
            let h = match frame::peek_header(&a.relay.sbuf[pos..]) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(()),
                Err(_) => break Err(PgError::server_lost()),
            };
            let inspect = matches!(
                h.tag,
                b'Z' | b'1' | b'3' | b'C' | b'S' | b'E' | b'G' | b'W' | b'I' | b's'
            );
            if !inspect {
                let n = h.total().min(a.relay.sbuf.len() - pos);
                a.relay.t.log.sent_out(n);
                if let Some(f) = cache_fill.as_mut() {
                    f.add(&a.relay.sbuf[pos..pos + n]);
                }
                extend_run(&mut run, pos, n, &a.relay.sbuf, cout);
                pos += n;
                a.relay.s_remaining = h.total() - n;
                continue;
            }
            if a.relay.sbuf.len() - pos < h.total() {
                break Ok(());
            }
            let msg = pos..pos + h.total();
            let body = &a.relay.sbuf[msg.start + frame::HEADER_LEN..msg.end];
            let forward = match h.tag {
                b'Z' => {
                    let status = body.first().copied().unwrap_or(b'I');
                    if let Some((started, kind)) =
                        relay::on_ready(status, &mut a.relay.t, stmts, &mut a.prepared)
                    {
                        // One clock read: the statement's latency and the connection's
                        // last use (the pool's idle and liveness checks go by it).
                        let now = std::time::Instant::now();
                        a.last_used = now;
                        metrics.query_seconds[kind]
                            .record(now.saturating_duration_since(started).as_secs_f64());
                    }
                    // Marker Parses skipped by an earlier error never answer.
                    a.relay.drop_answered_refusals();
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
                        if a.relay.wrote && status == b'I' {
                            a.relay.wrote = false;
                            l.limits.cache_invalidate(&l.state);
                        }
                    }
                    true
                }
                b'1' | b'3' => relay::on_complete(h.tag, &mut a.relay.t) == Reply::Forward,
                b'G' | b'W' => {
                    a.relay.t.copy_in_started();
                    true
                }
                b'C' => {
                    let tag = frame::command_tag(body);
                    if tele.is_some() {
                        a.relay.t.log.sent_out(h.total());
                        let done = a.relay.t.log.complete(a.relay.t.completion_limit());
                        events::record(tele, &ctx, done, event::tag_rows(tag), None, slow_ms);
                    }
                    if query_cache && super::limits::tag_writes(tag) {
                        if let Some(l) = lim {
                            l.limits.cache_invalidate(&l.state);
                            a.relay.wrote = true;
                        }
                    }
                    if transaction_mode {
                        match relay::tag_effect(tag) {
                            TagEffect::Dirty => a.dirty = true,
                            TagEffect::DroppedStatements => {
                                a.dirty = true;
                                a.prepared.clear();
                            }
                            TagEffect::None => {}
                        }
                    } else if relay::resets_settings(tag) {
                        // Session pooling: the server's settings are back at the session's
                        // startup values; the held ones are applied again before the next
                        // transaction.
                        a.settings_reset();
                        *flags_applied = None;
                    }
                    true
                }
                b'S' => {
                    if let Some((k, v)) = frame::parse_parameter_status(body) {
                        let k = k.to_ascii_lowercase();
                        if k == "standard_conforming_strings"
                            && crate::router::guard::pg_bool(v) == Some(false)
                        {
                            // Turned off where the guard could not see it (a function, a
                            // DO block): the proxy would read the client's strings
                            // differently from the server. The session ends and the
                            // connection is reset before anyone else uses it.
                            a.dirty = true;
                            break Err(PgError::nonstandard_strings());
                        }
                        if k == "client_encoding" && crate::router::encoding::splits_ascii(v) {
                            // Likewise: the proxy would read the client's next statements
                            // in another encoding than the server.
                            a.dirty = true;
                            break Err(PgError::unreadable_client_encoding(v));
                        }
                        if k == "application_name" {
                            *ev_ctx = None;
                        }
                        if relay::is_carried_setting(&k) {
                            settings.set(&k, v);
                        }
                        a.note_parameter(k, v.to_owned());
                    }
                    true
                }
                b'E' => {
                    query_errors.increment(1);
                    let (code, sev) = crate::protocol::error::parse_error_fields(body);
                    if matches!(sev, Some(b"FATAL") | Some(b"PANIC")) {
                        // Before the client hears of it: what ended this connection (a
                        // shutdown, a restart) has likely ended idle ones too.
                        if !a.relay.fatal_seen {
                            pool.server_lost();
                        }
                        a.relay.fatal_seen = true;
                    }
                    let refusal = if !a.relay.refusals.is_empty()
                        && crate::frontend::guard::is_marker_error(body)
                    {
                        relay::refusal_for_marker(&mut a.relay.refusals, a.relay.t.readies)
                    } else {
                        None
                    };
                    if tele.is_some() {
                        a.relay.t.log.sent_out(h.total());
                        let done = a.relay.t.log.complete(a.relay.t.completion_limit());
                        let code = refusal.as_ref().map_or(code, |e| Some(e.code.as_bytes()));
                        events::record(tele, &ctx, done, 0, code, slow_ms);
                    }
                    if let Some(f) = cache_fill.as_mut() {
                        f.spoiled = true;
                    }
                    match refusal {
                        Some(err) => {
                            // After what came before it.
                            queue_run(&mut run, msg.end, &a.relay.sbuf, cout);
                            err.encode(cout);
                            false
                        }
                        None => true,
                    }
                }
                b'I' | b's' => {
                    if tele.is_some() {
                        a.relay.t.log.sent_out(h.total());
                        let done = a.relay.t.log.complete(a.relay.t.completion_limit());
                        events::record(tele, &ctx, done, 0, None, slow_ms);
                    }
                    true
                }
                _ => true,
            };
            if forward {
                if !matches!(h.tag, b'C' | b'E' | b'I' | b's') {
                    a.relay.t.log.sent_out(h.total());
                }
                if h.tag != b'Z' {
                    if let Some(f) = cache_fill.as_mut() {
                        f.add(&a.relay.sbuf[msg.clone()]);
                    }
                }
                extend_run(&mut run, pos, h.total(), &a.relay.sbuf, cout);
            }
            pos = msg.end;
        };
        // A message cut short waits in `sbuf` for the rest, with room for it.
        let unread = a.relay.sbuf.len() - pos;
        super::send_client(cw, cout, &a.relay.sbuf[run]);
        a.relay.sbuf.advance(pos);
        if result.is_ok() && a.relay.s_remaining == 0 {
            if let Ok(Some(h)) = frame::peek_header(&a.relay.sbuf) {
                if h.total() > unread {
                    a.relay.sbuf.reserve(h.total() - unread);
                }
            }
        }
        result
    }
}

/// Add `n` bytes of `sbuf` at `at` to the run of bytes to forward. Bytes not adjacent to
/// the run (a message between them was not forwarded) end it: it is queued first.
fn extend_run(
    run: &mut std::ops::Range<usize>,
    at: usize,
    n: usize,
    sbuf: &[u8],
    cout: &mut bytes::BytesMut,
) {
    if run.end != at {
        queue_run(run, at, sbuf, cout);
    }
    run.end = at + n;
}

/// Queue the run of bytes to forward, and start an empty one at `at`.
fn queue_run(run: &mut std::ops::Range<usize>, at: usize, sbuf: &[u8], cout: &mut bytes::BytesMut) {
    cout.extend_from_slice(&sbuf[run.clone()]);
    *run = at..at;
}
