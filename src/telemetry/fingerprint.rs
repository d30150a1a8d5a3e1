//! Statement fingerprints: the text of a statement with its literals replaced by `?`, list
//! literals collapsed, comments dropped and whitespace normalised, plus a stable 64-bit hash
//! of it, so that `SELECT * FROM t WHERE id = 1` and `... id = 2` group together.
//!
//! Pure functions over text, run by the telemetry writer off the hot path (and cached there
//! by text). Uses sqlparser's PostgreSQL tokenizer, so quoting, dollar quotes, `E''` strings
//! and comments are read the way PostgreSQL reads them.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

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

/// Fingerprint every statement of `sql` (statements split at top-level `;`). A text the
/// tokenizer cannot read (say, an unterminated quote) is one statement whose fingerprint
/// is its whitespace-collapsed text. Always returns at least one entry.
pub fn fingerprints(sql: &str) -> Vec<Fingerprint> {
    let tokens = match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
        Ok(t) => t,
        Err(_) => return vec![fallback(sql)],
    };
    let mut out = Vec::new();
    let mut cur = Normaliser::default();
    let mut sample = String::new();
    for tok in &tokens {
        if *tok == Token::SemiColon {
            if !cur.is_empty() {
                out.push(cur.finish(std::mem::take(&mut sample)));
            }
            cur = Normaliser::default();
            sample.clear();
            continue;
        }
        if sample.is_empty() && matches!(tok, Token::Whitespace(_)) {
            continue;
        }
        sample.push_str(&tok.to_string());
        cur.push(tok);
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur.finish(sample));
    }
    out
}

fn fallback(sql: &str) -> Fingerprint {
    let text = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    Fingerprint {
        hash: hash_hex(&text),
        text: cut(&text, MAX_FINGERPRINT).to_owned(),
        sample: sql.trim().to_owned(),
    }
}

/// Builds normalised text token by token.
#[derive(Default)]
struct Normaliser {
    parts: Vec<String>,
}

impl Normaliser {
    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    fn push(&mut self, tok: &Token) {
        let part = match tok {
            Token::Whitespace(_) | Token::EOF => return,
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_) => "?".to_owned(),
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
            t => t.to_string(),
        };
        // Collapse `(?, ?, ?)` and `ARRAY[?, ?]` lists to one `?`.
        if part == "?" && self.parts.len() >= 2 {
            let n = self.parts.len();
            if self.parts[n - 1] == "," && self.parts[n - 2] == "?" {
                self.parts.pop();
                return;
            }
        }
        self.parts.push(part);
    }

    fn finish(self, sample: String) -> Fingerprint {
        let mut text = String::new();
        for (i, p) in self.parts.iter().enumerate() {
            let glue = i > 0
                && !matches!(p.as_str(), "," | ")" | "]" | "." | "::")
                && !matches!(self.parts[i - 1].as_str(), "(" | "[" | "." | "::");
            if glue {
                text.push(' ');
            }
            text.push_str(p);
        }
        Fingerprint {
            hash: hash_hex(&text),
            text: cut(&text, MAX_FINGERPRINT).to_owned(),
            sample: sample.trim_end().to_owned(),
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

fn hash_hex(s: &str) -> String {
    format!("{:016x}", fnv1a(s.as_bytes()))
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
