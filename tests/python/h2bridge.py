"""HTTP/1.1 on the outside, HTTP/2 on the wire, for the raw-socket tests in QIAO_TEST_H2 mode:
`H2Bridge` is a socket-like object that takes the HTTP/1.1 requests a test writes, sends each
as an HTTP/2 stream as an intermediary would (RFC 9113 §8.3.1), and renders the responses
back as HTTP/1.1 bytes, in request order, as their frames arrive.

Its parts: `RequestParser` reads HTTP/1.1 requests (bytes in, events out, no socket);
`request_fields` makes the HTTP/2 field list of a request head; `render_head` and
`render_chunk` write HTTP/1.1 response bytes; `H2Bridge` joins them on `H2Client`'s connection.

What a test reads: the status line `HTTP/1.1 <code> <the standard reason>` (HTTP/2 has no
reason phrase, RFC 9113 §8.3.2), the response's fields as received (lower-case names, RFC
9113 §8.2), any 1xx responses before the final one, and the body as its DATA frames arrive:
as is when the response has a content-length, else in chunked framing (a chunk per batch of
DATA), so that a test's `framing == "chunked"` reads as "the server sent no length". A stream
the server resets before its end (it aborted the response) reads as a response cut short and
a connection that closes, which is what an HTTP/1.1 server does in its place; so does a
response to `Connection: close` or to HTTP/1.0 without keep-alive. Requests written after
one of those are not sent, as such a server would not read them.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, auto
from http import HTTPStatus
from typing import Union

import h2.config
import h2.events
from h2client import H2Client, StreamResult

# RFC 9113 §8.2.2: fields that are about the HTTP/1.1 connection, never sent in HTTP/2
# (with the fields a Connection header names, and TE other than "trailers").
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)(.*)", re.DOTALL)
REASONS = {s.value: s.phrase for s in HTTPStatus}


class ParseError(ValueError):
    """The bytes are not an HTTP/1.1 request the bridge can translate (the test wants an
    HTTP/1.1 server: mark it `http1_only`)."""


# --- reading HTTP/1.1 requests -------------------------------------------------------------


@dataclass
class Head:
    """A request head: its request line and header fields."""

    method: bytes
    target: bytes
    version: bytes  # b"HTTP/1.1" or b"HTTP/1.0"
    headers: list[tuple[bytes, bytes]]  # names lower-cased, values without surrounding space
    has_body: bool

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    def tokens(self, name: bytes) -> set[bytes]:
        """The comma-separated tokens of every `name` field, lower-cased."""
        return {t.strip().lower() for v in self.values(name) for t in v.split(b",") if t.strip()}

    @property
    def keep_alive(self) -> bool:
        """RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only on `keep-alive`."""
        options = self.tokens(b"connection")
        if self.version == b"HTTP/1.0":
            return b"keep-alive" in options and b"close" not in options
        return b"close" not in options


@dataclass
class Data:
    """Body bytes of the request whose head came last."""

    data: bytearray


@dataclass
class End:
    """The end of that request's body, with the trailer fields of a chunked one."""

    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


Event = Union[Head, Data, End]


class _State(Enum):
    HEAD = auto()  # before a request line (between requests)
    LENGTH = auto()  # inside a Content-Length body
    CHUNK_SIZE = auto()  # at a chunk-size line
    CHUNK_DATA = auto()  # inside a chunk's data
    CHUNK_END = auto()  # at the CRLF after a chunk's data
    TRAILERS = auto()  # in the trailer section after the last chunk


def _field(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if not sep or not name or name != name.strip() or line[:1] in b" \t":
        raise ParseError(f"bad field line {line!r}")
    return name.lower(), value.strip(b" \t")


def _parse_head(block: bytes) -> Head:
    line, *lines = block.split(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1]:
        raise ParseError(f"bad request line {line!r}")
    method, target, version = parts
    headers = [_field(x) for x in lines]
    head = Head(method, target, version, headers, has_body=False)
    codings = head.tokens(b"transfer-encoding")
    lengths = head.values(b"content-length")
    if codings:
        if codings != {b"chunked"}:
            raise ParseError(f"transfer codings the bridge does not decode: {codings}")
        head.has_body = True
    elif lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            raise ParseError(f"bad Content-Length {lengths}")
        head.has_body = int(lengths[0]) > 0
    return head


class RequestParser:
    """HTTP/1.1 requests (RFC 9112) from a byte stream: `feed` takes the bytes as they come
    and returns what they complete; an unfinished request waits for more."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _State.HEAD
        self._left = 0  # bytes left of the Content-Length body or of the chunk
        self._trailers: list[tuple[bytes, bytes]] = []

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        steps = {
            _State.HEAD: self._head,
            _State.LENGTH: self._data,
            _State.CHUNK_SIZE: self._chunk_size,
            _State.CHUNK_DATA: self._data,
            _State.CHUNK_END: self._chunk_end,
            _State.TRAILERS: self._trailer,
        }
        while self._buf and steps[self._state](events):
            pass
        return events

    def _line(self) -> bytes | None:
        """The next CRLF-terminated line, consumed; None until it is whole."""
        end = self._buf.find(b"\r\n")
        if end < 0:
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _head(self, events: list[Event]) -> bool:
        # RFC 9112 §2.2: empty lines before a request line are ignored.
        while self._buf.startswith(b"\r\n"):
            del self._buf[:2]
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = _parse_head(bytes(self._buf[:end]))
        del self._buf[: end + 4]
        events.append(head)
        if head.tokens(b"transfer-encoding"):
            self._state = _State.CHUNK_SIZE
        elif head.has_body:
            self._left = int(head.values(b"content-length")[0])
            self._state = _State.LENGTH
        return True

    def _data(self, events: list[Event]) -> bool:
        piece = self._buf[: self._left]
        del self._buf[: len(piece)]
        self._left -= len(piece)
        if events and isinstance(events[-1], Data):
            events[-1].data += piece  # one event for a body that came in one write
        else:
            events.append(Data(piece))
        if self._left == 0:
            if self._state is _State.LENGTH:
                events.append(End())
                self._state = _State.HEAD
            else:
                self._state = _State.CHUNK_END
        return True

    def _chunk_size(self, events: list[Event]) -> bool:
        line = self._line()
        if line is None:
            return False
        try:
            size = int(line.split(b";", 1)[0].strip(b" \t"), 16)
        except ValueError:
            raise ParseError(f"bad chunk size line {line!r}") from None
        self._left = size
        self._state = _State.CHUNK_DATA if size else _State.TRAILERS
        return True

    def _chunk_end(self, events: list[Event]) -> bool:
        if len(self._buf) < 2:
            return False
        if self._buf[:2] != b"\r\n":
            raise ParseError("chunk data not followed by CRLF")
        del self._buf[:2]
        self._state = _State.CHUNK_SIZE
        return True

    def _trailer(self, events: list[Event]) -> bool:
        line = self._line()
        if line is None:
            return False
        if line:
            self._trailers.append(_field(line))
            return True
        events.append(End(self._trailers))
        self._trailers = []
        self._state = _State.HEAD
        return True


def request_fields(head: Head) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 field list of `head`, as an intermediary makes it (RFC 9113 §8.3.1): the
    control data as pseudo-header fields, :authority from an absolute-form target, else from
    Host (none without either), :scheme https; §8.2.2: no connection-specific fields."""
    authority, path = None, head.target
    absolute = ABSOLUTE_FORM.fullmatch(head.target)
    if absolute:
        authority, path = absolute[1], absolute[2] or b"/"
        if path.startswith(b"?"):
            path = b"/" + path
    elif head.values(b"host"):
        authority = head.values(b"host")[0]
    dropped = CONNECTION_SPECIFIC | head.tokens(b"connection") | {b"host"}
    fields = [(b":method", head.method), (b":scheme", b"https")]
    if authority is not None:
        fields.append((b":authority", authority))
    fields.append((b":path", path))
    for name, value in head.headers:
        if name in dropped or (name == b"te" and value.lower() != b"trailers"):
            continue
        fields.append((name, value))
    return fields


# --- writing HTTP/1.1 responses ------------------------------------------------------------


def render_head(status: int, fields: list[tuple[str, str]], chunked: bool = False) -> bytes:
    """An HTTP/1.1 response head for an HTTP/2 one (its fields latin-1 text, as received)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}"]
    lines += [f"{name}: {value}" for name, value in fields if not name.startswith(":")]
    if chunked:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def render_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def render_last_chunk(trailers: list[tuple[str, str]]) -> bytes:
    return b"0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in trailers).encode("latin-1") + b"\r\n"


# --- the socket ----------------------------------------------------------------------------


@dataclass
class _Exchange:
    """One request's stream, from its HEADERS to the last byte of its response rendered."""

    sid: int
    method: bytes
    close_after: bool  # the request ends the connection once answered (RFC 9112 §9.6)
    interim: list[list[tuple[str, str]]] = field(default_factory=list)  # 1xx not yet rendered
    trailers: list[tuple[str, str]] = field(default_factory=list)
    head_rendered: bool = False
    bodyless: bool = False  # HEAD, 204 and 304: no body, no framing (RFC 9110 §6.4.1)
    chunked: bool = False  # no content-length: rendered in chunked framing


# A timeout of None (a blocking socket) waits this long at most.
BLOCKING_WAIT = 3600.0


class H2Bridge(H2Client):
    """A socket-like object (sendall, recv, settimeout, close, ...) that speaks HTTP/1.1 to
    the test and HTTP/2 over TLS with ALPN h2 to the server on `sock`."""

    def __init__(self, sock: socket.socket, ca: str, timeout: float | None):
        # Request fields go as the bytes the test wrote (latin-1 too), and a request without
        # Host nor absolute-form target goes without :authority: h2's own checks are off.
        config = h2.config.H2Configuration(
            client_side=True, header_encoding="latin-1", validate_outbound_headers=False
        )
        super().__init__(None, None, ca=ca, timeout=timeout or BLOCKING_WAIT, sock=sock,
                         config=config)
        self._parser = RequestParser()
        self._queue: deque[_Exchange] = deque()  # in request order, not yet rendered whole
        self._by_sid: dict[int, _Exchange] = {}
        self._sending: _Exchange | None = None  # the request whose body the test is writing
        self._taking_requests = True  # False once a request that ends the connection went
        self._out = bytearray()  # rendered bytes the test has not read yet
        self._eof = False  # nothing comes after _out: the connection has ended

    # The socket interface the tests use.

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = BLOCKING_WAIT if timeout is None else timeout

    def gettimeout(self) -> float:
        return self.timeout

    def getsockname(self):
        return self.sock.getsockname()

    def getpeername(self):
        return self.sock.getpeername()

    def fileno(self) -> int:
        return self.sock.fileno()

    def shutdown(self, how: int) -> None:
        """HTTP/2 half-closes per stream (END_STREAM, which each whole request has already
        sent): only SHUT_RDWR does something, and that is close()."""
        if how == socket.SHUT_RDWR:
            self.close()

    def sendall(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            if self._eof or self.closed:
                return  # like bytes written to a connection that has ended
            if isinstance(event, Head):
                self._sending = self._start(event) if self._taking_requests else None
            elif self._sending is None:
                continue  # the body of a request that was not sent
            elif isinstance(event, Data):
                self.send_body(self._sending.sid, bytes(event.data), end=False)
            else:
                self._end(self._sending, event.trailers)
                self._sending = None
        self.flush()
        self._render()

    send = sendall

    def recv(self, bufsize: int) -> bytes:
        if not self._out and not self._eof:
            try:
                self.pump(time.monotonic() + self.timeout, lambda: bool(self._out) or self._eof)
            except TimeoutError:
                raise socket.timeout("timed out") from None
            self._render()
        data = bytes(self._out[:bufsize])
        del self._out[:bufsize]
        return data

    # Requests.

    def _start(self, head: Head) -> _Exchange | None:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = StreamResult()
        self.conn.send_headers(sid, request_fields(head), end_stream=not head.has_body)
        exchange = _Exchange(sid, head.method.upper(), close_after=not head.keep_alive)
        self._queue.append(exchange)
        self._by_sid[sid] = exchange
        if exchange.close_after:
            self._taking_requests = False
        return exchange if head.has_body else None

    def _end(self, exchange: _Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        if self.streams[exchange.sid].reset is not None:
            return
        if trailers:
            self.conn.send_headers(exchange.sid, trailers, end_stream=True)
        else:
            self.conn.end_stream(exchange.sid)

    # Responses.

    def handle(self, events) -> None:
        for ev in events:
            exchange = self._by_sid.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2.events.InformationalResponseReceived) and exchange:
                exchange.interim.append(list(ev.headers))
            elif isinstance(ev, h2.events.TrailersReceived) and exchange:
                exchange.trailers = list(ev.headers)
        super().handle(events)
        self._render()

    def _render(self) -> None:
        """Renders what has arrived, stream by stream in request order: the one at the front
        as its frames come, the later ones when their turn comes."""
        while self._queue:
            exchange = self._queue[0]
            result = self.streams[exchange.sid]
            for fields in exchange.interim:
                self._out += render_head(int(dict(fields)[":status"]), fields)
            exchange.interim.clear()
            if result.status is not None and not exchange.head_rendered:
                self._render_head(exchange, result)
            if exchange.head_rendered and result.body:
                if exchange.bodyless:
                    raise AssertionError(
                        f"DATA in the response to {exchange.method!r} with status "
                        f"{result.status}: RFC 9110 §6.4.1 says it has no content"
                    )
                body = bytes(result.body)
                result.body.clear()
                self._out += render_chunk(body) if exchange.chunked else body
            if not (exchange.head_rendered and result.ended):
                if result.reset is not None or self.closed:
                    self._finish()  # the response was aborted, or the connection ended
                return
            if exchange.chunked:
                self._out += render_last_chunk(exchange.trailers)
            self._queue.popleft()
            del self._by_sid[exchange.sid]
            if exchange.close_after:
                self._finish()
                return
        if self.closed:
            self._finish()

    def _render_head(self, exchange: _Exchange, result: StreamResult) -> None:
        exchange.bodyless = exchange.method == b"HEAD" or result.status in (204, 304)
        exchange.chunked = not exchange.bodyless and result.header("content-length") is None
        self._out += render_head(result.status, result.headers, exchange.chunked)
        exchange.head_rendered = True

    def _finish(self) -> None:
        """The connection ends after the bytes already rendered: GOAWAY tells the server
        (RFC 9113 §6.8); the socket stays open until close(), as a TCP socket the peer
        closed does."""
        if not self.closed:
            self.conn.close_connection()
            with contextlib.suppress(OSError):
                self.flush()
        self._eof = True
        self.closed = True
        self._queue.clear()
