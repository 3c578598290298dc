//! A byte budget under the XML parser: the bytes read since the last complete stanza may not
//! exceed a limit (RFC 6120 §13.12: a server limits stanza size, and answers an oversized one
//! with the `policy-violation` stream error). The stanza loop resets the budget after each
//! stanza; the reader fails once it runs out, and the loop reports the condition.
//!
//! The same reader bounds element nesting: the tree builder under tokio-xmpp recurses per
//! level, so a few thousand nested elements (well within the size limit) would overflow the
//! stack and take the whole process down. A small scanner follows tags byte by byte.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Before authentication: a stream header, SASL and STARTTLS elements are small.
pub const UNAUTHENTICATED: usize = 10 * 1024;
/// After authentication (the same default as Prosody's `c2s_stanza_size_limit`).
pub const AUTHENTICATED: usize = 256 * 1024;
/// XEP-0478: the limit as a stream feature, so clients know it before they hit it.
pub fn advertised(max_bytes: usize) -> xmpp_parsers::stream_limits::Limits {
    xmpp_parsers::stream_limits::Limits {
        max_bytes: u32::try_from(max_bytes).ok().and_then(std::num::NonZeroU32::new),
        idle_seconds: None,
    }
}

/// Deepest element nesting accepted, counting the stream element (real stanzas stay far below).
pub const MAX_DEPTH: u32 = 96;

/// Where the scanner is in the XML: enough to count open elements, not to check syntax (the
/// parser does that, and refuses what the scanner glosses over: comments, PIs, DTDs, CDATA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    Text,
    /// Just read `<`.
    Open,
    /// Inside a start tag; the quote character when inside an attribute value.
    StartTag(Option<u8>),
    /// Read `/` inside a start tag: `>` next makes it empty.
    Slash,
    EndTag,
    /// Read `<!`: only a CDATA section may follow.
    Bang,
    /// Inside `<![CDATA[`, with how many `]` were just read (its end is `]]>`).
    Cdata(u8),
    /// Read `<?` and this many bytes of `xml`: only an XML declaration may follow (at the
    /// start of any stream, a restarted one included).
    Question(u8),
    /// The XML declaration, skipped to `>`.
    Declaration,
}

/// Why the reader stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Violation {
    None = 0,
    /// Over the size budget or nested too deep: `policy-violation`.
    TooLarge = 1,
    /// RFC 6120 §11.1: a comment, processing instruction or DTD: `restricted-xml`.
    Restricted = 2,
}

#[derive(Debug)]
struct Depth {
    scan: Scan,
    depth: u32,
}

impl Depth {
    /// Feed bytes; the violation, if any.
    fn feed(&mut self, bytes: &[u8]) -> Violation {
        for &b in bytes {
            self.scan = match (self.scan, b) {
                (Scan::Text, b'<') => Scan::Open,
                (Scan::Text, _) => Scan::Text,
                (Scan::Open, b'/') => Scan::EndTag,
                (Scan::Open, b'!') => Scan::Bang,
                (Scan::Bang, b'[') => Scan::Cdata(0),
                (Scan::Bang, _) => return Violation::Restricted,
                (Scan::Cdata(n), b']') => Scan::Cdata((n + 1).min(2)),
                (Scan::Cdata(2), b'>') => Scan::Text,
                (Scan::Cdata(_), _) => Scan::Cdata(0),
                (Scan::Open, b'?') => Scan::Question(0),
                (Scan::Question(n), c) if n < 3 && c == b"xml"[usize::from(n)] => Scan::Question(n + 1),
                (Scan::Question(3), c) if c.is_ascii_whitespace() => Scan::Declaration,
                // Any other processing instruction.
                (Scan::Question(_), _) => return Violation::Restricted,
                (Scan::Open, _) => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Violation::TooLarge;
                    }
                    Scan::StartTag(None)
                }
                (Scan::StartTag(Some(q)), c) => Scan::StartTag((c != q).then_some(q)),
                (Scan::StartTag(None), b'"' | b'\'') => Scan::StartTag(Some(b)),
                (Scan::StartTag(None) | Scan::Slash, b'/') => Scan::Slash,
                (Scan::Slash, b'>') | (Scan::EndTag, b'>') => {
                    self.depth = self.depth.saturating_sub(1);
                    Scan::Text
                }
                (Scan::StartTag(None), b'>') | (Scan::Declaration, b'>') => Scan::Text,
                (Scan::StartTag(None) | Scan::Slash, _) => Scan::StartTag(None),
                (s, _) => s,
            };
        }
        Violation::None
    }
}

#[derive(Debug)]
struct Inner {
    used: AtomicUsize,
    limit: AtomicUsize,
    violation: AtomicU8,
}

/// Shared between the reader and the stanza loop.
#[derive(Clone, Debug)]
pub struct Budget(Arc<Inner>);

impl Budget {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Inner {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            violation: AtomicU8::new(Violation::None as u8),
        }))
    }

    /// A stanza ended: the next one starts with a full budget.
    pub fn reset(&self) {
        self.0.used.store(0, Ordering::Relaxed);
    }

    pub fn set_limit(&self, limit: usize) {
        self.0.limit.store(limit, Ordering::Relaxed);
        self.reset();
    }

    /// Why the reader failed, if it was the budget's doing.
    pub fn violation(&self) -> Violation {
        match self.0.violation.load(Ordering::Relaxed) {
            1 => Violation::TooLarge,
            2 => Violation::Restricted,
            _ => Violation::None,
        }
    }

    fn violated(&self, v: Violation) {
        self.0.violation.store(v as u8, Ordering::Relaxed);
    }
}

/// An `AsyncRead + AsyncWrite` that spends `budget` on every byte read.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    budget: Budget,
    depth: Depth,
    /// Bytes already read and checked, to be read again (the stream header, see
    /// [`Limited::peek_header`]).
    replay: Vec<u8>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, budget: Budget) -> Self {
        Self {
            inner,
            budget,
            depth: Depth {
                scan: Scan::Text,
                depth: 0,
            },
            replay: Vec::new(),
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> Limited<S> {
    /// Read up to the end of the client's stream header (through the same checks), and keep
    /// what was read for the XML parser to read again. The header, or an error at EOF.
    pub async fn peek_header(&mut self) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !(self.depth.depth >= 1 && self.depth.scan == Scan::Text) {
            let n = self.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&buf[..n]);
        }
        self.replay = got.clone();
        Ok(got)
    }
}

/// RFC 6120 §4.8: whether a stream header (with its XML declaration, if any) puts the stream
/// element in the streams namespace and the content in `jabber:client`. A header in another
/// namespace gets `invalid-namespace` (§4.9.3.10).
pub fn header_namespaces_ok(header: &[u8]) -> bool {
    let text = String::from_utf8_lossy(header);
    let mut rest = text.as_ref();
    // Skip the XML declaration.
    while let Some(i) = rest.find('<') {
        if rest[i..].starts_with("<?") {
            rest = rest[i..].split_once("?>").map_or("", |(_, r)| r);
        } else {
            rest = &rest[i + 1..];
            break;
        }
    }
    let tag = rest.split_once('>').map_or(rest, |(t, _)| t).trim_end_matches('/');
    let (name, mut attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
    let mut declared = std::collections::HashMap::new();
    loop {
        attrs = attrs.trim_start();
        let Some((key, after)) = attrs.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            break;
        };
        let Some((value, more)) = after[1..].split_once(q) else {
            break;
        };
        declared.insert(key.trim().to_owned(), value.to_owned());
        attrs = more;
    }
    const STREAMS: &str = "http://etherx.jabber.org/streams";
    let stream_ns_ok = match name.split_once(':') {
        Some((prefix, "stream")) => declared.get(&format!("xmlns:{prefix}")).map(String::as_str) == Some(STREAMS),
        None if name == "stream" => declared.get("xmlns").map(String::as_str) == Some(STREAMS),
        _ => false,
    };
    let content_ok = name == "stream" || declared.get("xmlns").map(String::as_str) == Some("jabber:client");
    stream_ns_ok && content_ok
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = buf.remaining().min(self.replay.len());
            buf.put_slice(&self.replay[..n]);
            self.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if self.budget.violation() != Violation::None {
            return Poll::Ready(Err(refused()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            let fresh = &buf.filled()[before..];
            let mut violation = this.depth.feed(fresh);
            let inner = &this.budget.0;
            let used = inner.used.fetch_add(fresh.len(), Ordering::Relaxed) + fresh.len();
            if used > inner.limit.load(Ordering::Relaxed) {
                violation = Violation::TooLarge;
            }
            if violation != Violation::None {
                this.budget.violated(violation);
                return Poll::Ready(Err(refused()));
            }
        }
        polled
    }
}

fn refused() -> io::Error {
    io::Error::other("stanza refused by the size, nesting or restricted-XML checks")
}

/// What xmpp-parsers writes for a stream feature list without SASL mechanisms (it always
/// writes the element). Clients such as xmpp.js read an empty list as "SASL with nothing I can
/// use" and give up, so it never leaves the server.
const EMPTY_MECHANISMS: &[u8] = b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></mechanisms>";

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Features go out only before the session is bound, while the tight limit holds.
        if self.budget.0.limit.load(Ordering::Relaxed) == UNAUTHENTICATED
            && let Some(at) = buf.windows(EMPTY_MECHANISMS.len()).position(|w| w == EMPTY_MECHANISMS)
        {
            if at == 0 {
                // Reported as written; the caller goes on with what follows.
                return Poll::Ready(Ok(EMPTY_MECHANISMS.len()));
            }
            return Pin::new(&mut self.inner).poll_write(cx, &buf[..at]);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    fn depth_after(xml: &str) -> Option<u32> {
        let mut d = Depth {
            scan: Scan::Text,
            depth: 0,
        };
        (d.feed(xml.as_bytes()) == Violation::None).then_some(d.depth)
    }

    #[test]
    fn counts_nesting() {
        assert_eq!(depth_after("<?xml version='1.0'?><stream:stream a='x'>"), Some(1));
        assert_eq!(
            depth_after("<s><message to='a/>b' b=\"'>\"><body>x &lt; y</body><x/></message>"),
            Some(1)
        );
        assert_eq!(depth_after("<s><a><b/></a></s>"), Some(0));
        assert_eq!(depth_after(&"<a>".repeat(MAX_DEPTH as usize)), Some(MAX_DEPTH));
        assert_eq!(depth_after(&"<a>".repeat(MAX_DEPTH as usize + 1)), None);
        assert_eq!(depth_after("<s><![CDATA[x]]><a/>"), Some(1));
        // `>` and `<` inside CDATA are text, not tags.
        assert_eq!(depth_after("<s><![CDATA[ if a > b && c < d ]] ]]><a/>"), Some(1));
        // A restarted stream may open with an XML declaration again.
        assert_eq!(depth_after("<?xml version='1.0'?><s><?xml version='1.0'?><s>"), Some(2));
        for restricted in ["<s><!-- c -->", "<!DOCTYPE s>", "<s><?pi x?>", "<?xml-stylesheet x?>"] {
            let mut d = Depth {
                scan: Scan::Text,
                depth: 0,
            };
            assert_eq!(d.feed(restricted.as_bytes()), Violation::Restricted, "{restricted}");
        }
        // Flat but long: never fails.
        assert_eq!(depth_after(&"<a/>".repeat(10_000)), Some(0));
    }

    #[test]
    fn stream_header_namespaces() {
        let ok = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='x'>";
        assert!(header_namespaces_ok(ok.as_bytes()));
        assert!(header_namespaces_ok(
            br#"<s:stream to="x" xmlns:s="http://etherx.jabber.org/streams" xmlns="jabber:client">"#
        ));
        for bad in [
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://wrong.example/streams'>",
            "<stream:stream xmlns='jabber:client'>",
            "<hello xmlns='jabber:client'>",
        ] {
            assert!(!header_namespaces_ok(bad.as_bytes()), "{bad}");
        }
    }

    #[tokio::test]
    async fn header_is_read_again() {
        use tokio::io::AsyncReadExt;
        let input = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'><message/>".to_vec();
        let mut r = Limited::new(std::io::Cursor::new(input.clone()), Budget::new(UNAUTHENTICATED));
        let header = r.peek_header().await.unwrap();
        assert!(String::from_utf8_lossy(&header).contains("<stream:stream"));
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, input);
    }

    #[tokio::test]
    async fn empty_mechanisms_never_leave() {
        use tokio::io::AsyncWriteExt;
        let mut out = Limited::new(Vec::new(), Budget::new(UNAUTHENTICATED));
        let features = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></mechanisms><bind/></stream:features>";
        out.write_all(features.as_bytes()).await.unwrap();
        assert_eq!(
            String::from_utf8(out.into_inner()).unwrap(),
            "<stream:features><bind/></stream:features>"
        );
        // A real offer passes.
        let mut out = Limited::new(Vec::new(), Budget::new(UNAUTHENTICATED));
        let offer = "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>";
        out.write_all(offer.as_bytes()).await.unwrap();
        assert_eq!(String::from_utf8(out.into_inner()).unwrap(), offer);
    }

    #[tokio::test]
    async fn fails_past_the_limit_until_reset() {
        let budget = Budget::new(8);
        let mut r = Limited::new(&b"0123456789abcdef"[..], budget.clone());
        let mut buf = [0u8; 6];
        r.read_exact(&mut buf).await.unwrap();
        budget.reset();
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(budget.violation(), Violation::None);
        let mut rest = [0u8; 4];
        assert!(r.read_exact(&mut rest).await.is_err());
        assert_eq!(budget.violation(), Violation::TooLarge);
    }
}
