//! What the relay's checks need to know about a statement's text, found in one pass: the
//! guard's quick allow ([`TextFacts::trivially_allowed`]), whether the text can leave
//! session state on a pooled connection ([`TextFacts::dirties`]) and whether it names
//! `search_path` (the schema rewrite). Every Query and Parse needs all three; one table
//! scan replaces one per check. Pure: no IO, no configuration.

use super::text::Words;

/// The words the checks look for; a word's index is its bit in [`TextFacts`].
static WORDS: Words<15> = Words::new([
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
    // The guard again (standard_conforming_strings, client_encoding, SET NAMES).
    b"conforming",
    b"encoding",
    b"names",
]);

const GUARD_WORDS: u16 = 0x00ff | 0b111 << 12;
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
    /// search_path, set_config, copy, standard_conforming_strings, client_encoding, names,
    /// and the forbidden functions' prefixes).
    pub fn trivially_allowed(&self) -> bool {
        !self.special && self.words & GUARD_WORDS == 0
    }

    /// Can the text leave session state behind on a pooled connection (advisory locks,
    /// `set_config`, temporary tables)? Statements that do mark the connection for a reset.
    pub fn dirties(&self) -> bool {
        self.words & (ADVISORY | SET_CONFIG) != 0
            || (self.words & TEMP != 0 && self.words & CREATE_OR_INTO != 0)
    }

    /// Can the text hold a qualified name (`schema.table`)? False when it has no `.`.
    pub fn may_qualify(&self) -> bool {
        self.special
    }

    pub fn names_search_path(&self) -> bool {
        self.words & SEARCH_PATH != 0
    }
}

/// What was found in the last Parse text a session sent, kept so that the same text
/// again (drivers sending an unnamed Parse of the same statement per execution) skips
/// the scan: one comparison instead. Texts longer than
/// [`LastText::MAX`] are not kept.
#[derive(Debug)]
pub struct LastText<T> {
    text: Vec<u8>,
    found: Option<T>,
}

impl<T> Default for LastText<T> {
    fn default() -> Self {
        LastText {
            text: Vec::new(),
            found: None,
        }
    }
}

impl<T: Copy> LastText<T> {
    pub const MAX: usize = 1024;

    /// `read(text)`, or what it gave the last time for an equal text.
    pub fn get(&mut self, text: &[u8], read: impl FnOnce(&[u8]) -> T) -> T {
        if let Some(found) = self.found {
            if self.text == text {
                return found;
            }
        }
        let found = read(text);
        self.text.clear();
        if text.len() <= Self::MAX {
            self.text.extend_from_slice(text);
            self.found = Some(found);
        } else {
            self.found = None;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_text_reads_a_new_text_and_reuses_an_equal_one() {
        let mut last = LastText::default();
        let mut reads = 0;
        let mut get = |last: &mut LastText<TextFacts>, t: &[u8]| {
            last.get(t, |t| {
                reads += 1;
                TextFacts::of(t)
            })
        };
        let a = get(&mut last, b"select 1");
        assert_eq!(get(&mut last, b"select 1"), a);
        let b = get(&mut last, b"select pg_sleep(1)");
        assert!(!b.trivially_allowed());
        assert_eq!(get(&mut last, b"select 1"), a);
        let long = vec![b'x'; LastText::<TextFacts>::MAX + 1];
        get(&mut last, &long);
        get(&mut last, &long);
        assert_eq!(reads, 5, "equal texts are read once; long ones every time");
    }

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
            b"SET standard_conforming_strings = off",
            b"SET client_encoding = 'SJIS'",
            b"set names big5",
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
