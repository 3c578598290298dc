//! A small XMPP c2s client (RFC 6120: STARTTLS, SASL SCRAM-SHA-1, resource binding) and the XMPP
//! workloads: messaging between client pairs, and many idle authenticated connections.
//! Certificates are not verified: the servers under test run on loopback with self-signed
//! certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Map, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Clock;
use crate::scram::Scram;
use crate::stats::{Latencies, ServerCpu, print_result, round3, rss_kb};

const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts any certificate (loopback benchmark only), but still checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub domain: String,
    pub tls: TlsConnector,
}

impl Target {
    pub fn new(addr: SocketAddr, domain: &str) -> anyhow::Result<Target> {
        if !addr.ip().is_loopback() {
            bail!("the load generator connects to loopback only, not {addr}");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Target {
            addr,
            domain: domain.to_owned(),
            tls: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// Read into `buf` until it holds a whole element named one of `names` (self-closing or with
/// its end tag); return that name's index and the element's text, and drop everything up to
/// the element's end from `buf`.
async fn read_element<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    names: &[&str],
) -> anyhow::Result<(usize, String)> {
    let deadline = tokio::time::Instant::now() + NEGOTIATION_TIMEOUT;
    loop {
        let text = String::from_utf8_lossy(buf);
        for (i, name) in names.iter().enumerate() {
            let open = format!("<{name}");
            let mut from = 0;
            while let Some(pos) = text[from..].find(&open).map(|p| p + from) {
                // `<name` must be followed by a space, `>` or `/`, not by a longer name.
                let after = text[pos + open.len()..].chars().next();
                if !matches!(after, Some(' ' | '>' | '/' | '\t' | '\r' | '\n')) {
                    from = pos + open.len();
                    if after.is_none() {
                        break;
                    }
                    continue;
                }
                let Some(gt) = text[pos..].find('>').map(|g| g + pos) else {
                    break;
                };
                let end = if text[..gt].ends_with('/') {
                    Some(gt + 1)
                } else {
                    let close = format!("</{name}>");
                    text[gt..].find(&close).map(|c| c + gt + close.len())
                };
                if let Some(end) = end {
                    let element = text[pos..end].to_owned();
                    drop(text);
                    buf.drain(..end);
                    return Ok((i, element));
                }
                break;
            }
        }
        if text.contains("</stream:stream>") || text.contains("<stream:error") {
            bail!("stream closed by the server while waiting for {names:?}: {text}");
        }
        drop(text);
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .with_context(|| format!("timed out waiting for {names:?}"))??;
        if n == 0 {
            bail!("connection closed while waiting for {names:?}");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The character data of a simple element (`<x ...>text</x>`; "" when empty).
fn element_text(element: &str) -> String {
    if element.trim_end().ends_with("/>") {
        return String::new();
    }
    let start = element.find('>').map_or(0, |p| p + 1);
    let end = element.rfind("</").unwrap_or(element.len()).max(start);
    element.get(start..end).unwrap_or_default().to_owned()
}

static NONCE: AtomicU64 = AtomicU64::new(1);

fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

pub type Tls = TlsStream<TcpStream>;

/// Connect, STARTTLS, authenticate with SASL SCRAM-SHA-1 and bind `resource`.
pub async fn connect(
    t: &Target,
    user: &str,
    password: &str,
    resource: &str,
) -> anyhow::Result<(ReadHalf<Tls>, WriteHalf<Tls>, Vec<u8>)> {
    let mut tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let mut buf = Vec::new();
    tcp.write_all(stream_header(&t.domain).as_bytes()).await?;
    read_element(&mut tcp, &mut buf, &["stream:features"]).await?;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await?;
    let (i, _) = read_element(&mut tcp, &mut buf, &["proceed", "failure"]).await?;
    if i != 0 {
        bail!("STARTTLS refused");
    }
    let name = ServerName::try_from(t.domain.clone())?;
    let mut tls = t.tls.connect(name, tcp).await?;
    buf.clear();
    tls.write_all(stream_header(&t.domain).as_bytes()).await?;
    read_element(&mut tls, &mut buf, &["stream:features"]).await?;
    // SCRAM-SHA-1 rather than PLAIN: Estuary checks PLAIN against the Argon2id hash (tens of
    // milliseconds a login), while real clients use SCRAM, the cheap path on every server.
    let nonce = format!("{:x}{:x}", NONCE.fetch_add(1, Ordering::Relaxed), std::process::id());
    let (mut scram, first) = Scram::start(user, password, &nonce);
    tls.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{first}</auth>").as_bytes(),
    )
    .await?;
    let (i, el) = read_element(&mut tls, &mut buf, &["challenge", "failure"]).await?;
    if i != 0 {
        bail!("SASL SCRAM-SHA-1 refused for {user}: {el}");
    }
    let last = scram.respond(&element_text(&el))?;
    tls.write_all(format!("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{last}</response>").as_bytes())
        .await?;
    let (i, el) = read_element(&mut tls, &mut buf, &["success", "failure"]).await?;
    if i != 0 {
        bail!("SASL SCRAM-SHA-1 failed for {user}: {el}");
    }
    scram.verify(&element_text(&el))?;
    buf.clear();
    tls.write_all(stream_header(&t.domain).as_bytes()).await?;
    read_element(&mut tls, &mut buf, &["stream:features"]).await?;
    tls.write_all(
        format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        )
        .as_bytes(),
    )
    .await?;
    let (_, el) = read_element(&mut tls, &mut buf, &["iq"]).await?;
    if !(el.contains("type='result'") || el.contains("type=\"result\"")) {
        bail!("bind failed for {user}/{resource}: {el}");
    }
    tls.flush().await?;
    let (r, w) = tokio::io::split(tls);
    Ok((r, w, buf))
}

/// Extracts `(seq, sent_ns)` from the bodies of whole `<message>` stanzas in `buf` and drops
/// what it has read (keeping an unfinished stanza for the next call).
fn take_messages(buf: &mut Vec<u8>, out: &mut Vec<(u64, u64)>) {
    let mut consumed = 0;
    {
        let text = String::from_utf8_lossy(buf);
        loop {
            let Some(start) = text[consumed..].find("<message").map(|p| p + consumed) else {
                // Keep a tail that could be the start of `<message`.
                consumed = text.len().saturating_sub(8).max(consumed);
                while !text.is_char_boundary(consumed) {
                    consumed -= 1;
                }
                break;
            };
            let Some(end) = text[start..].find("</message>").map(|e| e + start + 10) else {
                consumed = start;
                break;
            };
            let stanza = &text[start..end];
            if let Some(body) = stanza
                .find("<body>")
                .and_then(|b| stanza[b + 6..].find("</body>").map(|e| &stanza[b + 6..b + 6 + e]))
            {
                let mut parts = body.split(' ');
                if parts.next() == Some("bench")
                    && let (Some(Ok(seq)), Some(Ok(ns))) = (parts.next().map(str::parse), parts.next().map(str::parse))
                {
                    out.push((seq, ns));
                }
            }
            consumed = end;
        }
    }
    buf.drain(..consumed.min(buf.len()));
}

/// Write one `<message type='chat'>` to a bare JID, carrying its sequence number and send time.
async fn send_message<W: AsyncWrite + Unpin>(w: &mut W, to: &str, seq: u64, sent_ns: u64) -> std::io::Result<()> {
    let stanza = format!("<message to='{to}' type='chat' id='m{seq}'><body>bench {seq} {sent_ns}</body></message>");
    w.write_all(stanza.as_bytes()).await?;
    w.flush().await
}

pub struct MessagingParams {
    pub prefix: String,
    pub password: String,
    pub pairs: usize,
    pub messages: usize,
    pub window: usize,
    pub deadline: Duration,
    /// The server's PID, to report the CPU time it used.
    pub pid: Option<u32>,
}

/// Per direction of a pair: the receiver's arrivals give the sender its window back.
struct Direction {
    window: Semaphore,
    received: AtomicU64,
}

/// Workload 3: `pairs` client pairs; both sides of a pair send `messages` chat messages to the
/// other, at most `window` unacknowledged-by-arrival at a time (a closed loop, so that the
/// rate measured is the server's, not a growing queue's).
pub async fn messaging(t: Target, clock: Clock, p: MessagingParams) -> anyhow::Result<()> {
    let n = p.pairs * 2;
    let setup = Instant::now();
    let conns: Vec<anyhow::Result<_>> = futures::stream::iter(0..n)
        .map(|i| {
            let t = t.clone();
            let user = format!("{}{i}", p.prefix);
            let password = p.password.clone();
            async move {
                let (r, mut w, buf) = connect(&t, &user, &password, "bench").await?;
                w.write_all(b"<presence/>").await?;
                w.flush().await?;
                anyhow::Ok((r, w, buf))
            }
        })
        .buffered(8)
        .collect()
        .await;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for c in conns {
        let (r, w, buf) = c?;
        readers.push((r, buf));
        writers.push(w);
    }
    // Direction i carries what client i receives (from its partner i ^ 1).
    let dirs: Arc<Vec<Direction>> = Arc::new(
        (0..n)
            .map(|_| Direction {
                window: Semaphore::new(0),
                received: AtomicU64::new(0),
            })
            .collect(),
    );
    let latencies = Arc::new(Mutex::new(Latencies::default()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let read_errors = Arc::new(AtomicU64::new(0));
    let mut reader_tasks = Vec::new();
    for (i, (mut r, mut buf)) in readers.into_iter().enumerate() {
        let dirs = dirs.clone();
        let latencies = latencies.clone();
        let measuring = measuring.clone();
        let read_errors = read_errors.clone();
        reader_tasks.push(tokio::spawn(async move {
            let mut chunk = vec![0u8; 16384];
            let mut got = Vec::new();
            loop {
                take_messages(&mut buf, &mut got);
                if !got.is_empty() {
                    let now = clock.now_ns();
                    let mut batch = Latencies::default();
                    for &(seq, sent) in &got {
                        // Warm-up messages (seq = u64::MAX) open the conversation (Estuary
                        // creates the DM room) and are not measured.
                        if seq != u64::MAX && measuring.load(Ordering::Relaxed) {
                            batch.push(now.saturating_sub(sent) / 1000);
                        }
                    }
                    if let Some(d) = dirs.get(i) {
                        d.received.fetch_add(got.len() as u64, Ordering::Relaxed);
                        d.window.add_permits(got.len());
                    }
                    got.clear();
                    if !batch.is_empty() {
                        latencies.lock().await.extend(batch);
                    }
                }
                match r.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        read_errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(k) => buf.extend_from_slice(chunk.get(..k).unwrap_or_default()),
                }
            }
        }));
    }
    let jid = |i: usize| format!("{}{}@{}", p.prefix, i, t.domain);
    // Warm-up: one message each way, and wait for it.
    for (i, w) in writers.iter_mut().enumerate() {
        send_message(w, &jid(i ^ 1), u64::MAX, clock.now_ns()).await?;
    }
    let warm_deadline = Instant::now() + Duration::from_secs(30);
    let mut warm_ok = true;
    for d in dirs.iter() {
        let left = warm_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, d.window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => warm_ok = false,
        }
    }
    if !warm_ok {
        eprintln!("xmpp-messaging: some warm-up messages did not arrive within 30 s");
    }
    for d in dirs.iter() {
        d.window.add_permits(p.window);
    }
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("xmpp-messaging: setup done in {setup_s:.1}s");

    measuring.store(true, Ordering::Relaxed);
    let sent = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let cpu = ServerCpu::start(p.pid);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + p.deadline;
    let mut sender_tasks = Vec::new();
    for (i, mut w) in writers.into_iter().enumerate() {
        let dirs = dirs.clone();
        let sent = sent.clone();
        let send_errors = send_errors.clone();
        let to = jid(i ^ 1);
        let messages = p.messages;
        sender_tasks.push(tokio::spawn(async move {
            let Some(dir) = dirs.get(i ^ 1) else { return w };
            for k in 0..messages {
                match tokio::time::timeout_at(deadline, dir.window.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    _ => break,
                }
                let seq = (i * messages + k) as u64;
                if send_message(&mut w, &to, seq, clock.now_ns()).await.is_err() {
                    send_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            w
        }));
    }
    let mut writers = Vec::new();
    for tsk in sender_tasks {
        writers.push(tsk.await?);
    }
    let sent = sent.load(Ordering::Relaxed);
    let warmups = n as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(15);
    let received = || dirs.iter().map(|d| d.received.load(Ordering::Relaxed)).sum::<u64>();
    while received() < sent + warmups && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let delivered = received().saturating_sub(warmups);
    for tsk in &reader_tasks {
        tsk.abort();
    }
    for mut w in writers {
        let _ = w.write_all(b"</stream:stream>").await;
    }
    let lost = sent.saturating_sub(delivered);
    let send_errors = send_errors.load(Ordering::Relaxed);
    let latencies = std::mem::take(&mut *latencies.lock().await);
    let mut figures = Map::new();
    let mut detail = Map::new();
    figures.insert("messages_per_s".into(), json!(round3(delivered as f64 / elapsed)));
    latencies.report(&mut figures, &mut detail);
    let planned = (n * p.messages) as u64;
    let not_sent = planned.saturating_sub(sent);
    figures.insert("errors".into(), json!(send_errors + lost + not_sent));
    cpu.report(&mut detail, "message", delivered);
    detail.insert("pairs".into(), json!(p.pairs));
    detail.insert("window".into(), json!(p.window));
    detail.insert("messages_planned".into(), json!(planned));
    detail.insert("messages_sent".into(), json!(sent));
    detail.insert("messages_delivered".into(), json!(delivered));
    detail.insert("lost".into(), json!(lost));
    detail.insert("not_sent_before_deadline".into(), json!(not_sent));
    detail.insert("send_errors".into(), json!(send_errors));
    detail.insert("warmup_ok".into(), json!(warm_ok));
    detail.insert("elapsed_s".into(), json!(round3(elapsed)));
    detail.insert("setup_s".into(), json!(round3(setup_s)));
    print_result("xmpp_messaging", figures, detail);
    Ok(())
}

pub struct IdleParams {
    pub user: String,
    pub password: String,
    pub connections: usize,
    pub pid: u32,
    pub concurrency: usize,
    pub deadline: Duration,
}

/// Workload 4 (second half): open `connections` authenticated, bound, idle c2s connections
/// (one account, one resource each, no presence) and report the server's RSS growth per
/// connection.
pub async fn idle(t: Target, p: IdleParams) -> anyhow::Result<()> {
    let before = rss_kb(p.pid)?;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + p.deadline;
    let errors = AtomicU64::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    let conns: Vec<_> = futures::stream::iter(0..p.connections)
        .map(|i| {
            let t = t.clone();
            let (user, password) = (p.user.clone(), p.password.clone());
            let errors = &errors;
            let first_error = &first_error;
            async move {
                let resource = format!("idle{i}");
                match tokio::time::timeout_at(deadline, connect(&t, &user, &password, &resource)).await {
                    Ok(Ok(c)) => Some(c),
                    other => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock()
                            && f.is_none()
                        {
                            *f = Some(match other {
                                Ok(Err(e)) => format!("{e:#}"),
                                _ => "deadline".to_owned(),
                            });
                        }
                        None
                    }
                }
            }
        })
        .buffer_unordered(p.concurrency)
        .filter_map(|c| async move { c })
        .collect()
        .await;
    let open_s = start.elapsed().as_secs_f64();
    // Let the server settle (allocator, lazily freed buffers) before reading its RSS.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kb(p.pid)?;
    // Still connected? A connection the server closed reads EOF at once.
    let mut alive = 0u64;
    let mut conns = conns;
    for (r, _, _) in conns.iter_mut() {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), r.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            _ => alive += 1,
        }
    }
    let accepted = conns.len() as u64;
    drop(conns);
    let errors = errors.load(Ordering::Relaxed) + (accepted - alive);
    let mut figures = Map::new();
    let mut detail = Map::new();
    let per_conn = if alive > 0 {
        Some(round3(after.saturating_sub(before) as f64 / alive as f64))
    } else {
        None
    };
    figures.insert("rss_per_conn_kb".into(), json!(per_conn));
    figures.insert("connections".into(), json!(alive));
    figures.insert("errors".into(), json!(errors));
    detail.insert("connections_attempted".into(), json!(p.connections));
    detail.insert("all_accepted".into(), json!(alive == p.connections as u64));
    detail.insert("rss_before_kb".into(), json!(before));
    detail.insert("rss_after_kb".into(), json!(after));
    detail.insert("open_s".into(), json!(round3(open_s)));
    if let Ok(Some(e)) = first_error.into_inner() {
        detail.insert("first_error".into(), json!(e));
    }
    print_result("idle_connections", figures, detail);
    Ok(())
}
