//! Password credentials: an Argon2id hash for Matrix login, and RFC 5802 SCRAM salted keys
//! (SHA-1 and SHA-256) for XMPP SASL, all derived when the password is set. The plaintext
//! is never stored.

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    let argon2_hash = argon2_hash(password.as_bytes()).map_err(PasswordError::Hashing)?;
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

/// Check a password against a stored Argon2 hash (PHC string). CPU-heavy: call from a
/// blocking thread.
pub fn verify(argon2_hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(hash) = PasswordHash::new(argon2_hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        Params::try_from(&hash),
        hash.salt.as_ref(),
        hash.hash.as_ref(),
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
        None => Version::default(),
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    argon2_into(&argon2, password.as_bytes(), salt, &mut out).is_ok() && ct_eq(&out, expected.as_bytes())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

thread_local! {
    /// Argon2's working memory (19 MiB with the default parameters), kept for the life of
    /// the thread and reused by every hash on it. Allocated and freed per hash (what the
    /// argon2 crate does by itself), glibc keeps such blocks resident: bench/ measured a
    /// server at hundreds of megabytes after a few dozen logins.
    static ARGON2_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Argon2 into `out`, on this thread's reused working memory.
fn argon2_into(argon2: &Argon2, password: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), argon2::Error> {
    let blocks = argon2.params().block_count();
    ARGON2_MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

/// A new Argon2id hash (default parameters, random 16-byte salt) as a PHC string.
fn argon2_hash(password: &[u8]) -> Result<String, String> {
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon2, password, &salt, &mut out).map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.into(),
        version: Some(u32::from(Version::V0x13)),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
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

/// Password work runs on this many dedicated threads, so the Argon2 working memory above
/// exists this many times at most (it is per thread), whatever the load. Two cores are all
/// hashing can use anyway.
const HASHING_THREADS: usize = 2;

type HashJob = Box<dyn FnOnce() + Send>;

fn hashing_queue() -> &'static std::sync::mpsc::SyncSender<HashJob> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<HashJob>> = std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<HashJob>(1024);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..HASHING_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        tx
    })
}

/// Run password work (derive, verify) on the hashing threads.
pub async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, crate::CoreError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = reply.send(work());
    });
    let gone = || crate::CoreError::Internal("the password hashing threads are gone".into());
    match hashing_queue().try_send(job) {
        Ok(()) => {}
        // The queue is bounded: wait for room off the async threads.
        Err(std::sync::mpsc::TrySendError::Full(job)) => {
            let queue = hashing_queue().clone();
            tokio::task::spawn_blocking(move || queue.send(job))
                .await
                .map_err(|e| crate::CoreError::Internal(format!("password hashing queue: {e}")))?
                .map_err(|_| gone())?;
        }
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(gone()),
    }
    answer
        .await
        .map_err(|_| crate::CoreError::Internal("password hashing failed".into()))
}

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

    /// Hashes written by the argon2 crate's own hasher (as earlier versions stored them)
    /// verify, and ours verify with the crate's verifier: the same PHC strings.
    #[test]
    fn compatible_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default().hash_password(b"old password").unwrap().to_string();
        assert!(verify(&theirs, "old password"));
        assert!(!verify(&theirs, "other"));
        let ours = derive("new password").unwrap().argon2_hash;
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"new password", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"other", &parsed).is_err());
        assert!(!verify("not a hash", "x"));
    }

    #[test]
    fn refuses_bad_passwords() {
        assert_eq!(derive(""), Err(PasswordError::Empty));
        assert_eq!(derive(&"x".repeat(MAX_PASSWORD_BYTES + 1)), Err(PasswordError::TooLong));
        assert_eq!(derive("bad\u{7}bell"), Err(PasswordError::Prohibited));
    }
}
