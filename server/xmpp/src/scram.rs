//! Server side of SASL SCRAM (RFC 5802, RFC 7677: SHA-1 and SHA-256, no channel binding),
//! working from the stored StoredKey / ServerKey / salt / iterations only: the server never
//! holds a password or the SaltedPassword. (The `sasl` crate's server needs the
//! SaltedPassword and rejects the common `n,,` header, so this is done here.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => {
                let Ok(mut m) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
                    unreachable!("HMAC accepts any key length")
                };
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
            Self::Sha256 => {
                let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
                    unreachable!("HMAC accepts any key length")
                };
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
        }
    }
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => Sha1::digest(data).to_vec(),
            Self::Sha256 => Sha256::digest(data).to_vec(),
        }
    }
}

/// What the store holds for one hash (the account's ScramKeys with its salt and iterations).
pub struct StoredScram {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// -> SASL <malformed-request/>
    Malformed(&'static str),
    /// Client asked for channel binding (p=...), which we never advertise (-PLUS).
    /// -> SASL <malformed-request/> (or not-authorized)
    ChannelBindingUnsupported,
    /// Wrong proof. -> SASL <not-authorized/>
    NotAuthorized,
}

/// Parsed client-first-message.
pub struct ClientFirst {
    /// e.g. "n,," or "y,," or "n,a=alice@example.org,"
    pub gs2_header: String,
    pub authzid: Option<String>,
    /// unescaped (=2C -> ',', =3D -> '='), not yet normalised
    pub username: String,
    pub client_nonce: String,
    /// client-first-message-bare, verbatim (part of AuthMessage)
    pub bare: String,
}

fn unescape_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad saslname escape")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = msg.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
        _ => return Err(ScramError::Malformed("bad gs2-cbind-flag")),
    }
    let (authz, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
    let authzid = match authz {
        "" => None,
        a => Some(unescape_saslname(
            a.strip_prefix("a=").ok_or(ScramError::Malformed("bad authzid"))?,
        )?),
    };
    let gs2_header = format!("{flag},{authz},");
    let mut parts = bare.split(',');
    let first = parts.next().unwrap_or("");
    if first.starts_with("m=") {
        return Err(ScramError::Malformed("mandatory extension not supported"));
    }
    let username = unescape_saslname(first.strip_prefix("n=").ok_or(ScramError::Malformed("no username"))?)?;
    let client_nonce = parts
        .next()
        .and_then(|p| p.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
        .ok_or(ScramError::Malformed("no nonce"))?
        .to_owned();
    if username.is_empty() {
        return Err(ScramError::Malformed("empty username"));
    }
    Ok(ClientFirst {
        gs2_header,
        authzid,
        username,
        client_nonce,
        bare: bare.to_owned(),
    })
}

/// State between server-first and client-final.
pub struct ScramServer {
    hash: ScramHash,
    creds: StoredScram,
    client_first_bare: String,
    gs2_header: String,
    nonce: String,
    server_first: String,
}

impl ScramServer {
    /// `server_nonce_part`: >= 18 random printable chars without ','. Returns the state and the
    /// server-first-message to send in <challenge/>.
    pub fn new(hash: ScramHash, first: &ClientFirst, creds: StoredScram, server_nonce_part: &str) -> (Self, Vec<u8>) {
        let nonce = format!("{}{}", first.client_nonce, server_nonce_part);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&creds.salt), creds.iterations);
        let out = server_first.clone().into_bytes();
        (
            Self {
                hash,
                creds,
                client_first_bare: first.bare.clone(),
                gs2_header: first.gs2_header.clone(),
                nonce,
                server_first,
            },
            out,
        )
    }

    /// Check client-final-message; on success return server-final-message ("v=...") for <success/>.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // The proof must be the last attribute: client-final-message-without-proof "," proof
        let (without_proof, proof_b64) = msg.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|c| c.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no c="))?;
        let nonce = attrs
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no r="))?;
        // No channel binding: c= is base64(gs2-header) exactly.
        if cbind != B64.encode(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding mismatch"));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof_b64)
            .map_err(|_| ScramError::Malformed("bad proof base64"))?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let client_signature = self.hash.hmac(&self.creds.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::NotAuthorized);
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        if !ct_eq(&self.hash.hash(&client_key), &self.creds.stored_key) {
            return Err(ScramError::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&self.creds.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_core::password::{scram_keys_sha1, scram_keys_sha256};

    fn creds(hash: ScramHash, password: &[u8], salt: &[u8]) -> StoredScram {
        let keys = match hash {
            ScramHash::Sha1 => scram_keys_sha1(password, salt, 4096),
            ScramHash::Sha256 => scram_keys_sha256(password, salt, 4096),
        };
        StoredScram {
            salt: salt.to_vec(),
            iterations: 4096,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }

    /// RFC 7677 §3, end to end, from the keys estuary stores.
    #[test]
    fn rfc7677_sha256() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.username, "user");
        let (srv, sf) = ScramServer::new(
            ScramHash::Sha256,
            &first,
            creds(ScramHash::Sha256, b"pencil", &salt),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        assert_eq!(
            sf,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let fin = srv
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// RFC 5802 §5.
    #[test]
    fn rfc5802_sha1() {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let first = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        let (srv, sf) = ScramServer::new(
            ScramHash::Sha1,
            &first,
            creds(ScramHash::Sha1, b"pencil", &salt),
            "3rfcNHYJY1ZVvWVs7j",
        );
        assert_eq!(
            sf,
            b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let fin = srv
            .finish(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
            .unwrap();
        assert_eq!(fin, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }

    #[test]
    fn wrong_password_and_tampering_fail() {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let first = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        let (srv, _) = ScramServer::new(
            ScramHash::Sha1,
            &first,
            creds(ScramHash::Sha1, b"pencil2", &salt),
            "3rfcNHYJY1ZVvWVs7j",
        );
        assert_eq!(
            srv.finish(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            Err(ScramError::NotAuthorized)
        );
        let (srv, _) = ScramServer::new(
            ScramHash::Sha1,
            &first,
            creds(ScramHash::Sha1, b"pencil", &salt),
            "3rfcNHYJY1ZVvWVs7j",
        );
        assert!(matches!(
            srv.finish(b"c=biws,r=other-nonce,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn escapes_and_flags() {
        let f = parse_client_first(b"y,a=a=3Db@x,n=a=3Db=2Cc,r=abc").unwrap();
        assert_eq!(f.username, "a=b,c");
        assert_eq!(f.authzid.as_deref(), Some("a=b@x"));
        assert_eq!(f.gs2_header, "y,a=a=3Db@x,");
        assert!(matches!(
            parse_client_first(b"p=tls-exporter,,n=u,r=x"),
            Err(ScramError::ChannelBindingUnsupported)
        ));
        assert!(matches!(
            parse_client_first(b"n,,m=ext,n=u,r=x"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(parse_client_first(b"garbage"), Err(ScramError::Malformed(_))));
    }
}
