//! Statement bookkeeping for telemetry, without IO: which statements sent to a server still
//! await their completion (in order), and what each took (latency, bytes in and out).
//!
//! A simple Query is one entry that completes once per statement it holds (each
//! CommandComplete, EmptyQueryResponse or ErrorResponse) and closes at ReadyForQuery; an
//! extended-protocol Execute is one entry closed by its CommandComplete, EmptyQuery,
//! PortalSuspended or ErrorResponse. Executes skipped after an error close unanswered at
//! the Sync's ReadyForQuery (they never ran: no event). [`StmtCapture`] is the client side:
//! it remembers statement and portal texts and counts client bytes.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::frame;
use crate::telemetry::event::StmtText;

/// A statement awaiting its completion.
#[derive(Debug)]
struct OpenStmt {
    text: StmtText,
    started: Instant,
    bytes_in: u64,
    wait_us: u64,
    seq: u64,
    query: bool,
}

/// A completed statement.
#[derive(Debug)]
pub struct Done {
    pub text: StmtText,
    pub latency_us: u64,
    pub wait_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Open statements of one attachment to a server.
#[derive(Debug, Default)]
pub struct StmtLog {
    open: VecDeque<OpenStmt>,
    opened: u64,
    out_bytes: u64,
    out_mark: u64,
}

impl StmtLog {
    /// As new, for the next attachment (the queue keeps its memory).
    pub fn reset(&mut self) {
        let StmtLog {
            open,
            opened,
            out_bytes,
            out_mark,
        } = self;
        super::relay::clear_queue(open);
        *opened = 0;
        *out_bytes = 0;
        *out_mark = 0;
    }

    /// As new: nothing opened, awaited or counted.
    pub fn is_fresh(&self) -> bool {
        self.open.is_empty() && self.opened == 0 && self.out_bytes == 0 && self.out_mark == 0
    }

    /// Statements opened so far (a Sync records it to know which are its own).
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Bytes forwarded to the client.
    pub fn sent_out(&mut self, n: usize) {
        self.out_bytes += n as u64;
    }

    fn open(&mut self, text: StmtText, started: Instant, bytes_in: u64, wait_us: u64, query: bool) {
        self.open.push_back(OpenStmt {
            text,
            started,
            bytes_in,
            wait_us,
            seq: self.opened,
            query,
        });
        self.opened += 1;
    }

    /// A completion message arrived; `limit` is the number of statements opened before the
    /// Sync the server is answering now (statements from later batches are not its own).
    pub fn complete(&mut self, limit: u64) -> Option<Done> {
        let front = self.open.front_mut().filter(|s| s.seq < limit)?;
        let now = Instant::now();
        let bytes_out = self.out_bytes - self.out_mark;
        self.out_mark = self.out_bytes;
        let latency_us = now.duration_since(front.started).as_micros() as u64;
        if front.query {
            // The next statement of this query string starts now.
            let text = match &mut front.text {
                StmtText::Query { body, ordinal } => {
                    let t = StmtText::Query {
                        body: body.clone(),
                        ordinal: *ordinal,
                    };
                    *ordinal = ordinal.saturating_add(1);
                    t
                }
                other => other.clone(),
            };
            front.started = now;
            return Some(Done {
                text,
                latency_us,
                wait_us: std::mem::take(&mut front.wait_us),
                bytes_in: std::mem::take(&mut front.bytes_in),
                bytes_out,
            });
        }
        let s = self.open.pop_front().expect("front exists");
        Some(Done {
            text: s.text,
            latency_us,
            wait_us: s.wait_us,
            bytes_in: s.bytes_in,
            bytes_out,
        })
    }

    /// Client bytes streamed into the latest statement (COPY FROM STDIN data).
    pub fn add_in(&mut self, n: usize) {
        if let Some(s) = self.open.back_mut() {
            s.bytes_in += n as u64;
        }
    }

    /// The server connection is gone: every open statement ends now, failed.
    pub fn abandon(&mut self) -> Vec<Done> {
        let mut out = Vec::new();
        while !self.open.is_empty() {
            let limit = self.opened;
            match self.complete(limit) {
                Some(d) => out.push(d),
                None => break,
            }
            // A query string's remaining statements never ran.
            if self.open.front().is_some_and(|s| s.query) {
                self.open.pop_front();
            }
        }
        out
    }

    /// ReadyForQuery for a Sync/Query that had `before` statements opened before it:
    /// those left open never ran.
    pub fn ready(&mut self, before: u64) {
        while self.open.front().is_some_and(|s| s.seq < before) {
            self.open.pop_front();
        }
    }
}

/// Client-side capture: statement and portal texts, bytes and arrival time of the messages
/// that make up the next statement, pool wait of the last checkout.
#[derive(Debug, Default)]
pub struct StmtCapture {
    stmts: HashMap<Vec<u8>, Bytes>,
    portals: HashMap<Vec<u8>, Bytes>,
    bytes_in: u64,
    first_in: Option<Instant>,
    /// Set by a checkout, taken by the next statement.
    pub wait_us: u64,
}

/// Most named statements and portals remembered per session.
const MAX_TEXTS: usize = 1024;

impl StmtCapture {
    /// A client message is being forwarded; opens a statement in `log` for a Query or an
    /// Execute. Call before the Query's or Sync's bookkeeping.
    pub fn on_message(&mut self, tag: u8, msg: &[u8], log: &mut StmtLog) {
        let now = Instant::now();
        self.bytes_in += msg.len() as u64;
        let started = *self.first_in.get_or_insert(now);
        let body = &msg[frame::HEADER_LEN.min(msg.len())..];
        let text = match tag {
            b'Q' => StmtText::Query {
                body: Bytes::copy_from_slice(body),
                ordinal: 0,
            },
            b'E' => {
                let portal = frame::cstr(body).map_or(&b""[..], |(p, _)| p);
                self.portals
                    .get(portal)
                    .map_or(StmtText::Unknown, |b| StmtText::Parse(b.clone()))
            }
            b'P' => {
                if let Some((name, _)) = frame::cstr(body) {
                    remember(&mut self.stmts, name, Bytes::copy_from_slice(body));
                }
                return;
            }
            b'B' => {
                if let Some((portal, stmt, _)) = frame::parse_bind(body) {
                    match self.stmts.get(stmt).cloned() {
                        Some(text) => remember(&mut self.portals, portal, text),
                        None => {
                            self.portals.remove(portal);
                        }
                    }
                }
                return;
            }
            b'C' => {
                // Close of a statement or portal: forget its text.
                if let Some((kind, name)) = frame::parse_target(body) {
                    if kind == b'S' {
                        self.stmts.remove(name);
                    } else {
                        self.portals.remove(name);
                    }
                }
                return;
            }
            _ => return,
        };
        let bytes_in = std::mem::take(&mut self.bytes_in);
        self.first_in = None;
        log.open(
            text,
            started,
            bytes_in,
            std::mem::take(&mut self.wait_us),
            tag == b'Q',
        );
    }

    /// The text of a message the proxy answers itself (refused, or no server).
    pub fn local_text(&mut self, tag: u8, msg: &[u8]) -> Option<StmtText> {
        let body = &msg[frame::HEADER_LEN.min(msg.len())..];
        self.bytes_in = 0;
        self.first_in = None;
        match tag {
            b'Q' => Some(StmtText::Query {
                body: Bytes::copy_from_slice(body),
                ordinal: 0,
            }),
            b'P' => Some(StmtText::Parse(Bytes::copy_from_slice(body))),
            // A refused Bind: the statement it names.
            b'B' => Some(
                frame::parse_bind(body)
                    .and_then(|(_, stmt, _)| self.stmts.get(stmt))
                    .map_or(StmtText::Unknown, |b| StmtText::Parse(b.clone())),
            ),
            b'E' => {
                let portal = frame::cstr(body).map_or(&b""[..], |(p, _)| p);
                Some(
                    self.portals
                        .get(portal)
                        .map_or(StmtText::Unknown, |b| StmtText::Parse(b.clone())),
                )
            }
            _ => None,
        }
    }
}

fn remember(map: &mut HashMap<Vec<u8>, Bytes>, name: &[u8], text: Bytes) {
    if let Some(slot) = map.get_mut(name) {
        *slot = text;
        return;
    }
    if map.len() >= MAX_TEXTS {
        // A client that never closes what it prepares: start over rather than grow.
        map.clear();
    }
    map.insert(name.to_vec(), text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        let at = frame::begin(&mut b, tag);
        b.extend_from_slice(body);
        frame::end(&mut b, at);
        b.to_vec()
    }

    fn parse(name: &str, q: &str) -> Vec<u8> {
        msg(b'P', format!("{name}\0{q}\0\0\0").as_bytes())
    }

    fn bind(portal: &str, stmt: &str) -> Vec<u8> {
        msg(b'B', format!("{portal}\0{stmt}\0\0\0\0\0\0\0").as_bytes())
    }

    fn text_of(d: &Done) -> String {
        match &d.text {
            StmtText::Parse(b) => {
                String::from_utf8_lossy(frame::parse_parse(b).unwrap().query).into()
            }
            StmtText::Query { ordinal, .. } => format!("query#{ordinal}"),
            StmtText::Unknown => "?".into(),
        }
    }

    #[test]
    fn pipelined_executes_complete_in_order() {
        let mut cap = StmtCapture::default();
        let mut log = StmtLog::default();
        for m in [
            parse("", "select 1"),
            bind("", ""),
            msg(b'E', b"\0\0\0\0\0"),
        ] {
            cap.on_message(m[0], &m, &mut log);
        }
        for m in [
            parse("s2", "select 2"),
            bind("", "s2"),
            msg(b'E', b"\0\0\0\0\0"),
        ] {
            cap.on_message(m[0], &m, &mut log);
        }
        let before_sync = log.opened();
        assert_eq!(before_sync, 2);
        log.sent_out(30);
        let a = log.complete(before_sync).unwrap();
        log.sent_out(10);
        let b = log.complete(before_sync).unwrap();
        assert_eq!((text_of(&a), a.bytes_out), ("select 1".into(), 30));
        assert_eq!((text_of(&b), b.bytes_out), ("select 2".into(), 10));
        assert!(a.bytes_in > 0 && b.bytes_in > 0);
        assert!(log.complete(before_sync).is_none());
    }

    #[test]
    fn query_completes_per_statement_and_closes_at_ready() {
        let mut cap = StmtCapture::default();
        let mut log = StmtLog::default();
        let q = msg(b'Q', b"select 1; select 2\0");
        cap.on_message(b'Q', &q, &mut log);
        let before = log.opened();
        let a = log.complete(before).unwrap();
        let b = log.complete(before).unwrap();
        assert_eq!(
            (text_of(&a), text_of(&b)),
            ("query#0".into(), "query#1".into())
        );
        assert_eq!((a.bytes_in, b.bytes_in), (q.len() as u64, 0));
        log.ready(before);
        assert!(log.complete(u64::MAX).is_none());
    }

    #[test]
    fn error_before_execute_of_a_later_batch_is_not_attributed() {
        let mut cap = StmtCapture::default();
        let mut log = StmtLog::default();
        // Batch 1: a Parse only (its error has no Execute); batch 2: an Execute.
        let first_sync = log.opened();
        let e = msg(b'E', b"\0\0\0\0\0");
        cap.on_message(b'E', &e, &mut log);
        assert!(log.complete(first_sync).is_none());
        log.ready(first_sync);
        let d = log.complete(log.opened()).unwrap();
        assert_eq!(text_of(&d), "?");
        // Executes skipped after an error close at the Sync.
        cap.on_message(b'E', &e, &mut log);
        cap.on_message(b'E', &e, &mut log);
        let sync = log.opened();
        assert!(log.complete(sync).is_some());
        log.ready(sync);
        assert!(log.complete(u64::MAX).is_none());
    }
}
