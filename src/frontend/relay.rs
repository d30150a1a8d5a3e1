//! Per-message bookkeeping of the relay, without IO: which client messages need a server,
//! how named prepared statements are renamed for transaction pooling, which server replies
//! the proxy swallows, and when a server connection may go back to its pool.
//!
//! In transaction pooling a client's named statement `s1` becomes a server statement named
//! after a hash of its text and parameter types (`tg_<hash>`), so any server connection can
//! hold it for any client. Before a Bind/Describe that needs it, the proxy prepares it on
//! the server it got (Close + Parse, whose replies it swallows).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::BytesMut;
use foldhash::HashMap;

use super::stmt_log::StmtLog;
use crate::backend::prepared::PreparedCache;
use crate::protocol::frame::{self, ParseMsg};
use crate::protocol::PgError;

/// A server reply the proxy is waiting for, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// ParseComplete for a Parse; `server_name` is set for proxy-named statements.
    Parse {
        server_name: Option<Arc<str>>,
        client_name: Option<Vec<u8>>,
        swallow: bool,
    },
    /// CloseComplete for a Close.
    Close { swallow: bool },
    /// ReadyForQuery for a Sync (`query: false`), Query or FunctionCall. `copy_seq` is the
    /// number of CopyDone/CopyFail the client had sent before it; `started` and `kind`
    /// describe the batch it ends, for latency metrics.
    Sync {
        copy_seq: u64,
        query: bool,
        started: std::time::Instant,
        kind: usize,
        /// Statements opened before it ([`StmtLog::opened`]).
        stmts_before: u64,
    },
}

/// A client's named statement.
#[derive(Debug, Clone)]
pub struct ClientStmt {
    pub server_name: Arc<str>,
    /// Running it changes session state (advisory locks, set_config, temp tables).
    pub dirties: bool,
    /// The Parse message, already renamed to `server_name`.
    pub parse: bytes::Bytes,
    /// The tenant settings held when its text was last found not to change them (see
    /// [`crate::router::readonly`]): a Bind checks it again when more are held now.
    pub held_checked: crate::router::readonly::Held,
}

/// The statement name used on servers for a query text and its parameter types.
pub fn server_statement_name(m: &ParseMsg<'_>) -> Arc<str> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.query.hash(&mut h);
    m.rest.hash(&mut h);
    Arc::from(format!("tg_{:016x}", h.finish()))
}

/// Read buffer growth for a server connection.
pub const READ_CHUNK: usize = 16 * 1024;

/// The relay's state for one server connection: its buffers and what the server still
/// owes. It lives in the connection ([`crate::backend::server::ServerConn::relay`]), so a
/// checkout neither allocates nor builds it, and is made ready for the next client by
/// [`ConnRelay::recycle`] when the connection goes back to its pool.
#[derive(Debug)]
pub struct ConnRelay {
    /// Read from the server, not yet forwarded.
    pub sbuf: BytesMut,
    /// Queued for the server.
    pub sout: BytesMut,
    /// Bytes of a streamed server message still to forward.
    pub s_remaining: usize,
    pub t: Tracker,
    /// The server sent a FATAL error; its connection is ending.
    pub fatal_seen: bool,
    /// Errors of refused messages sent as failing marker Parses, oldest first, each with
    /// the batch it belongs to ([`Tracker::syncs`] when it was queued): a marker the
    /// server skipped (an earlier error in its batch) never answers, and its error must
    /// not stand in for a later batch's.
    pub refusals: VecDeque<(u64, PgError)>,
    /// A write completed in the open transaction (result cache invalidation at its end).
    pub wrote: bool,
    /// Written to a TLS stream and maybe not sent yet: flushed when nothing else is queued.
    pub unflushed: bool,
}

impl Default for ConnRelay {
    fn default() -> Self {
        ConnRelay {
            sbuf: BytesMut::new(),
            sout: BytesMut::new(),
            s_remaining: 0,
            t: Tracker::new(),
            fatal_seen: false,
            refusals: VecDeque::new(),
            wrote: false,
            unflushed: false,
        }
    }
}

impl ConnRelay {
    /// The server has answered everything it was sent and nothing is in flight either way
    /// (a transaction may be open).
    pub fn settled(&self) -> bool {
        self.t.quiet()
            && self.sout.is_empty()
            && self.sbuf.is_empty()
            && self.s_remaining == 0
            && !self.fatal_seen
    }

    /// Ready for the next client: as new, keeping the buffers' memory unless a large
    /// result grew them (the pool does not keep that).
    pub fn recycle(&mut self) {
        let ConnRelay {
            sbuf,
            sout,
            s_remaining,
            t,
            fatal_seen,
            refusals,
            wrote,
            unflushed,
        } = self;
        for b in [sbuf, sout] {
            b.clear();
            if b.capacity() > 4 * READ_CHUNK {
                *b = BytesMut::new();
            }
        }
        *s_remaining = 0;
        t.reset();
        *fatal_seen = false;
        clear_queue(refusals);
        *wrote = false;
        *unflushed = false;
    }

    /// Nothing of a previous client is left (checked when a client attaches).
    /// Queue `err` for the marker Parse about to be sent, which the server fails in order
    /// (the relay swaps in `err`). `Err(err)` when a marker went out since the last Sync:
    /// the server skips to Sync after it, so this refusal needs no marker of its own.
    pub fn queue_refusal(&mut self, err: PgError) -> Result<(), PgError> {
        if self.t.marker_unsynced {
            return Err(err);
        }
        self.t.marker_unsynced = true;
        self.refusals.push_back((self.t.syncs, err));
        Ok(())
    }

    /// The marker queued last was not sent after all (the message carrying it was
    /// answered by the proxy, which answers the batch's Sync too).
    pub fn unqueue_unsent_refusal(&mut self) {
        if self.t.marker_unsynced && !self.t.unsynced {
            self.t.marker_unsynced = false;
            self.refusals.pop_back();
        }
    }

    /// Refusals whose batch has had its ReadyForQuery.
    pub fn drop_answered_refusals(&mut self) {
        drop_answered(&mut self.refusals, self.t.readies);
    }

    pub fn is_fresh(&self) -> bool {
        self.settled()
            && self.t.is_fresh()
            && self.refusals.is_empty()
            && !self.wrote
            && !self.unflushed
    }
}

/// The error to send in place of a marker Parse's failure, which the server reports in
/// the batch it is answering now (number `readies`); refusals of batches already
/// answered (their marker skipped after an earlier error) are dropped. A function of the
/// two fields, not a method: the server message being read borrows the relay's buffer.
pub fn refusal_for_marker(
    refusals: &mut VecDeque<(u64, PgError)>,
    readies: u64,
) -> Option<PgError> {
    drop_answered(refusals, readies);
    match refusals.front() {
        Some((batch, _)) if *batch == readies => refusals.pop_front().map(|r| r.1),
        _ => None,
    }
}

fn drop_answered(refusals: &mut VecDeque<(u64, PgError)>, readies: u64) {
    while refusals.front().is_some_and(|(batch, _)| *batch < readies) {
        refusals.pop_front();
    }
}

/// Queues kept with a pooled connection hold a few entries per transaction; one a deep
/// pipeline grew is not kept at that size.
const QUEUE_KEEP: usize = 64;

/// Empty `q` for the next client, keeping its memory unless a deep pipeline grew it.
/// Empty already after a transaction that ended normally: clearing it anyway walks it.
pub(crate) fn clear_queue<T>(q: &mut VecDeque<T>) {
    if q.capacity() > QUEUE_KEEP {
        *q = VecDeque::new();
    } else if !q.is_empty() {
        q.clear();
    }
}

/// Protocol state of one attachment of a client to a server connection.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Queries/Syncs/FunctionCalls sent without their ReadyForQuery yet.
    pub outstanding: usize,
    /// Extended-protocol messages sent since the last Sync.
    pub unsynced: bool,
    /// A refusal's marker Parse was sent since the last Sync: the server fails it and
    /// skips everything until then, so a later refusal needs no marker (nor error) of
    /// its own.
    pub marker_unsynced: bool,
    /// Syncs, Queries and FunctionCalls sent that the server will answer with a
    /// ReadyForQuery, and ReadyForQuery messages received: the batch being answered is
    /// number `readies` (from 0).
    pub syncs: u64,
    pub readies: u64,
    /// Status byte of the last ReadyForQuery ('I', 'T' or 'E').
    pub tx_status: u8,
    pub pending: VecDeque<Pending>,
    /// CopyDone/CopyFail messages forwarded.
    pub copy_ends_sent: u64,
    /// CopyInResponse/CopyBothResponse messages seen.
    pub copy_ins_seen: u64,
    /// The server is in COPY IN until its next ReadyForQuery.
    pub in_copy: bool,
    /// When the first message of the current batch was forwarded, and its statement kind.
    batch: Option<(std::time::Instant, usize)>,
    /// Statements awaiting completion (telemetry).
    pub log: StmtLog,
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            tx_status: b'I',
            // A Sync, and a Parse/Close or two, without growing.
            pending: VecDeque::with_capacity(4),
            ..Default::default()
        }
    }

    /// As new (the queue keeps its memory).
    fn reset(&mut self) {
        let Tracker {
            outstanding,
            unsynced,
            marker_unsynced,
            syncs,
            readies,
            tx_status,
            pending,
            copy_ends_sent,
            copy_ins_seen,
            in_copy,
            batch,
            log,
        } = self;
        *outstanding = 0;
        *unsynced = false;
        *marker_unsynced = false;
        *syncs = 0;
        *readies = 0;
        *tx_status = b'I';
        clear_queue(pending);
        *copy_ends_sent = 0;
        *copy_ins_seen = 0;
        *in_copy = false;
        *batch = None;
        log.reset();
    }

    /// As [`Tracker::new`] made it (the queue's memory aside).
    fn is_fresh(&self) -> bool {
        self.quiet()
            && !self.marker_unsynced
            && self.syncs == 0
            && self.readies == 0
            && self.tx_status == b'I'
            && self.pending.is_empty()
            && self.copy_ends_sent == 0
            && self.copy_ins_seen == 0
            && self.batch.is_none()
            && self.log.is_fresh()
    }

    /// True when the server has answered everything and no transaction is open.
    pub fn idle(&self) -> bool {
        self.quiet() && self.tx_status == b'I'
    }

    /// A message of a batch is being forwarded; `kind` is its statement kind when known
    /// (Query/Parse text), else `None` (the batch counts as `extended` unless a later
    /// message names a kind).
    pub fn begin(&mut self, kind: Option<usize>) {
        match &mut self.batch {
            None => self.batch = Some((std::time::Instant::now(), kind.unwrap_or(EXTENDED_KIND))),
            Some((_, k)) if *k == EXTENDED_KIND => {
                if let Some(kind) = kind {
                    *k = kind;
                }
            }
            Some(_) => {}
        }
    }

    /// A Query, FunctionCall (`query`) or Sync was forwarded.
    pub fn sent_sync(&mut self, query: bool) {
        if !query {
            self.unsynced = false;
            self.marker_unsynced = false;
            // The server is in a COPY IN the client has not ended: it ignores this Sync.
            if self.copy_ins_seen > self.copy_ends_sent {
                return;
            }
        }
        self.outstanding += 1;
        self.syncs += 1;
        let (started, kind) = self
            .batch
            .take()
            .unwrap_or_else(|| (std::time::Instant::now(), EXTENDED_KIND));
        self.pending.push_back(Pending::Sync {
            copy_seq: self.copy_ends_sent,
            query,
            started,
            kind,
            stmts_before: self.log.opened(),
        });
    }

    /// The server entered COPY IN. It ignores Sync messages that reach it during the copy,
    /// that is, Syncs the client sent after the COPY's Execute and before its CopyDone or
    /// CopyFail (libpq and tokio-postgres send one there); they will get no ReadyForQuery.
    pub fn copy_in_started(&mut self) {
        let seq = self.copy_ins_seen;
        self.copy_ins_seen += 1;
        self.in_copy = true;
        let before = self.pending.len();
        self.pending.retain(
            |p| !matches!(p, Pending::Sync { copy_seq, query: false, .. } if *copy_seq == seq),
        );
        let ignored = before - self.pending.len();
        self.outstanding -= ignored;
        self.syncs -= ignored as u64;
    }

    /// Statements the server may be completing now: those opened before the first Sync it
    /// has not answered yet.
    pub fn completion_limit(&self) -> u64 {
        self.pending
            .iter()
            .find_map(|p| match p {
                Pending::Sync { stmts_before, .. } => Some(*stmts_before),
                _ => None,
            })
            .unwrap_or_else(|| self.log.opened())
    }

    /// True when everything sent has been answered (a transaction may be open).
    pub fn quiet(&self) -> bool {
        self.outstanding == 0 && !self.unsynced && !self.in_copy
    }

    /// The server cannot finish what it was sent without more from the client: extended
    /// query messages without a Sync yet, or a COPY FROM STDIN in progress.
    pub fn awaits_client(&self) -> bool {
        self.unsynced || (self.in_copy && self.copy_ends_sent < self.copy_ins_seen)
    }
}

/// Client-side statement names → server statements, for transaction pooling.
#[derive(Debug, Default)]
pub struct Statements {
    map: HashMap<Vec<u8>, ClientStmt>,
}

impl Statements {
    pub fn get(&self, name: &[u8]) -> Option<&ClientStmt> {
        self.map.get(name)
    }

    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut ClientStmt> {
        self.map.get_mut(name)
    }

    /// Forget `name` if it still maps to `server_name` (its Parse failed).
    pub fn forget_failed(&mut self, name: &[u8], server_name: &str) {
        if self
            .map
            .get(name)
            .is_some_and(|s| &*s.server_name == server_name)
        {
            self.map.remove(name);
        }
    }

    /// The client closed `name` between transactions: forget it. Its server copies stay
    /// in their connections' bounded caches, for whoever prepares the same text next.
    pub fn forget(&mut self, name: &[u8]) {
        self.map.remove(name);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Write a client's Parse of a named statement, renamed for the server.
pub fn forward_named_parse(
    body: &[u8],
    stmts: &mut Statements,
    cache: &mut PreparedCache,
    t: &mut Tracker,
    out: &mut BytesMut,
) -> bool {
    let Some(m) = frame::parse_parse(body) else {
        return false;
    };
    let server_name = server_statement_name(&m);
    let mut parse = BytesMut::with_capacity(body.len() + 24);
    frame::write_parse(&mut parse, server_name.as_bytes(), &m);
    let parse = parse.freeze();
    // Close first: the server may hold this name already; closing a missing one is no error.
    frame::write_target(out, b'C', b'S', server_name.as_bytes());
    t.pending.push_back(Pending::Close { swallow: true });
    out.extend_from_slice(&parse);
    t.pending.push_back(Pending::Parse {
        server_name: Some(server_name.clone()),
        client_name: Some(m.name.to_vec()),
        swallow: false,
    });
    if let Some(ev) = cache.insert(server_name.clone()) {
        evict(&ev, t, out);
    }
    stmts.map.insert(
        m.name.to_vec(),
        ClientStmt {
            server_name,
            dirties: text_dirties(m.query),
            parse,
            // The checks at Parse may have read older flags: the first Bind reads it again
            // if anything is held.
            held_checked: Default::default(),
        },
    );
    t.unsynced = true;
    true
}

/// Make sure `stmt` is prepared on the server, injecting a swallowed Close + Parse if not.
pub fn ensure_prepared(
    stmt: &ClientStmt,
    cache: &mut PreparedCache,
    t: &mut Tracker,
    out: &mut BytesMut,
) {
    if cache.touch(&stmt.server_name) {
        return;
    }
    frame::write_target(out, b'C', b'S', stmt.server_name.as_bytes());
    t.pending.push_back(Pending::Close { swallow: true });
    out.extend_from_slice(&stmt.parse);
    t.pending.push_back(Pending::Parse {
        server_name: Some(stmt.server_name.clone()),
        client_name: None,
        swallow: true,
    });
    if let Some(ev) = cache.insert(stmt.server_name.clone()) {
        evict(&ev, t, out);
    }
}

fn evict(name: &str, t: &mut Tracker, out: &mut BytesMut) {
    frame::write_target(out, b'C', b'S', name.as_bytes());
    t.pending.push_back(Pending::Close { swallow: true });
}

/// Write a client's Close of a named statement: drop the mapping, close it on the server.
pub fn forward_named_close(
    name: &[u8],
    stmts: &mut Statements,
    cache: &mut PreparedCache,
    t: &mut Tracker,
    out: &mut BytesMut,
) -> bool {
    let Some(s) = stmts.map.remove(name) else {
        return false;
    };
    cache.remove(&s.server_name);
    frame::write_target(out, b'C', b'S', s.server_name.as_bytes());
    t.pending.push_back(Pending::Close { swallow: false });
    t.unsynced = true;
    true
}

/// What to do with one server message the relay must look at.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Forward,
    Swallow,
}

/// Account for a ParseComplete / CloseComplete.
pub fn on_complete(tag: u8, t: &mut Tracker) -> Reply {
    let swallow = match t.pending.front() {
        Some(Pending::Parse { swallow, .. }) if tag == b'1' => *swallow,
        Some(Pending::Close { swallow }) if tag == b'3' => *swallow,
        _ => return Reply::Forward,
    };
    t.pending.pop_front();
    if swallow {
        Reply::Swallow
    } else {
        Reply::Forward
    }
}

/// The `kind` index for batches without a Query/Parse text (extended protocol).
pub const EXTENDED_KIND: usize = crate::telemetry::metrics::KINDS.len();

/// Account for a ReadyForQuery: Parses skipped by an error are forgotten on both sides.
/// Returns when the batch it ends started and its statement kind.
pub fn on_ready(
    status: u8,
    t: &mut Tracker,
    stmts: &mut Statements,
    cache: &mut PreparedCache,
) -> Option<(std::time::Instant, usize)> {
    t.outstanding = t.outstanding.saturating_sub(1);
    t.tx_status = status;
    t.in_copy = false;
    let mut batch = None;
    while let Some(p) = t.pending.pop_front() {
        match p {
            Pending::Sync {
                started,
                kind,
                stmts_before,
                ..
            } => {
                t.log.ready(stmts_before);
                batch = Some((started, kind));
                // Only a ReadyForQuery the proxy awaited counts: one for a Sync it took
                // as ignored in a COPY (the COPY failed before the server read the Sync)
                // would put every later refusal a batch behind.
                t.readies += 1;
                break;
            }
            Pending::Parse {
                server_name: Some(s),
                client_name,
                ..
            } => {
                cache.remove(&s);
                if let Some(c) = client_name {
                    stmts.forget_failed(&c, &s);
                }
            }
            _ => {}
        }
    }
    batch
}

/// Does a CommandComplete tag mean session state changed that must be reset before the
/// connection serves another client? Also reports whether prepared statements were dropped.
pub fn tag_effect(tag: &[u8]) -> TagEffect {
    let starts = |p: &[u8]| tag.len() >= p.len() && tag[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"DISCARD") || starts(b"DEALLOCATE") {
        TagEffect::DroppedStatements
    } else if starts(b"SET")
        || starts(b"RESET")
        || starts(b"LISTEN")
        || starts(b"PREPARE")
        || starts(b"DECLARE CURSOR")
        || starts(b"LOAD")
    {
        TagEffect::Dirty
    } else {
        TagEffect::None
    }
}

/// Does a CommandComplete tag mean the session's settings went back to their startup
/// values (`RESET ALL`, `DISCARD ALL`; also a single `RESET`, taken alike)?
pub fn resets_settings(tag: &[u8]) -> bool {
    let starts = |p: &[u8]| tag.len() >= p.len() && tag[..p.len()].eq_ignore_ascii_case(p);
    starts(b"RESET") || starts(b"DISCARD ALL")
}

#[derive(Debug, PartialEq, Eq)]
pub enum TagEffect {
    None,
    Dirty,
    DroppedStatements,
}

/// Does statement text hint at session state that tags do not show (advisory locks,
/// set_config, temporary tables)? See [`TextFacts::dirties`], which the relay reads from the
/// facts it has already found.
pub fn text_dirties(sql: &[u8]) -> bool {
    crate::router::facts::TextFacts::of(sql).dirties()
}

/// The value of setting `name` among a client's settings (lower-case names).
pub fn setting<'a>(settings: &'a [(String, String)], name: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Settings whose changes the server reports and the proxy carries between connections.
pub fn is_carried_setting(name: &str) -> bool {
    matches!(
        name,
        "application_name"
            | "client_encoding"
            | "datestyle"
            | "timezone"
            | "intervalstyle"
            | "standard_conforming_strings"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_body(name: &str, q: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(q.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0, 0]);
        b
    }

    #[test]
    fn a_recycled_relay_state_is_as_new_and_drops_what_a_large_result_grew() {
        let mut r = ConnRelay::default();
        assert!(r.is_fresh());
        r.sbuf.reserve(READ_CHUNK);
        let kept = r.sbuf.capacity();
        r.sbuf.extend_from_slice(b"left over");
        r.sout.reserve(8 * READ_CHUNK);
        r.sout.extend_from_slice(b"queued");
        r.s_remaining = 3;
        r.t.begin(Some(0));
        r.t.sent_sync(true);
        r.t.copy_in_started();
        r.t.copy_ends_sent = 2;
        r.t.unsynced = true;
        r.t.marker_unsynced = true;
        r.t.begin(None);
        r.t.log.sent_out(10);
        r.t.pending.reserve(4 * QUEUE_KEEP);
        r.t.tx_status = b'E';
        r.fatal_seen = true;
        r.refusals
            .push_back((0, PgError::protocol_violation("refused")));
        r.wrote = true;
        r.unflushed = true;
        assert!(!r.is_fresh());

        r.recycle();
        assert!(r.is_fresh(), "{r:?}");
        assert!(!r.unflushed && r.t.quiet() && r.t.copy_ins_seen == 0);
        assert!(r.t.copy_ends_sent == 0 && r.t.batch.is_none());
        assert_eq!(r.t.completion_limit(), 0);
        assert!(
            r.t.pending.capacity() <= QUEUE_KEEP,
            "a deep queue is not kept"
        );
        assert_eq!(
            r.sbuf.capacity(),
            kept,
            "a read chunk is kept for the next client"
        );
        assert_eq!(
            r.sout.capacity(),
            0,
            "a large buffer is not kept by the pool"
        );
        // The next client's Sync is answered as its own.
        r.t.sent_sync(false);
        assert_eq!(r.t.outstanding, 1);
        assert_eq!(r.t.pending.len(), 1);
    }

    #[test]
    fn named_parse_is_renamed_and_bind_reprepares_on_a_fresh_server() {
        let mut stmts = Statements::default();
        let mut cache = PreparedCache::new(8);
        let mut t = Tracker::new();
        let mut out = BytesMut::new();
        assert!(forward_named_parse(
            &parse_body("s1", "select 1"),
            &mut stmts,
            &mut cache,
            &mut t,
            &mut out
        ));
        let s = stmts.get(b"s1").unwrap().clone();
        assert!(s.server_name.starts_with("tg_"));
        // Close (swallowed) then Parse (forwarded)
        assert_eq!(on_complete(b'3', &mut t), Reply::Swallow);
        assert_eq!(on_complete(b'1', &mut t), Reply::Forward);
        // same text, another name: same server statement
        let mut o2 = BytesMut::new();
        forward_named_parse(
            &parse_body("s2", "select 1"),
            &mut stmts,
            &mut cache,
            &mut t,
            &mut o2,
        );
        assert_eq!(stmts.get(b"s2").unwrap().server_name, s.server_name);

        // another server: nothing cached → inject Close+Parse, both swallowed
        let mut cache2 = PreparedCache::new(8);
        let mut t2 = Tracker::new();
        let mut o3 = BytesMut::new();
        ensure_prepared(&s, &mut cache2, &mut t2, &mut o3);
        assert_eq!(o3[0], b'C');
        assert_eq!(on_complete(b'3', &mut t2), Reply::Swallow);
        assert_eq!(on_complete(b'1', &mut t2), Reply::Swallow);
        // now cached: nothing injected
        let mut o4 = BytesMut::new();
        ensure_prepared(&s, &mut cache2, &mut t2, &mut o4);
        assert!(o4.is_empty());
    }

    #[test]
    fn failed_parse_is_forgotten_at_ready() {
        let mut stmts = Statements::default();
        let mut cache = PreparedCache::new(8);
        let mut t = Tracker::new();
        let mut out = BytesMut::new();
        forward_named_parse(
            &parse_body("bad", "selec 1"),
            &mut stmts,
            &mut cache,
            &mut t,
            &mut out,
        );
        t.sent_sync(false);
        // server: CloseComplete, then ErrorResponse (Parse failed), ReadyForQuery
        assert_eq!(on_complete(b'3', &mut t), Reply::Swallow);
        on_ready(b'I', &mut t, &mut stmts, &mut cache);
        assert!(stmts.get(b"bad").is_none());
        assert!(cache.is_empty());
        assert!(t.pending.is_empty());
        assert!(t.idle() || t.unsynced);
    }

    /// A refusal stands in for its own batch's marker error only: one whose marker the
    /// server skipped (an earlier error in the batch) is dropped at that batch's
    /// ReadyForQuery, so the next batch's refusal is reported as itself.
    #[test]
    fn refusals_belong_to_their_batch() {
        let (mut s, mut c) = (Statements::default(), PreparedCache::new(1));
        let mut r = ConnRelay::default();
        r.t.unsynced = true;
        r.queue_refusal(PgError::protocol_violation("first"))
            .unwrap();
        assert!(r
            .queue_refusal(PgError::protocol_violation("same batch"))
            .is_err());
        r.t.sent_sync(false);
        r.t.unsynced = true;
        r.queue_refusal(PgError::protocol_violation("second"))
            .unwrap();
        r.t.sent_sync(false);
        // Batch 0 failed on a real error first: its marker never answers.
        on_ready(b'I', &mut r.t, &mut s, &mut c);
        r.drop_answered_refusals();
        let second = refusal_for_marker(&mut r.refusals, r.t.readies).unwrap();
        assert_eq!(second.message, "second");
        on_ready(b'I', &mut r.t, &mut s, &mut c);
        assert!(r.refusals.is_empty() && r.t.quiet());

        // A marker answered by the proxy (its server could not be prepared) is taken back.
        r.queue_refusal(PgError::protocol_violation("unsent"))
            .unwrap();
        r.unqueue_unsent_refusal();
        assert!(r.refusals.is_empty() && !r.t.marker_unsynced);
        r.t.unsynced = true;
        r.queue_refusal(PgError::protocol_violation("sent"))
            .unwrap();
        r.unqueue_unsent_refusal();
        assert_eq!(r.refusals.len(), 1, "a marker already sent stays");
    }

    /// A COPY that fails before the server reads the Sync sent behind its Execute: that
    /// Sync, taken as ignored, is answered after all, and the batch count stays right.
    #[test]
    fn an_unawaited_ready_for_query_does_not_shift_the_batches() {
        let (mut s, mut c) = (Statements::default(), PreparedCache::new(1));
        let mut r = ConnRelay::default();
        r.t.sent_sync(false);
        r.t.copy_in_started();
        on_ready(b'E', &mut r.t, &mut s, &mut c);
        r.t.copy_ends_sent += 1;
        r.t.sent_sync(false);
        on_ready(b'I', &mut r.t, &mut s, &mut c);
        assert_eq!(r.t.readies, r.t.syncs);
        r.t.unsynced = true;
        r.queue_refusal(PgError::protocol_violation("next"))
            .unwrap();
        r.t.sent_sync(false);
        let got = refusal_for_marker(&mut r.refusals, r.t.readies).unwrap();
        assert_eq!(got.message, "next");
    }

    #[test]
    fn sync_sent_during_copy_in_is_not_awaited() {
        let mut t = Tracker::new();
        // extended COPY: Bind, Execute, Sync(a) ... CopyData, CopyDone, Sync(b)
        t.sent_sync(false);
        t.copy_ends_sent += 1;
        t.sent_sync(false);
        assert_eq!(t.outstanding, 2);
        t.copy_in_started();
        assert_eq!(t.outstanding, 1, "Sync(a) is ignored by the server");
        assert!(!t.quiet(), "never released during COPY");
        let (mut s, mut c) = (Statements::default(), PreparedCache::new(1));
        on_ready(b'I', &mut t, &mut s, &mut c);
        assert!(t.idle() && t.pending.is_empty());
        // simple-query COPY keeps its own ReadyForQuery
        t.sent_sync(true);
        t.copy_in_started();
        assert_eq!(t.outstanding, 1);
    }

    #[test]
    fn tags_and_text() {
        assert_eq!(tag_effect(b"SET"), TagEffect::Dirty);
        assert_eq!(tag_effect(b"SELECT 1"), TagEffect::None);
        assert_eq!(tag_effect(b"DISCARD ALL"), TagEffect::DroppedStatements);
        assert_eq!(tag_effect(b"LISTEN"), TagEffect::Dirty);
        assert!(resets_settings(b"RESET") && resets_settings(b"DISCARD ALL"));
        assert!(!resets_settings(b"DISCARD PLANS") && !resets_settings(b"SET"));
        assert!(text_dirties(b"select pg_advisory_lock(1)"));
        assert!(text_dirties(b"CREATE TEMP TABLE x()"));
        assert!(!text_dirties(b"select temperature from t"));
        assert!(!text_dirties(b"select 1"));
    }
}
