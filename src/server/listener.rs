//! Listening sockets handed over by Python (already bound), and the streams they accept.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::server::sockio;
use crate::wsgi::environ::{HostPort, Peer};

pub enum Listener {
    /// With the listening address as the environ shows it, when it is the same for every
    /// connection (not a wildcard such as 0.0.0.0): saves a getsockname per connection.
    Tcp(TcpListener, Option<Arc<HostPort>>),
    Unix(UnixListener, Arc<HostPort>),
}

pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid option pointer and length for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn family(fd: RawFd) -> io::Result<libc::sa_family_t> {
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
    Ok(addr.ss_family)
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
        if family(fd.as_raw_fd())? == libc::AF_UNIX as libc::sa_family_t {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            let local = Arc::new(HostPort::new("localhost".into(), String::new()));
            Ok(Listener::Unix(UnixListener::from_std(std)?, local))
        } else {
            // TCP_NODELAY on the listening socket: Linux copies it to every accepted socket,
            // which saves a setsockopt per connection.
            set_nodelay(fd.as_raw_fd())?;
            let std = std::net::TcpListener::from(fd);
            std.set_nonblocking(true)?;
            let fixed = std
                .local_addr()
                .ok()
                .filter(|a| !a.ip().is_unspecified())
                .map(|a| Arc::new(host_port(a)));
            Ok(Listener::Tcp(TcpListener::from_std(std)?, fixed))
        }
    }

    /// `http://127.0.0.1:8000` or `unix:/path`, for the banner.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l, _) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "http://?".into(),
            },
            Listener::Unix(l, _) => match l.local_addr() {
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
                let (s, remote) = l.accept().await?;
                let local = match fixed {
                    Some(local) => local.clone(),
                    None => Arc::new(host_port(s.local_addr()?)),
                };
                let peer = Peer {
                    remote: host_port(remote),
                    local,
                };
                Ok((Conn::Tcp(s), peer))
            }
            Listener::Unix(l, local) => {
                let (s, _) = l.accept().await?;
                let peer = Peer {
                    remote: HostPort::new(String::new(), String::new()),
                    local: local.clone(),
                };
                Ok((Conn::Unix(s), peer))
            }
        }
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
    pub fn fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
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
    /// A read that did not fill the buffer took everything there was, so the socket's
    /// readiness is cleared on the spot: the next read then waits for epoll instead of
    /// first trying a `recv(2)` that can only fail with EAGAIN. That saves one syscall per
    /// request/response round trip. (epoll is edge-triggered, so bytes that arrive after
    /// this read still wake the connection.)
    pub async fn read_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let fd = self.fd();
        let spare = buf.len();
        let recv = || match sockio::recv_uninit(fd, buf) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e),
        };
        let n = match self {
            Conn::Tcp(s) => s.async_io(Interest::READABLE, recv).await?,
            Conn::Unix(s) => s.async_io(Interest::READABLE, recv).await?,
        };
        if n > 0 && n < spare {
            let drained = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
            let _ = match self {
                Conn::Tcp(s) => s.try_io(Interest::READABLE, drained),
                Conn::Unix(s) => s.try_io(Interest::READABLE, drained),
            };
        }
        Ok(n)
    }

    /// Runs `write` (a non-blocking write step on this socket: `Err(WouldBlock)` when full)
    /// once the socket is writable, waiting in the event loop as long as it is full.
    pub async fn write_with<R>(&self, write: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        match self {
            Conn::Tcp(s) => s.async_io(Interest::WRITABLE, write).await,
            Conn::Unix(s) => s.async_io(Interest::WRITABLE, write).await,
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown().await,
            Conn::Unix(s) => s.shutdown().await,
        };
    }
}
