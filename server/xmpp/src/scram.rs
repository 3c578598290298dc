//! Server side of SASL SCRAM (RFC 5802, RFC 7677: SHA-1 and SHA-256, and the -PLUS variants
//! with the `tls-exporter` channel binding of RFC 9266),
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
    /// Wrong proof. -> SASL <not-authorized/>
    NotAuthorized,
}

/// The gs2-cbind-flag of a client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CbFlag {
    /// "n": the client does not support channel binding.
    None,
    /// "y": the client supports it but thinks the server does not.
    NotOffered,
    /// "p=<type>": the client binds to this channel-binding type.
    Bound(String),
}

/// Parsed client-first-message.
pub struct ClientFirst {
    pub cb: CbFlag,
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
    let cb = match flag {
        "n" => CbFlag::None,
        "y" => CbFlag::NotOffered,
        f => match f.strip_prefix("p=") {
            Some(kind) if !kind.is_empty() => CbFlag::Bound(kind.to_owned()),
            _ => return Err(ScramError::Malformed("bad gs2-cbind-flag")),
        },
    };
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
        cb,
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
    /// base64(gs2-header, then the channel-binding data when bound): what c= must be.
    cbind: String,
    nonce: String,
    server_first: String,
}

impl ScramServer {
    /// `server_nonce_part`: >= 18 random printable chars without ','. `cb_data`: the
    /// channel-binding data the client bound to (when its flag is p=). Returns the state and
    /// the server-first-message to send in <challenge/>.
    pub fn new(
        hash: ScramHash,
        first: &ClientFirst,
        creds: StoredScram,
        server_nonce_part: &str,
        cb_data: Option<&[u8]>,
    ) -> (Self, Vec<u8>) {
        let nonce = format!("{}{}", first.client_nonce, server_nonce_part);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&creds.salt), creds.iterations);
        let out = server_first.clone().into_bytes();
        (
            Self {
                hash,
                creds,
                client_first_bare: first.bare.clone(),
                cbind: {
                    let mut input = first.gs2_header.clone().into_bytes();
                    if matches!(first.cb, CbFlag::Bound(_)) {
                        input.extend_from_slice(cb_data.unwrap_or_default());
                    }
                    B64.encode(input)
                },
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
        // c= is base64(gs2-header [+ channel-binding data]) exactly; a mismatch under channel
        // binding means another TLS channel: not authorized.
        if cbind != self.cbind {
            return Err(ScramError::NotAuthorized);
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

    /// Hi() of RFC 5802 with HMAC-SHA-256 (4096 iterations), for a test client.
    fn salted_password(password: &[u8], salt: &[u8]) -> Vec<u8> {
        let mut u = ScramHash::Sha256.hmac(password, &[salt, &[0, 0, 0, 1]].concat());
        let mut out = u.clone();
        for _ in 1..4096 {
            u = ScramHash::Sha256.hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
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
            None,
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
            None,
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
            None,
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
            None,
        );
        assert!(matches!(
            srv.finish(b"c=biws,r=other-nonce,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
            Err(ScramError::Malformed(_))
        ));
    }

    /// Under channel binding, c= carries the gs2 header and the binding data; another
    /// channel's data (a man in the middle) fails.
    #[test]
    fn channel_binding() {
        let salt = B64.decode("QSXCR+Q6sek8bf92").unwrap();
        let first = parse_client_first(b"p=tls-exporter,,n=user,r=abc").unwrap();
        let key = creds(ScramHash::Sha256, b"pencil", &salt);
        let salted = salted_password(b"pencil", &salt);
        let (srv, sf) = ScramServer::new(ScramHash::Sha256, &first, key, "xyz", Some(b"the channel"));
        let sf = String::from_utf8(sf).unwrap();
        let final_for = |cb: &[u8]| {
            let mut input = b"p=tls-exporter,,".to_vec();
            input.extend_from_slice(cb);
            let without_proof = format!("c={},r=abcxyz", B64.encode(input));
            let auth = format!("n=user,r=abc,{sf},{without_proof}");
            let client_key = ScramHash::Sha256.hmac(&salted, b"Client Key");
            let sig = ScramHash::Sha256.hmac(&ScramHash::Sha256.hash(&client_key), auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
        };
        assert_eq!(
            ScramServer::new(
                ScramHash::Sha256,
                &first,
                creds(ScramHash::Sha256, b"pencil", &salt),
                "xyz",
                Some(b"another channel")
            )
            .0
            .finish(&final_for(b"the channel")),
            Err(ScramError::NotAuthorized)
        );
        assert!(srv.finish(&final_for(b"the channel")).is_ok());
    }

    #[test]
    fn escapes_and_flags() {
        let f = parse_client_first(b"y,a=a=3Db@x,n=a=3Db=2Cc,r=abc").unwrap();
        assert_eq!(f.username, "a=b,c");
        assert_eq!(f.authzid.as_deref(), Some("a=b@x"));
        assert_eq!(f.gs2_header, "y,a=a=3Db@x,");
        assert_eq!(
            parse_client_first(b"p=tls-exporter,,n=u,r=x").unwrap().cb,
            CbFlag::Bound("tls-exporter".into())
        );
        assert!(matches!(
            parse_client_first(b"p=,,n=u,r=x"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            parse_client_first(b"n,,m=ext,n=u,r=x"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(parse_client_first(b"garbage"), Err(ScramError::Malformed(_))));
    }
}
