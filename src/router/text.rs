//! Byte-level text searches shared by the statement checks on the hot path. Each is a
//! SIMD scan (`memchr`) for a needle's first byte followed by a comparison, instead of a
//! comparison at every byte: the checks run for every statement.

/// Does `hay` contain `needle`, ignoring ASCII case? `needle` must be non-empty.
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

#[cfg(test)]
mod tests {
    use super::*;

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
