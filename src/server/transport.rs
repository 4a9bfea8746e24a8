//! The byte stream under one connection, owned by that connection alone: the `Transport`
//! interface the connection reads requests from and writes responses to, and `Socket`,
//! its plain TCP / Unix-socket implementation, whose private fast paths are `writev` of a
//! response queue and `sendfile` of its file ranges. A TLS stream is another
//! implementation of the same interface.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::server::h2::io::NonBlocking;
use crate::server::outbuf::OutBuf;
use crate::sys;

/// What a connection needs of its byte stream. Only the connection calls it (and, while
/// the connection lends it for an application call on the same thread, its sink).
pub(super) trait Transport: Send + Sync + 'static {
    /// Reads what has arrived into `buf`'s spare capacity (4 KiB are made if it has none),
    /// waiting in the event loop until something does: how many bytes, 0 at the end.
    fn read(&self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> {
        async move {
            if buf.capacity() == buf.len() {
                buf.reserve(4096);
            }
            let n = self.read_uninit(buf.spare_capacity_mut()).await?;
            // SAFETY: the read initialised `n` bytes past the buffer's length.
            unsafe { buf.set_len(buf.len() + n) };
            Ok(n)
        }
    }

    /// Reads what has arrived into `buf`, waiting in the event loop until something does;
    /// the first `n` bytes are then initialised (0 at the end).
    fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> impl Future<Output = io::Result<usize>>;

    /// Writes from the front of `out` what the stream takes now, without waiting; `Ok(0)`
    /// when it takes nothing. `last`: these are the connection's last bytes and
    /// `shutdown_write` follows.
    fn try_write(&self, out: &mut OutBuf, last: bool) -> io::Result<usize>;

    /// Writes from the front of `out`, waiting in the event loop until the stream takes
    /// some: how many bytes.
    fn write(&self, out: &mut OutBuf, last: bool) -> impl Future<Output = io::Result<usize>>;

    /// Whether the stream holds bytes it took from an `OutBuf` and has not written yet
    /// (a TLS stream's encrypted records, when the socket was full): a write is complete
    /// only once the queue is empty and this is false.
    fn holds_output(&self) -> bool {
        false
    }

    /// Whether everything queued in `out`, and taken from it, is written.
    fn drained(&self, out: &OutBuf) -> bool {
        out.is_empty() && !self.holds_output()
    }

    /// Blocks the thread until the stream can take more, or `deadline` (`TimedOut`).
    fn wait_writable(&self, deadline: Instant) -> io::Result<()>;

    /// Ends the sending side after the last response: the client reads the end of the
    /// stream while the connection can still be read.
    fn shutdown_write(&self);

    /// A descriptor whose `shutdown(SHUT_RD)` ends a read in progress (a graceful stop
    /// ends idle keep-alive waits so), if the stream has one.
    fn read_handle(&self) -> Option<RawFd>;
}

/// A plain TCP or Unix-domain socket (the same syscalls serve both).
///
/// Its socket joins the event loop's epoll set only when the connection first has to wait
/// for it. Most `Connection: close` exchanges never wait: the request is there when the
/// connection is accepted (the listener defers accepts until it is, `TCP_DEFER_ACCEPT`)
/// and the response fits the socket's buffer, so they save the `EPOLL_CTL_ADD`, the
/// `EPOLL_CTL_DEL` before `close`, the wake-up for the writable event reported at
/// registration, and tokio's bookkeeping of the registration.
pub(super) struct Socket {
    /// Declared before `fd`: dropped (taken out of the epoll set) before it closes.
    io: OnceLock<AsyncFd<RawSocket>>,
    fd: OwnedFd,
}

/// The socket's descriptor as its registration sees it (owned by `Socket::fd`).
pub(super) struct RawSocket(RawFd);

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Socket {
    pub(super) fn new(fd: OwnedFd) -> Socket {
        Socket {
            io: OnceLock::new(),
            fd,
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket's registration with the event loop, made at the first wait.
    pub(super) fn io(&self) -> io::Result<&AsyncFd<RawSocket>> {
        if let Some(io) = self.io.get() {
            return Ok(io);
        }
        // SAFETY: `self.fd` stays open for as long as the registration: `io` is dropped
        // first (see the field order).
        let io = unsafe { AsyncFd::register(RawSocket(self.fd.as_raw_fd())) }?;
        Ok(self.io.get_or_init(|| io))
    }
}

impl Transport for Socket {
    /// Until the socket is registered the read is simply tried: a new connection's
    /// request is usually there already. The first read that finds nothing registers it.
    ///
    /// Once registered, a read that did not fill the buffer took everything there was, so
    /// the socket's readiness is cleared on the spot: the next read then waits for epoll
    /// instead of first trying a `recv(2)` that can only fail with EAGAIN. That saves one
    /// syscall per request/response round trip. (epoll is edge-triggered, so bytes that
    /// arrive after this read still wake the connection.)
    async fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let spare = buf.len();
        if self.io.get().is_none() {
            if let Some(n) = sys::recv(self.fd(), buf)? {
                return Ok(n);
            }
        }
        let io = self.io()?;
        let recv = |_: &RawSocket| match sys::recv(self.fd(), buf) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e),
        };
        let n = io.async_io(Interest::READABLE, recv).await?;
        if n > 0 && n < spare {
            let drained = |_: &RawSocket| Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
            let _ = io.try_io(Interest::READABLE, drained);
        }
        Ok(n)
    }

    /// One `writev` of the memory segments at the front of the queue (up to a file
    /// range), or one `sendfile` of the file range at its front.
    ///
    /// `last`: the bytes go out with `MSG_MORE`, so TCP keeps the last short segment back
    /// and the shutdown's FIN rides on it: response and FIN are one segment (one packet to
    /// process on each side, one wake-up of the client) instead of two.
    fn try_write(&self, out: &mut OutBuf, last: bool) -> io::Result<usize> {
        let n = if let Some((file, offset, len)) = out.front_file() {
            let mut at = offset;
            sys::sendfile(self.fd(), file, &mut at, len.min(1 << 30))?
        } else {
            let slices = out.slices();
            // A head followed by a file range: tell TCP more comes at once, so the head
            // and the file's first bytes share a segment.
            let more = last || out.file_after(slices.len());
            sys::send_vectored(self.fd(), &slices, more)?
        };
        out.advance(n);
        Ok(n)
    }

    async fn write(&self, out: &mut OutBuf, last: bool) -> io::Result<usize> {
        match self.try_write(out, last)? {
            0 if !out.is_empty() => {}
            n => return Ok(n),
        }
        self.io()?
            .async_io(Interest::WRITABLE, |_| match self.try_write(out, last) {
                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                other => other,
            })
            .await
    }

    fn wait_writable(&self, deadline: Instant) -> io::Result<()> {
        sys::wait_writable(self.fd(), deadline)
    }

    fn shutdown_write(&self) {
        sys::shutdown(self.fd(), sys::Side::Write);
    }

    fn read_handle(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

/// A socket as `std::io` reads and writes it, without waiting: `WouldBlock` when it has
/// nothing to read or takes nothing more (how rustls and `h2`'s adapter drive it).
pub(super) struct Wire<'a>(pub(super) BorrowedFd<'a>);

impl io::Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `recv` only writes initialised bytes, so viewing the initialised `buf`
        // as possibly uninitialised bytes never de-initialises it.
        let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        sys::recv(self.0, uninit)?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

impl io::Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match sys::send_vectored(self.0, bufs, false)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl NonBlocking for Socket {
    fn registration(&self) -> io::Result<&AsyncFd<RawSocket>> {
        self.io()
    }

    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut Wire(self.fd()), buf)
    }

    fn write_now(&self, data: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut Wire(self.fd()), data)
    }

    fn flush_now(&self) -> io::Result<()> {
        Ok(())
    }

    fn close_now(&self) {
        self.shutdown_write();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A connected pair: the server's non-blocking side as a `Socket`, and the client's.
    pub(crate) fn pair() -> (Socket, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Socket::new(OwnedFd::from(a)), b)
    }

    fn file_with(data: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    /// A file range between memory segments goes out in order, by `sendfile`, and the
    /// accounting of bytes held in memory leaves it out.
    #[test]
    fn file_ranges_are_sent_in_order_and_hold_no_memory() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_with(&data);
        let (tx, mut rx) = pair();
        let mut out = OutBuf::default();
        out.extend(b"head|");
        out.push_file(OwnedFd::from(file), 1000, 150_000);
        out.extend(b"|tail");
        assert_eq!(out.len(), 5 + 150_000 + 5);
        assert_eq!(out.memory_len(), 10);

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).unwrap();
            got
        });
        while !out.is_empty() {
            if tx.try_write(&mut out, false).unwrap() == 0 {
                tx.wait_writable(Instant::now() + std::time::Duration::from_secs(5))
                    .unwrap();
            }
            assert!(out.memory_len() <= 10);
        }
        drop(tx);
        let got = reader.join().unwrap();
        let mut want = b"head|".to_vec();
        want.extend_from_slice(&data[1000..151_000]);
        want.extend_from_slice(b"|tail");
        assert!(got == want, "the bytes arrived out of order or altered");
    }

    /// A file shorter than the range queued for it is an error, not a hang.
    #[test]
    fn a_file_that_ends_early_is_an_error() {
        let (tx, _rx) = pair();
        let mut out = OutBuf::default();
        out.push_file(OwnedFd::from(file_with(b"short")), 0, 100);
        assert_eq!(tx.try_write(&mut out, false).unwrap(), 5);
        let err = tx.try_write(&mut out, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
