//! Tenant header comments: `/* tenant: acme */ SELECT ...` or `-- tenant: acme` as the first
//! line of a statement text. Pure parsing; the session decides what a header may do.

/// The tenant key a statement's leading comment names, if any.
pub fn tenant_header(sql: &[u8]) -> Option<&str> {
    let s = trim_start(sql);
    let inner = if let Some(rest) = s.strip_prefix(b"/*") {
        let end = rest.windows(2).position(|w| w == b"*/")?;
        &rest[..end]
    } else if let Some(rest) = s.strip_prefix(b"--") {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        &rest[..end]
    } else {
        return None;
    };
    let inner = trim_start(inner);
    if inner.len() < 6 || !inner[..6].eq_ignore_ascii_case(b"tenant") {
        return None;
    }
    let rest = trim_start(&inner[6..]);
    let rest = trim_start(
        rest.strip_prefix(b":")
            .or_else(|| rest.strip_prefix(b"="))?,
    );
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .unwrap_or(rest.len());
    let key = std::str::from_utf8(&rest[..end]).ok()?;
    // Anything but whitespace after the key makes it not a header (e.g. "tenant: a b").
    if !rest[end..].iter().all(u8::is_ascii_whitespace) || key.is_empty() {
        return None;
    }
    Some(key)
}

fn trim_start(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[i..]
}

#[cfg(test)]
mod tests {
    use super::tenant_header;

    #[test]
    fn headers() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/* tenant: acme */ SELECT 1", Some("acme")),
            ("/*tenant:acme*/SELECT 1", Some("acme")),
            ("  /* Tenant : big_corp */\nSELECT 1", Some("big_corp")),
            ("-- tenant: acme\nSELECT 1", Some("acme")),
            ("--tenant=acme\nSELECT 1", Some("acme")),
            ("SELECT 1 /* tenant: acme */", None),
            ("/* hello */ SELECT 1", None),
            ("/* tenant: acme globex */ SELECT 1", None),
            ("/* tenant: */ SELECT 1", None),
            ("/* tenant: acme", None),
            ("-- tenants: acme\nSELECT 1", None),
            ("", None),
        ];
        for (sql, want) in cases {
            assert_eq!(tenant_header(sql.as_bytes()), *want, "{sql}");
        }
    }
}
