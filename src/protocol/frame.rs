//! Message framing: every tagged message is `tag: u8, len: i32 (incl. itself), body`.
//!
//! The relay reads only headers on the hot path; the body readers below are used for the few
//! messages a decision needs (Parse/Bind/Describe/Close names, CommandComplete tags,
//! ReadyForQuery status, ParameterStatus).

use bytes::{BufMut, BytesMut};

/// Tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length field value: body length + 4.
    pub len: usize,
}

impl Header {
    /// Bytes of the whole message, tag included.
    #[inline]
    pub fn total(&self) -> usize {
        self.len + 1
    }
}

/// A frame whose length field is impossible (< 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid message length {0}")]
pub struct BadLength(pub i32);

/// Read the header at the start of `buf`, if 5 bytes are there.
#[inline]
pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, BadLength> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(BadLength(len));
    }
    Ok(Some(Header {
        tag: buf[0],
        len: len as usize,
    }))
}

/// Do the whole messages at the start of `buf` (which begins at a message boundary)
/// include a Terminate?
pub fn holds_terminate(buf: &[u8]) -> bool {
    let mut rest = buf;
    while let Ok(Some(h)) = peek_header(rest) {
        if h.tag == b'X' {
            return true;
        }
        if rest.len() < h.total() {
            return false;
        }
        rest = &rest[h.total()..];
    }
    false
}

/// Split a NUL-terminated string off the front of `b`.
#[inline]
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, b)?;
    Some((&b[..end], &b[end + 1..]))
}

/// [`cstr`] for names (statement, portal), which are mostly empty or a few bytes: a
/// plain loop over the first bytes ends before a SIMD search would have set up.
#[inline]
pub fn name_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    const SHORT: usize = 16;
    let end = match b.iter().take(SHORT).position(|&c| c == 0) {
        Some(i) => i,
        None if b.len() <= SHORT => return None,
        None => SHORT + memchr::memchr(0, &b[SHORT..])?,
    };
    Some((&b[..end], &b[end + 1..]))
}

/// Parse ('P') body: statement name, query text, and the rest (parameter types).
pub struct ParseMsg<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    pub rest: &'a [u8],
}

pub fn parse_parse(body: &[u8]) -> Option<ParseMsg<'_>> {
    let (name, b) = name_cstr(body)?;
    let (query, rest) = cstr(b)?;
    Some(ParseMsg { name, query, rest })
}

/// Bind ('B') body: portal, statement name, rest.
pub fn parse_bind(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (portal, b) = name_cstr(body)?;
    let (stmt, rest) = name_cstr(b)?;
    Some((portal, stmt, rest))
}

/// Describe/Close ('D'/'C') body: kind ('S' or 'P') and name.
pub fn parse_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, b) = body.split_first()?;
    let (name, _) = name_cstr(b)?;
    Some((kind, name))
}

/// Query ('Q') body: the SQL text. The text's terminator is the message's last byte, so
/// it is not searched for. A NUL inside the text is then part of it; PostgreSQL refuses
/// such a Query whole (08P01), so the checks see more than any server would run, never less.
#[inline]
pub fn parse_query(body: &[u8]) -> Option<&[u8]> {
    body.strip_suffix(&[0])
}

/// CommandComplete ('C') body: the command tag, the message's one string (no search).
#[inline]
pub fn command_tag(body: &[u8]) -> &[u8] {
    body.strip_suffix(&[0]).unwrap_or(body)
}

/// ParameterStatus ('S') body: name, value.
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (k, b) = cstr(body)?;
    let (v, _) = cstr(b)?;
    Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?))
}

/// Start a message in `buf`; finish it with [`end`].
#[inline]
pub fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    let at = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    at
}

/// Fill in the length of the message started at `at`.
#[inline]
pub fn end(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at - 1) as i32;
    buf[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
}

/// Write a Parse with statement name `name`, the query and parameter types of `m`.
pub fn write_parse(buf: &mut BytesMut, name: &[u8], m: &ParseMsg<'_>) {
    let at = begin(buf, b'P');
    put_cstr(buf, name);
    put_cstr(buf, m.query);
    buf.extend_from_slice(m.rest);
    end(buf, at);
}

/// Write a Bind naming statement `stmt`, keeping portal and the rest.
pub fn write_bind(buf: &mut BytesMut, portal: &[u8], stmt: &[u8], rest: &[u8]) {
    let at = begin(buf, b'B');
    put_cstr(buf, portal);
    put_cstr(buf, stmt);
    buf.extend_from_slice(rest);
    end(buf, at);
}

/// Write a Describe or Close ('D'/'C') of `kind` ('S'/'P') and `name`.
pub fn write_target(buf: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    let at = begin(buf, tag);
    buf.put_u8(kind);
    put_cstr(buf, name);
    end(buf, at);
}

/// Write a simple Query.
pub fn write_query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    put_cstr(buf, sql.as_bytes());
    end(buf, at);
}

#[inline]
pub fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.extend_from_slice(s);
    buf.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes_and_sane_length() {
        assert_eq!(peek_header(b"Q\0\0"), Ok(None));
        assert_eq!(
            peek_header(b"Q\0\0\0\x05x"),
            Ok(Some(Header { tag: b'Q', len: 5 }))
        );
        assert_eq!(peek_header(b"Q\0\0\0\x03"), Err(BadLength(3)));
        assert_eq!(peek_header(b"Q\xff\xff\xff\xff"), Err(BadLength(-1)));
    }

    #[test]
    fn query_text_and_command_tag_end_where_the_message_does() {
        assert_eq!(parse_query(b"SELECT 1\0"), Some(&b"SELECT 1"[..]));
        assert_eq!(parse_query(b"\0"), Some(&b""[..]));
        // No terminator: malformed.
        assert_eq!(parse_query(b"SELECT 1"), None);
        // A NUL inside stays in the text the checks read (PostgreSQL refuses the message).
        assert_eq!(
            parse_query(b"SELECT 1\0DROP TABLE t\0"),
            Some(&b"SELECT 1\0DROP TABLE t"[..])
        );
        assert_eq!(command_tag(b"SELECT 1\0"), b"SELECT 1");
        assert_eq!(command_tag(b"INSERT 0 5"), b"INSERT 0 5");
    }

    #[test]
    fn terminate_is_found_only_as_a_whole_message() {
        let mut q = BytesMut::new();
        write_query(&mut q, "SELECT 'X\0\0\0\x04'");
        assert!(!holds_terminate(&q));
        let mut with_x = q.clone();
        with_x.extend_from_slice(b"X\0\0\0\x04");
        assert!(holds_terminate(&with_x));
        // Its bytes inside another message are not one.
        let mut inside = BytesMut::from(&q[..q.len() - 6]);
        inside.extend_from_slice(b"X\0\0\0\x04\0");
        assert_eq!(inside.len(), q.len());
        assert!(!holds_terminate(&inside));
        assert!(!holds_terminate(&q[..q.len() - 1]));
        assert!(!holds_terminate(b""));
    }

    #[test]
    fn parse_rewrite_keeps_query_and_types() {
        let mut b = BytesMut::new();
        let at = begin(&mut b, b'P');
        put_cstr(&mut b, b"s1");
        put_cstr(&mut b, b"select $1");
        b.extend_from_slice(&[0, 1, 0, 0, 0, 23]);
        end(&mut b, at);
        let m = parse_parse(&b[5..]).unwrap();
        assert_eq!(m.name, b"s1");
        let mut out = BytesMut::new();
        write_parse(&mut out, b"tg_abc", &m);
        let m2 = parse_parse(&out[5..]).unwrap();
        assert_eq!(m2.name, b"tg_abc");
        assert_eq!(m2.query, b"select $1");
        assert_eq!(m2.rest, &[0, 1, 0, 0, 0, 23]);
        let h = peek_header(&out).unwrap().unwrap();
        assert_eq!(h.total(), out.len());
    }

    #[test]
    fn bind_and_target_rewrite() {
        let mut b = BytesMut::new();
        write_bind(&mut b, b"", b"tg_x", &[0, 0, 0, 0, 0, 0]);
        let (p, s, r) = parse_bind(&b[5..]).unwrap();
        assert_eq!(
            (p, s, r),
            (&b""[..], &b"tg_x"[..], &[0u8, 0, 0, 0, 0, 0][..])
        );
        let mut c = BytesMut::new();
        write_target(&mut c, b'C', b'S', b"tg_x");
        assert_eq!(parse_target(&c[5..]), Some((b'S', &b"tg_x"[..])));
    }

    #[test]
    fn name_cstr_agrees_with_cstr() {
        let long = [b"x".repeat(40), vec![0], b"rest".to_vec()].concat();
        let cases: [&[u8]; 8] = [
            b"",
            b"\0",
            b"\0rest",
            b"name\0rest",
            b"0123456789abcde\0",
            b"0123456789abcdef\0r",
            b"0123456789abcdef",
            &long,
        ];
        for c in cases {
            assert_eq!(name_cstr(c), cstr(c), "{c:?}");
        }
    }

    #[test]
    fn truncated_bodies_are_none() {
        assert!(parse_parse(b"abc").is_none());
        assert!(parse_bind(b"p\0s").is_none());
        assert!(parse_target(b"").is_none());
        assert!(parse_parameter_status(b"k\0v").is_none());
    }
}
