"""A frame-level HTTP/2 client for the tests (the `h2` package over a socket): requests on
chosen streams, responses gathered per stream, and raw frames for the hardening tests."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from typing_extensions import Self


@dataclass
class StreamResult:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the error code of a RST_STREAM
    informational: list[int] = field(default_factory=list)  # 1xx statuses received

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)


class _Connection:
    """A socket to the server: TLS offering only h2 by ALPN when `ca` is given (the server
    verified as localhost), else plain TCP. `sock`, an already connected socket (TCP or
    Unix), is used instead of connecting to host:port."""

    def __init__(self, host: str | None, port: int | None, ca: str | None, timeout: float,
                 sock: socket.socket | None = None):
        raw = sock if sock is not None else socket.create_connection((host, port), timeout)
        if ca is not None:
            ctx = ssl.create_default_context(cafile=ca)
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        else:
            self.sock = raw
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class H2Client(_Connection):
    """One HTTP/2 connection: over TLS by ALPN when `ca` is given, else cleartext with
    prior knowledge."""

    def __init__(self, host: str | None, port: int | None, ca: str | None = None,
                 timeout: float = 10.0, settings: dict | None = None, window: int | None = None,
                 sock: socket.socket | None = None,
                 config: h2.config.H2Configuration | None = None):
        super().__init__(host, port, ca, timeout, sock)
        if ca is not None:
            assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(
            config or h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.streams: dict[int, StreamResult] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack = True  # acknowledge received data (open the windows) as it comes

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes = b"",
                headers: list[tuple[str, str]] | None = None, authority: str = "localhost",
                end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"), (":authority", authority),
                  (":path", path), *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=end and not body)
        self.streams[sid] = StreamResult()
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Sends `body` as the windows allow, reading what the server sends meanwhile."""
        view = memoryview(body)
        while view:
            if self.streams[sid].reset is not None:
                return  # RST_STREAM: the server takes no more of this body (RFC 9113 §5.1)
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.flush()
                self.pump(deadline=time.monotonic() + self.timeout, until=lambda: (
                    self.conn.local_flow_control_window(sid) > 0
                    or self.streams[sid].ended or self.streams[sid].reset is not None))
                if self.closed or self.streams[sid].ended or self.streams[sid].reset is not None:
                    return
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        if end and self.streams[sid].reset is None:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, deadline: float, until) -> None:
        """Reads and handles frames until `until()` is true, the connection closes, or the
        deadline passes (TimeoutError)."""
        while not until():
            if self.closed:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the server did not answer in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                if self.conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                    raise
                # After a GOAWAY, h2 takes no frame, not even the PING of a graceful
                # shutdown (RFC 9113 §6.8): for this client the connection is over.
                self.closed = True
                return
            self.handle(events)
            self.flush()

    def handle(self, events) -> None:
        for ev in events:
            result = self.streams.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, h2.events.InformationalResponseReceived) and result is not None:
                result.informational.append(int(dict(ev.headers)[":status"]))
            elif isinstance(ev, h2.events.ResponseReceived) and result is not None:
                result.headers = list(ev.headers)
                result.status = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived) and result is not None:
                result.body += ev.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and result is not None:
                result.ended = True
            elif isinstance(ev, h2.events.StreamReset) and result is not None:
                result.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev

    def wait(self, *sids: int, timeout: float | None = None) -> list[StreamResult]:
        """The results of `sids` once each ended or was reset."""
        def done() -> bool:
            return all(self.streams[s].ended or self.streams[s].reset is not None for s in sids)

        self.pump(time.monotonic() + (timeout or self.timeout), done)
        return [self.streams[s] for s in sids]

    def get(self, path: str, **kwargs) -> StreamResult:
        return self.wait(self.request(path, **kwargs))[0]


class RawH2(_Connection):
    """A connection that writes frames as given (hyperframe, hpack), whatever the rules:
    for the hardening tests. What the server sends is read and parsed as it comes."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self, host: str, port: int, ca: str | None = None, timeout: float = 10.0):
        import hpack

        super().__init__(host, port, ca, timeout)
        self.encoder = hpack.Encoder()
        self.buf = b""
        self.frames: list = []
        self.closed = False

    def start(self) -> None:
        from hyperframe.frame import SettingsFrame

        self.send(self.PREFACE + SettingsFrame(0).serialize())

    def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.closed = True
            return False

    def headers_block(self, path: str, method: str = "GET", extra=()) -> bytes:
        return self.encoder.encode([(":method", method), (":scheme", "https"),
                                    (":authority", "localhost"), (":path", path), *extra])

    def read(self, seconds: float) -> None:
        """Reads frames for `seconds` (or until the server closes)."""
        from hyperframe.frame import Frame

        deadline = time.monotonic() + seconds
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                self.closed = True
                return
            self.buf += data
            while len(self.buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                frame.parse_body(memoryview(self.buf[9 : 9 + length]))
                self.frames.append(frame)
                self.buf = self.buf[9 + length :]

    def of_type(self, name: str) -> list:
        return [f for f in self.frames if type(f).__name__ == name]
