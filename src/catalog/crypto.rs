//! Encryption of tenant backend-role passwords at rest in the catalog (AES-256-GCM).
//! The key comes from config (`catalog_key`, base64 of 32 bytes); it is never logged.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The catalog's secret key.
#[derive(Clone)]
pub struct SecretKey(Key<Aes256Gcm>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The key is malformed or a sealed value does not open with it.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("catalog_key must be base64 of 32 bytes (generate one with `tenantgate gen-key`)")]
    BadKey,
    #[error("a stored secret does not decrypt with this catalog_key")]
    Open,
}

impl SecretKey {
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let raw = B64.decode(s.trim()).map_err(|_| CryptoError::BadKey)?;
        if raw.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        Ok(SecretKey(*Key::<Aes256Gcm>::from_slice(&raw)))
    }

    /// A new random key, base64.
    pub fn generate() -> String {
        B64.encode(Aes256Gcm::generate_key(OsRng))
    }

    /// nonce (12 bytes) || ciphertext+tag
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = Aes256Gcm::new(&self.0)
            .encrypt(&nonce, plain)
            .expect("AES-GCM encrypts any input");
        [nonce.as_slice(), &ct].concat()
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 12 + 16 {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = sealed.split_at(12);
        Aes256Gcm::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| CryptoError::Open)
    }
}

/// A random password for a backend role: 32 URL-safe characters.
pub fn generate_password() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        let s = k.seal(b"hunter2");
        assert_eq!(k.open(&s).unwrap(), b"hunter2");
        let mut bad = s.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(k.open(&bad).is_err());
        let other = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        assert!(other.open(&s).is_err());
        assert!(SecretKey::from_base64("short").is_err());
        assert_eq!(generate_password().len(), 32);
    }
}
