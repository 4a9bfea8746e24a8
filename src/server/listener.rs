//! Listening sockets handed over by Python (already bound), and the streams they accept.

use std::cell::OnceCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::server::sockio;
use crate::wsgi::environ::{HostPort, Peer};

pub enum Listener {
    /// With the listening address as the environ shows it, when it is the same for every
    /// connection (not a wildcard such as 0.0.0.0): saves a getsockname per connection.
    Tcp(AsyncFd<std::net::TcpListener>, Option<Arc<HostPort>>),
    Unix(AsyncFd<std::os::unix::net::UnixListener>, Arc<HostPort>),
}

/// An accepted connection (TCP or Unix: the same syscalls serve both).
///
/// Its socket joins the event loop's epoll set only when the connection first has to wait
/// for it. Most `Connection: close` exchanges never wait: the request is there when the
/// connection is accepted (the listener defers accepts until it is, `TCP_DEFER_ACCEPT`)
/// and the response fits the socket's buffer, so they save the `EPOLL_CTL_ADD`, the
/// `EPOLL_CTL_DEL` before `close`, the wake-up for the writable event reported at
/// registration, and tokio's bookkeeping of the registration.
pub struct Conn {
    /// Declared before `fd`: dropped (taken out of the epoll set) before it closes.
    io: OnceCell<AsyncFd<RawSocket>>,
    fd: OwnedFd,
}

/// The connection's descriptor as its registration sees it (owned by `Conn::fd`).
struct RawSocket(RawFd);

impl AsRawFd for RawSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Sets an `int` TCP option on `fd`.
fn set_tcp_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid option pointer and length for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
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

/// The socket's own address (`getsockname(2)`).
fn sockname(fd: RawFd) -> io::Result<libc::sockaddr_storage> {
    // SAFETY: getsockname writes at most `len` bytes into the zeroed storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(addr)
}

/// A private duplicate of a descriptor Python keeps owning.
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we then own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

impl Listener {
    /// Wraps a listening descriptor (takes ownership); must run inside the runtime.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        if sockname(fd.as_raw_fd())?.ss_family == libc::AF_UNIX as libc::sa_family_t {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            let local = Arc::new(HostPort::new("localhost".into(), String::new()));
            // SAFETY: the listener owns its descriptor and keeps it open while registered.
            Ok(Listener::Unix(unsafe { AsyncFd::register(std) }?, local))
        } else {
            // TCP_NODELAY on the listening socket: Linux copies it to every accepted socket,
            // which saves a setsockopt per connection.
            set_tcp_option(fd.as_raw_fd(), libc::TCP_NODELAY, 1)?;
            // TCP_DEFER_ACCEPT: the kernel hands over a connection once its first bytes
            // (the request) arrived, or after about a second without any. A connection
            // then rarely waits for its request: no epoll registration, wake-up and
            // deregistration for a `Connection: close` exchange, and no worker woken for a
            // client that connects ahead of time. Best effort: a kernel without it serves
            // the same, only with more work.
            let _ = set_tcp_option(fd.as_raw_fd(), libc::TCP_DEFER_ACCEPT, 1);
            let std = std::net::TcpListener::from(fd);
            std.set_nonblocking(true)?;
            let fixed = std
                .local_addr()
                .ok()
                .filter(|a| !a.ip().is_unspecified())
                .map(|a| Arc::new(host_port(a)));
            // SAFETY: as above.
            Ok(Listener::Tcp(unsafe { AsyncFd::register(std) }?, fixed))
        }
    }

    /// `http://127.0.0.1:8000` or `unix:/path`, for the banner.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l, _) => match l.get_ref().local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "http://?".into(),
            },
            Listener::Unix(l, _) => match l.get_ref().local_addr() {
                Ok(a) => format!(
                    "unix:{}",
                    a.as_pathname()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
                Err(_) => "unix:?".into(),
            },
        }
    }

    pub async fn accept(&self) -> io::Result<(Conn, Peer)> {
        match self {
            Listener::Tcp(l, fixed) => {
                let (fd, remote) = l.async_io(Interest::READABLE, accept).await?;
                let local = match fixed {
                    Some(local) => local.clone(),
                    None => Arc::new(host_port(sock_addr(&sockname(fd.as_raw_fd())?)?)),
                };
                let peer = Peer::new(host_port(sock_addr(&remote)?), local);
                Ok((Conn::new(fd), peer))
            }
            Listener::Unix(l, local) => {
                let (fd, _) = l.async_io(Interest::READABLE, accept).await?;
                let peer = Peer::new(HostPort::new(String::new(), String::new()), local.clone());
                Ok((Conn::new(fd), peer))
            }
        }
    }
}

/// `accept4(2)` on a listening socket: the new connection, non-blocking, and its peer's
/// address.
fn accept(listener: &impl AsRawFd) -> io::Result<(OwnedFd, libc::sockaddr_storage)> {
    // SAFETY: accept4 writes at most `len` bytes into the zeroed storage; a descriptor it
    // returns is new and owned by nobody else.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let fd = libc::accept4(
            listener.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fd), addr))
    }
}

/// The IPv4 or IPv6 address in `addr`.
fn sock_addr(addr: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    let ptr = (addr as *const libc::sockaddr_storage).cast::<u8>();
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in (it is large and
            // aligned enough for any address).
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Ok(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6.
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        family => Err(io::Error::other(format!(
            "not an IP address (family {family})"
        ))),
    }
}

/// An address and port as the environ shows them.
fn host_port(addr: SocketAddr) -> HostPort {
    HostPort::new(
        ip_text(addr.ip()),
        itoa::Buffer::new().format(addr.port()).to_owned(),
    )
}

/// IPv4 is written by hand: `to_string` goes through the formatting machinery, ~600
/// instructions of a `Connection: close` request's ~30,000.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(itoa::Buffer::new().format(octet));
            }
            text
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

impl Conn {
    fn new(fd: OwnedFd) -> Conn {
        Conn {
            io: OnceCell::new(),
            fd,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket's registration with the event loop, made at the first wait.
    fn io(&self) -> io::Result<&AsyncFd<RawSocket>> {
        if let Some(io) = self.io.get() {
            return Ok(io);
        }
        // SAFETY: `self.fd` stays open for as long as the registration: `io` is dropped
        // first (see the field order).
        let io = unsafe { AsyncFd::register(RawSocket(self.fd())) }?;
        Ok(self.io.get_or_init(|| io))
    }

    /// Reads what has arrived into `buf`'s spare capacity (made if there is none).
    pub async fn read_buf(&self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        let n = self.read_uninit(buf.spare_capacity_mut()).await?;
        // SAFETY: the read initialised `n` bytes past the buffer's length.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Reads what has arrived into `buf`; the first `n` bytes are then initialised.
    ///
    /// Until the socket is registered the read is simply tried: a new connection's
    /// request is usually there already. The first read that finds nothing registers it.
    ///
    /// Once registered, a read that did not fill the buffer took everything there was, so
    /// the socket's readiness is cleared on the spot: the next read then waits for epoll
    /// instead of first trying a `recv(2)` that can only fail with EAGAIN. That saves one
    /// syscall per request/response round trip. (epoll is edge-triggered, so bytes that
    /// arrive after this read still wake the connection.)
    pub async fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let fd = self.fd();
        let spare = buf.len();
        if self.io.get().is_none() {
            if let Some(n) = sockio::recv_uninit(fd, buf)? {
                return Ok(n);
            }
        }
        let io = self.io()?;
        let recv = |_: &RawSocket| match sockio::recv_uninit(fd, buf) {
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

    /// Runs `write` (a non-blocking write step on this socket: `Err(WouldBlock)` when full)
    /// once the socket is writable, waiting in the event loop as long as it is full.
    pub async fn write_with<R>(&self, mut write: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        self.io()?.async_io(Interest::WRITABLE, |_| write()).await
    }

    /// Ends the sending side (`shutdown(2)`, `SHUT_WR`): the client sees the end of the
    /// response while the connection can still be read.
    pub fn shutdown(&self) {
        // SAFETY: a plain syscall on the connection's own descriptor.
        unsafe { libc::shutdown(self.fd(), libc::SHUT_WR) };
    }
}
