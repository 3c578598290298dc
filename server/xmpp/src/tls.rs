//! TLS for c2s connections over rustls' unbuffered API, so that an idle connection holds no
//! buffer at all: ciphertext received, plaintext not yet read and ciphertext not yet written
//! each live in a vector that is freed the moment it is empty. (The buffered `ServerConnection`
//! keeps a 4 KiB record buffer for the connection's whole life, the largest single part of an
//! idle connection.)
//!
//! The unbuffered API does not offer `export_keying_material`. SCRAM -PLUS needs it (RFC 9266
//! `tls-exporter`), so the exporter master secret is captured through rustls' `KeyLog` hook,
//! which rustls calls synchronously while it processes the records we hand it on this thread,
//! and the exporter is derived from it as RFC 8446 §7.5 defines. The secret never leaves the
//! connection's own code and is wiped once the binding is derived.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Ciphertext kept while records are incomplete: a handshake message may span records (rustls
/// refuses one over 64 KiB), an application record is at most 16 KiB plus overhead.
const MAX_INCOMING: usize = 0x1_0000 + 0x4800;

/// Plaintext taken per write: one full record.
const MAX_WRITE: usize = 0x4000;

/// Bytes read from the socket at a time, on the stack until rustls has seen them.
const READ_CHUNK: usize = 4096;

/// RFC 9266: the exporter label and length for channel binding.
const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
const CHANNEL_BINDING_LEN: usize = 32;

thread_local! {
    /// The exporter master secret rustls just derived on this thread, until the connection
    /// that drove rustls takes it.
    static EXPORTER_SECRET: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// rustls' key-log hook, keeping only the TLS 1.3 exporter master secret, for the connection
/// whose records are being processed on this thread.
#[derive(Debug)]
struct ExporterCapture;

impl rustls::KeyLog for ExporterCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == "EXPORTER_SECRET" {
            EXPORTER_SECRET.with(|s| *s.borrow_mut() = Some(secret.to_vec()));
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == "EXPORTER_SECRET"
    }
}

fn take_exporter_secret() -> Option<Vec<u8>> {
    EXPORTER_SECRET.with(|s| s.borrow_mut().take())
}

/// Accepts TLS connections with one server configuration.
pub(crate) struct Acceptor {
    config: Arc<rustls::ServerConfig>,
}

impl Acceptor {
    pub(crate) fn new(mut config: rustls::ServerConfig) -> Self {
        config.key_log = Arc::new(ExporterCapture);
        Self {
            config: Arc::new(config),
        }
    }

    /// The TLS handshake on `tcp`, up to the client's Finished.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        let mut tls = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_read: 0,
            outgoing: Vec::new(),
            outgoing_sent: 0,
            channel_binding: None,
            read_closed: false,
            close_queued: false,
        };
        std::future::poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(tls)
    }
}

/// A server-side TLS connection over TCP.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet consumed by rustls.
    incoming: Vec<u8>,
    /// Plaintext of a record the reader has not taken whole, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// Ciphertext to write, from `outgoing_sent` on.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// RFC 9266 `tls-exporter` data, on TLS 1.3.
    channel_binding: Option<[u8; CHANNEL_BINDING_LEN]>,
    /// The peer's close_notify was read.
    read_closed: bool,
    /// Our close_notify is in `outgoing` (or sent).
    close_queued: bool,
}

/// What a call into rustls is for.
enum Intent<'a, 'b> {
    Handshake,
    Read(&'a mut ReadBuf<'b>),
    Write(&'a [u8]),
    Close,
}

/// Where rustls stopped.
enum Step {
    /// Plaintext was given to the reader (or, during the handshake, is waiting for it).
    Read,
    /// `outgoing` must reach the peer before rustls goes on.
    Transmit,
    /// rustls needs more ciphertext, or (after the handshake) nothing more happens until some
    /// arrives or the caller writes.
    Input,
    /// This many plaintext bytes (or the close_notify) went into `outgoing`.
    Written(usize),
    /// The peer closed the connection with close_notify.
    PeerClosed,
    /// Both sides sent close_notify.
    Closed,
}

fn tls_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// RFC 9266 `tls-exporter` channel-binding data (TLS 1.3 only).
    pub(crate) fn channel_binding(&self) -> Option<&[u8]> {
        self.channel_binding.as_ref().map(|b| &b[..])
    }

    /// Runs rustls over the ciphertext received so far until it needs the caller.
    fn advance(&mut self, mut intent: Intent<'_, '_>) -> io::Result<Step> {
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(&mut self.incoming[..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.send_alert();
                    return Err(tls_error(e));
                }
            };
            let step = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    if matches!(intent, Intent::Handshake) {
                        // The client's first data came with its Finished: leave it for the reader.
                        Some(Step::Read)
                    } else {
                        let mut gave = false;
                        while let Some(record) = traffic.next_record() {
                            let record = record.map_err(tls_error)?;
                            discard += record.discard;
                            let rest = match &mut intent {
                                Intent::Read(buf) => {
                                    let n = buf.remaining().min(record.payload.len());
                                    buf.put_slice(&record.payload[..n]);
                                    gave = true;
                                    &record.payload[n..]
                                }
                                _ => record.payload,
                            };
                            if !rest.is_empty() {
                                // Keep what the reader has no room for; rustls must be emptied
                                // before it lets anyone write.
                                self.plaintext.extend_from_slice(rest);
                                if matches!(intent, Intent::Read(_)) {
                                    break;
                                }
                            }
                        }
                        gave.then_some(Step::Read)
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    append(&mut self.outgoing, |out| encoded(data.encode(out)))?;
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    if self.outgoing_sent == self.outgoing.len() {
                        transmit.done();
                        None
                    } else {
                        Some(Step::Transmit)
                    }
                }
                ConnectionState::BlockedHandshake => Some(Step::Input),
                ConnectionState::WriteTraffic(mut traffic) => match intent {
                    Intent::Write(data) => {
                        let data = &data[..data.len().min(MAX_WRITE)];
                        append(&mut self.outgoing, |out| encrypted(traffic.encrypt(data, out)))?;
                        Some(Step::Written(data.len()))
                    }
                    Intent::Close if !self.close_queued => {
                        append(&mut self.outgoing, |out| encrypted(traffic.queue_close_notify(out)))?;
                        self.close_queued = true;
                        Some(Step::Written(0))
                    }
                    _ => Some(Step::Input),
                },
                ConnectionState::PeerClosed => Some(Step::PeerClosed),
                ConnectionState::Closed => Some(Step::Closed),
                // Early data is never accepted (`max_early_data_size` is 0), and later states
                // are for features we do not enable.
                _ => return Err(tls_error("unexpected TLS state")),
            };
            self.incoming.drain(..discard);
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// After an error: the alert rustls queued for the peer, written if the socket takes it
    /// now (the connection is closed next either way).
    fn send_alert(&mut self) {
        while let Ok(ConnectionState::EncodeTlsData(mut data)) = self.conn.process_tls_records(&mut []).state {
            if append(&mut self.outgoing, |out| encoded(data.encode(out))).is_err() {
                break;
            }
        }
        if let Some(rest) = self.outgoing.get(self.outgoing_sent..) {
            let _ = self.tcp.try_write(rest);
        }
    }

    /// Writes `outgoing` to the socket; the buffer is freed once all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.outgoing_sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_sent += n;
        }
        self.outgoing = Vec::new();
        self.outgoing_sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads ciphertext from the socket; an end of the connection here, where rustls still
    /// expects records, is an error (as the buffered API reports it).
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed connection without sending TLS close_notify",
            )));
        }
        if self.incoming.len() + buf.filled().len() > MAX_INCOMING {
            return Poll::Ready(Err(tls_error("TLS message too large")));
        }
        self.incoming.extend_from_slice(buf.filled());
        Poll::Ready(Ok(()))
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let step = self.advance(Intent::Handshake);
            if let Some(mut secret) = take_exporter_secret() {
                self.channel_binding = tls13_channel_binding(&self.conn, &secret);
                secret.fill(0);
            }
            match step? {
                Step::Transmit => ready!(self.poll_send(cx))?,
                Step::Read => return self.poll_send(cx),
                Step::Input | Step::Written(_) if !self.conn.is_handshaking() => return self.poll_send(cx),
                Step::Input | Step::Written(_) => ready!(self.poll_receive(cx))?,
                Step::PeerClosed | Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection during the TLS handshake",
                    )));
                }
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plaintext_read < this.plaintext.len() {
                let rest = &this.plaintext[this.plaintext_read..];
                let n = buf.remaining().min(rest.len());
                buf.put_slice(&rest[..n]);
                this.plaintext_read += n;
                if this.plaintext_read == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plaintext_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match this.advance(Intent::Read(buf))? {
                Step::Read => return Poll::Ready(Ok(())),
                Step::Transmit => ready!(this.poll_send(cx))?,
                Step::Input | Step::Written(_) => ready!(this.poll_receive(cx))?,
                Step::PeerClosed | Step::Closed => this.read_closed = true,
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One record in flight at most: what is queued goes first.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.advance(Intent::Write(data))? {
                Step::Written(n) => {
                    // Written as far as the socket takes it now; the rest on the next write
                    // or flush.
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                Step::Transmit => ready!(this.poll_send(cx))?,
                Step::PeerClosed => this.read_closed = true,
                Step::Read | Step::Input => return Poll::Ready(Err(io::Error::other("TLS connection cannot send"))),
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.close_queued {
            match this.advance(Intent::Close)? {
                Step::Transmit => ready!(this.poll_send(cx))?,
                Step::PeerClosed => this.read_closed = true,
                // Closed already, or cannot send: nothing to say.
                _ => this.close_queued = true,
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Appends what `write` puts in the slice it is given to `out`, growing the slice to the size
/// `write` asks for (`Err(Err(size))`); `Err(Ok(message))` is a TLS error.
fn append(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Result<String, usize>>,
) -> io::Result<()> {
    let at = out.len();
    let mut room = 1024;
    loop {
        out.resize(at + room, 0);
        match write(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(Err(required)) if required > room => room = required,
            Err(Err(_)) => {
                out.truncate(at);
                return Err(tls_error("TLS buffer size refused"));
            }
            Err(Ok(message)) => {
                out.truncate(at);
                return Err(tls_error(message));
            }
        }
    }
}

/// `append`'s view of rustls' encoding of a handshake record.
fn encoded(result: Result<usize, EncodeError>) -> Result<usize, Result<String, usize>> {
    match result {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(e)) => Err(Err(e.required_size)),
        Err(e) => Err(Ok(e.to_string())),
    }
}

/// `append`'s view of rustls' encryption of application data or an alert.
fn encrypted(result: Result<usize, EncryptError>) -> Result<usize, Result<String, usize>> {
    match result {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(e)) => Err(Err(e.required_size)),
        Err(e) => Err(Ok(e.to_string())),
    }
}

/// RFC 9266 channel binding from the TLS 1.3 exporter master secret: RFC 8446 §7.5,
/// TLS-Exporter(label, "", 32) = HKDF-Expand-Label(Derive-Secret(secret, label, ""),
/// "exporter", Hash(""), 32).
fn tls13_channel_binding(conn: &UnbufferedServerConnection, secret: &[u8]) -> Option<[u8; CHANNEL_BINDING_LEN]> {
    let suite = conn.negotiated_cipher_suite()?.tls13()?;
    let empty_hash = suite.common.hash_provider.hash(&[]);
    let mut derived = vec![0u8; suite.common.hash_provider.output_len()];
    let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(secret));
    expand_label(&*expander, CHANNEL_BINDING_LABEL, empty_hash.as_ref(), &mut derived)?;
    let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(&derived));
    derived.fill(0);
    let mut binding = [0u8; CHANNEL_BINDING_LEN];
    expand_label(&*expander, b"exporter", empty_hash.as_ref(), &mut binding)?;
    Some(binding)
}

/// RFC 8446 §7.1 HKDF-Expand-Label.
fn expand_label(expander: &dyn HkdfExpander, label: &[u8], context: &[u8], out: &mut [u8]) -> Option<()> {
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(b"tls13 ".len() + label.len()).ok()?];
    let context_len = [u8::try_from(context.len()).ok()?];
    expander
        .expand_slice(&[&length, &label_len, b"tls13 ", label, &context_len, context], out)
        .ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Acceptor, TlsStream};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server configuration with a fresh certificate for `localhost`, and a client
    /// configuration trusting it, limited to `versions`.
    fn configs(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (rustls::ServerConfig, Arc<rustls::ClientConfig>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = CertificateDer::from(generated.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    /// A server stream and a tokio-rustls client connected to it over loopback TCP.
    async fn pair(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
        let (server, client) = configs(versions);
        let acceptor = Acceptor::new(server);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(client);
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let server = acceptor.accept(tcp).await.unwrap();
        (server, client.await.unwrap())
    }

    fn holds_no_buffer(tls: &TlsStream) -> bool {
        tls.incoming.capacity() == 0 && tls.plaintext.capacity() == 0 && tls.outgoing.capacity() == 0
    }

    #[tokio::test]
    async fn data_both_ways_and_no_buffer_while_idle() {
        let (mut server, mut client) = pair(rustls::DEFAULT_VERSIONS).await;
        // Larger than a record, so records are split across reads and kept in part.
        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&big).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; big.len()];
        let mut small = [0u8; 1000];
        let mut at = 0;
        while at < big.len() {
            let n = server.read(&mut small).await.unwrap();
            assert!(n > 0, "early end after {at} bytes");
            got[at..at + n].copy_from_slice(&small[..n]);
            at += n;
        }
        assert_eq!(got, big);
        assert!(holds_no_buffer(&server), "buffers kept after every byte was read");

        server.write_all(&big).await.unwrap();
        server.flush().await.unwrap();
        assert!(holds_no_buffer(&server), "buffers kept after every byte was written");
        let mut echoed = vec![0u8; big.len()];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, big);
    }

    #[tokio::test]
    async fn channel_binding_matches_the_clients_exporter_on_tls13() {
        let (server, client) = pair(&[&rustls::version::TLS13]).await;
        let expected = client
            .get_ref()
            .1
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap();
        assert_eq!(server.channel_binding(), Some(&expected[..]));

        // Another connection binds to another channel.
        let (other, _client) = pair(&[&rustls::version::TLS13]).await;
        assert!(other.channel_binding().is_some());
        assert_ne!(other.channel_binding(), server.channel_binding());
    }

    #[tokio::test]
    async fn no_channel_binding_on_tls12_but_data_flows() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS12]).await;
        assert_eq!(server.channel_binding(), None);
        client.write_all(b"<presence/>").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"<presence/>");
    }

    #[tokio::test]
    async fn close_notify_either_way_is_a_clean_end() {
        let (mut server, mut client) = pair(rustls::DEFAULT_VERSIONS).await;
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"last words");

        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"bye");
    }

    #[tokio::test]
    async fn end_without_close_notify_is_an_unexpected_eof() {
        let (mut server, client) = pair(rustls::DEFAULT_VERSIONS).await;
        // A FIN without close_notify (closing the socket outright would reset it: the
        // server's session tickets are still unread).
        let mut tcp = client.into_inner().0;
        tcp.shutdown().await.unwrap();
        let mut buf = [0u8; 16];
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e:?}");
    }

    #[tokio::test]
    async fn bytes_that_are_not_tls_fail_the_handshake_with_an_alert() {
        let (server, _) = configs(rustls::DEFAULT_VERSIONS);
        let acceptor = Acceptor::new(server);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"<?xml version='1.0'?><stream:stream to='example.org'>")
                .await
                .unwrap();
            let mut reply = Vec::new();
            let _ = tcp.read_to_end(&mut reply).await;
            reply
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let e = acceptor.accept(tcp).await.err().expect("handshake on XML succeeded");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        let reply = client.await.unwrap();
        // A TLS alert record (content type 21), as rustls' buffered API would send.
        assert_eq!(reply.first(), Some(&21), "reply {reply:?}");
    }
}
