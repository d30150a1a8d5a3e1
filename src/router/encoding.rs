//! Client encodings the proxy can read statements in. Every check reads a statement's
//! quotes, backslashes, semicolons and words as ASCII bytes. That holds for UTF-8 and
//! every other encoding PostgreSQL can store (their multibyte characters are made of
//! bytes 0x80 and up), but not for the client-only encodings SJIS, SHIFT_JIS_2004, BIG5,
//! GBK, UHC, GB18030 and JOHAB, whose characters can end in an ASCII byte: `0x81 0x5C`
//! is one character to a server reading SJIS and a backslash to the proxy, so a string
//! ends in a different place and the checks would see a different statement than the
//! server runs. A session never uses one of them through the proxy.

/// The names PostgreSQL accepts for those encodings (its `pg_encname_tbl`), as it
/// compares them: lower case, letters and digits only.
const SPLITS_ASCII: &[&str] = &[
    "big5",
    "gb18030",
    "gbk",
    "johab",
    "mskanji",
    "shiftjis",
    "shiftjis2004",
    "sjis",
    "uhc",
    "win932",
    "win936",
    "win949",
    "win950",
    "windows932",
    "windows936",
    "windows949",
    "windows950",
];

/// Does `name`, read as PostgreSQL reads an encoding name (`Shift-JIS`, `WIN_932`,
/// `sjis` alike), name an encoding whose characters can contain ASCII bytes?
pub fn splits_ascii(name: &str) -> bool {
    let clean: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    SPLITS_ASCII.contains(&clean.as_str())
}

/// Why such an encoding is refused.
pub fn refusal(name: &str) -> String {
    format!(
        "client_encoding \"{name}\" is not supported through tenantgate: its characters can contain ASCII bytes, so the proxy would read statements differently from the server; use UTF8 (the server converts)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_only_encodings_by_any_spelling_split_ascii() {
        for name in [
            "SJIS",
            "Shift_JIS",
            "shift-jis",
            "SHIFT_JIS_2004",
            "MS_Kanji",
            "WIN932",
            "windows-932",
            "BIG5",
            "Big-5",
            "win950",
            "GBK",
            "WIN-936",
            "UHC",
            "windows949",
            "GB18030",
            "gb-18030",
            "JOHAB",
        ] {
            assert!(splits_ascii(name), "{name}");
        }
        for name in [
            "UTF8",
            "utf-8",
            "unicode",
            "SQL_ASCII",
            "LATIN1",
            "ISO-8859-1",
            "EUC_JP",
            "EUC_JIS_2004",
            "EUC_CN",
            "EUC_KR",
            "EUC_TW",
            "MULE_INTERNAL",
            "WIN1252",
            "KOI8R",
            "",
            "sjis2",
        ] {
            assert!(!splits_ascii(name), "{name}");
        }
    }
}
