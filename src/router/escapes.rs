//! How PostgreSQL may lex a text, written out for sqlparser's tokenizer.
//!
//! [`neutral_escapes`]: escapes in `E'...'` strings that PostgreSQL accepts and the
//! tokenizer rejects: a byte escape of a non-ASCII byte (`E'caf\xC3\xA9'`, `\303\251`:
//! two escapes make one UTF-8 character, the tokenizer decodes each to a char on its own)
//! and a UTF-16 surrogate pair (`\uD83D\uDE00`). Each is rewritten to an escape of DEL
//! (0x7F) of the same length, so the text tokenizes with every token where it was and the
//! checks read the statement as PostgreSQL does, but for the value of such a string: its
//! non-ASCII characters read as DEL, which is neither a letter of a word the checks look
//! for nor of a name they compare (tenants' schemas and roles are ASCII).
//!
//! [`other_readings`]: the text as a server session would lex it whose settings changed
//! where the proxy could not see it (a function or a DO block that builds the setting's
//! name at run time). The proxy ends such a session when the server reports the change,
//! at the statement's ReadyForQuery; messages the client pipelined behind the statement
//! reach the server before that. Two settings change how a text is lexed:
//! `standard_conforming_strings` off (a backslash escapes in every string) and a client
//! encoding whose two-byte characters may end in the byte of a backslash (SJIS, BIG5, GBK,
//! UHC, JOHAB, GB18030: the server converts the text to UTF-8 before lexing it, and such a
//! backslash is gone). The checks read every such reading too, so whatever the text
//! becomes under them is checked as well.

/// `sql` with the escapes above neutralised, or `None` when it has none. Lexed as
/// PostgreSQL lexes with `standard_conforming_strings` on (the proxy refuses to turn it
/// off): comments (block comments nest), quoted identifiers, standard and dollar-quoted
/// strings are skipped; an `E'` starts an escape string only where a token starts.
pub fn neutral_escapes(sql: &str) -> Option<String> {
    read(sql.as_bytes(), true)
}

/// The readings of `sql` under settings changed unseen (see the module documentation)
/// that differ from the proxy's own, written for the tokenizer; none for a text without
/// a backslash (nearly all).
pub fn other_readings(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    if memchr::memchr(b'\\', b).is_none() {
        return Vec::new();
    }
    // The text as each kind of client encoding leaves it: a backslash that ends a
    // two-byte character is part of that character (an ASCII letter stands for it: both
    // are ordinary in a string and continue a word).
    let mut texts: Vec<Vec<u8>> = vec![b.to_vec()];
    for mblen in [sjis_len, dbcs_len, euc_len, gb18030_len] {
        let mut t = b.to_vec();
        let mut i = 0;
        let mut swallowed = false;
        while i < t.len() {
            let n = mblen(&t[i..]).max(1);
            for k in i + 1..(i + n).min(t.len()) {
                if t[k] == b'\\' {
                    t[k] = b'x';
                    swallowed = true;
                }
            }
            i += n;
        }
        if swallowed && !texts.contains(&t) {
            texts.push(t);
        }
    }
    let mut out = Vec::new();
    for (k, t) in texts.iter().enumerate() {
        let text = std::str::from_utf8(t).expect("ASCII replaced by ASCII");
        if k > 0 {
            out.push(text.to_owned());
        }
        if let Some(off) = read(t, false) {
            out.push(off);
        }
    }
    out.dedup();
    out
}

/// Character lengths by a character's first bytes, as PostgreSQL's `pg_*_mblen` give
/// them (the conversion rejects invalid characters; a length is all that matters here).
fn sjis_len(b: &[u8]) -> usize {
    match b[0] {
        0xA1..=0xDF => 1,
        c if c >= 0x80 => 2,
        _ => 1,
    }
}

/// BIG5, GBK, UHC.
fn dbcs_len(b: &[u8]) -> usize {
    if b[0] >= 0x80 {
        2
    } else {
        1
    }
}

/// JOHAB (PostgreSQL reads its lengths as EUC's).
fn euc_len(b: &[u8]) -> usize {
    match b[0] {
        0x8F => 3,
        c if c >= 0x80 => 2,
        _ => 1,
    }
}

fn gb18030_len(b: &[u8]) -> usize {
    match (b[0], b.get(1)) {
        (c, Some(0x30..=0x39)) if c >= 0x80 => 4,
        (c, _) if c >= 0x80 => 2,
        _ => 1,
    }
}

/// `b` lexed with `standard_conforming_strings` on (`standard`) or off, written for the
/// tokenizer (which reads it on): escapes it rejects neutralised, and with it off every
/// plain string written as the escape string it then is. `None` when that changes
/// nothing that matters: no escape neutralised, and (off) no plain string holds a
/// backslash.
fn read(b: &[u8], standard: bool) -> Option<String> {
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let after_word = i > 0 && is_ident_byte(b[i - 1]);
        let next = b.get(i + 1).copied();
        let end = match c {
            b'-' if next == Some(b'-') => {
                memchr::memchr2(b'\n', b'\r', &b[i..]).map_or(b.len(), |p| i + p)
            }
            b'/' if next == Some(b'*') => block_comment_end(b, i),
            b'"' => quoted_end(b, i, c),
            b'$' if !after_word => dollar_end(b, i),
            // Bit strings and U&'...' take no backslash escapes (with the setting off a
            // U&'...' string is an error).
            b'b' | b'B' | b'x' | b'X' if !after_word && next == Some(b'\'') => {
                quoted_end(b, i + 1, b'\'')
            }
            b'u' | b'U' if !after_word && next == Some(b'&') && b.get(i + 2) == Some(&b'\'') => {
                quoted_end(b, i + 2, b'\'')
            }
            b'e' | b'E' if !after_word && next == Some(b'\'') => {
                out.push(c);
                let (end, neutralised) = escape_string(b, i + 1, &mut out);
                changed |= neutralised;
                i = end;
                continue;
            }
            b'\'' if standard => quoted_end(b, i, c),
            b'\'' => {
                // A space keeps the E from joining a word before the quote (`abc'x'`).
                out.extend_from_slice(b" E");
                let from = out.len();
                let (end, neutralised) = escape_string(b, i, &mut out);
                changed |= neutralised || out[from..].contains(&b'\\');
                i = end;
                continue;
            }
            _ => i + 1,
        };
        out.extend_from_slice(&b[i..end]);
        i = end;
    }
    changed.then(|| String::from_utf8(out).expect("ASCII replaced by ASCII, or inserted"))
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The end of a block comment starting at `i` (nested ones included).
fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end of a `q`-quoted string or identifier starting at `i` (a doubled quote is one).
fn quoted_end(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The end of a dollar-quoted string starting at `i`, or `i + 1` for a `$` that opens
/// none (a parameter `$1`).
fn dollar_end(b: &[u8], i: usize) -> usize {
    let tag_len = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))
        .unwrap_or(b.len() - i - 1);
    let tag_end = i + 1 + tag_len;
    let starts_tag = tag_len == 0 || !b[i + 1].is_ascii_digit();
    if !starts_tag || b.get(tag_end) != Some(&b'$') {
        return i + 1;
    }
    let delim = &b[i..=tag_end];
    memchr::memmem::find(&b[tag_end + 1..], delim)
        .map_or(b.len(), |p| tag_end + 1 + p + delim.len())
}

/// Copy the escape string whose quote is at `q` to `out`, escapes the tokenizer rejects
/// neutralised; returns where it ends and whether one was.
fn escape_string(b: &[u8], q: usize, out: &mut Vec<u8>) -> (usize, bool) {
    out.push(b'\'');
    let mut neutralised = false;
    let mut i = q + 1;
    while i < b.len() {
        match b[i] {
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                out.extend_from_slice(b"''");
                i += 2;
            }
            b'\'' => {
                out.push(b'\'');
                return (i + 1, neutralised);
            }
            b'\\' => {
                let (len, neutral) = escape_at(b, i);
                let len = len.min(b.len() - i);
                match neutral {
                    Some(n) => {
                        out.extend_from_slice(&n);
                        neutralised = true;
                    }
                    None => out.extend_from_slice(&b[i..i + len]),
                }
                i += len;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (b.len(), neutralised)
}

/// The length of the escape at `b[i]` (a backslash), and its replacement when the
/// tokenizer would reject it.
fn escape_at(b: &[u8], i: usize) -> (usize, Option<Vec<u8>>) {
    let digits = |from: usize, max: usize, ok: fn(&u8) -> bool| {
        b[from.min(b.len())..]
            .iter()
            .take(max)
            .take_while(|c| ok(c))
            .count()
    };
    let value = |from: usize, n: usize, radix: u32| {
        u32::from_str_radix(std::str::from_utf8(&b[from..from + n]).unwrap_or(""), radix).ok()
    };
    match b.get(i + 1) {
        Some(b'x') => {
            let n = digits(i + 2, 2, u8::is_ascii_hexdigit);
            let high = n > 0 && value(i + 2, n, 16).is_some_and(|v| v > 0x7F);
            (2 + n, high.then(|| b"\\x7F".to_vec()))
        }
        Some(b'0'..=b'7') => {
            let n = digits(i + 1, 3, |c| (b'0'..=b'7').contains(c));
            let high = value(i + 1, n, 8).is_some_and(|v| v & 0xFF > 0x7F);
            (1 + n, high.then(|| b"\\177".to_vec()))
        }
        Some(&u @ (b'u' | b'U')) => {
            let n = if u == b'u' { 4 } else { 8 };
            if digits(i + 2, n, u8::is_ascii_hexdigit) < n {
                return (2, None);
            }
            let surrogate = value(i + 2, n, 16).is_some_and(|v| (0xD800..=0xDFFF).contains(&v));
            let neutral =
                surrogate.then(|| format!("\\{}{:0>w$}", u as char, "7F", w = n).into_bytes());
            (2 + n, neutral)
        }
        Some(_) => (2, None),
        None => (1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_byte_escapes_and_surrogates_become_del_of_the_same_length() {
        let cases = [
            (r"SELECT E'caf\xC3\xA9'", Some(r"SELECT E'caf\x7F\x7F'")),
            (r"SELECT e'\303\251' AS x", Some(r"SELECT e'\177\177' AS x")),
            (r"SELECT E'\uD83D\uDE00'", Some(r"SELECT E'\u007F\u007F'")),
            (r"SELECT E'\UD83D0000'", None),
            (r"SELECT E'\U0000D83D'", Some(r"SELECT E'\U0000007F'")),
            (r"SELECT E'\x41\101\t\u00e9'", None),
            (r"SELECT E'it''s \xFF'", Some(r"SELECT E'it''s \x7F'")),
            (r"SELECT E'\\xC3'", None),
            (r"SELECT E'\'\xC3'", Some(r"SELECT E'\'\x7F'")),
            (r"SELECT E'\xC'", None),
            (r"SELECT E'\600'", Some(r"SELECT E'\177'")),
            // Not escape strings: standard strings, identifiers, comments, dollar quotes.
            (r"SELECT '\xC3'", None),
            (r"SELECT namE'\xC3'", None),
            (r#"SELECT "E'\xC3'""#, None),
            (r"SELECT 1 -- E'\xC3'", None),
            (
                "SELECT 1 -- x\r, E'\\xC3'",
                Some("SELECT 1 -- x\r, E'\\x7F'"),
            ),
            (r"SELECT /* /* */ E'\xC3' */ 1", None),
            (r"SELECT $$E'\xC3'$$, $t$E'\xC3'$t$", None),
            (r"SELECT $1, E'\xC3'", Some(r"SELECT $1, E'\x7F'")),
            (r"SELECT a$b, E'\xC3'", Some(r"SELECT a$b, E'\x7F'")),
            (
                r"SELECT 'x', E'\xC3', 'y'",
                Some(r"SELECT 'x', E'\x7F', 'y'"),
            ),
            (r"SELECT E'\xC3", Some(r"SELECT E'\x7F")),
            (r"SELECT E'\", None),
        ];
        for (sql, want) in cases {
            assert_eq!(neutral_escapes(sql).as_deref(), want, "{sql}");
        }
    }

    #[test]
    fn other_readings_are_those_of_a_backslash_read_otherwise() {
        assert!(other_readings("SELECT 'a', E'b' -- no backslash").is_empty());
        assert!(other_readings(r"SELECT E'\u65e5\n', $$\$$").is_empty());
        // standard_conforming_strings off: every plain string is an escape string.
        let r = other_readings(r"SELECT 'a\'' ; SET ROLE x; -- '");
        assert_eq!(r, [r"SELECT  E'a\'' ; SET ROLE x; -- '"]);
        // A word before a quote stays a word; bit strings and U&'' take no escapes.
        let r = other_readings(r"SELECT abc'x\\', B'1', U&'\0041', E'\xC3'");
        assert_eq!(r, [r"SELECT abc E'x\\', B'1', U&'\0041', E'\x7F'"]);
        // SJIS: 0x81 (the second byte of Ł in UTF-8) starts a two-byte character that
        // takes the backslash; with the setting off as well, too.
        let r = other_readings("SELECT E'\u{141}\\'; SET ROLE x; --'");
        assert_eq!(
            r,
            [
                "SELECT E'\u{141}x'; SET ROLE x; --'",
                "SELECT E'\u{141}x'; SET ROLE x; --'"
            ][..1]
        );
        // Two-byte UTF-8 characters pair up in the double-byte encodings; a three-byte
        // one (日, E6 97 A5) leaves its last byte to take the backslash.
        assert!(other_readings("SELECT E'caf\u{e9}\\n'").is_empty());
        let r = other_readings("SELECT E'\u{65e5}\\n'");
        assert!(r.contains(&"SELECT E'\u{65e5}xn'".to_owned()), "{r:?}");
    }

    #[test]
    fn neutralised_text_tokenizes() {
        use sqlparser::dialect::PostgreSqlDialect;
        use sqlparser::tokenizer::Tokenizer;
        let sql = r"SELECT E'caf\xC3\xA9 \303\251 \uD83D\uDE00' FROM other.t";
        assert!(Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .is_err());
        let n = neutral_escapes(sql).unwrap();
        assert_eq!(n.len(), sql.len());
        assert!(Tokenizer::new(&PostgreSqlDialect {}, &n).tokenize().is_ok());
    }
}
