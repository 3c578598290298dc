//! Password credentials: an Argon2id hash for Matrix login, and RFC 5802 SCRAM salted keys
//! (SHA-1 and SHA-256) for XMPP SASL, all derived when the password is set. The plaintext
//! is never stored.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use estuary_store::{PasswordCredentials, ScramKeys};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// PBKDF2 iteration count for new SCRAM credentials (RFC 7677 §4 recommends at least 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Longest password accepted, in bytes; Argon2 would accept more, but nobody needs it and
/// it bounds the work an attacker can ask of the server.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must not be empty")]
    Empty,
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password has characters that SASLprep (RFC 4013) prohibits, so XMPP clients could not log in with it")]
    Prohibited,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Derive all stored credentials from a password. CPU-heavy: call from a blocking thread.
pub fn derive(password: &str) -> Result<PasswordCredentials, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    // RFC 5802 §2.2: Hi() takes Normalize(password), i.e. SASLprep (RFC 4013).
    let prepped = stringprep::saslprep(password).map_err(|_| PasswordError::Prohibited)?;
    let argon2_hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| PasswordError::Hashing(e.to_string()))?
        .to_string();
    let mut salt = vec![0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(PasswordCredentials {
        argon2_hash,
        scram_sha1: scram_keys_sha1(prepped.as_bytes(), &salt, SCRAM_ITERATIONS),
        scram_sha256: scram_keys_sha256(prepped.as_bytes(), &salt, SCRAM_ITERATIONS),
        scram_salt: salt,
        scram_iterations: SCRAM_ITERATIONS,
    })
}

/// Check a password against a stored Argon2 hash. CPU-heavy: call from a blocking thread.
pub fn verify(argon2_hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(argon2_hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// RFC 5802 §3: SaltedPassword = Hi(password, salt, i); ClientKey = HMAC(SaltedPassword,
/// "Client Key"); StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
macro_rules! scram_keys_fn {
    ($name:ident, $hash:ty, $len:expr) => {
        pub fn $name(password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
            let mut salted = [0u8; $len];
            pbkdf2::pbkdf2_hmac::<$hash>(password, salt, iterations, &mut salted);
            let hmac = |msg: &[u8]| -> Vec<u8> {
                let mut mac = <Hmac<$hash> as KeyInit>::new_from_slice(&salted)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                mac.update(msg);
                mac.finalize().into_bytes().to_vec()
            };
            let client_key = hmac(b"Client Key");
            ScramKeys {
                stored_key: <$hash>::digest(&client_key).to_vec(),
                server_key: hmac(b"Server Key"),
            }
        }
    };
}
scram_keys_fn!(scram_keys_sha1, Sha1, 20);
scram_keys_fn!(scram_keys_sha256, Sha256, 32);

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    fn hmac1(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }

    /// RFC 5802 §5 example: the server signature computed from our ServerKey must match.
    #[test]
    fn rfc5802_sha1_vector() {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let keys = scram_keys_sha1(b"pencil", &salt, 4096);
        let auth = "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        assert_eq!(
            B64.encode(hmac1(&keys.server_key, auth.as_bytes())),
            "rmF9pqV8S7suAoZWja4dJRkFsKQ="
        );
    }

    /// RFC 7677 §3 example for SCRAM-SHA-256.
    #[test]
    fn rfc7677_sha256_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = scram_keys_sha256(b"pencil", &salt, 4096);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            B64.encode(hmac256(&keys.server_key, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn derive_and_verify() {
        let c = derive("correct horse").unwrap();
        assert!(c.argon2_hash.starts_with("$argon2id$"));
        assert!(verify(&c.argon2_hash, "correct horse"));
        assert!(!verify(&c.argon2_hash, "wrong horse"));
        assert_eq!(
            c.scram_sha256,
            scram_keys_sha256(b"correct horse", &c.scram_salt, c.scram_iterations)
        );
        let again = derive("correct horse").unwrap();
        assert_ne!(again.scram_salt, c.scram_salt, "each derivation uses a fresh salt");
    }

    #[test]
    fn refuses_bad_passwords() {
        assert_eq!(derive(""), Err(PasswordError::Empty));
        assert_eq!(derive(&"x".repeat(MAX_PASSWORD_BYTES + 1)), Err(PasswordError::TooLong));
        assert_eq!(derive("bad\u{7}bell"), Err(PasswordError::Prohibited));
    }
}
