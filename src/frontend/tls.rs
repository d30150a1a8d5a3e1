//! TLS for clients (rustls), from PEM files.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The `tls-server-end-point` channel-binding data of a DER certificate (RFC 5929): its
/// hash with the certificate's signature hash, SHA-256 for MD5/SHA-1/SHA-256.
pub fn end_point_hash(der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    // Signature algorithm OIDs (DER value bytes): sha384/sha512 with RSA, ECDSA and RSA-PSS
    // parameters are rare enough that SHA-256 is the default, as in PostgreSQL.
    const SHA384: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if SHA512.iter().any(|o| has(o)) {
        sha2::Sha512::digest(der).to_vec()
    } else if SHA384.iter().any(|o| has(o)) {
        sha2::Sha384::digest(der).to_vec()
    } else {
        sha2::Sha256::digest(der).to_vec()
    }
}

/// The clients' TLS: the acceptor and its certificate's channel-binding hash, read from
/// the files at start and again at each reload (certificate rotation).
pub struct ClientTls {
    pub acceptor: TlsAcceptor,
    /// `tls-server-end-point` data of the certificate (SCRAM-SHA-256-PLUS).
    pub cert_hash: Arc<[u8]>,
}

impl ClientTls {
    pub fn load(cfg: &TlsConfig) -> Result<ClientTls, String> {
        let (acceptor, hash) = acceptor(cfg)?;
        Ok(ClientTls {
            acceptor,
            cert_hash: hash.into(),
        })
    }
}

/// Build the acceptor and the certificate's channel-binding hash; the error names the file
/// that failed (no secrets).
fn acceptor(cfg: &TlsConfig) -> Result<(TlsAcceptor, Vec<u8>), String> {
    let certs = pem_certificates(&cfg.cert, "certificate")?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cfg.cert));
    }
    let cert_hash = end_point_hash(&certs[0]);
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| format!("reading key {}: {e}", cfg.key))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    Ok((TlsAcceptor::from(Arc::new(config)), cert_hash))
}

/// The certificates of a PEM file; the error names the file as `what` (no contents).
pub fn pem_certificates(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("reading {what} {path}: {e}"))
}
