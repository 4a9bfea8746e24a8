"""A WSGI app with one route per PEP 3333 / HTTP behaviour the integration tests exercise.

Routes are dispatched on PATH_INFO; query parameters tune them. State that tests need to
observe across requests (close() calls, events, stream gates) lives in module-level
structures exposed by GET /closed and GET /events.
"""

import io
import json
import os
import sys
import tempfile
import threading
import time
import weakref
from urllib.parse import parse_qs

_lock = threading.Lock()
# Keys of iterables whose close() was called, in call order.
CLOSED = []
# Free-form "name:detail" records of what the app observed.
EVENTS = []
# Gates for the streaming test, keyed by the `key` query parameter.
_gates = {}

# The file the file_wrapper routes send: 10 KiB of a known pattern.
FILE_DATA = bytes(range(256)) * 40
_fd, FILE_PATH = tempfile.mkstemp(prefix="qiao-test-", suffix=".bin")
with os.fdopen(_fd, "wb") as _f:
    _f.write(FILE_DATA)

# Upper bound of every wait inside the app, so a failing test never hangs a worker forever.
MAX_WAIT = 10.0


def record(kind, value):
    with _lock:
        (CLOSED if kind == "closed" else EVENTS).append(value)


def gate(key):
    with _lock:
        return _gates.setdefault(key, threading.Event())


def _qs(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, obj, status="200 OK"):
    data = json.dumps(obj).encode("ascii")
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _text(start_response, text, status="200 OK"):
    data = text.encode("latin-1") if isinstance(text, str) else text
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


class ClosingIterable:
    """Yields `blocks` (callables may raise), records `key` in CLOSED when closed."""

    def __init__(self, key, blocks):
        self.key = key
        self.blocks = iter(blocks)

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.blocks)
        if callable(item):
            item = item()
        return item

    def close(self):
        record("closed", self.key)


class TrackedFile(io.FileIO):
    """A real file (has fileno(), so the server may sendfile it) that records its close()."""

    key = ""

    def close(self):
        if not self.closed:
            record("closed", self.key)
        super().close()


class TrackedBytesIO(io.BytesIO):
    key = ""

    def close(self):
        if not self.closed:
            record("closed", self.key)
        super().close()


def _raise(exc):
    def f():
        raise exc

    return f


# --- wsgi.input -----------------------------------------------------------------------------


def input_route(environ, start_response):
    """Read the body with the method named by ?op=, report the pieces and the read after end."""
    q = _qs(environ)
    op = q.get("op", "read")
    inp = environ["wsgi.input"]
    pieces = []
    if op == "read":
        pieces.append(inp.read())
    elif op == "read_n":
        n = int(q.get("n", "3"))
        while True:
            piece = inp.read(n)
            if not piece:
                break
            pieces.append(piece)
    elif op == "read_neg":
        pieces.append(inp.read(-1))
    elif op == "read_none":
        pieces.append(inp.read(None))
    elif op == "readline":
        while True:
            line = inp.readline()
            if not line:
                break
            pieces.append(line)
    elif op == "readline_size":
        size = int(q.get("size", "3"))
        while True:
            line = inp.readline(size)
            if not line:
                break
            pieces.append(line)
    elif op == "readlines":
        pieces.extend(inp.readlines())
    elif op == "readlines_hint":
        pieces.extend(inp.readlines(int(q.get("hint", "1"))))
        pieces.append(b"|")
        pieces.append(inp.read())
    elif op == "iter":
        pieces.extend(iter(inp))
    elif op == "lines":
        # Large bodies: report how many lines readline() gave and how many ended in "\n".
        lines = list(iter(inp.readline, b""))
        pieces += [b"%d" % len(lines), b"%d" % sum(line.endswith(b"\n") for line in lines)]
    else:
        raise ValueError(op)
    after = inp.read()
    after_n = inp.read(10)
    after_line = inp.readline()
    return _json(
        start_response,
        {
            "pieces": [p.decode("latin-1") for p in pieces],
            "types": sorted({type(p).__name__ for p in pieces}),
            "after": [
                after.decode("latin-1"),
                after_n.decode("latin-1"),
                after_line.decode("latin-1"),
            ],
        },
    )


def no_read(environ, start_response):
    """Answer without touching wsgi.input (the body was read, and any 100 Continue sent,
    before the app ran)."""
    return _text(start_response, "not read")


# --- start_response ---------------------------------------------------------------------------

_INVALID = {
    "status_no_code": ("OK", [("Content-Type", "text/plain")]),
    "status_bytes": (b"200 OK", [("Content-Type", "text/plain")]),
    "status_short": ("20 OK", [("Content-Type", "text/plain")]),
    "status_crlf": ("200 OK\r\nX-Injected: 1", [("Content-Type", "text/plain")]),
    "value_crlf": ("200 OK", [("X-Bad", "a\r\nX-Injected: 1")]),
    "value_lf": ("200 OK", [("X-Bad", "a\nX-Injected: 1")]),
    "name_crlf": ("200 OK", [("X-Bad\r\nX-Injected", "1")]),
    "name_colon": ("200 OK", [("X-Bad: x", "1")]),
    "value_non_latin1": ("200 OK", [("X-Bad", "\u6865")]),
    "value_bytes": ("200 OK", [("X-Bad", b"bytes")]),
    "name_bytes": ("200 OK", [(b"X-Bad", "1")]),
    "value_int": ("200 OK", [("X-Bad", 1)]),
    "headers_not_list": ("200 OK", "X-Bad: 1"),
    "header_not_pair": ("200 OK", [("X-Bad", "1", "2")]),
    "hop_connection": ("200 OK", [("Connection", "close")]),
    "hop_transfer_encoding": ("200 OK", [("Transfer-Encoding", "chunked")]),
    "hop_keep_alive": ("200 OK", [("Keep-Alive", "timeout=5")]),
    "hop_upgrade": ("200 OK", [("Upgrade", "h2c")]),
}


def start_response_invalid(environ, start_response):
    """Call start_response with the invalid arguments named by ?case=; report the exception.

    The recovery call passes exc_info, which PEP 3333 allows before headers are sent, so it
    works whether or not the server counted the failed call as "called".
    """
    case = _qs(environ)["case"]
    status, headers = _INVALID[case]
    try:
        start_response(status, headers)
    except Exception as exc:  # noqa: BLE001 - any exception is the behaviour under test
        result = type(exc).__name__
        data = result.encode("ascii")
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))],
            sys.exc_info(),
        )
        return [data]
    return [b"NO_ERROR"]


class _Name(str):
    """A str subclass: PEP 3333 native strings may be subclasses of str."""


def start_response_latin1(environ, start_response):
    """Status and headers with latin-1 characters beyond ASCII, and a str subclass name."""
    start_response(
        "200 \u00c7a va",
        [(_Name("X-Latin"), "caf\u00e9 \u00ff"), ("Content-Length", "2")],
    )
    return [b"ok"]


def start_response_twice(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("202 Accepted", [("Content-Type", "text/plain")])
    except Exception as exc:  # noqa: BLE001 - any exception is the behaviour under test
        return [type(exc).__name__.encode("ascii")]
    return [b"NO_ERROR"]


def exc_info_before(environ, start_response):
    """exc_info before any body is sent: the second status replaces the first."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
    try:
        raise ValueError("boom")
    except ValueError:
        start_response(
            "503 Service Unavailable",
            [("Content-Type", "text/plain"), ("X-Second", "1")],
            sys.exc_info(),
        )
    return [b"replaced"]


def exc_info_after(environ, start_response):
    """exc_info after the first block went out: start_response must re-raise."""
    key = _qs(environ).get("key", "exc_info_after")

    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first block"
        try:
            raise ValueError("late failure")
        except ValueError:
            try:
                start_response(
                    "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
                )
            except ValueError as exc:
                record("event", f"{key}:reraised:{type(exc).__name__}")
                raise
            record("event", f"{key}:not-reraised")
        yield b"should never be sent"

    return gen()


def empty_then_error(environ, start_response):
    """Only an empty block before the error: headers were not sent, so the client gets 500."""

    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        raise RuntimeError("failure after an empty block")

    return gen()


def lazy_start(environ, start_response):
    """start_response is first called inside the generator's first __next__."""

    def gen():
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Lazy", "yes")])
        yield b"lazy "
        yield b"body"

    return gen()


def write_then_iter(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written-")
    write(b"twice-")
    return [b"iterated"]


_LAST_WRITE = []


def write_stale(environ, start_response):
    """Calls the write() kept from the previous request to this route, then answers."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    outcome = b"none"
    if _LAST_WRITE:
        try:
            _LAST_WRITE.pop()(b"stale!")
            outcome = b"accepted"
        except Exception as exc:  # noqa: BLE001 - any exception is the behaviour under test
            outcome = type(exc).__name__.encode()
    _LAST_WRITE.append(write)
    write(b"fresh:")
    return [outcome]


_HELD = []


def held(environ, start_response):
    """Starts its response, then calls what the previous request to this route kept, and
    keeps this request's: with `?sr` its start_response (called again with exc_info,
    which may replace headers not yet sent), else its write() through a weak reference
    only. Answers with what that call did."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    outcome = b"none"
    if _HELD:
        old = _HELD.pop()
        call = old() if isinstance(old, weakref.ref) else old
        if call is None:
            outcome = b"gone"
        else:
            try:
                if call is old:
                    try:
                        raise RuntimeError("stale")
                    except RuntimeError:
                        call("500 Stale", [], sys.exc_info())
                else:
                    call(b"stale!")
                outcome = b"accepted"
            except Exception as exc:  # noqa: BLE001 - any exception is the behaviour under test
                outcome = type(exc).__name__.encode()
    _HELD.append(start_response if environ["QUERY_STRING"] == "sr" else weakref.ref(write))
    return [outcome]


# --- response framing -------------------------------------------------------------------------


def generator(environ, start_response):
    n = int(_qs(environ).get("n", "3"))

    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(n):
            yield f"block{i};".encode("ascii")

    return gen()


def single(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"one single block"]


class _Reversed(list):
    """A list whose iteration is not its items in order."""

    def __iter__(self):
        return iter(list(reversed(self)))


def sequence(environ, start_response):
    """?kind=list|tuple|sub|bad: the same three blocks as a list, a tuple, a list subclass
    with its own __iter__, or a list holding a str."""
    kind = _qs(environ).get("kind", "list")
    start_response("200 OK", [("Content-Type", "text/plain")])
    blocks = [b"one,", b"two,", b"three"]
    if kind == "tuple":
        return tuple(blocks)
    if kind == "sub":
        return _Reversed(blocks)
    if kind == "bad":
        return [b"one,", "two,"]
    return blocks


def status_route(environ, start_response):
    q = _qs(environ)
    code = q.get("code", "204")
    reasons = {
        "100": "Continue",
        "101": "Switching Protocols",
        "103": "Early Hints",
        "204": "No Content",
        "304": "Not Modified",
        "200": "OK",
    }
    start_response(f"{code} {reasons.get(code, 'Whatever')}", [("Content-Type", "text/plain")])
    if q.get("body"):
        return [b"this body must not be sent"]
    return []


def bare(environ, start_response):
    """No Date, no Server: the server adds them."""
    start_response("200 OK", [("Content-Length", "4")])
    return [b"bare"]


def own_date_server(environ, start_response):
    start_response(
        "200 OK",
        [
            ("Content-Length", "2"),
            ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("Server", "fixture-app"),
        ],
    )
    return [b"ok"]


def cl_short(environ, start_response):
    """Declares 100 bytes, yields 10."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    return [b"0123456789"]


def cl_long(environ, start_response):
    """Declares 5 bytes, yields 10 (in two blocks)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"01234", b"56789"]


# --- streaming and close() --------------------------------------------------------------------


def stream(environ, start_response):
    """Yield a block, wait until the test (having received it) opens the gate, yield more."""
    key = _qs(environ)["key"]
    ev = gate(key)

    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"block-one;"
        opened = ev.wait(MAX_WAIT)
        yield b"block-two:" + (b"gate-opened" if opened else b"gate-timeout")

    return gen()


def burst_gate(key):
    """The file whose creation opens `burst`'s gate (a file, so that a test can open it while
    a one-thread server is busy in the app)."""
    return os.path.join(tempfile.gettempdir(), f"qiao-burst-{key}")


def burst(environ, start_response):
    """Yield `n` blocks of `size` bytes (16 KiB) as fast as a generator can, after sleeping
    `delay` seconds (0), then wait (bounded) until the test, having received all of them,
    creates the gate file, then yield a last block."""
    q = _qs(environ)
    path, n = burst_gate(q["key"]), int(q.get("n", "8"))
    size, delay = int(q.get("size", "16384")), float(q.get("delay", "0"))

    def gen():
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        time.sleep(min(delay, MAX_WAIT))
        for i in range(n):
            yield bytes([65 + i % 26]) * size
        deadline = time.monotonic() + MAX_WAIT
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        opened = os.path.exists(path)
        if opened:
            os.unlink(path)
        yield b"|end:" + (b"gate-opened" if opened else b"gate-timeout")

    return gen()


def release(environ, start_response):
    gate(_qs(environ)["key"]).set()
    return _text(start_response, "released")


def close_route(environ, start_response):
    """An iterable with close(); ?mode=normal|error|disconnect."""
    q = _qs(environ)
    key = q["key"]
    mode = q.get("mode", "normal")
    start_response("200 OK", [("Content-Type", "text/plain")])
    if mode == "normal":
        return ClosingIterable(key, [b"a", b"b"])
    if mode == "error":
        return ClosingIterable(key, [b"a", _raise(RuntimeError("mid-iteration"))])
    if mode == "disconnect":
        deadline = time.monotonic() + MAX_WAIT
        block = b"x" * 65536

        def blocks():
            while time.monotonic() < deadline:
                yield block
                time.sleep(0.001)

        return ClosingIterable(key, blocks())
    raise ValueError(mode)


def closed(environ, start_response):
    with _lock:
        return _json(start_response, list(CLOSED))


def events(environ, start_response):
    with _lock:
        return _json(start_response, list(EVENTS))


# --- errors -----------------------------------------------------------------------------------


def error_route(environ, start_response):
    q = _qs(environ)
    mode = q.get("mode")
    if mode == "before_start":
        raise RuntimeError("fixture error before start_response")
    if mode == "after_start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("fixture error after start_response, before the body")
    if mode == "str_chunk":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str is not bytes"]
    if mode == "after_headers_chunked":

        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            raise RuntimeError("fixture error after the headers (chunked)")

        return gen()
    if mode == "after_headers_length":

        def gen():
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
            yield b"partial"
            raise RuntimeError("fixture error after the headers (length)")

        return gen()
    raise ValueError(mode)


# --- file_wrapper -----------------------------------------------------------------------------


def file_wrapper(environ, start_response):
    q = _qs(environ)
    key = q.get("key", "file")
    offset = int(q.get("offset", "0"))
    kind = q.get("kind", "real")
    if kind == "real":
        f = TrackedFile(FILE_PATH, "rb")
    else:
        f = TrackedBytesIO(FILE_DATA)
    f.key = key
    f.seek(offset)
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in q:
        headers.append(("Content-Length", q["length"]))
    start_response("200 OK", headers)
    wrapper = environ["wsgi.file_wrapper"](f, int(q.get("block", "4096")))
    record("event", f"{key}:wrapper-has-close:{hasattr(wrapper, 'close')}")
    return wrapper


BIG_FILE_SIZE = 32 * 1024 * 1024
_big_file = []


def big_file(environ, start_response):
    """32 MiB (a sparse file: zeros, no disk) through wsgi.file_wrapper: far more than a
    socket buffer holds, so a client that does not read leaves most of it unsent."""
    with _lock:
        if not _big_file:
            fd, path = tempfile.mkstemp(prefix="qiao-test-big-", suffix=".bin")
            os.ftruncate(fd, BIG_FILE_SIZE)
            os.close(fd)
            _big_file.append(path)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](open(_big_file[0], "rb"))


def big_stream(environ, start_response):
    """`n` blocks of 64 KiB from a generator, chunked: far past the 1 MiB qiao buffers
    for a slow client. Its close() is recorded as the event `<key>:closed`."""
    q = _qs(environ)
    key, n = q.get("key", "bigstream"), int(q.get("n", "128"))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def blocks():
        try:
            for i in range(n):
                yield bytes([i % 256]) * 65536
        finally:
            record("event", f"{key}:closed")

    return blocks()


def late_writer(environ, start_response):
    """Yields a block, then sleeps past the stop's grace period (the server closes the
    connection meanwhile), then opens `n` sockets to the test's stand-in for a database on
    port `db` (new descriptors take the lowest free numbers, the closed connection's
    among them) and yields more blocks, sending `db` a line of its own on each socket."""
    import socket

    q = _qs(environ)
    port, pause, n = int(q["db"]), float(q.get("sleep", "2")), int(q.get("n", "16"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def blocks():
        yield b"first block\n"
        time.sleep(min(pause, MAX_WAIT))
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        try:
            for s in socks:
                s.sendall(b"app's own line\n")
            for _ in range(50):
                yield b"late block\n"
        finally:
            for s in socks:
                s.close()

    return blocks()


# --- misc -------------------------------------------------------------------------------------


def slow(environ, start_response):
    seconds = float(_qs(environ).get("s", "0.5"))
    time.sleep(min(seconds, MAX_WAIT))
    return _json(
        start_response,
        {"multithread": environ["wsgi.multithread"], "thread": threading.get_ident()},
    )


def echo_body(environ, start_response):
    body = environ["wsgi.input"].read()
    return _text(start_response, body)


def log_error(environ, start_response):
    environ["wsgi.errors"].write("fixture wrote to wsgi.errors\n")
    environ["wsgi.errors"].flush()
    return _text(start_response, "logged")


def pid_route(environ, start_response):
    """Which worker process answered (the process-model tests)."""
    return _json(start_response, {"pid": os.getpid()})


_BALLAST = []


def grow(environ, start_response):
    """Keeps ?mb= more MiB alive in this worker (the memory-recycling test)."""
    mb = int(_qs(environ).get("mb", "1"))
    _BALLAST.append(bytearray(os.urandom(1024)) * (mb * 1024))
    return _json(start_response, {"pid": os.getpid(), "held_mib": len(_BALLAST) and mb})


def flags(environ, start_response):
    keys = ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once")
    return _json(start_response, {key: environ[key] for key in keys})


ROUTES = {
    "/pid": pid_route,
    "/grow": grow,
    "/flags": flags,
    "/input": input_route,
    "/no-read": no_read,
    "/start-response/invalid": start_response_invalid,
    "/start-response/twice": start_response_twice,
    "/start-response/latin1": start_response_latin1,
    "/exc-info/before": exc_info_before,
    "/exc-info/after": exc_info_after,
    "/empty-then-error": empty_then_error,
    "/lazy-start": lazy_start,
    "/write": write_then_iter,
    "/write-stale": write_stale,
    "/held": held,
    "/generator": generator,
    "/single": single,
    "/sequence": sequence,
    "/status": status_route,
    "/bare": bare,
    "/own-date-server": own_date_server,
    "/cl-short": cl_short,
    "/cl-long": cl_long,
    "/stream": stream,
    "/release": release,
    "/burst": burst,
    "/close": close_route,
    "/closed": closed,
    "/events": events,
    "/error": error_route,
    "/file": file_wrapper,
    "/bigfile": big_file,
    "/bigstream": big_stream,
    "/slow": slow,
    "/echo": echo_body,
    "/log-error": log_error,
    "/late-writer": late_writer,
}


def app(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        return _text(start_response, "no such route", "404 Not Found")
    return handler(environ, start_response)
