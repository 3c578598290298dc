//! How a c2s stream reaches the client: the classic XML stream over TCP/TLS (RFC 6120), or
//! one element per WebSocket text frame (RFC 7395). The session code above sees only
//! [`Wire`]: the next element in, an element out, shutdown, and the restart after SASL.
//!
//! The WebSocket side feeds its frames to the same tokio-xmpp reader as TCP streams
//! (`<open/>` becomes a stream header, `<close/>` the footer), under the same byte budget,
//! nesting and restricted-XML checks ([`crate::limit`]). Outgoing elements are written one per
//! frame, each with its own namespace declarations.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::{AcceptedStream, ReadError, StreamHeader, XmlStream};
use xmpp_parsers::ns;
use xmpp_parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use xmpp_parsers::stream_features::StreamFeatures;

use crate::c2s::{C2s, new_id};
use crate::limit::Limited;

pub(crate) type Xml<Io> = XmlStream<Io, Element>;

/// One client connection's framing.
pub(crate) trait Wire: Send + Sized {
    /// The next top-level element from the client, with tokio-xmpp's errors.
    fn next(&mut self) -> impl Future<Output = Option<Result<Element, ReadError>>> + Send;
    fn send(&mut self, el: Element) -> impl Future<Output = io::Result<()>> + Send;
    /// End our side of the stream (footer, or `<close/>`).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Send `last` (SASL success), wait for the client's new stream and answer it with
    /// `features`. None when the stream ended or was refused (the error is already sent).
    fn restart(
        self,
        last: Element,
        c2s: &C2s,
        features: StreamFeatures,
    ) -> impl Future<Output = io::Result<Option<Self>>> + Send;
}

impl<Io: AsyncBufRead + AsyncWrite + Unpin + Send> Wire for Xml<Io> {
    async fn next(&mut self) -> Option<Result<Element, ReadError>> {
        StreamExt::next(self).await
    }

    async fn send(&mut self, el: Element) -> io::Result<()> {
        SinkExt::send(self, &el).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        XmlStream::shutdown(self).await
    }

    async fn restart(self, last: Element, c2s: &C2s, features: StreamFeatures) -> io::Result<Option<Self>> {
        let accepted = self.accept_reset(&last).await?;
        open(accepted, c2s, features).await
    }
}

/// Whether the `to` of a client's stream header names our domain.
pub(crate) fn for_us(to: Option<&str>, c2s: &C2s) -> bool {
    to.is_some_and(|to| to.eq_ignore_ascii_case(&c2s.domain))
}

pub(crate) fn host_unknown() -> StreamError {
    StreamError::new(
        StreamCondition::HostUnknown,
        "en",
        "this server does not serve that domain",
    )
}

/// Answer the client's stream header with ours and the given features; `host-unknown` when
/// the client asked for a domain we do not serve.
pub(crate) async fn open<Io: AsyncBufRead + AsyncWrite + Unpin>(
    mut accepted: AcceptedStream<Io>,
    c2s: &C2s,
    features: StreamFeatures,
) -> io::Result<Option<Xml<Io>>> {
    let header = accepted.take_header();
    let pending = accepted.send_header(our_header(c2s)).await?;
    if !for_us(header.to.as_deref(), c2s) {
        pending.send_error(&host_unknown()).await?;
        return Ok(None);
    }
    Ok(Some(pending.send_features::<Element>(&features).await?))
}

fn our_header(c2s: &C2s) -> StreamHeader<'_> {
    StreamHeader {
        from: Some(std::borrow::Cow::Borrowed(c2s.domain.as_str())),
        to: None,
        id: Some(std::borrow::Cow::Owned(new_id())),
    }
}

/// The reading half of a WebSocket, as bytes of a classic stream for the XML parser. Writes
/// go nowhere: what the parser's stream would send, [`WsWire`] sends as frames.
pub(crate) struct WsReader {
    frames: SplitStream<WebSocket>,
    pending: Vec<u8>,
    pos: usize,
    closed: bool,
}

/// An RFC 7395 frame as bytes of an RFC 6120 stream.
fn unframe(frame: &str) -> Vec<u8> {
    let t = frame.trim();
    // Only small frames can be framing elements; nothing else is parsed twice.
    if t.len() < 1024
        && (t.starts_with("<open") || t.starts_with("<close"))
        && let Ok(el) = t.parse::<Element>()
    {
        if el.is("open", ns::WEBSOCKET) {
            let to = el.attr("to").unwrap_or_default();
            return format!(
                "<stream:stream xmlns='{}' xmlns:stream='{}' version='1.0' to='{}'>",
                ns::JABBER_CLIENT,
                ns::STREAM,
                escape_attr(to)
            )
            .into_bytes();
        }
        if el.is("close", ns::WEBSOCKET) {
            return b"</stream:stream>".to_vec();
        }
    }
    frame.as_bytes().to_vec()
}

pub(crate) fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

impl AsyncRead for WsReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.pos);
                buf.put_slice(&this.pending[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.frames.poll_next_unpin(cx)) {
                Some(Ok(WsMessage::Text(text))) => {
                    this.pending = unframe(text.as_str());
                    this.pos = 0;
                }
                // RFC 7395 §3.2: XMPP travels in text frames only.
                Some(Ok(WsMessage::Binary(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "binary WebSocket frame",
                    )));
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => this.closed = true,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for WsReader {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

pub(crate) type WsIo = crate::c2s::Buffered<WsReader>;

/// A c2s stream over a WebSocket.
pub(crate) struct WsWire {
    reader: Xml<WsIo>,
    frames: SplitSink<WebSocket, WsMessage>,
}

/// Split a WebSocket: its reading half for the parser, its writing half for frames.
pub(crate) fn split(socket: WebSocket, budget: crate::limit::Budget) -> (WsIo, SplitSink<WebSocket, WsMessage>) {
    let (frames_out, frames_in) = socket.split();
    let reader = WsReader {
        frames: frames_in,
        pending: Vec::new(),
        pos: 0,
        closed: false,
    };
    (crate::c2s::buffered(Limited::new(reader, budget)), frames_out)
}

/// An element as one frame. RFC 7395 §3.3: stream-level elements carry the `stream` prefix
/// (browser clients look for `stream:features` and `stream:error` by that name).
fn frame(el: &Element) -> String {
    let text = String::from(el);
    if el.ns() != ns::STREAM {
        return text;
    }
    let name = el.name();
    for q in ['\'', '"'] {
        let head = format!("<{name} xmlns={q}{}{q}", ns::STREAM);
        if let Some(rest) = text.strip_prefix(&head) {
            let tail = format!("</{name}>");
            let rest = match rest.strip_suffix(&tail) {
                Some(inner) => format!("{inner}</stream:{name}>"),
                None => rest.to_owned(),
            };
            return format!("<stream:{name} xmlns:stream={q}{}{q}{rest}", ns::STREAM);
        }
    }
    text
}

impl WsWire {
    async fn send_text(&mut self, text: String) -> io::Result<()> {
        self.frames
            .send(WsMessage::Text(text.into()))
            .await
            .map_err(io::Error::other)
    }

    /// Answer the client's `<open/>` (already read as a stream header) with ours and the
    /// features; `host-unknown` and `<close/>` when it named another domain.
    pub(crate) async fn open(
        mut accepted: AcceptedStream<WsIo>,
        mut frames: SplitSink<WebSocket, WsMessage>,
        c2s: &C2s,
        features: StreamFeatures,
    ) -> io::Result<Option<Self>> {
        let header = accepted.take_header();
        let ours = our_header(c2s);
        let open = xmpp_parsers::websocket::Open {
            from: xmpp_parsers::jid::BareJid::new(&c2s.domain).ok(),
            to: None,
            id: ours.id.as_deref().map(str::to_owned),
            version: Some("1.0".into()),
            xml_lang: Some("en".into()),
        };
        frames
            .send(WsMessage::Text(String::from(&Element::from(open)).into()))
            .await
            .map_err(io::Error::other)?;
        // The parser's own header and features go to the reader's sink (nowhere).
        let pending = accepted.send_header(ours).await?;
        let reader = pending.send_features::<Element>(&features).await?;
        let mut wire = Self { reader, frames };
        if !for_us(header.to.as_deref(), c2s) {
            wire.send(host_unknown().into()).await?;
            wire.shutdown().await?;
            return Ok(None);
        }
        wire.send(features_element(features)).await?;
        Ok(Some(wire))
    }
}

/// xmpp-parsers writes `<mechanisms/>` even when no mechanism is offered (after
/// authentication), which clients such as xmpp.js take for a SASL offer with nothing in it.
pub(crate) fn features_element(features: StreamFeatures) -> Element {
    let mut el = Element::from(features);
    if el
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().next().is_none())
    {
        el.remove_child("mechanisms", ns::SASL);
    }
    el
}

impl Wire for WsWire {
    async fn next(&mut self) -> Option<Result<Element, ReadError>> {
        StreamExt::next(&mut self.reader).await
    }

    async fn send(&mut self, el: Element) -> io::Result<()> {
        self.send_text(frame(&el)).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        let close = Element::bare("close", ns::WEBSOCKET);
        self.send_text(String::from(&close)).await?;
        self.frames.close().await.map_err(io::Error::other)
    }

    async fn restart(mut self, last: Element, c2s: &C2s, features: StreamFeatures) -> io::Result<Option<Self>> {
        self.send(last).await?;
        // The reader waits for the client's new `<open/>`; its own barrier goes nowhere.
        let accepted = self.reader.accept_reset(&Element::bare("x", "urn:x")).await?;
        Self::open(accepted, self.frames, c2s, features).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stream_elements_get_the_stream_prefix() {
        let features: Element = StreamFeatures::default().into();
        let text = frame(&features);
        assert!(text.starts_with("<stream:features xmlns:stream="), "{text}");
        let error: Element = host_unknown().into();
        let text = frame(&error);
        assert!(text.starts_with("<stream:error xmlns:stream="), "{text}");
        assert!(text.ends_with("</stream:error>"), "{text}");
        let message = Element::builder("message", ns::JABBER_CLIENT).build();
        assert!(frame(&message).contains("jabber:client"));
    }

    #[test]
    fn framing_elements_become_stream_header_and_footer() {
        let header = unframe(r#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="ex'ample" version="1.0"/>"#);
        let header = String::from_utf8(header).unwrap();
        assert!(header.starts_with("<stream:stream xmlns='jabber:client'"), "{header}");
        assert!(header.contains("to='ex&apos;ample'"), "{header}");
        assert_eq!(
            unframe(r#"<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>"#),
            b"</stream:stream>"
        );
        // Anything else, an `<open/>` of another namespace included, passes unchanged.
        let other = r#"<open xmlns="urn:other"/>"#;
        assert_eq!(unframe(other), other.as_bytes());
    }
}
