//! Every call the engine makes into libc, each behind a safe function: sockets (accept,
//! send, sendfile, receive, poll, shutdown, options, addresses), descriptors, files,
//! clocks and process calls. The rest of the crate has no `libc::` call of its own.
//!
//! Linux is the platform qiao is tuned for; on the other Unixes (macOS, the BSDs) each
//! Linux-only call has a portable stand-in here, so the crate builds and serves there too:
//! `accept` then `fcntl` for `accept4`, reads and sends for `sendfile`, no deferred accept,
//! no `MSG_MORE` hint, the precise clock for the coarse one.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Runs a non-blocking call until it is not interrupted: `Ok(Some(n))` for its result,
/// `Ok(None)` if it would block (`EAGAIN`).
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

/// Sends what the socket takes now of `slices`, in order; `Ok(0)` means it would block.
/// `more`: more data follows at once (`MSG_MORE`), so TCP may hold a short segment back.
pub(crate) fn send_vectored(
    fd: BorrowedFd<'_>,
    slices: &[IoSlice<'_>],
    more: bool,
) -> io::Result<usize> {
    let fd = fd.as_raw_fd();
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | if more { MSG_MORE } else { 0 };
    let sent = match slices {
        [] => return Ok(0),
        // One buffer goes out with `send(2)`, which takes it as it is, where `sendmsg(2)`
        // first copies in a `msghdr` and its iovec array. Most responses are one buffer
        // (a small body is copied in behind its head).
        [one] => nonblocking(|| {
            // SAFETY: the pointer and length describe the slice, which outlives the call.
            unsafe { libc::send(fd, one.as_ptr().cast(), one.len(), flags) }
        }),
        _ => {
            // SAFETY: an all-zero msghdr is a valid empty one.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is ABI-compatible with iovec; the slices outlive the call and the
            // msghdr points only at them.
            msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = slices.len() as _;
            // SAFETY: `msg` is valid for the call (see above).
            nonblocking(|| unsafe { libc::sendmsg(fd, &msg, flags) })
        }
    };
    Ok(sent?.unwrap_or(0))
}

/// `MSG_MORE` where the kernel has it (Linux); elsewhere the hint is dropped.
#[cfg(target_os = "linux")]
const MSG_MORE: libc::c_int = libc::MSG_MORE;
#[cfg(not(target_os = "linux"))]
const MSG_MORE: libc::c_int = 0;

/// Sends up to `count` bytes of `file` from `*offset` (advanced past them) to the socket
/// `fd` with `sendfile(2)`; `Ok(0)` means the socket is full. A file that ends before
/// `count` bytes is an error: the response it was promised to fill cannot be completed.
#[cfg(target_os = "linux")]
pub(crate) fn sendfile(
    fd: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut at = *offset as libc::off_t;
    let sent = nonblocking(|| {
        // SAFETY: both descriptors are open for the call (borrowed); `at` is a valid
        // pointer for the call.
        unsafe { libc::sendfile(fd.as_raw_fd(), file.as_raw_fd(), &mut at, count) }
    })?;
    *offset = at as u64;
    match sent {
        Some(0) if count > 0 => Err(file_ended()),
        Some(n) => Ok(n),
        None => Ok(0),
    }
}

/// `sendfile` where the kernel's differs from Linux's (macOS and the BSDs each have their
/// own signature and partial-send rules): the file's bytes are read with `pread` and sent,
/// a block at a time. Only what the socket took advances `offset`; the rest is read again
/// on the next call.
#[cfg(not(target_os = "linux"))]
pub(crate) use sendfile_by_copy as sendfile;

// Built on Linux too, for its tests.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(crate) fn sendfile_by_copy(
    fd: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut block = vec![0u8; count.min(64 * 1024)];
    if block.is_empty() {
        return Ok(0);
    }
    let n = pread(file, &mut block, *offset)?;
    if n == 0 {
        return Err(file_ended());
    }
    let sent = send_vectored(fd, &[IoSlice::new(&block[..n])], false)?;
    *offset += sent as u64;
    Ok(sent)
}

/// A file that ends before `count` bytes: the response it was promised to fill cannot be
/// completed.
fn file_ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ended before its announced length",
    )
}

/// Receives what has arrived into `buf`, which need not be initialised: `Ok(Some(n))` with
/// its first `n` bytes written, `Ok(None)` if nothing came yet, `Ok(Some(0))` at the end.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
    nonblocking(|| {
        // SAFETY: `buf` is valid for `buf.len()` writes for the duration of the call.
        unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        }
    })
}

/// Reads up to `buf.len()` bytes of the file `fd` from `offset` (`pread(2)`, the file's
/// own position untouched): how many; 0 at the end of the file.
pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writes for the duration of the call.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Blocks the thread until `fd` is writable or `deadline` passes (`TimedOut`).
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client timed out"));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
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

/// Which side(s) of a socket `shutdown` ends.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    /// Our sending side: the peer reads the end of the stream.
    Write,
    /// Our receiving side: a read in progress sees the end of the stream.
    Read,
}

/// `shutdown(2)` of one side; failures (the peer is gone already) do not matter to callers.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, side: Side) {
    shutdown_raw(fd.as_raw_fd(), side);
}

/// `shutdown` of a descriptor known only by its number. Memory-safe whatever the number
/// (a closed one fails with `EBADF`); the caller makes sure the number is still the
/// socket it means.
pub(crate) fn shutdown_raw(fd: RawFd, side: Side) {
    let how = match side {
        Side::Write => libc::SHUT_WR,
        Side::Read => libc::SHUT_RD,
    };
    // SAFETY: a plain syscall on a descriptor number; no memory is passed.
    unsafe { libc::shutdown(fd, how) };
}

/// Sets an `int` TCP option (`IPPROTO_TCP`) on `fd`.
pub(crate) fn set_tcp_option(fd: BorrowedFd<'_>, option: TcpOption, value: i32) -> io::Result<()> {
    let option = match option {
        TcpOption::NoDelay => libc::TCP_NODELAY,
        #[cfg(target_os = "linux")]
        TcpOption::DeferAccept => libc::TCP_DEFER_ACCEPT,
        // Only Linux wakes `accept` at the first data rather than at the handshake; other
        // kernels accept at once, which is correct, just one wake-up sooner.
        #[cfg(not(target_os = "linux"))]
        TcpOption::DeferAccept => return Ok(()),
    };
    // SAFETY: a valid option pointer and length for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The TCP options the engine sets.
#[derive(Clone, Copy)]
pub(crate) enum TcpOption {
    NoDelay,
    DeferAccept,
}

/// A socket's own address (`getsockname(2)`): `Some` for IPv4/IPv6, `None` for a Unix
/// socket.
pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> io::Result<Option<SocketAddr>> {
    // SAFETY: an all-zero sockaddr_storage is valid; getsockname writes at most `len`
    // bytes into it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ip_addr(&addr))
}

/// `accept4(2)` on a listening socket: the new connection, non-blocking and close-on-exec,
/// and its peer's address (`None` for a Unix socket); `Ok(None)` if none is waiting.
pub(crate) fn accept(
    listener: BorrowedFd<'_>,
) -> io::Result<Option<(OwnedFd, Option<SocketAddr>)>> {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let fd = nonblocking(|| {
        let storage = (&mut addr as *mut libc::sockaddr_storage).cast();
        #[cfg(target_os = "linux")]
        // SAFETY: accept4 writes at most `len` bytes into `addr`.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                storage,
                &mut len,
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        // Without accept4 the flags are set just after the call; in between, only an exec
        // by another thread that keeps inherited descriptors could leak the connection
        // (Python's subprocess closes them).
        #[cfg(not(target_os = "linux"))]
        // SAFETY: accept writes at most `len` bytes into `addr`.
        let fd = unsafe { libc::accept(listener.as_raw_fd(), storage, &mut len) };
        fd as isize
    })?;
    let Some(fd) = fd else { return Ok(None) };
    // SAFETY: a descriptor accept returned is new and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    #[cfg(not(target_os = "linux"))]
    set_cloexec_nonblocking(fd.as_raw_fd())?;
    Ok(Some((fd, ip_addr(&addr))))
}

/// What `accept4`'s flags do, for a kernel without it.
#[cfg(not(target_os = "linux"))]
fn set_cloexec_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; only its flags change.
    unsafe {
        let fd_flags = libc::fcntl(fd, libc::F_GETFD);
        let fl_flags = libc::fcntl(fd, libc::F_GETFL);
        if fd_flags < 0
            || fl_flags < 0
            || libc::fcntl(fd, libc::F_SETFD, fd_flags | libc::FD_CLOEXEC) < 0
            || libc::fcntl(fd, libc::F_SETFL, fl_flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The IPv4 or IPv6 address in `addr`; `None` for any other family.
fn ip_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let ptr = (addr as *const libc::sockaddr_storage).cast::<u8>();
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in (it is large and
            // aligned enough for any address).
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6.
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A private, close-on-exec duplicate of a descriptor someone else keeps owning.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads `fd` (an invalid one fails with EBADF) and
    // returns a new descriptor.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The size of `fd` when it is a regular file (`None` for pipes, sockets, bad descriptors).
pub(crate) fn regular_file_size(fd: RawFd) -> Option<u64> {
    // SAFETY: an all-zero stat is valid; fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid `fd` fails with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
        return None;
    }
    Some(st.st_size as u64)
}

/// The parent process's pid.
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() }
}

/// Names this thread (and, on the main thread, the process) for `ps -o comm` and `top`:
/// 15 bytes at most. Linux only; elsewhere the name stays (the `setproctitle` package
/// still sets the whole title where it is installed).
pub(crate) fn set_process_name(title: &str) {
    let mut name = [0u8; 16];
    let n = title.len().min(15);
    name[..n].copy_from_slice(&title.as_bytes()[..n]);
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// Gives the C heap's free pages back to the kernel (glibc's `malloc_trim`; elsewhere a
/// no-op).
pub(crate) fn trim_c_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The wall clock from the kernel's coarse clock (updated once per tick): cheaper than
/// `SystemTime::now`, and a `Date` header needs whole seconds only. `None` if unavailable.
pub(crate) fn realtime_coarse() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[cfg(target_os = "linux")]
    let clock = libc::CLOCK_REALTIME_COARSE;
    #[cfg(not(target_os = "linux"))]
    let clock = libc::CLOCK_REALTIME;
    // SAFETY: clock_gettime only writes into `ts`.
    if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
        Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    } else {
        None
    }
}

/// Milliseconds on the system-wide monotonic clock (the same in every process of the
/// machine, unlike `Instant`'s opaque values).
pub(crate) fn monotonic_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A reading of the system-wide monotonic clock (CLOCK_MONOTONIC, the clock `Instant`
/// reads), in nanoseconds: a request's times (its first byte, the application's call, its
/// end) are taken as these, one clock reading each, and subtracted with one instruction,
/// where `Instant`'s checked arithmetic costs more than the reading; its milliseconds are
/// the scoreboard's, as every process of the machine counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mono(u64);

impl Mono {
    pub(crate) fn now() -> Mono {
        Mono(monotonic_ns())
    }

    /// The time from `earlier` to this reading (zero if `earlier` is later).
    pub(crate) fn since(self, earlier: Mono) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `since` in whole microseconds (one division, for the metrics' histograms).
    pub(crate) fn micros_since(self, earlier: Mono) -> u64 {
        self.0.saturating_sub(earlier.0) / 1_000
    }

    /// The time since this reading.
    pub(crate) fn elapsed(self) -> Duration {
        Mono::now().since(self)
    }

    /// This reading in `monotonic_ms()`'s milliseconds.
    pub(crate) fn ms(self) -> u64 {
        self.0 / 1_000_000
    }
}

/// Memory shared with the processes this one forks afterwards: an anonymous shared
/// mapping, zero-filled by the kernel, unmapped when dropped.
pub(crate) struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory that lives as long as the value; whoever reads and
// writes it through `as_ptr` synchronises the access (the scoreboard uses atomics).
unsafe impl Send for SharedMap {}
// SAFETY: as above.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    pub(crate) fn new(len: usize) -> io::Result<SharedMap> {
        // SAFETY: an anonymous mapping of `len` bytes at an address of the kernel's
        // choosing; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The start of the mapping: `len` bytes, zeroed at first, valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are the mapping `new` made, unmapped only here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The local time's broken-down fields for `secs` since the epoch (for log timestamps):
/// (year, month 1-12, day, hour, minute, second, UTC offset in seconds).
pub(crate) fn local_time(secs: i64) -> (i32, u32, u32, u32, u32, u32, i64) {
    // localtime_r's `time_t`, inferred rather than named: musl marks the alias
    // deprecated (it is to become 64-bit there).
    let now = secs as _;
    // SAFETY: an all-zero tm is valid; localtime_r writes into it and reads `now`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    unsafe { libc::localtime_r(&now, &mut tm) };
    (
        tm.tm_year + 1900,
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
        tm.tm_gmtoff,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A `Mono` reading is on the monotonic clock: its milliseconds lie between the ones
    /// read around it, and a later reading is later by at least the time slept between.
    #[test]
    fn mono_readings_are_the_monotonic_clock() {
        let before = monotonic_ms();
        let at = Mono::now();
        let after = monotonic_ms();
        assert!((before..=after).contains(&at.ms()));
        std::thread::sleep(Duration::from_millis(2));
        let later = Mono::now();
        assert!(later.since(at) >= Duration::from_millis(2));
        assert_eq!(
            u128::from(later.micros_since(at)),
            later.since(at).as_micros()
        );
        assert_eq!(at.since(later), Duration::ZERO);
        assert!(at.elapsed() >= later.since(at));
    }

    #[test]
    fn send_and_recv_over_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = [MaybeUninit::uninit(); 16];
        assert_eq!(recv(b.as_fd_ref(), &mut buf).unwrap(), None);
        let sent = send_vectored(
            a.as_fd_ref(),
            &[IoSlice::new(b"he"), IoSlice::new(b"llo")],
            false,
        )
        .unwrap();
        assert_eq!(sent, 5);
        assert_eq!(recv(b.as_fd_ref(), &mut buf).unwrap(), Some(5));
        shutdown(a.as_fd_ref(), Side::Write);
        assert_eq!(recv(b.as_fd_ref(), &mut buf).unwrap(), Some(0));
    }

    #[test]
    fn a_full_socket_times_out_the_wait() {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let block = vec![0u8; 64 * 1024];
        while send_vectored(a.as_fd_ref(), &[IoSlice::new(&block)], false).unwrap() > 0 {}
        let deadline = Instant::now() + Duration::from_millis(20);
        let err = wait_writable(a.as_fd_ref(), deadline).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn regular_files_have_a_size_and_sockets_do_not() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(regular_file_size(a.as_raw_fd()), None);
        let file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut &file, b"12345").unwrap();
        assert_eq!(regular_file_size(file.as_raw_fd()), Some(5));
        assert_eq!(regular_file_size(-1), None);
    }

    /// The stand-in for `sendfile` on kernels without Linux's: a range of a file arrives
    /// whole, only what was sent advances the offset, and a file shorter than promised is
    /// an error.
    #[test]
    fn the_portable_sendfile_sends_a_range_and_stops_at_a_full_socket() {
        let file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut &file, &content).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut offset = 10;
        let mut sent = 0;
        let mut received = Vec::new();
        let want = 150_000;
        while sent < want {
            let n = sendfile_by_copy(a.as_fd_ref(), file.as_fd_ref(), &mut offset, want - sent)
                .unwrap();
            sent += n;
            if n == 0 {
                // The socket is full: read what it holds, then go on.
                let mut buf = vec![0u8; 256 * 1024];
                let got = std::io::Read::read(&mut &b, &mut buf).unwrap();
                received.extend_from_slice(&buf[..got]);
            }
        }
        assert_eq!(offset, 10 + want as u64);
        drop(a);
        std::io::Read::read_to_end(&mut &b, &mut received).unwrap();
        assert_eq!(received, &content[10..10 + want]);
        let (c, _d) = UnixStream::pair().unwrap();
        let mut past_end = content.len() as u64;
        let err = sendfile_by_copy(c.as_fd_ref(), file.as_fd_ref(), &mut past_end, 5);
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    trait AsFdRef {
        fn as_fd_ref(&self) -> BorrowedFd<'_>;
    }

    impl<T: std::os::fd::AsFd> AsFdRef for T {
        fn as_fd_ref(&self) -> BorrowedFd<'_> {
            self.as_fd()
        }
    }
}
