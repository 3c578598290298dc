//! The c2s XML stream over TLS (RFC 6120 §4), read and written here rather than through
//! tokio-xmpp's `XmlStream`, so that a connection holds no buffers while it is idle.
//!
//! tokio-xmpp keeps, for every connection, its XML lexer's 8 KiB scratchpad (reserved at the
//! largest token it accepts), a read buffer under the parser and a write buffer over it,
//! whether anything is being read or not; with tens of thousands of idle clients that is most
//! of a connection's memory. Here the bytes of a read are parsed from the stack, only what
//! follows an element in the same read is kept (on the heap, until parsed), the lexer's
//! temporaries are released whenever a read finds nothing more, and each element is
//! serialised into a buffer of its own size that is freed once written.
//!
//! The same rxml parser and xso/minidom element builder as tokio-xmpp's do the XML, so the
//! elements, the errors and the bytes written are those of the tokio-xmpp stream this replaces
//! (the plain-text phase before STARTTLS and the WebSocket binding still use that one); the
//! session code sees either only as a [`Wire`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::writer::TrackNamespace;
use tokio_xmpp::minidom::rxml::{self, Event, Parse};
use tokio_xmpp::xmlstream::ReadError;
use xmpp_parsers::ns;
use xmpp_parsers::stream_features::StreamFeatures;
use xso::{AsXml, FromEventsBuilder};

use crate::c2s::C2s;
use crate::wire::{Wire, features_element, for_us, host_unknown};

/// Bytes read from the connection at once, into a buffer on the stack (rustls hands out at
/// most a record's 16 KiB of plain text; a smaller read just takes more turns).
const READ_CHUNK: usize = 4096;

/// Silence after which the session is asked to ping the client ([`ReadError::SoftTimeout`]),
/// and after that, how long the client has to answer before the stream is given up. The same
/// as tokio-xmpp's `Timeouts::tight()`, which the stream had before.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// A client's XML stream over `Io` (the TLS connection, under the byte budget).
pub(crate) struct ClientStream<Io> {
    io: Io,
    parser: rxml::Parser,
    /// Bytes read and not parsed yet, from `pending_at` on: what came after the end of an
    /// element in the same read. Empty (and unallocated) most of the time.
    pending: Vec<u8>,
    pending_at: usize,
    /// The top-level element being read, if one has started.
    building: Option<xso::minidom_compat::ElementFromEvents>,
    /// The client sent its stream footer; what follows is only the end of the connection.
    footer: bool,
    /// The connection's read side has ended.
    eof: bool,
    silence: Silence,
}

/// What a read timer has said since the last byte from the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Quiet,
    /// The session was told to ping.
    Asked,
}

struct Silence {
    deadline: Pin<Box<Sleep>>,
    level: Level,
    read: Duration,
    response: Duration,
}

impl Silence {
    fn new(read: Duration, response: Duration) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(read)),
            level: Level::Quiet,
            read,
            response,
        }
    }

    fn heard(&mut self) {
        self.level = Level::Quiet;
        self.deadline.as_mut().reset(Instant::now() + self.read);
    }

    /// Ready with the read's outcome when the deadline passes.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ReadError> {
        ready!(self.deadline.as_mut().poll(cx));
        match self.level {
            Level::Quiet => {
                self.level = Level::Asked;
                self.deadline.as_mut().reset(Instant::now() + self.response);
                Poll::Ready(ReadError::SoftTimeout)
            }
            Level::Asked => {
                // Again after a while, should the caller go on reading anyway.
                self.deadline.as_mut().reset(Instant::now() + Duration::from_secs(1));
                Poll::Ready(ReadError::HardError(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "read and response timeouts elapsed",
                )))
            }
        }
    }
}

/// A parser step as the read's outcome; None when it needs more bytes.
fn outcome(parsed: Result<Option<Event>, rxml::error::EndOrError>) -> Option<Result<Option<Event>, ReadError>> {
    match parsed {
        Ok(event) => Some(Ok(event)),
        Err(rxml::error::EndOrError::NeedMoreData) => None,
        Err(rxml::error::EndOrError::Error(e)) => Some(Err(ReadError::HardError(invalid(e)))),
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The attributes of a client's stream header that matter here.
struct Header {
    to: Option<String>,
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> ClientStream<Io> {
    fn new(io: Io) -> Self {
        Self {
            io,
            parser: rxml::Parser::default(),
            pending: Vec::new(),
            pending_at: 0,
            building: None,
            footer: false,
            eof: false,
            silence: Silence::new(READ_TIMEOUT, RESPONSE_TIMEOUT),
        }
    }

    /// Read the client's stream header and answer it with ours and `features`; None when the
    /// client named a domain that is not ours (answered with `host-unknown`).
    pub(crate) async fn accept(io: Io, c2s: &C2s, features: StreamFeatures) -> io::Result<Option<Self>> {
        Self::new(io).open(c2s, features).await
    }

    async fn open(mut self, c2s: &C2s, features: StreamFeatures) -> io::Result<Option<Self>> {
        let header = self.header().await?;
        let ours = crate::c2s::stream_header(&c2s.domain);
        if !for_us(header.to.as_deref(), c2s) {
            self.io.write_all(ours.as_bytes()).await?;
            self.send(host_unknown().into()).await?;
            self.shutdown().await?;
            return Ok(None);
        }
        let mut out = ours.into_bytes();
        out.extend(serialise(&features_element(features))?);
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(Some(self))
    }

    /// The client's stream header (RFC 6120 §4.7): the streams namespace, version 1.0, and
    /// no attributes but `from`, `to`, `id` and `xml:lang`.
    async fn header(&mut self) -> io::Result<Header> {
        loop {
            let event = std::future::poll_fn(|cx| self.poll_event(cx)).await;
            match event {
                Ok(Some(Event::XmlDeclaration(..))) => {}
                Ok(Some(Event::StartElement(_, (ns, name), mut attrs))) => {
                    if ns != ns::STREAM || name != "stream" {
                        return Err(invalid("unknown stream header"));
                    }
                    match attrs.remove(rxml::Namespace::none(), "version") {
                        Some(v) if v == "1.0" => {}
                        Some(v) => return Err(invalid(format!("unsupported stream version: {v}"))),
                        None => return Err(invalid("required `version` attribute missing")),
                    }
                    let to = attrs.remove(rxml::Namespace::none(), "to");
                    let _ = attrs.remove(rxml::Namespace::none(), "from");
                    let _ = attrs.remove(rxml::Namespace::none(), "id");
                    let _ = attrs.remove(rxml::Namespace::xml(), "lang");
                    if let Some(((ns, name), _)) = attrs.into_iter().next() {
                        return Err(invalid(format!("unexpected stream header attribute: {{{ns}}}{name}")));
                    }
                    return Ok(Header { to });
                }
                Ok(Some(_)) | Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "unexpected content before stream header",
                    ));
                }
                Err(ReadError::SoftTimeout) => {}
                Err(ReadError::HardError(e)) => return Err(e),
                Err(_) => return Err(invalid("no stream header")),
            }
        }
    }

    /// The next XML event: from what is pending, else from a read of the connection. Ok(None)
    /// at the end of the document; errors as [`ReadError`] (a soft timeout when the client was
    /// silent too long).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, ReadError>> {
        // Whitespace between elements comes out as soon as it is read, not buffered (so that
        // keepalives do not pile up); text inside an element is buffered up to a token.
        self.parser.set_text_buffering(self.building.is_some());
        loop {
            // What is pending, or (with nothing pending) what the parser holds of bytes it
            // already took: one read may make several events.
            let mut data = &self.pending[self.pending_at..];
            let before = data.len();
            let parsed = self.parser.parse(&mut data, self.eof);
            self.pending_at += before - data.len();
            if self.pending_at == self.pending.len() && !self.pending.is_empty() {
                self.pending = Vec::new();
                self.pending_at = 0;
            }
            if let Some(outcome) = outcome(parsed) {
                return Poll::Ready(outcome);
            }
            if self.eof {
                // The parser had all there is and wants more: never read again.
                return Poll::Ready(Err(ReadError::HardError(invalid("end of stream inside a token"))));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    // Nothing to read for now: give back the lexer's scratchpad (reserved at
                    // the longest token, 8 KiB, whenever it lexes; what it holds of a token
                    // cut by the read stays).
                    self.parser.release_temporaries();
                    return self.silence.poll(cx).map(Err);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ReadError::HardError(e))),
                Poll::Ready(Ok(())) => {}
            }
            self.silence.heard();
            let mut data = buf.filled();
            if data.is_empty() {
                self.eof = true;
                continue;
            }
            let parsed = self.parser.parse(&mut data, false);
            if !data.is_empty() {
                self.pending = data.to_vec();
                self.pending_at = 0;
            }
            if let Some(outcome) = outcome(parsed) {
                return Poll::Ready(outcome);
            }
        }
    }

    /// The next top-level element, as tokio-xmpp's stream gives it: whitespace between
    /// elements is skipped, other text is an error, the footer is
    /// [`ReadError::StreamFooterReceived`] (and after it, only the end of the connection).
    fn poll_element(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Element, ReadError>>> {
        loop {
            let event = match ready!(self.poll_event(cx)) {
                Ok(Some(event)) => event,
                Ok(None) => return Poll::Ready(None),
                // Inside an element, silence is not for pings: the element is late.
                Err(ReadError::SoftTimeout) if self.building.is_some() => {
                    self.building = None;
                    return Poll::Ready(Some(Err(ReadError::HardError(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "read timeout during an element",
                    )))));
                }
                Err(ReadError::SoftTimeout) if self.footer => continue,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            if self.footer {
                return Poll::Ready(Some(Err(ReadError::HardError(invalid("data after the stream footer")))));
            }
            if let Some(builder) = &mut self.building {
                match builder.feed(event, &xso::Context::empty()) {
                    Ok(None) => continue,
                    Ok(Some(el)) => {
                        self.building = None;
                        return Poll::Ready(Some(Ok(el)));
                    }
                    Err(e) => {
                        self.building = None;
                        return Poll::Ready(Some(Err(ReadError::HardError(invalid(e)))));
                    }
                }
            }
            match event {
                Event::XmlDeclaration(..) => {}
                Event::Text(_, text) if xso::is_xml_whitespace(text.as_bytes()) => {}
                Event::Text(..) => {
                    return Poll::Ready(Some(Err(ReadError::HardError(invalid(
                        "non-whitespace text content before XSO",
                    )))));
                }
                Event::StartElement(_, qname, attrs) => {
                    self.building = Some(xso::minidom_compat::ElementFromEvents::new(qname, attrs));
                }
                Event::EndElement(_) => {
                    self.footer = true;
                    return Poll::Ready(Some(Err(ReadError::StreamFooterReceived)));
                }
            }
        }
    }
}

/// `el` as the bytes of a stream whose default namespace is `jabber:client` and which binds
/// the `stream` prefix (tokio-xmpp's writer, set up the same way, writes the same bytes).
fn serialise(el: &Element) -> io::Result<Vec<u8>> {
    let mut encoder = rxml::writer::Encoder::new();
    encoder
        .ns_tracker_mut()
        .declare_fixed(Some(rxml::xml_ncname!("stream")), ns::STREAM.into());
    encoder.ns_tracker_mut().declare_fixed(None, ns::JABBER_CLIENT.into());
    // The stream's header (already written) is where those are declared: encoded here only
    // to put the encoder inside it, and thrown away.
    let mut header = Vec::new();
    let stream = rxml::Namespace::from(ns::STREAM);
    let head = [
        rxml::writer::Item::ElementHeadStart(stream, rxml::xml_ncname!("stream")),
        rxml::writer::Item::ElementHeadEnd,
    ];
    for item in head {
        encoder
            .encode(item, &mut header)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    let mut out = Vec::new();
    for item in el
        .as_xml_iter()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
    {
        let item = item.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        encoder
            .encode(item.as_rxml_item(), &mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    Ok(out)
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> Wire for ClientStream<Io> {
    async fn next(&mut self) -> Option<Result<Element, ReadError>> {
        std::future::poll_fn(|cx| self.poll_element(cx)).await
    }

    async fn send(&mut self, el: Element) -> io::Result<()> {
        let bytes = serialise(&el)?;
        self.io.write_all(&bytes).await?;
        self.io.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.io.write_all(b"</stream:stream>").await?;
        self.io.flush().await?;
        self.io.shutdown().await
    }

    async fn restart(mut self, last: Element, c2s: &C2s, features: StreamFeatures) -> io::Result<Option<Self>> {
        self.send(last).await?;
        // RFC 6120 §4.3.3: both sides start a new stream, on a new parser. What the client
        // sent after the last element (its new header, if it did not wait) is kept.
        self.parser = rxml::Parser::default();
        self.building = None;
        self.open(c2s, features).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                          xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>";

    fn stream() -> (ClientStream<DuplexStream>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        (ClientStream::new(ours), theirs)
    }

    #[tokio::test]
    async fn elements_split_and_joined_across_reads() {
        let (mut s, mut client) = stream();
        client.write_all(HEADER.as_bytes()).await.unwrap();
        assert_eq!(s.header().await.unwrap().to.as_deref(), Some("example.org"));
        // Two stanzas and the start of a third in one write; whitespace between them.
        client
            .write_all(b" <message to='a@example.org'><body>one</body></message>\n<iq id='2' type='get'/> <presence")
            .await
            .unwrap();
        let one = s.next().await.unwrap().unwrap();
        assert!(one.is("message", ns::JABBER_CLIENT));
        assert_eq!(one.get_child("body", ns::JABBER_CLIENT).unwrap().text(), "one");
        let two = s.next().await.unwrap().unwrap();
        assert_eq!(two.attr("id"), Some("2"));
        client.write_all(b" type='unavailable'/>").await.unwrap();
        let three = s.next().await.unwrap().unwrap();
        assert!(three.is("presence", ns::JABBER_CLIENT));
        assert_eq!(three.attr("type"), Some("unavailable"));
        assert!(s.pending.is_empty(), "nothing is kept once every byte read is parsed");
        client.write_all(b"</stream:stream>").await.unwrap();
        assert!(matches!(s.next().await, Some(Err(ReadError::StreamFooterReceived))));
        drop(client);
        assert!(s.next().await.is_none(), "after the footer, the end of the connection");
    }

    #[tokio::test]
    async fn malformed_xml_and_stray_text_are_invalid_data() {
        for (bytes, what) in [
            (&b"<message><body>x</message>"[..], "mismatched end tag"),
            (&b"hello <message/>"[..], "text at the stream level"),
            (&b"<message>&unknown;</message>"[..], "undeclared entity"),
        ] {
            let (mut s, mut client) = stream();
            client.write_all(HEADER.as_bytes()).await.unwrap();
            s.header().await.unwrap();
            client.write_all(bytes).await.unwrap();
            match s.next().await {
                Some(Err(ReadError::HardError(e))) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn end_of_connection_inside_the_stream_is_invalid_data() {
        let (mut s, mut client) = stream();
        client.write_all(HEADER.as_bytes()).await.unwrap();
        s.header().await.unwrap();
        drop(client);
        match s.next().await {
            Some(Err(ReadError::HardError(e))) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn headers_in_another_namespace_or_version_are_refused() {
        for header in [
            "<stream:stream xmlns:stream='urn:other' to='example.org' version='1.0'>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='example.org'>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' version='2.0'>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' version='1.0' foo='x'>",
        ] {
            let (mut s, mut client) = stream();
            client.write_all(header.as_bytes()).await.unwrap();
            assert!(s.header().await.is_err(), "{header}");
        }
    }

    #[tokio::test]
    async fn silence_asks_for_a_ping_then_gives_up() {
        let (mut s, mut client) = stream();
        s.silence = Silence::new(Duration::from_millis(200), Duration::from_millis(200));
        client.write_all(HEADER.as_bytes()).await.unwrap();
        s.header().await.unwrap();
        assert!(matches!(s.next().await, Some(Err(ReadError::SoftTimeout))));
        match s.next().await {
            Some(Err(ReadError::HardError(e))) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
        // A byte from the client starts the clock again: the element after it is read, and
        // the next silence is a soft timeout again.
        client.write_all(b" <iq type='result' id='p'/>").await.unwrap();
        assert!(s.next().await.unwrap().is_ok());
        assert!(matches!(s.next().await, Some(Err(ReadError::SoftTimeout))));
    }

    #[tokio::test]
    async fn written_elements_rely_on_the_stream_declarations() {
        let (mut s, mut client) = stream();
        let mut msg = Element::builder("message", ns::JABBER_CLIENT)
            .attr(rxml::xml_ncname!("to").into(), "a@example.org")
            .append(Element::builder("active", "http://jabber.org/protocol/chatstates").build())
            .build();
        msg.append_child(Element::builder("body", ns::JABBER_CLIENT).append("a < b").build());
        s.send(msg).await.unwrap();
        let error = Element::builder("error", ns::STREAM).build();
        s.send(error).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        assert_eq!(
            out,
            "<message to='a@example.org'><active xmlns='http://jabber.org/protocol/chatstates'></active>\
             <body>a &lt; b</body></message><stream:error></stream:error></stream:stream>"
        );
    }

    #[tokio::test]
    async fn a_restart_keeps_a_header_sent_without_waiting() {
        let (s, mut client) = stream();
        let mut s = s;
        client.write_all(HEADER.as_bytes()).await.unwrap();
        s.header().await.unwrap();
        // The last element of the first stream and the next header in one write.
        let mut both = String::from("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        both.push_str(HEADER);
        client.write_all(both.as_bytes()).await.unwrap();
        assert!(s.next().await.unwrap().unwrap().is("auth", ns::SASL));
        s.parser = rxml::Parser::default();
        assert_eq!(s.header().await.unwrap().to.as_deref(), Some("example.org"));
    }
}
