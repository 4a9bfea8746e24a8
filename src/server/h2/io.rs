//! The byte stream under an HTTP/2 connection as the `h2` crate drives it (tokio's
//! `AsyncRead`/`AsyncWrite`): the connection's socket or TLS stream, and the bytes of the
//! connection preface its HTTP/1.1 reader had already taken when it found one.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::transport::RawSocket;

/// A byte stream that can be tried without waiting (`WouldBlock` when it cannot go on)
/// and whose socket tells when to try again.
pub(in crate::server) trait NonBlocking: Unpin {
    /// The socket's registration with the event loop.
    fn registration(&self) -> io::Result<&AsyncFd<RawSocket>>;
    /// Reads what is there: how many bytes (0 at the end).
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Takes what it can of `data` now: how many bytes.
    fn write_now(&self, data: &[u8]) -> io::Result<usize>;
    /// Writes what it holds of bytes already taken.
    fn flush_now(&self) -> io::Result<()>;
    /// Ends the sending side.
    fn close_now(&self);
}

/// An HTTP/2 connection's stream.
pub(in crate::server) struct H2Io<T> {
    inner: T,
    /// Bytes read before the connection knew it was HTTP/2 (the preface), served first.
    pre: Bytes,
}

impl<T: NonBlocking> H2Io<T> {
    pub(in crate::server) fn new(inner: T, pre: Bytes) -> H2Io<T> {
        H2Io { inner, pre }
    }
}

/// Runs `op` until it does not block, waiting for the socket's `readable` or writable
/// readiness (`write`) in between.
fn poll_op<R>(
    io: &AsyncFd<RawSocket>,
    cx: &mut Context<'_>,
    write: bool,
    mut op: impl FnMut() -> io::Result<R>,
) -> Poll<io::Result<R>> {
    loop {
        let mut guard = if write {
            ready!(io.poll_write_ready(cx))?
        } else {
            ready!(io.poll_read_ready(cx))?
        };
        match guard.try_io(|_| op()) {
            Ok(result) => return Poll::Ready(result),
            Err(_would_block) => continue,
        }
    }
}

impl<T: NonBlocking> AsyncRead for H2Io<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        let io = this.inner.registration()?;
        let dst = buf.initialize_unfilled();
        let n = ready!(poll_op(io, cx, false, || this.inner.read_now(dst)))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: NonBlocking> AsyncWrite for H2Io<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let io = this.inner.registration()?;
        poll_op(io, cx, true, || this.inner.write_now(data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.inner.registration()?;
        poll_op(io, cx, true, || this.inner.flush_now())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        self.inner.close_now();
        Poll::Ready(Ok(()))
    }
}
