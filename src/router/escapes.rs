//! Escapes in `E'...'` strings that PostgreSQL accepts and sqlparser's tokenizer rejects:
//! a byte escape of a non-ASCII byte (`E'caf\xC3\xA9'`, `\303\251`: two escapes make one
//! UTF-8 character, the tokenizer decodes each to a char on its own) and a UTF-16
//! surrogate pair (`\uD83D\uDE00`). [`neutral_escapes`] rewrites each of them to an escape
//! of DEL (0x7F) of the same length, so the text tokenizes with every token where it was
//! and the checks read the statement as PostgreSQL does, but for the value of such a
//! string: its non-ASCII characters read as DEL, which is neither a letter of a word the
//! checks look for nor of a name they compare (tenants' schemas and roles are ASCII).

/// `sql` with the escapes above neutralised, or `None` when it has none. Lexed as
/// PostgreSQL lexes with `standard_conforming_strings` on (the proxy refuses to turn it
/// off): comments (block comments nest), quoted identifiers, standard and dollar-quoted
/// strings are skipped; an `E'` starts an escape string only where a token starts.
pub fn neutral_escapes(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let after_word = i > 0 && is_ident_byte(b[i - 1]);
        i = match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |p| i + p)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i),
            b'\'' | b'"' => quoted_end(b, i, c),
            b'$' if !after_word => dollar_end(b, i),
            b'e' | b'E' if !after_word && b.get(i + 1) == Some(&b'\'') => {
                escape_string(b, i + 1, &mut out)
            }
            _ => i + 1,
        };
    }
    out.map(|v| String::from_utf8(v).expect("ASCII replaced by ASCII"))
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

/// Walk the escape string whose quote is at `q`, neutralising escapes into `out` (a copy
/// of the text made at the first one); returns where the string ends.
fn escape_string(b: &[u8], q: usize, out: &mut Option<Vec<u8>>) -> usize {
    let mut i = q + 1;
    while i < b.len() {
        match b[i] {
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            b'\\' => {
                let (len, neutral) = escape_at(b, i);
                if let Some(n) = neutral {
                    out.get_or_insert_with(|| b.to_vec())[i..i + n.len()].copy_from_slice(&n);
                }
                i += len;
            }
            _ => i += 1,
        }
    }
    b.len()
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
