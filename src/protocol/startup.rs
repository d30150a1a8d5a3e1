//! Startup-phase packets: untagged `len: i32, code: i32, payload`.

use super::PgError;

pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// PostgreSQL's own limit for startup packets.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: i32 },
    Startup(StartupParams),
}

/// StartupMessage parameters in the order the client sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams {
    /// Requested minor protocol version (3.x).
    pub minor: i32,
    pub params: Vec<(String, String)>,
    /// `_pq_.*` protocol options, which we do not support.
    pub protocol_options: Vec<String>,
}

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Validate a packet's length word before reading its body.
pub fn check_len(len: i32) -> Result<usize, PgError> {
    if len < 8 || len as usize > MAX_STARTUP_LEN {
        return Err(PgError::protocol_violation(format!(
            "invalid length of startup packet: {len}"
        )));
    }
    Ok(len as usize)
}

/// Decode the packet body (everything after the length word).
pub fn decode(body: &[u8]) -> Result<StartupPacket, PgError> {
    let code = i32::from_be_bytes(body[0..4].try_into().expect("checked len"));
    let rest = &body[4..];
    match code {
        SSL_REQUEST_CODE if rest.is_empty() => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST_CODE if rest.is_empty() => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST_CODE if rest.len() == 8 => Ok(StartupPacket::Cancel {
            pid: i32::from_be_bytes(rest[0..4].try_into().unwrap()),
            secret: i32::from_be_bytes(rest[4..8].try_into().unwrap()),
        }),
        c if c >> 16 == 3 => decode_params(c & 0xffff, rest).map(StartupPacket::Startup),
        c => Err(PgError::unsupported(format!(
            "unsupported frontend protocol {}.{}: server supports 3.0",
            c >> 16,
            c & 0xffff
        ))),
    }
}

fn decode_params(minor: i32, b: &[u8]) -> Result<StartupParams, PgError> {
    let bad = || {
        PgError::protocol_violation(
            "invalid startup packet layout: expected terminator as last byte",
        )
    };
    // One UTF-8 check for the whole body: NUL is ASCII, so every piece between NULs of
    // valid UTF-8 is valid UTF-8 too.
    let mut rest = std::str::from_utf8(b).map_err(|_| bad())?;
    let mut out = StartupParams {
        minor,
        // user, database, application_name, client_encoding and a few more.
        params: Vec::with_capacity(6),
        protocol_options: Vec::new(),
    };
    loop {
        let (k, after) = split_nul(rest).ok_or_else(bad)?;
        if k.is_empty() {
            if !after.is_empty() {
                return Err(bad());
            }
            break;
        }
        let (v, after) = split_nul(after).ok_or_else(bad)?;
        if k.starts_with("_pq_.") {
            out.protocol_options.push(k.to_owned());
        } else {
            out.params.push((k.to_owned(), v.to_owned()));
        }
        rest = after;
    }
    if out.get("user").is_none_or(str::is_empty) {
        return Err(PgError::protocol_violation(
            "no PostgreSQL user name specified in startup packet",
        ));
    }
    Ok(out)
}

/// The text before the first NUL and the text after it (`str::split_once` searched char
/// by char: more instructions than the rest of the decode).
fn split_nul(s: &str) -> Option<(&str, &str)> {
    let (head, _) = super::frame::cstr(s.as_bytes())?;
    Some((&s[..head.len()], &s[head.len() + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn decodes_the_startup_kinds() {
        assert_eq!(
            decode(&body(SSL_REQUEST_CODE, b"")).unwrap(),
            StartupPacket::Ssl
        );
        assert_eq!(
            decode(&body(GSSENC_REQUEST_CODE, b"")).unwrap(),
            StartupPacket::GssEnc
        );
        let mut c = 7i32.to_be_bytes().to_vec();
        c.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            decode(&body(CANCEL_REQUEST_CODE, &c)).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
        let p = decode(&body(PROTOCOL_3_0, b"user\0app@acme\0database\0db\0\0")).unwrap();
        let StartupPacket::Startup(p) = p else {
            panic!()
        };
        assert_eq!(p.get("user"), Some("app@acme"));
        assert_eq!(p.get("database"), Some("db"));
    }

    #[test]
    fn refuses_bad_packets() {
        assert!(check_len(4).is_err());
        assert!(check_len(100_000).is_err());
        assert_eq!(
            decode(&body(PROTOCOL_3_0, b"user\0x")).unwrap_err().code,
            "08P01"
        );
        assert_eq!(
            decode(&body(PROTOCOL_3_0, b"database\0d\0\0"))
                .unwrap_err()
                .code,
            "08P01"
        );
        assert_eq!(
            decode(&body(PROTOCOL_3_0, b"user\0\xff\0\0"))
                .unwrap_err()
                .code,
            "08P01"
        );
        assert_eq!(decode(&body(2 << 16, b"")).unwrap_err().code, "0A000");
        assert_eq!(
            decode(&body(PROTOCOL_3_0, b"user\0a\0\0junk"))
                .unwrap_err()
                .code,
            "08P01"
        );
    }

    #[test]
    fn collects_protocol_options_and_minor() {
        let p = decode(&body(PROTOCOL_3_0 + 2, b"user\0u\0_pq_.x\0\x31\0\0")).unwrap();
        let StartupPacket::Startup(p) = p else {
            panic!()
        };
        assert_eq!(p.minor, 2);
        assert_eq!(p.protocol_options, vec!["_pq_.x".to_string()]);
    }
}
