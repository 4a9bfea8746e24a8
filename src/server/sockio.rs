//! Blocking-style I/O on a connection's non-blocking socket, for the thread running the app.
//!
//! While the app runs, the connection's async task is parked and does not touch its
//! socket, so the app's thread may read and write the descriptor itself: it tries the
//! syscall, and on `EAGAIN` waits in `poll(2)` (the caller releases the GIL around waits).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Sends what the socket takes now; `Ok(0)` means it would block.
pub fn send_now(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    send_vectored_now(fd, &[std::io::IoSlice::new(bytes)], false)
}

/// Sends what the socket takes now of `slices`, in order; `Ok(0)` means it would block.
/// `more`: more data follows at once (`MSG_MORE`), so TCP may hold a short segment back.
pub fn send_vectored_now(
    fd: RawFd,
    slices: &[std::io::IoSlice<'_>],
    more: bool,
) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | if more { libc::MSG_MORE } else { 0 };
    let sent = match slices {
        [] => return Ok(0),
        // One buffer goes out with `send(2)`, which takes it as it is, where `sendmsg(2)`
        // first copies in a `msghdr` and its iovec array. Most responses are one buffer
        // (a small body is copied in behind its head).
        // SAFETY: the pointer and length describe the slice, which outlives the call.
        [one] => nonblocking(|| unsafe { libc::send(fd, one.as_ptr().cast(), one.len(), flags) }),
        _ => {
            // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive the call
            // and the msghdr points only at them.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = slices.len() as _;
            nonblocking(|| unsafe { libc::sendmsg(fd, &msg, flags) })
        }
    };
    Ok(sent?.unwrap_or(0))
}

/// Runs a non-blocking socket call until it is not interrupted: `Ok(Some(n))` for its
/// result, `Ok(None)` if it would block (`EAGAIN`).
fn nonblocking(mut call: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Sends up to `count` bytes of `file` from `*offset` (advanced past them) to the socket
/// `fd` with `sendfile(2)`; `Ok(0)` means the socket is full. A file that ends before
/// `count` bytes is an error: the response it was promised to fill cannot be completed.
pub fn sendfile_now(
    fd: RawFd,
    file: RawFd,
    offset: &mut libc::off_t,
    count: usize,
) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call; `offset` is a valid pointer.
    match nonblocking(|| unsafe { libc::sendfile(fd, file, offset, count) })? {
        Some(0) if count > 0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file ended before its announced length",
        )),
        Some(n) => Ok(n),
        None => Ok(0),
    }
}

/// Receives what has arrived into `buf`, which need not be initialised: `Ok(Some(n))` with
/// its first `n` bytes written, `Ok(None)` if nothing came yet, `Ok(Some(0))` at the end.
pub fn recv_uninit(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for `buf.len()` writes for the duration of the call.
    nonblocking(|| unsafe {
        libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    })
}

/// Waits until `fd` is readable (`write == false`) or writable, or the deadline passes.
pub fn wait(fd: RawFd, write: bool, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client timed out"));
        }
        let mut pfd = libc::pollfd {
            fd,
            events: if write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Sends all of `bytes`, waiting for the socket as needed, within `timeout`.
pub fn send_all(fd: RawFd, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !bytes.is_empty() {
        let n = send_now(fd, bytes)?;
        if n == 0 {
            wait(fd, true, deadline)?;
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Whether an I/O error means the peer went away (not worth a traceback).
pub fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof
    )
}
