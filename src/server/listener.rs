//! Listening sockets handed over by Python (already bound), and the streams they accept.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::config::Settings;
use crate::log::ErrorLog;
use crate::server::transport::Socket;
use crate::sys::{self, TcpOption};
use crate::wsgi::environ::{ip_text, HostPort, Peer};

pub(super) enum Listener {
    /// With the listening address as the environ shows it, when it is the same for every
    /// connection (not a wildcard such as 0.0.0.0): saves a getsockname per connection.
    Tcp(AsyncFd<std::net::TcpListener>, Option<Arc<HostPort>>),
    Unix(AsyncFd<std::os::unix::net::UnixListener>, Arc<HostPort>),
}

impl Listener {
    /// Wraps a listening descriptor (takes ownership); must run inside the runtime.
    pub(super) fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        if sys::local_addr(fd.as_fd())?.is_none() {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            let local = Arc::new(HostPort::new("localhost".into(), String::new()));
            // SAFETY: the listener owns its descriptor and keeps it open while registered.
            Ok(Listener::Unix(unsafe { AsyncFd::register(std) }?, local))
        } else {
            // TCP_NODELAY on the listening socket: Linux copies it to every accepted socket,
            // which saves a setsockopt per connection.
            sys::set_tcp_option(fd.as_fd(), TcpOption::NoDelay, 1)?;
            // TCP_DEFER_ACCEPT: the kernel hands over a connection once its first bytes
            // (the request) arrived, or after about a second without any. A connection
            // then rarely waits for its request: no epoll registration, wake-up and
            // deregistration for a `Connection: close` exchange, and no worker woken for a
            // client that connects ahead of time. Best effort: a kernel without it serves
            // the same, only with more work.
            let _ = sys::set_tcp_option(fd.as_fd(), TcpOption::DeferAccept, 1);
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

    /// `http://127.0.0.1:8000` (`https://` over TLS) or `unix:/path`, for the banner.
    pub(super) fn describe(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        match self {
            Listener::Tcp(l, _) => match l.get_ref().local_addr() {
                Ok(a) => format!("{scheme}://{a}"),
                Err(_) => format!("{scheme}://?"),
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

    /// The next connection, and its peer: trusted as a proxy (`forwarded_allow_ips`) or
    /// not, bound to begin with a PROXY header (`proxy_protocol`, `proxy_allow_ips`) or
    /// not. A Unix-socket peer is in both, as in gunicorn: only processes allowed to open
    /// the socket file can connect.
    pub(super) async fn accept(&self, settings: &Settings) -> io::Result<(Socket, Peer)> {
        let (fd, remote) = match self {
            Listener::Tcp(l, _) => l.async_io(Interest::READABLE, accept).await?,
            Listener::Unix(l, _) => l.async_io(Interest::READABLE, accept).await?,
        };
        self.peer_of(fd, remote, settings)
    }

    /// The next connection the kernel has already queued, without waiting: `None` when
    /// there is none.
    pub(super) fn accept_queued(&self, settings: &Settings) -> io::Result<Option<(Socket, Peer)>> {
        let queued = match self {
            Listener::Tcp(l, _) => sys::accept(l.get_ref().as_fd())?,
            Listener::Unix(l, _) => sys::accept(l.get_ref().as_fd())?,
        };
        queued
            .map(|(fd, remote)| self.peer_of(fd, remote, settings))
            .transpose()
    }

    fn peer_of(
        &self,
        fd: OwnedFd,
        remote: Option<SocketAddr>,
        settings: &Settings,
    ) -> io::Result<(Socket, Peer)> {
        let peer = match self {
            Listener::Tcp(_, fixed) => {
                let local = match fixed {
                    Some(local) => local.clone(),
                    None => Arc::new(host_port(sys::local_addr(fd.as_fd())?.ok_or_else(not_ip)?)),
                };
                let remote = remote.ok_or_else(not_ip)?;
                let mut peer = Peer::new(host_port(remote), local)
                    .trusted(settings.trusted.contains(remote.ip()));
                peer.proxy_header =
                    settings.proxy_protocol && settings.proxy_allowed.contains(remote.ip());
                peer
            }
            Listener::Unix(_, local) => {
                let mut peer =
                    Peer::new(HostPort::new(String::new(), String::new()), local.clone())
                        .trusted(true);
                peer.proxy_header = settings.proxy_protocol;
                peer
            }
        };
        Ok((Socket::new(fd), peer))
    }
}

/// One connection from the listening socket, or `WouldBlock` for the event loop to wait.
fn accept(listener: &impl AsFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    sys::accept(listener.as_fd())?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
}

fn not_ip() -> io::Error {
    io::Error::other("a TCP connection without an IP address")
}

/// An address and port as the environ shows them.
pub(super) fn host_port(addr: SocketAddr) -> HostPort {
    HostPort::new(
        ip_text(addr.ip()),
        itoa::Buffer::new().format(addr.port()).to_owned(),
    )
}

/// How often a streak of failed accepts is logged again after its first line.
const FAILURES_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// An accept loop's failures (out of descriptors, mostly, retried every few tens of
/// milliseconds), logged without flooding the log: the first of a streak, then how many
/// more every `FAILURES_LOGGED_EVERY`, and the streak's end once an accept works again.
#[derive(Default)]
pub(super) struct AcceptFailures {
    streak: u64,
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl AcceptFailures {
    pub(super) fn failed(&mut self, log: &ErrorLog, e: &io::Error) {
        self.streak += 1;
        if let Some(at) = self.logged_at {
            if at.elapsed() < FAILURES_LOGGED_EVERY {
                self.unlogged += 1;
                return;
            }
        }
        let more = match self.unlogged {
            0 => String::new(),
            n => format!(" ({n} more failed since the last line)"),
        };
        log.error(&format!("accept failed: {e}{more}"));
        self.logged_at = Some(Instant::now());
        self.unlogged = 0;
    }

    pub(super) fn succeeded(&mut self, log: &ErrorLog) {
        if self.streak > 0 {
            log.info(&format!(
                "accepting again, after {} failed accepts",
                self.streak
            ));
            *self = AcceptFailures::default();
        }
    }
}
