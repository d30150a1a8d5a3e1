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
//! [`for_each_other_reading`]: the text as a server session would lex it whose settings
//! changed where the proxy could not see it (a function or a DO block that builds the
//! setting's name at run time). The proxy ends such a session when the server reports
//! the change, at the statement's ReadyForQuery; messages the client pipelined behind
//! the statement reach the server before that. Two settings change how a text is lexed:
//! `standard_conforming_strings` off (a backslash escapes in every string) and a client
//! encoding whose two-byte characters may end in an ASCII byte (SJIS, BIG5, GBK, UHC,
//! GB18030: the server converts the text to UTF-8 before lexing it, and such a byte,
//! `\`, `|`, a letter, is part of a character, an identifier character to the lexer).
//! The checks read every such reading too, so whatever the text becomes under them is
//! checked as well. A reading PostgreSQL could not lex (a string left open) or convert
//! (a byte sequence the encoding does not have) is no reading: the server would fail
//! the whole message.

/// `sql` with the escapes above neutralised, or `None` when it has none. Lexed as
/// PostgreSQL lexes with `standard_conforming_strings` on (the proxy refuses to turn it
/// off): comments (block comments nest), quoted identifiers, standard and dollar-quoted
/// strings are skipped; an `E'` starts an escape string only where a token starts.
pub fn neutral_escapes(sql: &str) -> Option<String> {
    let r = read(sql.as_bytes(), true);
    r.changed.then(|| r.text())
}

/// Call `f` with each reading of `sql` under settings changed unseen (see the module
/// documentation) that can differ from the proxy's own, written for the tokenizer, and
/// whether it is one with `standard_conforming_strings` off. None for a text without a
/// backslash or a non-ASCII byte (nearly all). One reading is held at a time.
pub fn for_each_other_reading(sql: &str, mut f: impl FnMut(&str, bool)) {
    let b = sql.as_bytes();
    let backslash = memchr::memchr(b'\\', b).is_some();
    if !backslash && b.is_ascii() {
        return;
    }
    if backslash {
        let off = read(b, false);
        if off.changed && off.complete {
            f(&off.text(), true);
        }
    }
    if b.is_ascii() {
        return;
    }
    for encoding in [
        Encoding::Sjis,
        Encoding::Big5,
        Encoding::Gbk,
        Encoding::Uhc,
        Encoding::Gb18030,
    ] {
        // The text as the encoding leaves it: an ASCII byte that ends a two-byte
        // character is part of it (an ASCII letter stands for it: both are ordinary in
        // a string and continue a word).
        let Some(t) = encoding.absorbed(b) else {
            continue;
        };
        let on = read(&t, true);
        if on.complete {
            f(&on.text_or(&t), false);
        }
        if memchr::memchr(b'\\', &t).is_some() {
            let off = read(&t, false);
            if off.complete {
                f(&off.text(), true);
            }
        }
    }
}

/// The client encodings whose characters can end in an ASCII byte, by the byte ranges
/// PostgreSQL converts from (its verifiers and conversion tables; JOHAB's verifier
/// takes no ASCII second byte).
#[derive(Clone, Copy)]
enum Encoding {
    Sjis,
    Big5,
    Gbk,
    Uhc,
    Gb18030,
}

impl Encoding {
    /// The length of the valid character at the start of `b` (not empty), or `None`.
    fn char_len(self, b: &[u8]) -> Option<usize> {
        let c = b[0];
        if c < 0x80 || (matches!(self, Encoding::Sjis) && (0xA1..=0xDF).contains(&c)) {
            // ASCII, or an SJIS half-width kana (also the text's last byte)
            return Some(1);
        }
        let second = b.get(1).copied()?;
        let in_any =
            |x: u8, ranges: &[(u8, u8)]| ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&x));
        match self {
            Encoding::Sjis => match c {
                0x81..=0x9F | 0xE0..=0xFC if in_any(second, &[(0x40, 0x7E), (0x80, 0xFC)]) => {
                    Some(2)
                }
                _ => None,
            },
            Encoding::Big5 => {
                (c >= 0x81 && c != 0xFF && in_any(second, &[(0x40, 0x7E), (0xA1, 0xFE)]))
                    .then_some(2)
            }
            Encoding::Gbk => {
                (c >= 0x81 && c != 0xFF && in_any(second, &[(0x40, 0x7E), (0x80, 0xFE)]))
                    .then_some(2)
            }
            Encoding::Uhc => (c >= 0x81
                && c != 0xFF
                && in_any(second, &[(0x41, 0x5A), (0x61, 0x7A), (0x81, 0xFE)]))
            .then_some(2),
            Encoding::Gb18030 => {
                if c == 0xFF {
                    None
                } else if (0x30..=0x39).contains(&second) {
                    let (b3, b4) = (b.get(2).copied()?, b.get(3).copied()?);
                    ((0x81..=0xFE).contains(&b3) && (0x30..=0x39).contains(&b4)).then_some(4)
                } else {
                    in_any(second, &[(0x40, 0x7E), (0x80, 0xFE)]).then_some(2)
                }
            }
        }
    }

    /// `b` with each ASCII byte a character of this encoding takes replaced by `x`; `None`
    /// when no character takes one, or `b` is not text in this encoding.
    fn absorbed(self, b: &[u8]) -> Option<Vec<u8>> {
        let mut t: Option<Vec<u8>> = None;
        let mut i = 0;
        while i < b.len() {
            let n = self.char_len(&b[i..])?;
            for k in i + 1..i + n {
                if b[k] < 0x80 && !b[k].is_ascii_digit() {
                    t.get_or_insert_with(|| b.to_vec())[k] = b'x';
                }
            }
            i += n;
        }
        t
    }
}

/// A text lexed by [`read`].
struct Reading {
    out: Vec<u8>,
    /// Something was rewritten that can matter: an escape neutralised, or (setting
    /// off) a plain string holding a backslash written as an escape string.
    changed: bool,
    /// The lexer ended outside any string, quoted identifier or comment.
    complete: bool,
}

impl Reading {
    fn text(self) -> String {
        String::from_utf8(self.out).expect("ASCII replaced by ASCII, or inserted")
    }

    fn text_or(self, unchanged: &[u8]) -> String {
        if self.changed {
            self.text()
        } else {
            String::from_utf8(unchanged.to_vec()).expect("ASCII replaced by ASCII")
        }
    }
}

/// `b` lexed with `standard_conforming_strings` on (`standard`) or off, written for the
/// tokenizer (which reads it on): escapes it rejects neutralised, and with it off every
/// plain string written as the escape string it then is.
fn read(b: &[u8], standard: bool) -> Reading {
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let after_word = i > 0 && is_ident_byte(b[i - 1]);
        let next = b.get(i + 1).copied();
        // An escape string: E'...', and with the setting off any plain string, written
        // as one (a space keeps the E from joining a word before the quote: `abc'x'`).
        let quote = match c {
            b'e' | b'E' if !after_word && next == Some(b'\'') => Some(i + 1),
            b'\'' if !standard => Some(i),
            _ => None,
        };
        if let Some(mut q) = quote {
            out.extend_from_slice(if q == i { b" E" } else { &b[i..q] });
            let plain = q == i;
            // A quote after whitespace with a newline continues the string in the same
            // mode (scan.l's quotecontinue), written as another escape string.
            loop {
                let from = out.len();
                let (end, neutralised) = escape_string(b, q, &mut out);
                changed |= neutralised || (plain && out[from..].contains(&b'\\'));
                let Ok(end) = end else {
                    return Reading {
                        out,
                        changed,
                        complete: false,
                    };
                };
                match continued_at(b, end) {
                    Some(next) => {
                        out.extend_from_slice(&b[end..next]);
                        out.push(b'E');
                        q = next;
                        // the tokenizer reads it otherwise unless written so
                        changed = true;
                    }
                    None => {
                        i = end;
                        break;
                    }
                }
            }
            continue;
        }
        let end = match c {
            // A comment ends at a newline or carriage return, as in scan.l.
            b'-' if next == Some(b'-') => {
                Ok(memchr::memchr2(b'\n', b'\r', &b[i..]).map_or(b.len(), |p| i + p))
            }
            b'/' if next == Some(b'*') => block_comment_end(b, i),
            b'"' => quoted_end(b, i, c),
            b'$' if !after_word => dollar_end(b, i),
            // Bit strings and U&'...' take no backslash escapes (with the setting off a
            // U&'...' string is an error).
            b'b' | b'B' | b'x' | b'X' if !after_word && next == Some(b'\'') => quoted_run(b, i + 1),
            b'u' | b'U' if !after_word && next == Some(b'&') && b.get(i + 2) == Some(&b'\'') => {
                quoted_run(b, i + 2)
            }
            // With the setting on: a plain string (off, it was read above).
            b'\'' => quoted_run(b, i),
            _ => Ok(i + 1),
        };
        match end {
            Ok(end) => {
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            Err(_) => {
                out.extend_from_slice(&b[i..]);
                return Reading {
                    out,
                    changed,
                    complete: false,
                };
            }
        }
    }
    Reading {
        out,
        changed,
        complete: true,
    }
}

/// A string without escapes starting at the quote `q`, with its continuations (in the
/// same mode); `Err` when it is not closed.
fn quoted_run(b: &[u8], q: usize) -> Result<usize, ()> {
    let mut end = quoted_end(b, q, b'\'')?;
    while let Some(next) = continued_at(b, end) {
        end = quoted_end(b, next, b'\'')?;
    }
    Ok(end)
}

/// Where a string that closed at `end` continues: the quote after whitespace holding a
/// newline (`--` comments count as whitespace), as scan.l's `quotecontinue` reads it.
fn continued_at(b: &[u8], end: usize) -> Option<usize> {
    let mut j = end;
    let mut newline = false;
    loop {
        match b.get(j)? {
            // A vertical tab is whitespace from PostgreSQL 17 (before, it makes the text
            // a syntax error: reading it as whitespace is then harmless).
            b' ' | b'\t' | b'\x0c' | b'\x0b' => j += 1,
            b'\n' | b'\r' => {
                newline = true;
                j += 1;
            }
            b'-' if b.get(j + 1) == Some(&b'-') => {
                j = memchr::memchr2(b'\n', b'\r', &b[j..]).map(|p| j + p)?;
            }
            b'\'' if newline => return Some(j),
            _ => return None,
        }
    }
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The end of a block comment starting at `i` (nested ones included); `Err` when it
/// is not closed.
fn block_comment_end(b: &[u8], mut i: usize) -> Result<usize, ()> {
    let mut depth = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err(())
}

/// The end of a `q`-quoted string or identifier starting at `i` (a doubled quote is
/// one); `Err` when it is not closed.
fn quoted_end(b: &[u8], mut i: usize, q: u8) -> Result<usize, ()> {
    i += 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Ok(i + 1);
        }
        i += 1;
    }
    Err(())
}

/// The end of a dollar-quoted string starting at `i`, or `i + 1` for a `$` that opens
/// none (a parameter `$1`); `Err` when it is not closed.
fn dollar_end(b: &[u8], i: usize) -> Result<usize, ()> {
    let tag_len = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))
        .unwrap_or(b.len() - i - 1);
    let tag_end = i + 1 + tag_len;
    let starts_tag = tag_len == 0 || !b[i + 1].is_ascii_digit();
    if !starts_tag || b.get(tag_end) != Some(&b'$') {
        return Ok(i + 1);
    }
    let delim = &b[i..=tag_end];
    memchr::memmem::find(&b[tag_end + 1..], delim)
        .map(|p| tag_end + 1 + p + delim.len())
        .ok_or(())
}

/// Copy the escape string whose quote is at `q` to `out`, escapes the tokenizer rejects
/// neutralised; returns where it ends (`Err` when it is not closed) and whether one was.
fn escape_string(b: &[u8], q: usize, out: &mut Vec<u8>) -> (Result<usize, ()>, bool) {
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
                return (Ok(i + 1), neutralised);
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
    (Err(()), neutralised)
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

    fn readings(sql: &str) -> Vec<(String, bool)> {
        let mut v = Vec::new();
        for_each_other_reading(sql, |t, off| v.push((t.to_owned(), off)));
        v
    }

    #[test]
    fn other_readings_are_those_of_a_backslash_or_a_character_read_otherwise() {
        assert!(readings("SELECT 'a', E'b' -- plain ASCII").is_empty());
        assert!(readings(r"SELECT E'\u65e5\n', $$\$$").is_empty());
        // standard_conforming_strings off: every plain string is an escape string.
        let r = readings(r"SELECT 'a\'' ; SET ROLE x; -- '");
        assert_eq!(r, [(r"SELECT  E'a\'' ; SET ROLE x; -- '".to_owned(), true)]);
        // A word before a quote stays a word; bit strings and U&'' take no escapes.
        let r = readings(r"SELECT abc'x\\', B'1', U&'\0041', E'\xC3'");
        assert_eq!(
            r,
            [(
                r"SELECT abc E'x\\', B'1', U&'\0041', E'\x7F'".to_owned(),
                true
            )]
        );
        // A reading PostgreSQL could not lex is none: `ESCAPE '\'` leaves the string
        // open with the setting off.
        assert!(readings(r"SELECT 1 FROM t WHERE a LIKE $1 ESCAPE '\'").is_empty());
        // SJIS: 0x81 (the second byte of Ł in UTF-8) starts a two-byte character that
        // takes the next byte: a backslash, or a `|` before a dollar quote, which then
        // continues a word.
        let r = readings("SELECT E'\u{141}\\'; SET ROLE x; --'");
        assert!(
            r.contains(&("SELECT E'\u{141}x'; SET ROLE x; --'".to_owned(), false)),
            "{r:?}"
        );
        let r = readings("SELECT 1 AS \u{141}|$$; SET ROLE x; SELECT 1 AS \u{141}|$$");
        assert!(
            r.contains(&(
                "SELECT 1 AS \u{141}x$$; SET ROLE x; SELECT 1 AS \u{141}x$$".to_owned(),
                false
            )),
            "{r:?}"
        );
        // Two-byte UTF-8 characters pair up in the double-byte encodings, and text the
        // encoding does not have (日 then a quote: A5 27 is no BIG5 character) is no
        // reading.
        assert!(readings("SELECT E'caf\u{e9}\\n'").is_empty());
        assert!(readings("SELECT '\u{65e5}', 1").is_empty());
    }

    #[test]
    fn a_string_continues_after_whitespace_with_a_newline() {
        assert_eq!(continued_at(b"'a' \n 'b'", 3), Some(6));
        assert_eq!(continued_at(b"'a' 'b'", 3), None);
        assert_eq!(continued_at(b"'a' -- c\n'b'", 3), Some(9));
        assert_eq!(continued_at(b"'a'\n-- c\n'b'", 3), Some(9));
        assert_eq!(continued_at(b"'a'\n/* */'b'", 3), None);
        assert_eq!(continued_at(b"'a'\x0b\n'b'", 3), Some(5));
        assert_eq!(continued_at(b"'a'\x0c\n'b'", 3), Some(5));
        // Strings without escapes continue in their own mode.
        assert_eq!(quoted_run(b"'a'\n'b' x", 0), Ok(7));
        assert!(read(b"SELECT B'1'\n'\\' -- \\'\n", false).complete);
        // An escape string's continuation is one too: with the setting on, \' there
        // escapes the quote.
        let r = read(b"SELECT E'a'\n'\\'' x", true);
        assert!(r.complete);
        assert_eq!(r.text(), "SELECT E'a'\nE'\\'' x");
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
