"""PEP 3333 wsgi.input: every read method, over Content-Length and chunked bodies, on a
connection the client keeps open (so a read past the body would block and time out)."""

import json
import time

import pytest
from conftest import running_server
from httpclient import Conn

BODY = b"line1\nline2\nlast"
LINES = ["line1\n", "line2\n", "last"]


def request(path, framing, body=BODY):
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode()
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    # Chunk boundaries fall inside lines so the reader must join them.
    chunks = [body[i : i + 4] for i in range(0, len(body), 4)]
    data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + data + b"0\r\n\r\n"


def run(port, op, framing, extra="", body=BODY):
    with Conn(port) as c:
        resp = c.request(request(f"/input?op={op}{extra}", framing, body))
        assert resp.status == 200, resp
    report = json.loads(resp.body)
    # PEP 3333: at the end of the body every read returns b"".
    assert report["after"] == ["", "", ""], "read after the end of the body returned data"
    assert report["types"] in ([], ["bytes"])
    return report["pieces"]


FRAMINGS = pytest.mark.parametrize("framing", ["length", "chunked"])


@FRAMINGS
def test_read_all(behaviour_server, framing):
    """PEP 3333, input: read() returns the whole body and does not block past it."""
    assert run(behaviour_server.port, "read", framing) == [BODY.decode()]


@FRAMINGS
def test_read_size(behaviour_server, framing):
    """PEP 3333, input: read(size) returns at most size bytes, b'' at the end."""
    pieces = run(behaviour_server.port, "read_n", framing, "&n=3")
    assert "".join(pieces) == BODY.decode()
    assert all(0 < len(p) <= 3 for p in pieces)


@FRAMINGS
def test_read_minus_one(behaviour_server, framing):
    """PEP 3333, input / io.RawIOBase: read(-1) reads to the end."""
    assert run(behaviour_server.port, "read_neg", framing) == [BODY.decode()]


@FRAMINGS
def test_read_none(behaviour_server, framing):
    """PEP 3333, input / io.RawIOBase: read(None) reads to the end."""
    assert run(behaviour_server.port, "read_none", framing) == [BODY.decode()]


@FRAMINGS
def test_readline(behaviour_server, framing):
    """PEP 3333, input: readline() returns one line, the last one without a newline."""
    assert run(behaviour_server.port, "readline", framing) == LINES


@FRAMINGS
def test_readline_size(behaviour_server, framing):
    """PEP 3333, input: readline(size) returns at most size bytes of the line."""
    assert run(behaviour_server.port, "readline_size", framing, "&size=3") == [
        "lin",
        "e1\n",
        "lin",
        "e2\n",
        "las",
        "t",
    ]


@FRAMINGS
def test_readlines(behaviour_server, framing):
    """PEP 3333, input: readlines() returns all lines."""
    assert run(behaviour_server.port, "readlines", framing) == LINES


@FRAMINGS
def test_readlines_hint(behaviour_server, framing):
    """PEP 3333, input: readlines(hint) returns whole lines (the hint may be ignored) and the
    rest stays readable."""
    pieces = run(behaviour_server.port, "readlines_hint", framing, "&hint=1")
    sep = pieces.index("|")
    lines, rest = pieces[:sep], pieces[sep + 1 :]
    assert lines and lines == LINES[: len(lines)]
    assert "".join(lines + rest) == BODY.decode()


@FRAMINGS
def test_iteration(behaviour_server, framing):
    """PEP 3333, input: iterating wsgi.input yields lines."""
    assert run(behaviour_server.port, "iter", framing) == LINES


@FRAMINGS
def test_empty_body(behaviour_server, framing):
    """PEP 3333, input: an empty body reads as b'' at once."""
    assert run(behaviour_server.port, "read", framing, body=b"") in ([], [""])


@FRAMINGS
def test_large_body(behaviour_server, framing):
    """PEP 3333, input: a 1 MiB body arrives intact through read(size) loops."""
    body = bytes(range(256)) * 4096
    with Conn(behaviour_server.port, timeout=15) as c:
        resp = c.request(request("/echo", framing, body))
    assert resp.status == 200 and resp.body == body


def test_no_body_reads_empty(behaviour_server):
    """PEP 3333, input: a request without a body reads b'' without blocking."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(b"GET /input?op=read HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(resp.body)["pieces"] == [""]


@pytest.mark.parametrize("mode", ["behaviour_server", "threaded_server"])
def test_no_body_reads_empty_every_way_every_time(request, mode):
    """PEP 3333, input: without a body, every read method gives nothing, on each of many
    requests and between requests with bodies (qiao hands all bodyless requests one
    stateless input object), with one app thread and with a pool."""
    port = request.getfixturevalue(mode).port
    ops = ("read", "read_n", "read_neg", "read_none", "readline", "readline_size",
           "readlines", "readlines_hint", "iter")
    with Conn(port) as c:
        for _ in range(2):
            for op in ops:
                resp = c.request(b"GET /input?op=%s HTTP/1.1\r\nHost: x\r\n\r\n" % op.encode())
                report = json.loads(resp.body)
                assert "".join(p for p in report["pieces"] if p != "|") == "", (op, report)
                assert report["after"] == ["", "", ""], (op, report)
            # A request with a body between rounds still reads its own body.
            wire = b"POST /input?op=read HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            resp = c.request(wire % len(BODY) + BODY)
            assert json.loads(resp.body)["pieces"] == [BODY.decode()]


# Bodies above --body-buffer-size (1 MiB) are spooled to a temporary file before the app
# runs; wsgi.input reads them from there a window at a time.
BIG = bytes(range(256)) * (3 * 4096)


@FRAMINGS
def test_streamed_body_read_whole(behaviour_server, framing):
    """PEP 3333, input: a 3 MiB body, past what the server keeps in memory (spooled to a
    file), arrives intact."""
    with Conn(behaviour_server.port, timeout=20) as c:
        resp = c.request(request("/echo", framing, BIG))
    assert resp.status == 200 and resp.body == BIG


@FRAMINGS
def test_streamed_body_readlines(behaviour_server, framing):
    """PEP 3333, input: readline() across the chunk boundaries of a spooled body, and the
    windows wsgi.input reads it in, gives the same lines as the whole body split."""
    body = b"".join(b"line %06d\n" % i for i in range(300_000))  # ~3.3 MB
    with Conn(behaviour_server.port, timeout=20) as c:
        resp = c.request(request("/input?op=lines", framing, body))
        assert resp.status == 200
        # RFC 9112 §9.3: the connection carries the next request once the body was read.
        again = c.request(b"GET /input?op=read HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(again.body)["pieces"] == [""]
    report = json.loads(resp.body)
    assert report["pieces"] == [str(len(body.splitlines())), str(body.count(b"\n"))]


# Bodies up to body_buffer_size are read whole before the app runs: with one app thread
# straight into the bytes object read() returns, with a thread pool into memory read()
# copies from. Both paths must give the same bytes however the body arrives.
BOTH_MODES = pytest.mark.parametrize("mode", ["behaviour_server", "threaded_server"])
MID = bytes(range(256)) * 256  # 64 KiB


@BOTH_MODES
def test_whole_body_arriving_in_pieces(request, mode):
    """PEP 3333, input: a 64 KiB Content-Length body sent in five pieces with pauses
    between them (so the server reads it in several steps) arrives intact."""
    port = request.getfixturevalue(mode).port
    wire = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(MID) + MID
    with Conn(port, timeout=10) as c:
        step = len(wire) // 5 + 1
        for i in range(0, len(wire), step):
            c.send(wire[i : i + step])
            time.sleep(0.05)
        resp = c.read_response("POST")
    assert resp.status == 200 and resp.body == MID


@BOTH_MODES
def test_pipelined_bodies_stay_apart(request, mode):
    """RFC 9112 §6.2 / §9.3: two pipelined requests with 64 KiB bodies, sent in one write,
    each get exactly their own body (the second starts where the first's length ends)."""
    port = request.getfixturevalue(mode).port
    other = bytes(reversed(MID))
    wire = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (MID, other)
    )
    with Conn(port, timeout=10) as c:
        c.send(wire)
        first, second = c.read_response("POST"), c.read_response("POST")
    assert (first.status, second.status) == (200, 200)
    assert first.body == MID and second.body == other


@BOTH_MODES
def test_whole_body_read_patterns(request, mode):
    """PEP 3333, input: on a 64 KiB body, read() whole, read(size) loops and readline()
    give the same bytes, and every read after the end returns b''."""
    port = request.getfixturevalue(mode).port
    body = b"".join(b"%05d-" % i + b"x" * 58 + b"\n" for i in range(1024))
    for op, extra in (("read", ""), ("read_n", "&n=4000"), ("readline", "")):
        assert "".join(run(port, op, "length", extra, body=body)).encode() == body, op


def test_a_body_that_cannot_be_stored_is_refused_and_logged():
    """A body past --body-buffer-size goes to a spool file; when none can be made (here
    TMPDIR does not exist) the client is answered 500 saying so, the app is not called,
    and the error log says why."""
    with running_server("echo_environ:app", "--body-buffer-size", "1024",
                        extra_env={"TMPDIR": "/nonexistent/qiao-test"}) as server:
        with Conn(server.port) as c:
            body = b"x" * 8192
            r = c.request(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 8192\r\n\r\n" + body)
        assert r.status == 500
        assert b"could not be stored" in r.body
        server.wait_log("Cannot store a request body")
