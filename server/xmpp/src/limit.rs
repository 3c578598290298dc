//! A byte budget under the XML parser: the bytes read since the last complete stanza may not
//! exceed a limit (RFC 6120 §13.12: a server limits stanza size, and answers an oversized one
//! with the `policy-violation` stream error). The stanza loop resets the budget after each
//! stanza; the reader fails once it runs out, and the loop reports the condition.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Before authentication: a stream header, SASL and STARTTLS elements are small.
pub const UNAUTHENTICATED: usize = 10 * 1024;
/// After authentication (the same default as Prosody's `c2s_stanza_size_limit`).
pub const AUTHENTICATED: usize = 256 * 1024;

#[derive(Debug)]
struct Inner {
    used: AtomicUsize,
    limit: AtomicUsize,
    exceeded: AtomicBool,
}

/// Shared between the reader and the stanza loop.
#[derive(Clone, Debug)]
pub struct Budget(Arc<Inner>);

impl Budget {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Inner {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            exceeded: AtomicBool::new(false),
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

    /// Whether the reader failed because a stanza was too large.
    pub fn exceeded(&self) -> bool {
        self.0.exceeded.load(Ordering::Relaxed)
    }
}

/// An `AsyncRead + AsyncWrite` that spends `budget` on every byte read.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    budget: Budget,
}

impl<S> Limited<S> {
    pub fn new(inner: S, budget: Budget) -> Self {
        Self { inner, budget }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.budget.exceeded() {
            return Poll::Ready(Err(too_large()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len() - before;
            let inner = &self.budget.0;
            let used = inner.used.fetch_add(read, Ordering::Relaxed) + read;
            if used > inner.limit.load(Ordering::Relaxed) {
                inner.exceeded.store(true, Ordering::Relaxed);
                return Poll::Ready(Err(too_large()));
            }
        }
        polled
    }
}

fn too_large() -> io::Error {
    io::Error::other("stanza size limit exceeded")
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
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

    #[tokio::test]
    async fn fails_past_the_limit_until_reset() {
        let budget = Budget::new(8);
        let mut r = Limited::new(&b"0123456789abcdef"[..], budget.clone());
        let mut buf = [0u8; 6];
        r.read_exact(&mut buf).await.unwrap();
        budget.reset();
        r.read_exact(&mut buf).await.unwrap();
        assert!(!budget.exceeded());
        let mut rest = [0u8; 4];
        assert!(r.read_exact(&mut rest).await.is_err());
        assert!(budget.exceeded());
    }
}
