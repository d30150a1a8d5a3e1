//! TLS from the proxy to PostgreSQL, with libpq's `sslmode` meanings: `disable`, `prefer`
//! (TLS when the server offers it, certificate unchecked), `require` (TLS or no
//! connection; checked against `sslrootcert` when one is given, as libpq does), `verify-ca`
//! (the certificate chains to `sslrootcert`) and `verify-full` (and names the host).
//! `sslrootcert = "system"` trusts the public web roots (Mozilla's list, `webpki-roots`)
//! and, as in libpq 16, goes only with `verify-full`.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How a server connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    #[default]
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "" | "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// A mode named in full (not the config's empty default), or the error listing them.
    pub fn parse_named(s: &str) -> Result<SslMode, String> {
        SslMode::parse(s).filter(|_| !s.is_empty()).ok_or_else(|| {
            format!("sslmode {s:?} is not one of disable, prefer, require, verify-ca, verify-full")
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The `sslrootcert` value that names the public roots instead of a file.
pub const SYSTEM_ROOTS: &str = "system";

/// A placement's TLS settings: the mode and the PEM file of trusted roots ("" for none,
/// [`SYSTEM_ROOTS`] for the public ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServerTls {
    pub mode: SslMode,
    pub root_cert: String,
}

impl ServerTls {
    /// Refuse settings that cannot work, before any connection tries them.
    pub fn check(&self) -> Result<(), String> {
        if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) && self.root_cert.is_empty()
        {
            return Err(format!(
                "sslmode {} needs sslrootcert (a PEM file of the CAs to trust)",
                self.mode.as_str()
            ));
        }
        if self.root_cert == SYSTEM_ROOTS && self.mode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode verify-full, not {} (as libpq: the public roots \
                 vouch for names, so the name must be checked)",
                self.mode.as_str()
            ));
        }
        Ok(())
    }

    /// The rustls client configuration, `None` for `disable`. Reads `root_cert`.
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, String> {
        self.check()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let check = match self.mode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer => Check::Nothing,
            SslMode::Require if self.root_cert.is_empty() => Check::Nothing,
            SslMode::Require | SslMode::VerifyCa => Check::Chain,
            SslMode::VerifyFull => Check::ChainAndName,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(Unchecked(provider.clone())),
            Check::Chain | Check::ChainAndName => {
                let roots = self.roots()?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("sslrootcert {}: {e}", self.root_cert))?;
                if check == Check::Chain {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        if self.root_cert == SYSTEM_ROOTS {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        let certs = crate::frontend::tls::pem_certificates(&self.root_cert, "sslrootcert")?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "no certificate found in sslrootcert {}",
                self.root_cert
            ));
        }
        Ok(roots)
    }
}

/// The configuration that encrypts without checking the certificate (`prefer`, and
/// `require` without roots), built once.
pub fn unchecked_config() -> Arc<ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let unchecked = ServerTls {
                mode: SslMode::Prefer,
                root_cert: String::new(),
            };
            unchecked
                .client_config()
                .expect("prefer reads no file")
                .expect("prefer has a configuration")
        })
        .clone()
}

#[derive(PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// `prefer` and `require` without roots: encrypted, the certificate taken as it is (the
/// handshake's signatures are still checked, so the server holds the certificate's key).
struct Unchecked(Arc<CryptoProvider>);

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl fmt::Debug for Unchecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Unchecked")
    }
}

impl fmt::Debug for ChainOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainOnly")
    }
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_libpq_spells_them() {
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(m).unwrap().as_str(), m);
        }
        assert_eq!(SslMode::parse(""), Some(SslMode::Disable));
        assert_eq!(SslMode::parse("allow"), None);
        assert_eq!(SslMode::parse("Require"), None);
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        let t = |mode, root: &str| ServerTls {
            mode,
            root_cert: root.into(),
        };
        assert!(t(SslMode::VerifyFull, "").check().is_err());
        assert!(t(SslMode::VerifyCa, "").check().is_err());
        assert!(t(SslMode::Require, "").check().is_ok());
        assert!(t(SslMode::Disable, "").client_config().unwrap().is_none());
        assert!(t(SslMode::Require, "").client_config().unwrap().is_some());
        let e = t(SslMode::VerifyFull, "/nonexistent/root.crt")
            .client_config()
            .unwrap_err();
        assert!(e.contains("/nonexistent/root.crt"), "{e}");
    }
}
