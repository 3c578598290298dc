//! SCRAM-SHA-256-PLUS with the `tls-exporter` channel binding (RFC 9266), from a client
//! written here (no Python client library exports TLS keying material): the right binding
//! logs in, another channel's binding is refused, and a client that says the server offered
//! no binding (a downgrade) is refused while plain SCRAM still works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use estuary_tests::{Backend, Instance};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Accepts the test server's self-signed certificate.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

async fn read_until<S: AsyncReadExt + Unpin>(s: &mut S, marker: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(marker) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the server answered in time")
            .unwrap();
        assert!(
            n > 0,
            "stream closed before {marker}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// STARTTLS, then the first stream over TLS: the TLS stream and its features.
async fn tls_stream(port: u16) -> (TlsStream<TcpStream>, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(HEADER.as_bytes()).await.unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    read_until(&mut tcp, "proceed").await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(HEADER.as_bytes()).await.unwrap();
    let features = read_until(&mut tls, "</stream:features>").await;
    (tls, features)
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let from = s.find(start).unwrap() + start.len();
    let rest = &s[from..];
    let a = rest.find('>').unwrap() + 1;
    &rest[a..rest.find(end).unwrap()]
}

/// One SCRAM-SHA-256 exchange with the given mechanism, gs2 header and binding data: the
/// server's last answer (`<success>` or `<failure>`).
async fn scram(tls: &mut TlsStream<TcpStream>, mechanism: &str, gs2: &str, binding: &[u8], password: &str) -> String {
    let bare = "n=carol,r=clientnonce123";
    let first = format!("{gs2}{bare}");
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
        B64.encode(&first)
    );
    tls.write_all(auth.as_bytes()).await.unwrap();
    let reply = read_until(tls, "</").await;
    if !reply.contains("<challenge") {
        return reply;
    }
    let server_first = String::from_utf8(B64.decode(between(&reply, "<challenge", "</challenge>")).unwrap()).unwrap();
    let mut fields = server_first.split(',');
    let nonce = fields.next().unwrap().strip_prefix("r=").unwrap().to_owned();
    let salt = B64.decode(fields.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
    let iterations: u32 = fields.next().unwrap().strip_prefix("i=").unwrap().parse().unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let mut cbind = gs2.as_bytes().to_vec();
    cbind.extend_from_slice(binding);
    let without_proof = format!("c={},r={nonce}", B64.encode(&cbind));
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    let response = format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
    );
    tls.write_all(response.as_bytes()).await.unwrap();
    read_until(tls, "</").await
}

fn exporter(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    let conn = tls.get_ref().1;
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn scram_plus_with_tls_exporter() {
    let inst = Instance::with_config(Backend::Sqlite, "[xmpp]\nc2s_listen = [\"127.0.0.1:{C2S_PORT}\"]\n").await;
    let server = inst.start().await;
    assert!(
        inst.cli(&["user", "create", "carol", "--password", "carol-pw"])
            .status
            .success()
    );
    let port = inst.c2s_port;

    let (mut tls, features) = tls_stream(port).await;
    assert!(
        features.contains("<mechanism>SCRAM-SHA-256-PLUS</mechanism>"),
        "{features}"
    );
    assert!(
        features.contains("<channel-binding type='tls-exporter'"),
        "XEP-0440 types: {features}"
    );
    let binding = exporter(&tls);
    let answer = scram(&mut tls, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,", &binding, "carol-pw").await;
    assert!(answer.contains("<success"), "the right binding logs in: {answer}");

    // Another channel's binding (what a man in the middle would present).
    let (mut tls, _) = tls_stream(port).await;
    let answer = scram(&mut tls, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,", &[7; 32], "carol-pw").await;
    assert!(
        answer.contains("<not-authorized"),
        "another channel's binding: {answer}"
    );

    // "y": the client would bind but believes the server offered no -PLUS: a downgrade.
    let (mut tls, _) = tls_stream(port).await;
    let answer = scram(&mut tls, "SCRAM-SHA-256", "y,,", &[], "carol-pw").await;
    assert!(
        answer.contains("<not-authorized"),
        "a downgraded client is refused: {answer}"
    );

    // A client without channel binding still logs in; -PLUS without a binding is refused.
    let (mut tls, _) = tls_stream(port).await;
    let answer = scram(&mut tls, "SCRAM-SHA-256", "n,,", &[], "carol-pw").await;
    assert!(answer.contains("<success"), "plain SCRAM still works: {answer}");
    let (mut tls, _) = tls_stream(port).await;
    let answer = scram(&mut tls, "SCRAM-SHA-256-PLUS", "n,,", &[], "carol-pw").await;
    assert!(answer.contains("<not-authorized"), "-PLUS without a binding: {answer}");
    assert!(server.terminate().await.success());
}
