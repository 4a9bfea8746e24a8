"""Parse bind strings (HOST:PORT, [v6]:PORT, unix:/path, fd://N) and open listening sockets."""

from __future__ import annotations

# The C module, not `socket`: the wrapper imports selectors and builds enums, resident in
# every idle worker the master forks. `socket.socket` subclasses `_socket.socket`.
import _socket
import os
import stat

__all__ = [
    "DEFAULT_PORT",
    "Address",
    "BindError",
    "bind_all",
    "close_listener",
    "display",
    "parse_bind",
    "tcp_address",
]

DEFAULT_PORT = 8000

# The Unix socket files qiao created, with their inodes: a file is removed on close only
# if it is still the one qiao bound (not one a later run put at the same path).
_owned_paths: dict[str, int] = {}


class BindError(OSError):
    """A listening socket could not be created; ``str()`` is one line naming the address."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(errno_ or 0, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Address:
    """One parsed bind string: a TCP host and port, a Unix socket path, or an inherited fd.

    A plain class, not a typing.NamedTuple: `typing` would be resident in every worker."""

    __slots__ = ("fd", "host", "kind", "path", "port")

    def __init__(
        self,
        kind: str,  # "tcp" | "unix" | "fd"
        host: str = "",  # tcp: the host as written ("" = all IPv4 interfaces), no brackets
        port: int = 0,  # tcp: 0 asks the kernel for an ephemeral port
        path: str = "",  # unix: the socket file's path
        fd: int = -1,  # fd: the inherited descriptor
    ) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self.path = path
        self.fd = fd

    def _key(self) -> tuple[str, str, int, str, int]:
        return (self.kind, self.host, self.port, self.path, self.fd)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Address(kind={!r}, host={!r}, port={!r}, path={!r}, fd={!r})".format(*self._key())

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = self.host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"


def tcp_address(host: str, port: int) -> Address:
    """The address for ``make_server(host, port)``: ``''`` means all IPv4 interfaces."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port: expected an integer from 0 to 65535, got {port!r}")
    if not isinstance(host, str):
        raise TypeError(f"host: expected a string, got {host!r}")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Address("tcp", host=host, port=port)


def parse_bind(text: str) -> Address:
    """Parse one bind string; raises ``ValueError`` with a short reason on a malformed one.

    Forms: ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (all IPv4 interfaces), ``HOST``
    (port 8000), ``unix:/path``, ``fd://N``; a ``tcp://`` prefix is allowed.
    """
    text = text.strip()
    if not text:
        raise ValueError("expected an address such as 127.0.0.1:8000 or unix:/path")
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError("expected a socket path after 'unix:'")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        number = text[len("fd://"):]
        if not number.isdigit():
            raise ValueError("expected a file descriptor number after 'fd://'")
        return Address("fd", fd=int(number))
    text = text.removeprefix("tcp://")
    if "/" in text:
        raise ValueError("expected HOST:PORT, [IPV6]:PORT, unix:/path or fd://N")

    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("expected ']' after an IPv6 address")
        host, rest = text[1:close], text[close + 1:]
        if not host:
            raise ValueError("expected an IPv6 address inside '[]'")
        if rest and not rest.startswith(":"):
            raise ValueError("expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError("an IPv6 address needs brackets, as in [::1]:8000")
    elif ":" in text:
        host, port_text = text.split(":", 1)
    else:
        host, port_text = text, None

    if port_text is None:
        port = DEFAULT_PORT
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError("expected a port from 0 to 65535")
    return Address("tcp", host=host, port=port)


def bind_all(
    addresses: list[Address],
    backlog: int,
    cls: type[_socket.socket] = _socket.socket,
    *,
    reuse_port: bool = False,
) -> list[_socket.socket]:
    """Open one listening socket per address, of class ``cls`` (``socket.socket`` for the
    Python API), TCP ones with ``SO_REUSEPORT`` if ``reuse_port``; on a failure close those
    already opened."""
    sockets: list[_socket.socket] = []
    try:
        for address in addresses:
            sockets.append(_bind(address, backlog, cls, reuse_port))
    except BaseException:
        for sock in sockets:
            close_listener(sock)
        raise
    return sockets


def _bind(
    address: Address, backlog: int, cls: type[_socket.socket], reuse_port: bool
) -> _socket.socket:
    try:
        if address.kind == "unix":
            return _bind_unix(address.path, backlog, cls)
        if address.kind == "fd":
            return _adopt_fd(address.fd, backlog, cls)
        return _bind_tcp(address.host, address.port, backlog, cls, reuse_port)
    except _socket.gaierror as e:
        raise BindError(f"cannot bind {address}: cannot resolve host {address.host!r}") from e
    except BindError:
        raise
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        raise BindError(f"cannot bind {address}: {reason}", e.errno) from e


def _bind_tcp(
    host: str, port: int, backlog: int, cls: type[_socket.socket], reuse_port: bool
) -> _socket.socket:
    # An ASCII name goes as bytes: a str is IDNA-encoded first, which imports the idna
    # codec and unicodedata, resident in every worker.
    name = host or "0.0.0.0"
    family, type_, proto, _, sockaddr = _socket.getaddrinfo(
        name.encode("ascii") if name.isascii() else name, port, _socket.AF_UNSPEC, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE
    )[0]
    sock = cls(family, type_, proto)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        if family == _socket.AF_INET6:
            # An IPv6 socket serves only IPv6; bind 0.0.0.0 as well for IPv4.
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_unix(path: str, backlog: int, cls: type[_socket.socket]) -> _socket.socket:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise BindError(f"cannot bind unix:{path}: the path exists and is not a socket")
        os.unlink(path)  # a stale socket left by an earlier run
    sock = cls(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.bind(path)
        _owned_paths[path] = os.lstat(path).st_ino
        sock.listen(backlog)
    except BaseException:
        close_listener(sock)
        raise
    return sock


def _adopt_fd(fd: int, backlog: int, cls: type[_socket.socket] = _socket.socket) -> _socket.socket:
    try:
        os.fstat(fd)
    except OSError as e:
        raise BindError(f"cannot bind fd://{fd}: not an open file descriptor", e.errno) from e
    try:
        sock = cls(fileno=fd)
    except OSError as e:
        raise BindError(f"cannot bind fd://{fd}: not a socket", e.errno) from e
    if sock.type != _socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"cannot bind fd://{fd}: not a stream socket")
    accepting = getattr(_socket, "SO_ACCEPTCONN", None)
    if accepting is None or not sock.getsockopt(_socket.SOL_SOCKET, accepting):
        sock.listen(backlog)
    return sock


def close_listener(sock: _socket.socket) -> None:
    """Close a listening socket; remove the file of a Unix socket that qiao bound itself."""
    path = None
    if sock.fileno() >= 0 and sock.family == _socket.AF_UNIX:
        name = sock.getsockname()
        path = name if isinstance(name, str) else None
    sock.close()
    inode = _owned_paths.pop(path, None) if path else None
    if inode is not None:
        try:
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == inode:
                os.unlink(path)
        except OSError:
            pass


def display(sock: _socket.socket, scheme: str = "http") -> str:
    """The address a socket listens on, for people: ``http://127.0.0.1:8000``, ``unix:/path``
    (``https://`` when ``scheme`` says so)."""
    name = sock.getsockname()
    if sock.family == _socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode(errors='replace')}"
    host, port = name[0], name[1]
    if sock.family == _socket.AF_INET6:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def inherited_sockets() -> list[_socket.socket]:
    """Listening sockets passed by systemd socket activation (``LISTEN_FDS`` for this pid),
    or none. Their descriptors start at 3; the variables are removed so that nothing the
    app starts takes them for its own."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    return [_adopt_fd(3 + i, 0) for i in range(count)]
