//! What the relay's checks need to know about a statement's text, found in one pass: the
//! guard's quick allow ([`TextFacts::trivially_allowed`]), whether the text can leave
//! session state on a pooled connection ([`TextFacts::dirties`]) and whether it names
//! `search_path` (the schema rewrite). Every Query and Parse needs all three; one table
//! scan replaces one per check. Pure: no IO, no configuration.

use super::text::Words;

/// The words the checks look for; a word's index is its bit in [`TextFacts`].
static WORDS: Words<12> = Words::new([
    // The guard: every refusal needs one of these, or a `.` (outside strict mode).
    b"role",
    b"authorization",
    b"search_path",
    b"set_config",
    b"copy",
    b"pg_",
    b"lo_",
    b"dblink",
    // Session state a statement can leave behind (with set_config above).
    b"advisory",
    b"temp",
    b"create",
    b"into",
]);

const GUARD_WORDS: u16 = 0x00ff;
const SEARCH_PATH: u16 = 1 << 2;
const SET_CONFIG: u16 = 1 << 3;
const ADVISORY: u16 = 1 << 8;
const TEMP: u16 = 1 << 9;
const CREATE_OR_INTO: u16 = 1 << 10 | 1 << 11;

/// The words found in a statement's text (anywhere, ignoring case; the checks built on
/// them are conservative), and whether it holds a `.`, `\` or `&`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextFacts {
    words: u16,
    /// A `.` (schema-qualified name), or `\` / `&` (escaped identifiers such as `U&"..."`,
    /// which always get the guard's full analysis).
    special: bool,
}

impl TextFacts {
    pub fn of(sql: &[u8]) -> Self {
        let mut words = 0u16;
        WORDS.scan(sql, |k| {
            words |= 1 << k;
            false
        });
        TextFacts {
            words,
            special: memchr::memchr3(b'.', b'\\', b'&', sql).is_some(),
        }
    }

    /// Cheap proof that the text cannot trip any guard check outside strict mode: every
    /// refusal needs a schema-qualified name or one of a few words (role, authorization,
    /// search_path, set_config, copy, and the forbidden functions' prefixes).
    pub fn trivially_allowed(&self) -> bool {
        !self.special && self.words & GUARD_WORDS == 0
    }

    /// Can the text leave session state behind on a pooled connection (advisory locks,
    /// `set_config`, temporary tables)? Statements that do mark the connection for a reset.
    pub fn dirties(&self) -> bool {
        self.words & (ADVISORY | SET_CONFIG) != 0
            || (self.words & TEMP != 0 && self.words & CREATE_OR_INTO != 0)
    }

    pub fn names_search_path(&self) -> bool {
        self.words & SEARCH_PATH != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_statements() {
        let pgbench = TextFacts::of(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1");
        assert!(pgbench.trivially_allowed());
        assert!(!pgbench.dirties());
        assert!(!pgbench.names_search_path());

        for refusable in [
            &b"SELECT * FROM a.b"[..],
            b"SELECT U&\"\\0070g\"()",
            b"SET ROLE x",
            b"select PG_read_file('x')",
            b"COPY t TO PROGRAM 'x'",
            b"set search_path = other",
        ] {
            let f = TextFacts::of(refusable);
            assert!(
                !f.trivially_allowed(),
                "{:?}",
                String::from_utf8_lossy(refusable)
            );
        }
        assert!(TextFacts::of(b"SET search_path = a").names_search_path());

        for dirty in [
            &b"select pg_advisory_lock(1)"[..],
            b"CREATE TEMP TABLE x()",
            b"select 1 into temporary t",
            b"SELECT set_config('a', 'b', false)",
        ] {
            assert!(
                TextFacts::of(dirty).dirties(),
                "{:?}",
                String::from_utf8_lossy(dirty)
            );
        }
        for clean in [&b"select temperature from t"[..], b"select 1", b""] {
            assert!(!TextFacts::of(clean).dirties());
        }
    }
}
