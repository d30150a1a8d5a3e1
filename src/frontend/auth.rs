//! Client authentication logic without IO: rule matching, SCRAM-SHA-256 server side, md5.
//!
//! Unknown tenants and users go through the same exchange against a mock verifier derived
//! from a per-process secret, so the answer (28P01) and its timing do not reveal whether a
//! tenant or user exists.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{AuthMethod, AuthRule};

type HmacSha256 = Hmac<Sha256>;

/// Pick the method for `user` connecting from `addr`: first matching rule, else SCRAM.
pub fn method_for(rules: &[AuthRule], user: &str, addr: IpAddr) -> AuthMethod {
    rules
        .iter()
        .find(|r| (r.user == "*" || r.user == user) && r.address.covers(addr))
        .map(|r| r.method)
        .unwrap_or(AuthMethod::ScramSha256)
}

/// A stored SCRAM-SHA-256 verifier (`SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    /// Parse PostgreSQL's verifier format.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramVerifier {
            iterations: iter.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// Compute a verifier from a plain password (random salt, 4096 iterations, SASLprep).
    pub fn from_password(password: &str) -> Self {
        Self::parse(&postgres_protocol::password::scram_sha_256(
            password.as_bytes(),
        ))
        .expect("postgres-protocol produces valid verifiers")
    }

    /// A verifier no password matches, stable per (secret, user) so repeated probes look alike.
    pub fn mock(secret: &[u8; 32], user: &str) -> Self {
        let mut m = HmacSha256::new_from_slice(secret).expect("any key length");
        m.update(user.as_bytes());
        let h = m.finalize().into_bytes();
        let mut stored = [0u8; 32];
        let mut server = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut stored[..]);
        rand::Rng::fill(&mut rand::thread_rng(), &mut server[..]);
        ScramVerifier {
            iterations: 4096,
            salt: h[..16].to_vec(),
            stored_key: stored,
            server_key: server,
        }
    }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// The client's messages were malformed (protocol violation).
    Malformed(&'static str),
    /// The proof did not match (wrong password).
    BadProof,
}

/// Server side of one SCRAM-SHA-256 exchange (RFC 5802/7677), with `tls-server-end-point`
/// channel binding (SCRAM-SHA-256-PLUS, RFC 5929) when the connection is TLS.
pub struct ScramServer {
    verifier: ScramVerifier,
    nonce: String,
    client_first_bare: String,
    server_first: String,
    /// The channel-binding data the client must echo (gs2 header + certificate hash).
    cbind_input: Vec<u8>,
}

/// What the server offers for channel binding on this connection.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// `tls-server-end-point` data (hash of the server certificate), when on TLS.
    pub cert_hash: Option<&'a [u8]>,
    /// The client picked SCRAM-SHA-256-PLUS.
    pub plus: bool,
}

impl ScramServer {
    /// Handle client-first-message; returns the server-first-message to send.
    pub fn start(
        verifier: ScramVerifier,
        client_first: &[u8],
        binding: Binding<'_>,
    ) -> Result<(Self, Vec<u8>), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        let cbind_data: &[u8] = match (flag, binding.plus, binding.cert_hash) {
            ("p=tls-server-end-point", true, Some(h)) => h,
            (f, true, _) if f.starts_with("p=") => {
                return Err(ScramError::Malformed("unsupported channel binding type"))
            }
            (_, true, _) => {
                return Err(ScramError::Malformed(
                    "SCRAM-SHA-256-PLUS needs channel binding",
                ))
            }
            (f, false, _) if f.starts_with("p=") => {
                return Err(ScramError::Malformed(
                    "channel binding needs SCRAM-SHA-256-PLUS",
                ))
            }
            // "y": the client could bind but thinks we cannot; we offered PLUS, so this is
            // a downgrade (RFC 5802 section 6).
            ("y", false, Some(_)) => {
                return Err(ScramError::Malformed("channel binding downgrade"))
            }
            ("n" | "y", false, _) => &[],
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        };
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identity is not supported",
            ));
        }
        let cnonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("missing client nonce"))?;
        let mut raw = [0u8; 18];
        rand::Rng::fill(&mut rand::thread_rng(), &mut raw[..]);
        let nonce = format!("{cnonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let out = server_first.clone().into_bytes();
        Ok((
            ScramServer {
                verifier,
                nonce,
                client_first_bare: bare.to_owned(),
                server_first,
                cbind_input: [format!("{flag},{authzid},").as_bytes(), cbind_data].concat(),
            },
            out,
        ))
    }

    /// Handle client-final-message; returns server-final-message on success.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut parts = without_proof.split(',');
        let cbind = parts
            .next()
            .and_then(|c| c.strip_prefix("c="))
            .ok_or(ScramError::Malformed("missing channel binding"))?;
        if B64.decode(cbind).ok().as_deref() != Some(self.cbind_input.as_slice()) {
            return Err(ScramError::Malformed("channel binding mismatch"));
        }
        let nonce = parts
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("bad proof encoding"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("bad proof length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_sig = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_sig.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if !constant_time_eq(&stored, &self.verifier.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_sig = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_sig)).into_bytes())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The md5 response a client must send: `"md5" + md5(md5(password + user) + salt)`.
pub fn md5_expected(password: &str, user: &str, salt: [u8; 4]) -> String {
    md5_expected_from_inner(
        &postgres_protocol::password::md5(password.as_bytes(), user),
        salt,
    )
}

/// The salted md5 response from a stored `"md5" + md5(password + user)` hash.
pub fn md5_expected_from_inner(inner: &str, salt: [u8; 4]) -> String {
    let mut h = md5::Md5::new();
    h.update(inner.trim_start_matches("md5").as_bytes());
    h.update(salt);
    format!("md5{:x}", h.finalize())
}

/// Compare an md5 response in constant time.
pub fn md5_matches(expected: &str, got: &[u8]) -> bool {
    constant_time_eq(expected.as_bytes(), got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(verifier: ScramVerifier, password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (server, first) = ScramServer::start(
            verifier,
            client.message(),
            Binding {
                cert_hash: None,
                plus: false,
            },
        )?;
        client.update(&first).expect("client accepts server-first");
        let fin = server.finish(client.message())?;
        client
            .finish(&fin)
            .expect("client verifies server signature");
        Ok(())
    }

    #[test]
    fn scram_accepts_right_password_and_refuses_wrong() {
        let v = ScramVerifier::from_password("s3cret");
        assert_eq!(exchange(v.clone(), "s3cret"), Ok(()));
        assert_eq!(exchange(v, "wrong"), Err(ScramError::BadProof));
    }

    #[test]
    fn scram_plus_binds_to_the_certificate() {
        let v = ScramVerifier::from_password("pw");
        let run = |client_hash: &[u8], server_hash: &[u8]| {
            let mut client = ScramSha256::new(
                b"pw",
                ChannelBinding::tls_server_end_point(client_hash.to_vec()),
            );
            let b = Binding {
                cert_hash: Some(server_hash),
                plus: true,
            };
            let (server, first) = ScramServer::start(v.clone(), client.message(), b)?;
            client.update(&first).unwrap();
            server.finish(client.message()).map(|_| ())
        };
        assert_eq!(run(b"hash-1", b"hash-1"), Ok(()));
        assert!(
            run(b"hash-1", b"hash-2").is_err(),
            "another certificate (a proxy in the middle)"
        );
        // a client that could bind but was told we cannot: refused when we offered PLUS
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unrequested());
        let r = ScramServer::start(
            v.clone(),
            client.message(),
            Binding {
                cert_hash: Some(b"h"),
                plus: false,
            },
        );
        assert!(r.is_err());
        let _ = &mut client;
    }

    #[test]
    fn mock_verifier_never_matches() {
        let v = ScramVerifier::mock(&[7; 32], "app");
        assert_eq!(exchange(v.clone(), ""), Err(ScramError::BadProof));
        assert_eq!(v.salt, ScramVerifier::mock(&[7; 32], "app").salt);
    }

    #[test]
    fn scram_refuses_malformed_messages() {
        let v = ScramVerifier::from_password("x");
        for bad in [
            &b"garbage"[..],
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,a=bob,n=,r=abc",
            b"n,,n=,",
        ] {
            assert!(matches!(
                ScramServer::start(
                    v.clone(),
                    bad,
                    Binding {
                        cert_hash: None,
                        plus: false
                    }
                ),
                Err(ScramError::Malformed(_))
            ));
        }
        let (s, _) = ScramServer::start(
            v,
            b"n,,n=,r=abc",
            Binding {
                cert_hash: None,
                plus: false,
            },
        )
        .unwrap();
        assert!(matches!(
            s.finish(b"c=biws,r=wrongnonce,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn verifier_parse_round_trip() {
        let s = postgres_protocol::password::scram_sha_256(b"pw");
        let v = ScramVerifier::parse(&s).unwrap();
        assert_eq!(v.iterations, 4096);
        assert!(ScramVerifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA==").is_none());
        assert!(ScramVerifier::parse("md5abc").is_none());
    }

    #[test]
    fn md5_matches_libpq() {
        // libpq: "md5" + md5(hex(md5("secret" + "app@acme")) + salt)
        let e = md5_expected("secret", "app@acme", [1, 2, 3, 4]);
        assert!(e.starts_with("md5") && e.len() == 35);
        assert!(md5_matches(&e, e.as_bytes()));
        assert!(!md5_matches(&e, b"md5000"));
    }

    #[test]
    fn rule_matching() {
        let rules = vec![
            AuthRule {
                user: "svc".into(),
                address: "*".parse().unwrap(),
                method: AuthMethod::Md5,
            },
            AuthRule {
                user: "*".into(),
                address: "10.0.0.0/8".parse().unwrap(),
                method: AuthMethod::Reject,
            },
            AuthRule {
                user: "*".into(),
                address: "127.0.0.1/32".parse().unwrap(),
                method: AuthMethod::Trust,
            },
        ];
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(method_for(&rules, "svc", lo), AuthMethod::Md5);
        assert_eq!(method_for(&rules, "app", lo), AuthMethod::Trust);
        assert_eq!(
            method_for(&rules, "app", "10.1.2.3".parse().unwrap()),
            AuthMethod::Reject
        );
        assert_eq!(
            method_for(&rules, "app", "192.168.1.1".parse().unwrap()),
            AuthMethod::ScramSha256
        );
        let any = vec![AuthRule {
            user: "*".into(),
            address: "0.0.0.0/0".parse().unwrap(),
            method: AuthMethod::Trust,
        }];
        assert_eq!(
            method_for(&any, "a", "::1".parse().unwrap()),
            AuthMethod::Trust
        );
    }
}
