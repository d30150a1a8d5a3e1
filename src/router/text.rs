//! Byte-level text searches shared by the statement checks on the hot path, which run for
//! every statement: instead of a comparison at every byte, [`contains_ci`] scans for a
//! needle's first byte with SIMD (`memchr`) and [`Words`] looks up byte pairs in tables.

/// Does `hay` contain `needle`, ignoring ASCII case? An empty needle is always found.
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    // Candidates can only start where the whole needle still fits.
    let last_start = hay.len() - needle.len();
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lo, up, &hay[..=last_start])
        .any(|i| hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest))
}

/// Does `hay` start with `prefix`, ignoring ASCII case?
pub fn starts_ci(hay: &[u8], prefix: &[u8]) -> bool {
    hay.len() >= prefix.len() && hay[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// A small set of words (up to 16, each at least two bytes, in lower case) found in one
/// pass over a text, ignoring ASCII case: a table lookup of each pair of adjacent bytes selects the
/// words that can start there, and only those are compared. Matches are not limited to
/// word boundaries (the callers are conservative checks).
pub struct Words<const N: usize> {
    words: [&'static [u8]; N],
    /// Per byte: bits `16 + k` set when word `k` can start with it, bits `k` when word `k`
    /// can continue with it (both cases). One table load per byte of text.
    table: [u32; 256],
}

impl<const N: usize> Words<N> {
    pub const fn new(words: [&'static [u8]; N]) -> Self {
        assert!(N <= 16, "up to 16 words");
        let mut table = [0u32; 256];
        let mut k = 0;
        while k < N {
            let w = words[k];
            assert!(w.len() >= 2, "words of two bytes or more");
            let mut j = 0;
            while j < w.len() {
                assert!(!w[j].is_ascii_uppercase(), "words in lower case");
                j += 1;
            }
            let bit = 1u32 << k;
            table[w[0].to_ascii_lowercase() as usize] |= bit << 16;
            table[w[0].to_ascii_uppercase() as usize] |= bit << 16;
            table[w[1].to_ascii_lowercase() as usize] |= bit;
            table[w[1].to_ascii_uppercase() as usize] |= bit;
            k += 1;
        }
        Words { words, table }
    }

    /// Call `found(k)` for each occurrence of word `k` in `hay`, in text order, until it
    /// returns true; returns whether one did.
    pub fn scan(&self, hay: &[u8], mut found: impl FnMut(usize) -> bool) -> bool {
        // Words that can start at the previous byte. The loop is a table load and a test
        // per byte; pairs that match (a few per statement) are checked out of line.
        let mut starting = 0u32;
        for (i, &b) in hay.iter().enumerate() {
            let t = self.table[b as usize];
            let bits = starting & t & 0xffff;
            starting = t >> 16;
            if bits != 0 && self.candidates(&hay[i + 1..], bits, &mut found) {
                return true;
            }
        }
        false
    }

    /// Words `bits` matched their first two bytes just before `rest`: compare the rest of
    /// each, up to the first difference (most differ at their third byte).
    #[cold]
    #[inline(never)]
    fn candidates(
        &self,
        rest: &[u8],
        mut bits: u32,
        found: &mut impl FnMut(usize) -> bool,
    ) -> bool {
        while bits != 0 {
            let k = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let w = &self.words[k][2..];
            if rest.len() >= w.len()
                && rest
                    .iter()
                    .zip(w)
                    .all(|(a, b)| a.to_ascii_lowercase() == *b)
                && found(k)
            {
                return true;
            }
        }
        false
    }

    /// Does `hay` contain any of the words?
    pub fn any(&self, hay: &[u8]) -> bool {
        self.scan(hay, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_sets_agree_with_a_naive_search() {
        const W: Words<4> = Words::new([b"role", b"pg_", b"lo_", b"set_config"]);
        let hays: [&[u8]; 7] = [
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            b"select PG_sleep(1)",
            b"x lo_import",
            b"SET_CONFIG('a','b',false)",
            b"rolrole",
            b"",
            b"\xff\x00ro",
        ];
        for h in hays {
            let mut got = Vec::new();
            W.scan(h, |k| {
                got.push(k);
                false
            });
            let mut want = Vec::new();
            for i in 0..h.len() {
                for (k, w) in W.words.iter().enumerate() {
                    if starts_ci(&h[i..], w) {
                        want.push(k);
                    }
                }
            }
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(h));
            assert_eq!(W.any(h), !want.is_empty());
        }
    }

    #[test]
    fn finds_needles_in_any_case_and_position() {
        assert!(contains_ci(b"SELECT * FROM Public.t", b"public"));
        assert!(contains_ci(b"public", b"PUBLIC"));
        assert!(contains_ci(b"xxpg_sleep", b"pg_"));
        assert!(!contains_ci(b"SELECT 1", b"public"));
        assert!(!contains_ci(b"publi", b"public"));
        assert!(!contains_ci(b"", b"a"));
        assert!(contains_ci(b"abc", b""));
        // A candidate at the very end that does not fit is not a match.
        assert!(!contains_ci(b"select p", b"pg_"));
        assert!(contains_ci(b"aaab", b"aab"));
        assert!(starts_ci(b"Advisory lock", b"advisory"));
        assert!(!starts_ci(b"adv", b"advisory"));
    }

    #[test]
    fn agrees_with_a_naive_search() {
        let hays: [&[u8]; 6] = [
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            b"set search_path = x; SET_CONFIG('a','b',false)",
            b"create TEMP table t as select 1",
            b"\xff\x00pg_\xc3\xa9",
            b"",
            b"ssssearch_path",
        ];
        let needles: [&[u8]; 6] = [b"search_path", b"pg_", b"temp", b"public", b"s", b"aid = 1"];
        for h in hays {
            for n in needles {
                let naive =
                    h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
                assert_eq!(contains_ci(h, n), naive, "{:?} in {:?}", n, h);
            }
        }
    }
}
