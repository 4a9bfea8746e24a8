"""Raw-socket HTTP/1.x client helpers for the integration tests: send exact bytes, parse replies.

The parser is pure (bytes in, a response and the bytes consumed out) so that it can be
checked with byte literals in test_harness.py; `Conn` adds the socket around it.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Union

from typing_extensions import Self

Address = Union[int, tuple[str, int], str]

# A body without framing cannot be told apart from a hung server, so every read is bounded.
DEFAULT_TIMEOUT = 5.0


@dataclass
class Response:
    """One parsed HTTP/1.x response."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    # How the body was delimited: "none", "length", "chunked" or "close".
    framing: str = "none"
    # False when the connection ended before the framing said the body was over
    # (short Content-Length body, chunked body without its last chunk).
    complete: bool = True
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (case-insensitive), or `default`."""
        values = self.header_all(name)
        return values[0] if values else default

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def has_header(self, name: str) -> bool:
        return bool(self.header_all(name))


class ParseError(Exception):
    """The bytes are not an HTTP/1.x response."""


def _parse_head(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    lines = head.split(b"\r\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ParseError(f"bad status line {status_line!r}")
    reason = parts[2] if len(parts) == 3 else ""
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ParseError(f"bad header line {line!r}")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return parts[0], int(parts[1]), reason, headers


def _parse_chunked(buf: bytes, start: int, eof: bool):
    """Decode a chunked body from buf[start:].

    Returns (body, trailers, end_offset, complete) or None when more bytes are needed.
    """
    pos = start
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return (bytes(body), [], len(buf), False) if eof else None
        size_text = buf[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise ParseError(f"bad chunk size {size_text!r}") from exc
        pos = eol + 2
        if size == 0:
            trailers = []
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return (bytes(body), trailers, len(buf), False) if eof else None
                line = buf[pos:eol]
                pos = eol + 2
                if not line:
                    return bytes(body), trailers, pos, True
                name, _, value = line.partition(b":")
                trailers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        if len(buf) < pos + size + 2:
            if eof:
                body += buf[pos : pos + size]
                return bytes(body), [], len(buf), False
            return None
        body += buf[pos : pos + size]
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise ParseError("chunk data not followed by CRLF")
        pos += size + 2


def parse_response(
    buf: bytes, method: str = "GET", eof: bool = False
) -> tuple[Response | None, int]:
    """Parse one response from the start of `buf`.

    Returns (response, bytes consumed), or (None, 0) when `buf` does not yet hold a whole
    response and `eof` is False. With `eof` True the connection has ended: a close-delimited
    body ends there, and a body cut short is returned with `complete=False`.
    A 1xx interim response is returned on its own (the caller reads the next one).
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if eof and buf:
            raise ParseError(f"connection closed inside the response head: {buf[:200]!r}")
        return None, 0
    version, status, reason, headers = _parse_head(buf[:end])
    resp = Response(version, status, reason, headers)
    pos = end + 4
    # RFC 9112 §6.3 (1): HEAD, 1xx, 204 and 304 responses end at the empty line.
    if method.upper() == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return resp, pos
    te = ",".join(resp.header_all("Transfer-Encoding")).lower()
    if te:
        # RFC 9112 §6.3 (4): chunked as the final coding frames the body.
        if te.split(",")[-1].strip() == "chunked":
            parsed = _parse_chunked(buf, pos, eof)
            if parsed is None:
                return None, 0
            resp.body, resp.trailers, pos, resp.complete = parsed
            resp.framing = "chunked"
            return resp, pos
    elif resp.has_header("Content-Length"):
        # RFC 9112 §6.3 (6): Content-Length gives the body length.
        length = int(resp.header("Content-Length"))
        resp.framing = "length"
        if len(buf) - pos >= length:
            resp.body = bytes(buf[pos : pos + length])
            return resp, pos + length
        if not eof:
            return None, 0
        resp.body = bytes(buf[pos:])
        resp.complete = False
        return resp, len(buf)
    # RFC 9112 §6.3 (8): otherwise the body runs until the connection closes.
    if not eof:
        return None, 0
    resp.framing = "close"
    resp.body = bytes(buf[pos:])
    return resp, len(buf)


def parse_responses(data: bytes, methods: list[str] | None = None) -> list[Response]:
    """Parse every response in `data` (the whole stream of a closed connection)."""
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        method = methods[i] if methods and i < len(methods) else "GET"
        resp, used = parse_response(data[pos:], method, eof=True)
        out.append(resp)
        pos += used
        if not (100 <= resp.status < 200):
            i += 1
    return out


def connect(addr: Address, timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """Open a socket to a port on 127.0.0.1, a (host, port) pair, or a unix socket path."""
    if isinstance(addr, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(addr)
    else:
        if isinstance(addr, int):
            addr = ("127.0.0.1", addr)
        sock = socket.create_connection(addr, timeout=timeout)
    ca = os.environ.get("QIAO_TEST_TLS_CA")
    if ca and os.environ.get("QIAO_TEST_H2") == "1":
        # The suite runs over HTTP/2 (see conftest): the test's HTTP/1.1 goes as h2 streams.
        from h2bridge import H2Bridge

        return H2Bridge(sock, ca, timeout)
    if ca:
        # The suite runs over TLS (see conftest): the server's certificate is for localhost.
        ctx = ssl.create_default_context(cafile=ca)
        return ctx.wrap_socket(sock, server_hostname="localhost")
    return sock


def raw(
    addr: Address, data: bytes, timeout: float = DEFAULT_TIMEOUT, shutdown: bool = False
) -> bytes:
    """Send `data`, optionally shut down the write side, read until close or `timeout`."""
    with connect(addr, timeout) as sock:
        sock.sendall(data)
        # A TLS socket cannot be half-closed (its shutdown ends the session): it stays open.
        if shutdown and not isinstance(sock, ssl.SSLSocket):
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


class Conn:
    """A client connection that reads responses one at a time (keep-alive, pipelining)."""

    def __init__(self, addr: Address, timeout: float = DEFAULT_TIMEOUT):
        self.sock = connect(addr, timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on EOF. Raises socket.timeout past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for the server")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """Read until `marker` is in the buffer (the buffer is kept for read_response)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while marker not in self.buf:
            if self.eof or not self._fill(deadline):
                raise EOFError(f"closed before {marker!r}; got {self.buf!r}")
        return self.buf

    def read_body_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """Read until the body of the response coming in holds `marker`, wherever its framing
        (chunks; over HTTP/2 the bridge's, a chunk per DATA frame) cuts it; the buffer is
        kept for read_response. Returns the body so far."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if b"\r\n\r\n" in self.buf:
                body = parse_response(self.buf, eof=True)[0].body
                if marker in body:
                    return body
            if self.eof or not self._fill(deadline):
                raise EOFError(f"closed before {marker[:20]!r} in the body; got {self.buf[:200]!r}")

    def read_response(self, method: str = "GET", timeout: float | None = None) -> Response:
        """Read the next response (a 1xx interim response counts as one)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            resp, used = parse_response(self.buf, method, eof=self.eof)
            if resp is not None:
                self.buf = self.buf[used:]
                return resp
            if self.eof:
                raise EOFError("connection closed before a response")
            self._fill(deadline)

    def request(self, data: bytes, method: str | None = None) -> Response:
        self.send(data)
        if method is None:
            method = data.split(b" ", 1)[0].decode("latin-1")
        return self.read_response(method)

    def closed_by_peer(self, timeout: float | None = None) -> bool:
        """True if the server closes the connection (after any buffered bytes) within `timeout`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while not self.eof:
                self._fill(deadline)
        except socket.timeout:
            return False
        return True


def get(
    path: str = "/", host: str = "localhost", headers: bytes = b"", version: str = "1.1"
) -> bytes:
    """The bytes of a simple GET request."""
    return f"GET {path} HTTP/{version}\r\nHost: {host}\r\n".encode("latin-1") + headers + b"\r\n"


def app_calls(addr: Address) -> int:
    """How many times the echo_environ fixture app has been called in its server process,
    read through a probe request (which is itself counted). HTTP/1.0 without headers, so
    even the tightest header limits under test let it through."""
    with Conn(addr) as c:
        resp = c.request(b"GET /probe HTTP/1.0\r\n\r\n")
        assert resp.status == 200, resp
        return int(resp.header("X-Calls"))
