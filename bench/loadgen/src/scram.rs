//! SCRAM-SHA-1 client side (RFC 5802), for XMPP SASL. The salted password is cached per
//! (password, salt, iterations): thousands of logins to one account then cost the load
//! generator one PBKDF2, and the server its own verification only.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};

type SaltedKey = (String, Vec<u8>, u32);
static SALTED: Mutex<Option<HashMap<SaltedKey, Vec<u8>>>> = Mutex::new(None);

fn hmac(key: &[u8], data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key)?;
    m.update(data);
    Ok(m.finalize().into_bytes().to_vec())
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let key = (password.to_owned(), salt.to_vec(), iterations);
    if let Ok(guard) = SALTED.lock()
        && let Some(v) = guard.as_ref().and_then(|m| m.get(&key))
    {
        return v.clone();
    }
    let mut out = vec![0u8; 20];
    pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut out);
    if let Ok(mut guard) = SALTED.lock() {
        guard.get_or_insert_with(HashMap::new).insert(key, out.clone());
    }
    out
}

/// One SCRAM exchange in progress.
pub struct Scram {
    client_first_bare: String,
    nonce: String,
    password: String,
    server_signature: Vec<u8>,
}

impl Scram {
    /// The client-first message (base64, for `<auth>`). User names here are plain ASCII
    /// localparts, so no `=2C`/`=3D` escaping is needed.
    pub fn start(user: &str, password: &str, nonce: &str) -> (Scram, String) {
        let client_first_bare = format!("n={user},r={nonce}");
        let msg = B64.encode(format!("n,,{client_first_bare}"));
        let s = Scram {
            client_first_bare,
            nonce: nonce.to_owned(),
            password: password.to_owned(),
            server_signature: Vec::new(),
        };
        (s, msg)
    }

    /// From the server-first challenge (base64), the client-final message (base64).
    pub fn respond(&mut self, challenge_b64: &str) -> anyhow::Result<String> {
        let server_first = String::from_utf8(B64.decode(challenge_b64.trim())?)?;
        let (mut r, mut s, mut i) = (None, None, None);
        for part in server_first.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => r = Some(v),
                Some(("s", v)) => s = Some(v),
                Some(("i", v)) => i = Some(v),
                _ => {}
            }
        }
        let nonce = r.context("SCRAM: no nonce")?;
        if !nonce.starts_with(&self.nonce) {
            bail!("SCRAM: server nonce does not extend ours");
        }
        let salt = B64.decode(s.context("SCRAM: no salt")?)?;
        let iterations: u32 = i.context("SCRAM: no iteration count")?.parse()?;
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key")?;
        let stored_key = Sha1::digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes())?;
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = hmac(&salted, b"Server Key")?;
        self.server_signature = hmac(&server_key, auth_message.as_bytes())?;
        Ok(B64.encode(format!("{without_proof},p={}", B64.encode(proof))))
    }

    /// Check the server's final message (the `<success>` text, base64): it proves the server
    /// knew the password too.
    pub fn verify(&self, success_b64: &str) -> anyhow::Result<()> {
        let text = String::from_utf8(B64.decode(success_b64.trim())?)?;
        let v = text.strip_prefix("v=").context("SCRAM: no server signature")?;
        if B64.decode(v)? != self.server_signature {
            bail!("SCRAM: wrong server signature");
        }
        Ok(())
    }
}
