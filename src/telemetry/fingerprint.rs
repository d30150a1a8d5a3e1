//! Statement fingerprints: the text of a statement with its literals replaced by `?`, list
//! literals collapsed, comments dropped, unquoted words lowercased and whitespace
//! normalised, plus a stable 64-bit hash of it, so that `SELECT * FROM t WHERE id = 1` and
//! `... id = 2` group together.
//!
//! Pure functions over text, run by the telemetry writer off the hot path. One pass over
//! the bytes with PostgreSQL's lexical rules for what matters here (quotes, `E''` strings,
//! dollar quotes, nested comments, `$n` parameters): statements whose literals differ on
//! every call (`pgbench -S`) are fingerprinted in well under a microsecond.

/// Longest fingerprint text kept; longer ones are cut (the hash covers the whole text).
const MAX_FINGERPRINT: usize = 2048;

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Normalised text.
    pub text: String,
    /// FNV-1a 64 of the full normalised text, as 16 hex digits.
    pub hash: String,
    /// The statement's own text, as sent (literals included).
    pub sample: String,
}

/// Fingerprint every statement of `sql` (statements split at top-level `;`). Always
/// returns at least one entry.
pub fn fingerprints(sql: &str) -> Vec<Fingerprint> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    // The normalised text is about as long as the statement (literals shrink to `?`).
    let mut n = Normaliser::with_capacity(b.len());
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b'-' if next == Some(b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if next == Some(b'*') => i = skip_comment(b, i),
            b';' => {
                if !n.is_empty() {
                    out.push(n.finish(&sql[start..i]));
                    n = Normaliser::default();
                }
                i += 1;
                start = i;
            }
            b'\'' => {
                i = skip_string(b, i, false);
                n.push("?", Kind::Lit);
            }
            b'e' | b'E' if next == Some(b'\'') => {
                i = skip_string(b, i + 1, true);
                n.push("?", Kind::Lit);
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == Some(b'\'') => {
                i = skip_string(b, i + 1, false);
                n.push("?", Kind::Lit);
            }
            b'u' | b'U' if next == Some(b'&') && b.get(i + 2) == Some(&b'\'') => {
                i = skip_string(b, i + 2, false);
                n.push("?", Kind::Lit);
            }
            b'"' => {
                let end = skip_quoted_ident(b, i);
                n.push(&sql[i..end], Kind::Word);
                i = end;
            }
            b'$' if next.is_some_and(|c| c.is_ascii_digit()) => {
                let end = i + 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                n.push(&sql[i..end], Kind::Word);
                i = end;
            }
            b'$' => match dollar_quote_end(b, i) {
                Some(end) => {
                    n.push("?", Kind::Lit);
                    i = end;
                }
                None => {
                    n.push("$", Kind::Op);
                    i += 1;
                }
            },
            b'0'..=b'9' => {
                i = skip_number(b, i);
                n.push("?", Kind::Lit);
            }
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                i = skip_number(b, i);
                n.push("?", Kind::Lit);
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let end = i + b[i..]
                    .iter()
                    .take_while(|&&c| {
                        c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
                    })
                    .count();
                n.push_word(&sql[i..end]);
                i = end;
            }
            b':' if next == Some(b':') => {
                n.push("::", Kind::Glue);
                i += 2;
            }
            b'(' | b'[' => {
                n.push(&sql[i..i + 1], Kind::Open);
                i += 1;
            }
            b')' | b']' => {
                n.push(&sql[i..i + 1], Kind::Close);
                i += 1;
            }
            b',' => {
                n.push(",", Kind::Comma);
                i += 1;
            }
            b'.' => {
                n.push(".", Kind::Glue);
                i += 1;
            }
            _ => {
                // An operator: a run of operator characters (stopping before a comment).
                let mut end = i + 1;
                while end < b.len()
                    && b"+-*/<>=~!@#%^&|`?".contains(&b[end])
                    && !(b[end] == b'-' && b.get(end + 1) == Some(&b'-'))
                    && !(b[end] == b'/' && b.get(end + 1) == Some(&b'*'))
                {
                    end += 1;
                }
                let end = if sql.is_char_boundary(end) {
                    end
                } else {
                    i + 1
                };
                n.push(sql.get(i..end).unwrap_or("?"), Kind::Op);
                i = end.max(i + 1);
            }
        }
    }
    if !n.is_empty() || out.is_empty() {
        out.push(n.finish(&sql[start.min(sql.len())..]));
    }
    out
}

/// Past a `/* ... */` comment (they nest in PostgreSQL).
fn skip_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
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

/// Past a quoted string starting at the quote `b[i]`; `''` is a quote inside, and with
/// `backslash` (E'' strings) so is `\'`.
fn skip_string(b: &[u8], i: usize, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if backslash => j += 2,
            b'\'' if b.get(j + 1) == Some(&b'\'') => j += 2,
            b'\'' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

fn skip_quoted_ident(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == b'"' {
            if b.get(j + 1) == Some(&b'"') {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// The end of a dollar-quoted string starting at `b[i] == '$'`, if it is one.
fn dollar_quote_end(b: &[u8], i: usize) -> Option<usize> {
    let tag_len = b[i + 1..].iter().position(|&c| c == b'$').filter(|&p| {
        b[i + 1..i + 1 + p].iter().enumerate().all(|(k, &c)| {
            c == b'_' || c >= 0x80 || c.is_ascii_alphabetic() || (k > 0 && c.is_ascii_digit())
        })
    })?;
    let tag = &b[i..i + tag_len + 2];
    let body = i + tag.len();
    let close = b[body..].windows(tag.len()).position(|w| w == tag)?;
    Some(body + close + tag.len())
}

fn skip_number(b: &[u8], i: usize) -> usize {
    let mut j = i;
    if b[j] == b'0' && matches!(b.get(j + 1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')) {
        j += 2;
        while j < b.len() && (b[j].is_ascii_hexdigit() || b[j] == b'_') {
            j += 1;
        }
        return j;
    }
    while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'_' || b[j] == b'.') {
        j += 1;
    }
    if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
        let k = j + 1 + usize::from(matches!(b.get(j + 1), Some(b'+' | b'-')));
        if b.get(k).is_some_and(u8::is_ascii_digit) {
            j = k;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
    }
    j
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Lit,
    Op,
    Open,
    Close,
    Comma,
    /// `.` and `::`: no space on either side.
    Glue,
}

/// Builds normalised text token by token.
#[derive(Default)]
struct Normaliser {
    text: String,
    /// The last two tokens: kind and where each starts in `text`.
    last: Option<(Kind, usize)>,
    before: Option<(Kind, usize)>,
}

impl Normaliser {
    fn with_capacity(n: usize) -> Self {
        Normaliser {
            text: String::with_capacity(n.min(MAX_FINGERPRINT)),
            ..Default::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    fn push_word(&mut self, w: &str) {
        let at = self.glue(Kind::Word);
        self.text.push_str(w);
        self.text[at..].make_ascii_lowercase();
        self.shift(Kind::Word, at);
    }

    fn push(&mut self, tok: &str, kind: Kind) {
        // Collapse `?, ?, ?` to `?`.
        if kind == Kind::Lit {
            if let (Some((Kind::Comma, comma)), Some((Kind::Lit, lit))) = (self.last, self.before) {
                self.text.truncate(comma);
                self.last = Some((Kind::Lit, lit));
                self.before = None;
                return;
            }
        }
        let at = self.glue(kind);
        self.text.push_str(tok);
        self.shift(kind, at);
    }

    /// Add the space before a token when it needs one; returns where the token starts.
    fn glue(&mut self, kind: Kind) -> usize {
        let space = match self.last {
            None => false,
            Some((prev, _)) => {
                !matches!(kind, Kind::Comma | Kind::Close | Kind::Glue)
                    && !matches!(prev, Kind::Open | Kind::Glue)
            }
        };
        if space {
            self.text.push(' ');
        }
        self.text.len()
    }

    fn shift(&mut self, kind: Kind, at: usize) {
        self.before = self.last;
        self.last = Some((kind, at));
    }

    fn finish(mut self, sample: &str) -> Fingerprint {
        let hash = hash_hex(&self.text);
        let kept = cut(&self.text, MAX_FINGERPRINT).len();
        self.text.truncate(kept);
        Fingerprint {
            hash,
            text: self.text,
            sample: sample.trim().to_owned(),
        }
    }
}

/// FNV-1a 64: stable across builds and platforms (unlike `DefaultHasher`).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash as 16 lower-case hex digits (`{:016x}`, without the formatting machinery:
/// this runs for every statement).
fn hash_hex(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(s.as_bytes());
    (0..16)
        .map(|i| char::from(HEX[((h >> (60 - 4 * i)) & 0xf) as usize]))
        .collect()
}

/// `s` cut to at most `max` bytes on a char boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::fingerprints;

    fn fp(s: &str) -> String {
        fingerprints(s).remove(0).text
    }

    #[test]
    fn literals_and_lists() {
        let cases = [
            (
                "SELECT * FROM t WHERE id = 1",
                "select * from t where id = ?",
            ),
            (
                "select *  from T where id=2",
                "select * from t where id = ?",
            ),
            ("SELECT 'x''y', E'a\\'b', $$z$$", "select ?"),
            (
                "SELECT * FROM t WHERE id IN (1, 2, 3)",
                "select * from t where id in (?)",
            ),
            (
                "SELECT * FROM t WHERE id IN (4)",
                "select * from t where id in (?)",
            ),
            (
                "SELECT a FROM \"T\" WHERE b = $1",
                "select a from \"T\" where b = $1",
            ),
            ("/* tenant: acme */ SELECT 1 -- x", "select ?"),
            ("SELECT t.a::int FROM s.t", "select t.a::int from s.t"),
            ("SELECT 1.5e-3, 0x1F, .5 FROM t", "select ? from t"),
            ("SELECT $tag$ a ; b $tag$ || x", "select ? || x"),
            ("SELECT /* a /* nested */ b */ 1", "select ?"),
            (
                "SELECT ARRAY[1, 2] @> ARRAY[3]",
                "select array [?] @> array [?]",
            ),
            ("select a-->1\n from t", "select a from t"),
            ("SELECT U&'d\\0061t' , B'101'", "select ?"),
        ];
        for (sql, want) in cases {
            assert_eq!(fp(sql), want, "{sql}");
        }
    }

    #[test]
    fn same_shape_same_hash() {
        let a = fingerprints("SELECT * FROM t WHERE id = 1").remove(0);
        let b = fingerprints("select * FROM t WHERE id = 99").remove(0);
        let c = fingerprints("select * FROM u WHERE id = 99").remove(0);
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.hash.len(), 16);
        assert_eq!(a.sample, "SELECT * FROM t WHERE id = 1");
    }

    #[test]
    fn splits_statements() {
        let f = fingerprints("BEGIN; UPDATE t SET a = 'x;y' WHERE id = 2; COMMIT;");
        let texts: Vec<_> = f.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            texts,
            ["begin", "update t set a = ? where id = ?", "commit"]
        );
        assert_eq!(f[1].sample, "UPDATE t SET a = 'x;y' WHERE id = 2");
        assert_eq!(fingerprints("").len(), 1);
        assert_eq!(fingerprints("SELECT 'unterminated").len(), 1);
    }
}
