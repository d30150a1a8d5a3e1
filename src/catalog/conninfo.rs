//! PostgreSQL connection strings (`postgresql://` URLs and `key=value` strings) as libpq
//! reads their TLS parameters, for the catalog URL and the instance URLs of the catalog.
//!
//! tokio-postgres takes `sslmode` only as disable, prefer or require and has no
//! `sslrootcert`. Here both are taken out of the string before tokio-postgres parses the
//! rest, and libpq's meanings are kept: `verify-ca` and `verify-full` check the server's
//! certificate against `sslrootcert` (a PEM file, or `system` for the public roots, which
//! makes `verify-full` the default and refuses weaker modes, as libpq 16 does), and
//! `require` with a root file checks the chain. The rustls configuration does the checks;
//! tokio-postgres is told `require`.

use std::borrow::Cow;
use std::ops::Range;
use std::str::FromStr;

use crate::backend::tls::{ServerTls, SslMode, SYSTEM_ROOTS};

/// A connection string, split into what tokio-postgres reads and the TLS settings.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Everything but the TLS parameters; its `ssl_mode` is set from [`ConnInfo::tls`].
    pub config: tokio_postgres::Config,
    /// The TLS the string asks for (libpq's default, `prefer`, when it names no sslmode).
    pub tls: ServerTls,
    /// The string names an sslmode (or `sslrootcert=system`, which implies one).
    explicit_mode: bool,
}

impl ConnInfo {
    /// Read `s`; the error says which part is wrong (never the password).
    pub fn parse(s: &str) -> Result<ConnInfo, String> {
        let params = if is_url(s) {
            url_params(s)?
        } else {
            keyword_params(s)?
        };
        let (mut mode, mut root_cert, mut ours) = (None, String::new(), Vec::new());
        for p in params {
            match p.key.as_str() {
                "sslmode" => mode = Some(SslMode::parse_named(&p.value)?),
                "sslrootcert" => root_cert = p.value,
                _ => continue,
            }
            ours.push(p.span);
        }
        let explicit_mode = mode.is_some() || root_cert == SYSTEM_ROOTS;
        let mode = mode.unwrap_or(if root_cert == SYSTEM_ROOTS {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        });
        let tls = ServerTls { mode, root_cert };
        tls.check()?;
        let rest = without(s, &ours, is_url(s));
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| e.to_string())?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(ConnInfo {
            config,
            tls,
            explicit_mode,
        })
    }

    /// TLS of the proxy's pooled server connections to this instance: as the string asks,
    /// and plain when it names no sslmode, as PgBouncer's are by default.
    pub fn pool_tls(&self) -> ServerTls {
        if self.explicit_mode {
            self.tls.clone()
        } else {
            ServerTls::default()
        }
    }

    /// The TLS connector for tokio-postgres, checking what [`ConnInfo::tls`] asks for.
    /// Reads the root file, if any.
    fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
        let config = match self.tls.client_config()? {
            Some(c) => c,
            // tokio-postgres does not ask for TLS with sslmode disable.
            None => crate::backend::tls::unchecked_config(),
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
            rustls::ClientConfig::clone(&config),
        ))
    }
}

/// What tokio-postgres needs to connect as `s` asks: its config and TLS connector (the
/// root file, if any, read).
pub fn client_parts(
    s: &str,
) -> Result<
    (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    String,
> {
    let info = ConnInfo::parse(s)?;
    let tls = info.connector()?;
    Ok((info.config, tls))
}

/// Read `url` and connect, the connection driven by a task of its own.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, super::CatalogError> {
    let (config, tls) = client_parts(url).map_err(super::CatalogError::Invalid)?;
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(conn);
    Ok(client)
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://")
}

/// One parameter of a connection string and the bytes it takes (with a separator).
#[derive(Debug, PartialEq)]
struct Param {
    key: String,
    value: String,
    span: Range<usize>,
}

/// Where a URL's query starts (its `?`): after the user part, which, as libpq reads it,
/// runs to the first `@` before any `/`, so a password may hold a `?` unencoded.
fn query_start(s: &str) -> Option<usize> {
    let rest = s.find("://").map_or(0, |i| i + 3);
    let after_user = match s[rest..].find(['@', '/']) {
        Some(i) if s.as_bytes()[rest + i] == b'@' => rest + i + 1,
        _ => rest,
    };
    s[after_user..].find('?').map(|i| after_user + i)
}

/// The query parameters of a URL, percent-decoded. A span covers its `&` or `?`.
fn url_params(s: &str) -> Result<Vec<Param>, String> {
    let Some(q) = query_start(s) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut start = q;
    for part in s[q + 1..].split('&') {
        let span = start..start + 1 + part.len();
        start = span.end;
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push(Param {
            key: decode(k)?.into_owned(),
            value: decode(v)?.into_owned(),
            span,
        });
    }
    Ok(out)
}

fn decode(s: &str) -> Result<Cow<'_, str>, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| format!("URL parameter {s:?} is not UTF-8 once decoded"))
}

/// The parameters of a `key=value` string: values bare or in single quotes, with `\`
/// escaping the next character, as libpq reads them.
fn keyword_params(s: &str) -> Result<Vec<Param>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i == b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_owned();
        i = skip_ws(i);
        if b.get(i) != Some(&b'=') {
            return Err(format!(
                "missing \"=\" after {key:?} in the connection string"
            ));
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        let quoted = b.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        loop {
            match b.get(i) {
                None if quoted => return Err(format!("unterminated quoted value of {key:?}")),
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(c) if !quoted && c.is_ascii_whitespace() => break,
                Some(b'\\') if i + 1 < b.len() => {
                    value.push(b[i + 1]);
                    i += 2;
                }
                Some(&c) => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        out.push(Param {
            key,
            // Only ASCII bytes were split on, so the value is whole UTF-8 characters.
            value: String::from_utf8(value).expect("split at ASCII bytes"),
            span: start..i,
        });
    }
}

/// `s` without the byte ranges `cut`; a URL whose query is left empty loses its `?`.
fn without(s: &str, cut: &[Range<usize>], url: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for r in cut {
        out.push_str(&s[at..r.start]);
        at = r.end;
    }
    out.push_str(&s[at..]);
    if url {
        // The first parameter's `?` may have been cut with it: the next `&` takes its place.
        if let Some(q) = query_start(s) {
            if !out[q..].starts_with('?') && out.len() > q {
                out.replace_range(q..q + 1, "?");
            }
        }
        if out.ends_with('?') {
            out.pop();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(s: &str) -> (SslMode, String) {
        let c = ConnInfo::parse(s).unwrap();
        (c.tls.mode, c.tls.root_cert)
    }

    #[test]
    fn urls_keep_what_tokio_postgres_reads() {
        let c = ConnInfo::parse(
            "postgresql://u:p%40ss@db.example.com:6543/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=tg",
        )
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_cert, "/etc/ca x.pem");
        assert_eq!(c.config.get_application_name(), Some("tg"));
        assert_eq!(c.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(c.config.get_dbname(), Some("app"));
        assert_eq!(
            c.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(c.pool_tls(), c.tls);
        // The parameters in another order, and alone.
        let c = ConnInfo::parse(
            "postgres://h/app?application_name=tg&sslrootcert=/r.pem&sslmode=verify-ca",
        )
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyCa);
        assert_eq!(c.config.get_application_name(), Some("tg"));
        let c = ConnInfo::parse("postgresql://h/app?sslmode=require").unwrap();
        assert_eq!(c.tls.mode, SslMode::Require);
        assert_eq!(c.config.get_dbname(), Some("app"));
        // A `?` in the password is the password's, not the query's.
        let c = ConnInfo::parse("postgresql://u:pa?ss@h/app?sslmode=require").unwrap();
        assert_eq!(c.tls.mode, SslMode::Require);
        assert_eq!(c.config.get_password(), Some(&b"pa?ss"[..]));
        assert_eq!(c.pool_tls().mode, SslMode::Require);
        let c = ConnInfo::parse("postgresql://h/app?sslmode=require&connect_timeout=3").unwrap();
        assert_eq!(
            c.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
    }

    #[test]
    fn keyword_strings_with_quotes_and_escapes() {
        let c = ConnInfo::parse(
            "host=h dbname = 'my app' sslrootcert='/tmp/it\\'s ca.pem' sslmode=verify-full user=u",
        )
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_cert, "/tmp/it's ca.pem");
        assert_eq!(c.config.get_dbname(), Some("my app"));
        assert_eq!(c.config.get_user(), Some("u"));
        assert_eq!(tls("host=h sslmode=disable"), (SslMode::Disable, "".into()));
        assert!(ConnInfo::parse("host=h sslrootcert='/x").is_err());
        assert!(ConnInfo::parse("host").is_err());
    }

    #[test]
    fn libpq_defaults_and_refusals() {
        // No sslmode: libpq's prefer for the string's own connections; the pool stays plain.
        let c = ConnInfo::parse("postgresql://h/app").unwrap();
        assert_eq!(c.tls.mode, SslMode::Prefer);
        assert_eq!(c.pool_tls(), ServerTls::default());
        // A root file alone does not make libpq verify.
        assert_eq!(tls("host=h sslrootcert=/r.pem").0, SslMode::Prefer);
        // system: verify-full unless said otherwise, and nothing weaker.
        let c = ConnInfo::parse("postgresql://h/app?sslrootcert=system").unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.pool_tls().mode, SslMode::VerifyFull);
        let e = ConnInfo::parse("host=h sslrootcert=system sslmode=require").unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
        let e = ConnInfo::parse("postgresql://h/app?sslmode=verify-ca").unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = ConnInfo::parse("postgresql://h/app?sslmode=allow").unwrap_err();
        assert!(e.contains("\"allow\""), "{e}");
        assert!(ConnInfo::parse("postgresql://h/app?sslmode=").is_err());
    }
}
