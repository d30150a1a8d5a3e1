//! Byte-level text searches shared by the statement checks on the hot path, which run for
//! every statement: instead of a comparison at every byte, [`contains_ci`] scans for a
//! needle's first byte with SIMD (`memchr`) and [`Words`] compares the words' first
//! three bytes at 16 positions at a time (SSE2, part of every x86-64 CPU), looking at the
//! rest only where those match; other targets, and a text's last bytes, take a byte at a
//! time (a table lookup of each pair of adjacent bytes).

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

/// A small set of words (up to 16, each at least three bytes, in lower case) found in one
/// pass over a text, ignoring ASCII case: a table lookup of each pair of adjacent bytes selects the
/// words that can start there, and only those are compared. Matches are not limited to
/// word boundaries (the callers are conservative checks).
pub struct Words<const N: usize> {
    words: [&'static [u8]; N],
    /// Per byte: bits `16 + k` set when word `k` can start with it, bits `k` when word `k`
    /// can continue with it (both cases). One table load per byte of text.
    table: [u32; 256],
    /// The words' first three bytes, for the 16-at-a-time search (when each word starts
    /// with two letters).
    prefixes: Option<Prefixes<N>>,
}

impl<const N: usize> Words<N> {
    pub const fn new(words: [&'static [u8]; N]) -> Self {
        assert!(N <= 16, "up to 16 words");
        let mut table = [0u32; 256];
        let mut k = 0;
        while k < N {
            let w = words[k];
            assert!(w.len() >= 3, "words of three bytes or more");
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
        let mut firsts = [[0u8; 3]; N];
        let mut k = 0;
        while k < N {
            firsts[k] = [words[k][0], words[k][1], words[k][2]];
            k += 1;
        }
        Words {
            words,
            table,
            prefixes: Prefixes::new(&firsts),
        }
    }

    /// Call `found(k)` for each occurrence of word `k` in `hay`, in text order, until it
    /// returns true; returns whether one did.
    pub fn scan(&self, hay: &[u8], mut found: impl FnMut(usize) -> bool) -> bool {
        // Sixteen starting positions at a time while a block and the two bytes after it
        // fit; only positions whose three bytes may begin a word are looked at (few, and
        // most texts have none).
        let mut from = 0;
        if let Some(prefixes) = &self.prefixes {
            while from + PREFIX_BLOCK + 2 <= hay.len() {
                let mut hits = prefixes.block(&hay[from..]);
                while hits != 0 {
                    let i = from + hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    let bits =
                        (self.table[hay[i] as usize] >> 16) & self.table[hay[i + 1] as usize];
                    if self.candidates(&hay[i + 2..], bits & 0xffff, &mut found) {
                        return true;
                    }
                }
                from += PREFIX_BLOCK;
            }
        }
        // The rest a byte at a time: a table load and a test per byte; pairs that match
        // are checked out of line. `starting`: words that can start at the previous byte
        // (none before `from`: pairs starting earlier were searched above).
        let mut starting = 0u32;
        for (i, &b) in hay.iter().enumerate().skip(from) {
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

/// Starting positions a [`Prefixes::block`] covers.
const PREFIX_BLOCK: usize = 16;

/// Up to 16 three-byte word prefixes, each starting with two ASCII letters, searched for
/// ignoring case at 16 positions at once. The case fold is `byte | 0x20`, which turns an
/// upper-case letter into its lower case and no other byte into a lower-case letter: exact
/// for the two letters. For the third byte it may also let through a byte that is not
/// the word's (`_` and DEL fold alike), so a hit is a candidate that the caller verifies.
#[derive(Clone, Copy)]
struct Prefixes<const N: usize> {
    /// Each prefix folded, each byte repeated over a 16-byte lane: the block search loads
    /// them as they are (a broadcast per byte and block otherwise).
    lanes: [[Lane; 3]; N],
}

/// 16 copies of a byte, aligned for a direct SSE2 load.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Lane([u8; 16]);

impl<const N: usize> Prefixes<N> {
    /// `None` unless every prefix starts with two ASCII letters (or on a target without
    /// the 16-at-a-time search).
    const fn new(prefixes: &[[u8; 3]; N]) -> Option<Self> {
        if !cfg!(target_arch = "x86_64") {
            return None;
        }
        let mut lanes = [[Lane([0; 16]); 3]; N];
        let mut k = 0;
        while k < N {
            let [a, b, c] = prefixes[k];
            if !a.is_ascii_alphabetic() || !b.is_ascii_alphabetic() {
                return None;
            }
            lanes[k] = [
                Lane([a | 0x20; 16]),
                Lane([b | 0x20; 16]),
                Lane([c | 0x20; 16]),
            ];
            k += 1;
        }
        Some(Prefixes { lanes })
    }

    /// Bit `i` set when `hay[i..i + 3]` may be one of the prefixes (see the type), for `i`
    /// in `0..16`; never clear where one is. Needs `hay.len() >= 18`.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn block(&self, hay: &[u8]) -> u32 {
        use std::arch::x86_64::*;
        assert!(hay.len() >= PREFIX_BLOCK + 2);
        // SAFETY: the three 16-byte loads of `hay` are in bounds (asserted above) and
        // unaligned loads are allowed; a `Lane` is 16 bytes aligned to 16; SSE2 is part
        // of the x86-64 baseline.
        unsafe {
            let fold = _mm_set1_epi8(0x20);
            let at = |i: usize| _mm_or_si128(_mm_loadu_si128(hay.as_ptr().add(i).cast()), fold);
            let (first, second, third) = (at(0), at(1), at(2));
            let lane = |l: &Lane| _mm_load_si128(l.0.as_ptr().cast());
            let mut hit = _mm_setzero_si128();
            for [a, b, c] in &self.lanes {
                let ab = _mm_and_si128(
                    _mm_cmpeq_epi8(first, lane(a)),
                    _mm_cmpeq_epi8(second, lane(b)),
                );
                let abc = _mm_and_si128(ab, _mm_cmpeq_epi8(third, lane(c)));
                hit = _mm_or_si128(hit, abc);
            }
            _mm_movemask_epi8(hit) as u32
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn block(&self, _hay: &[u8]) -> u32 {
        unreachable!("Prefixes::new gives None on this target")
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
            let want = naive_words(&W, h);
            assert_eq!(scan_all(&W, h), want, "{:?}", String::from_utf8_lossy(h));
            assert_eq!(W.any(h), !want.is_empty());
        }
    }

    /// Every word `scan` reports, in order.
    fn scan_all<const N: usize>(words: &Words<N>, hay: &[u8]) -> Vec<usize> {
        let mut got = Vec::new();
        words.scan(hay, |k| {
            got.push(k);
            false
        });
        got
    }

    /// The words starting at each position, compared at every byte.
    fn naive_words<const N: usize>(words: &Words<N>, hay: &[u8]) -> Vec<usize> {
        let mut want = Vec::new();
        for i in 0..hay.len() {
            for (k, w) in words.words.iter().enumerate() {
                if starts_ci(&hay[i..], w) {
                    want.push(k);
                }
            }
        }
        want
    }

    fn naive_contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.len() >= needle.len()
            && hay
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
    }

    /// Texts of every length up to 80 with a word (or a near miss) at every offset, in
    /// mixed case, padded with bytes that the case fold maps next to letters or onto a
    /// word's third byte: the 16-at-a-time search and the byte-at-a-time rest agree with a
    /// naive search.
    #[test]
    fn block_search_agrees_with_a_naive_search_at_every_offset() {
        const W: Words<5> = Words::new([b"role", b"pg_", b"search_path", b"into", b"temp"]);
        // `pG\x7f`: DEL folds like `_`, a false hit of the block search to be rejected.
        let pads: [&[u8]; 4] = [b"x", b"@`[{ \xc1\xe1_", b"Pg ro IN", b"pG\x7fro\x7f"];
        let needles: [&[u8]; 7] = [
            b"ROLE",
            b"pG_",
            b"Search_Path",
            b"intO",
            b"tem",
            b"roel",
            b"rol",
        ];
        for len in 0..80 {
            for pad in pads {
                for needle in needles {
                    for at in 0..=len {
                        let mut hay: Vec<u8> = pad.iter().copied().cycle().take(len).collect();
                        if at + needle.len() <= len {
                            hay[at..at + needle.len()].copy_from_slice(needle);
                        }
                        let want = naive_words(&W, &hay);
                        let got = scan_all(&W, &hay);
                        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&hay));
                        for n in needles.iter().chain(&[&b"public"[..], b"@`", b"\xc1x"]) {
                            let naive = naive_contains(&hay, n);
                            assert_eq!(contains_ci(&hay, n), naive, "{n:?} in {hay:?}");
                        }
                    }
                }
            }
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
                assert_eq!(
                    contains_ci(h, n),
                    naive_contains(h, n),
                    "{:?} in {:?}",
                    n,
                    h
                );
            }
        }
    }
}
