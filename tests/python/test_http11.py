"""HTTP/1.1 connection handling, request framing, response framing and limits, over raw sockets."""

from __future__ import annotations

import ctypes
import email.utils
import json
import os
import socket
import threading
import time

import pytest
from conftest import H2, running_server
from httpclient import Conn, app_calls, get, parse_responses, raw


def environ_of(resp):
    assert resp.status == 200, resp
    return json.loads(resp.body)["environ"]


def assert_rejected(server, request, statuses):
    """Send `request`; expect one of `statuses`, a closed connection, and no app call."""
    before = app_calls(server.port)
    with Conn(server.port) as c:
        c.send(request)
        resp = c.read_response()
        assert resp.status in statuses, (resp.status, resp.reason, resp.body)
        # HTTP/2 refuses the stream; the connection goes on (RFC 9113 §8.1.1).
        if not H2:
            assert c.closed_by_peer(), "connection left open after a framing error"
    assert app_calls(server.port) == before + 1, "the app was called for a rejected request"
    return resp


# --- persistence -------------------------------------------------------------------------------


@pytest.mark.http1_only("persistence unless `Connection: close` is HTTP/1.1's (RFC 9112 §9.3)")
def test_keep_alive_is_default_on_http11(behaviour_server):
    """RFC 9112 §9.3: HTTP/1.1 connections persist unless 'close' is signalled."""
    with Conn(behaviour_server.port) as c:
        for _ in range(3):
            resp = c.request(get("/single"))
            assert resp.status == 200 and resp.body == b"one single block"
            assert "close" not in (resp.header("Connection") or "").lower()
        assert not c.closed_by_peer(0.2)


@pytest.mark.http1_only("HTTP/1.0 keep-alive")
def test_http10_keep_alive_on_request(behaviour_server):
    """RFC 9112 §9.3 / RFC 7230 §A.1.2: HTTP/1.0 with 'Connection: keep-alive' persists."""
    with Conn(behaviour_server.port) as c:
        for _ in range(2):
            resp = c.request(get("/bare", version="1.0", headers=b"Connection: keep-alive\r\n"))
            assert resp.status == 200 and resp.body == b"bare"
        assert not c.closed_by_peer(0.2)


@pytest.mark.http1_only("HTTP/1.0 closing")
def test_http10_closes_by_default(behaviour_server):
    """RFC 9112 §9.3: an HTTP/1.0 request without keep-alive gets a closed connection."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/single", version="1.0"))
        assert resp.status == 200 and resp.body == b"one single block"
        assert c.closed_by_peer()


@pytest.mark.http1_only("the Connection field is HTTP/1.1's (RFC 9113 §8.2.2)")
def test_client_connection_close(behaviour_server):
    """RFC 9112 §9.6: after 'Connection: close' from the client the server answers, says
    'close' and closes."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/single", headers=b"Connection: close\r\n"))
        assert resp.status == 200 and resp.body == b"one single block"
        assert "close" in (resp.header("Connection") or "").lower()
        assert c.closed_by_peer()


@pytest.mark.http1_only("a malformed Content-Length and `Connection: close`")
def test_server_close_is_announced(behaviour_server):
    """RFC 9112 §9.6: a server that closes after a response sends 'Connection: close' in it
    (here: an error response to a malformed request)."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(b"GET /single HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert resp.status == 400
        assert "close" in (resp.header("Connection") or "").lower()
        assert c.closed_by_peer()


@pytest.mark.http1_only("pipelining's byte order; HTTP/2 streams are kept apart by their ids")
def test_pipelined_requests_answered_in_order(behaviour_server):
    """RFC 9112 §9.3.2: pipelined requests are answered in the order received."""
    data = (
        get("/generator?n=1")
        + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        + get("/single")
    )
    with Conn(behaviour_server.port) as c:
        c.send(data)
        bodies = [c.read_response().body for _ in range(3)]
    assert bodies == [b"block0;", b"hello", b"one single block"]


def test_expect_100_continue_sent_before_the_body_is_read(behaviour_server):
    """RFC 9110 §10.1.1 / PEP 3333 (the first way of supporting 100 Continue): the server
    answers 100 at once, reads the body whole, then runs the app."""
    with Conn(behaviour_server.port) as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        interim = c.read_response()
        assert interim.status == 100
        c.send(b"hello")
        final = c.read_response()
        assert final.status == 200 and final.body == b"hello"


def test_expect_100_continue_keeps_the_connection_when_the_app_does_not_read(behaviour_server):
    """RFC 9110 §10.1.1: the 100 goes out whether or not the app reads; the body was read
    whole before the app ran, so the connection stays in step and carries the next
    request (RFC 9112 §9.3)."""
    with Conn(behaviour_server.port) as c:
        c.send(
            b"POST /no-read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        assert c.read_response().status == 100
        c.send(b"hello")
        first = c.read_response()
        assert first.status == 200 and first.body == b"not read"
        assert first.header("Connection", "") != "close"
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert c.read_response().body == b"abc"


def test_expect_100_continue_is_not_sent_for_a_body_over_the_limit():
    """RFC 9110 §10.1.1: a server that will not take the body answers with its final
    status instead of 100 (here 413, RFC 9110 §15.5.14), and the client need not send it."""
    with (
        running_server("behaviour:app", "--max-request-body-size", "10") as s,
        Conn(s.port) as c,
    ):
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 11\r\n\r\n"
        )
        assert c.read_response().status == 413


def test_a_trickled_upload_behind_expect_does_not_stall_a_one_thread_worker(behaviour_server):
    """PEP 3333 leaves reading to the server; with one thread qiao reads every body in its
    event loop before the app runs, so a client that sends its body behind
    `Expect: 100-continue` a byte at a time holds no thread: another client is answered
    while the upload is still going on."""
    size = 12
    sent = [0]
    with Conn(behaviour_server.port) as slow:
        slow.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        assert slow.read_response().status == 100

        def trickle():
            for _ in range(size):
                slow.send(b"x")
                sent[0] += 1
                time.sleep(0.25)

        t = threading.Thread(target=trickle)
        t.start()
        try:
            with Conn(behaviour_server.port) as other:
                other.send(get("/single"))
                resp = other.read_response(timeout=10)
                assert resp.body == b"one single block"
                assert sent[0] < size - 1, "the other client waited for the upload to end"
        finally:
            t.join()
        final = slow.read_response()
        assert final.status == 200 and final.body == b"x" * size


@pytest.mark.http1_only(
    "the absolute-form target (RFC 9112 §3.2.2); HTTP/2 sends :authority and :path"
)
def test_absolute_form_target(echo_server):
    """RFC 9112 §3.2.2: absolute-form target; PATH_INFO and QUERY_STRING come from its path."""
    with Conn(echo_server.port) as c:
        env = environ_of(
            c.request(b"GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n")
        )
    assert env["PATH_INFO"] == "/p"
    assert env["QUERY_STRING"] == "q"


# --- request framing ---------------------------------------------------------------------------


@pytest.mark.http1_only(
    "request framing by Content-Length and Transfer-Encoding; HTTP/2 frames bodies in DATA frames"
)
def test_content_length_with_transfer_encoding_rejected(echo_server):
    """RFC 9112 §6.1: Content-Length with Transfer-Encoding may be smuggling: 400 and close."""
    assert_rejected(
        echo_server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        {400},
    )


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length: 5\r\nContent-Length: 6",
        b"Content-Length: 5\r\nContent-Length: 5",
        b"Content-Length: 5, 5",
        b"Content-Length: abc",
        b"Content-Length: -1",
        b"Content-Length: +5",
        b"Content-Length: 0x5",
    ],
    ids=["duplicate-differ", "duplicate-same", "list", "letters", "negative", "plus", "hex"],
)
@pytest.mark.http1_only("request framing by Content-Length")
def test_invalid_content_length_rejected(echo_server, header):
    """RFC 9112 §6.3 (5): a duplicate or invalid Content-Length is unrecoverable: 400."""
    assert_rejected(
        echo_server, b"POST / HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\nhello", {400}
    )


@pytest.mark.http1_only("transfer codings (RFC 9113 §8.2.2 forbids Transfer-Encoding)")
def test_unknown_transfer_coding_is_501(echo_server):
    """RFC 9112 §6.1: a server receiving a transfer coding it does not understand answers 501."""
    assert_rejected(
        echo_server,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: bogus\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        {501},
    )


@pytest.mark.http1_only("chunked framing on the wire and the Transfer-Encoding field")
def test_chunked_request_body_decoded(echo_server):
    """RFC 9112 §7.1 / PEP 3333 wsgi.input: the app reads the decoded chunked body."""
    with Conn(echo_server.port) as c:
        resp = c.request(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"
        )
    report = json.loads(resp.body)
    assert report["body"] == "hello 0123456789"
    assert "HTTP_TRANSFER_ENCODING" in report["environ"]


# --- response framing --------------------------------------------------------------------------


def test_app_content_length_kept(behaviour_server):
    """RFC 9112 §6.3: the app's Content-Length frames the response; no chunking on top."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/bare"))
    assert resp.header("Content-Length") == "4" and not resp.has_header("Transfer-Encoding")
    assert resp.body == b"bare"


def test_single_item_list_gets_content_length(behaviour_server):
    """PEP 3333 (handling Content-Length): a one-block list lets the server compute it."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/single"))
    assert resp.header("Content-Length") == str(len(b"one single block"))
    assert resp.framing == "length"


@pytest.mark.http1_only("chunked framing is HTTP/1.1's")
def test_generator_is_chunked_on_http11(behaviour_server):
    """RFC 9112 §7.1: without a length, an HTTP/1.1 response is sent chunked."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/generator?n=3"))
        assert resp.framing == "chunked" and resp.complete
        assert resp.body == b"block0;block1;block2;"
        assert c.request(get("/single")).status == 200  # connection still usable


@pytest.mark.http1_only("a close-delimited body is HTTP/1.0's")
def test_generator_is_close_delimited_on_http10(behaviour_server):
    """RFC 9112 §6.3 (8) / §7.1: HTTP/1.0 has no chunked; the body ends with the connection."""
    data = raw(behaviour_server.port, get("/generator?n=3", version="1.0"))
    (resp,) = parse_responses(data)
    assert not resp.has_header("Transfer-Encoding")
    assert resp.body == b"block0;block1;block2;"


@pytest.mark.parametrize("path", ["/single", "/generator?n=2"])
def test_head_has_no_body(behaviour_server, path):
    """RFC 9110 §9.3.2: the response to HEAD carries no body (the next response follows)."""
    with Conn(behaviour_server.port) as c:
        c.send(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() + get("/single"))
        head = c.read_response("HEAD")
        assert head.status == 200
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.body == b"one single block"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(behaviour_server, code):
    """RFC 9110 §15.3.5 / §15.4.5: 204 and 304 never carry a body, even if the app gives one."""
    with Conn(behaviour_server.port) as c:
        c.send(get(f"/status?code={code}&body=1") + get("/single"))
        resp = c.read_response()
        assert resp.status == code
        assert not resp.has_header("Transfer-Encoding")
        nxt = c.read_response()
        assert nxt.status == 200 and nxt.body == b"one single block", "body bytes leaked"


def test_date_and_server_added(behaviour_server):
    """RFC 9110 §6.6.1 (Date) and §10.2.4 (Server): added when the app leaves them out."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/bare"))
    assert resp.has_header("Server")
    date = email.utils.parsedate_to_datetime(resp.header("Date"))
    assert abs(time.time() - date.timestamp()) < 60


def test_app_date_and_server_kept(behaviour_server):
    """RFC 9110 §6.6.1: the app's own Date and Server are sent once, not duplicated."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/own-date-server"))
    assert resp.header_all("Date") == ["Thu, 01 Jan 1970 00:00:00 GMT"]
    assert resp.header_all("Server") == ["fixture-app"]


# --- limits ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server():
    with running_server(
        "echo_environ:app",
        "--limit-request-line",
        "100",
        "--limit-request-fields",
        "5",
        "--limit-request-field-size",
        "100",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def body_limited_server():
    with running_server("echo_environ:app", "--max-request-body-size", "1000") as server:
        yield server


def test_request_line_limit_414(limited_server):
    """RFC 9112 §3: a request line over --limit-request-line gets 414."""
    assert app_calls(limited_server.port) >= 1
    assert_rejected(limited_server, get("/" + "a" * 200), {414})


def test_header_count_limit_431(limited_server):
    """RFC 6585 §5: more header fields than --limit-request-fields gets 431."""
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10))
    assert_rejected(limited_server, get("/", headers=headers), {431})


def test_header_size_limit_431(limited_server):
    """RFC 6585 §5: a header field over --limit-request-field-size gets 431."""
    assert_rejected(limited_server, get("/", headers=b"X-Big: " + b"v" * 200 + b"\r\n"), {431})


def test_limits_allow_requests_within_them(limited_server):
    """Limits reject only what exceeds them."""
    with Conn(limited_server.port) as c:
        assert c.request(get("/ok", headers=b"X-Small: " + b"v" * 50 + b"\r\n")).status == 200


def test_body_size_limit_413_content_length(body_limited_server):
    """RFC 9110 §15.5.14: a declared body over --max-request-body-size gets 413."""
    assert_rejected(
        body_limited_server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000,
        {413},
    )


def test_body_size_limit_413_chunked(body_limited_server):
    """RFC 9110 §15.5.14: a chunked body growing over --max-request-body-size gets 413."""
    with Conn(body_limited_server.port) as c:
        c.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"7D0\r\n"
            + b"x" * 2000
            + b"\r\n0\r\n\r\n"
        )
        resp = c.read_response()
    assert resp.status == 413


def test_body_within_limit_accepted(body_limited_server):
    with Conn(body_limited_server.port) as c:
        resp = c.request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
        )
    assert json.loads(resp.body)["body"] == "x" * 1000


def test_header_timeout():
    """--header-timeout: a client sending half a head gets 408 or a close after about that
    long, while other clients are served meanwhile."""
    with running_server("behaviour:app", "--header-timeout", "1") as server:
        with Conn(server.port, timeout=6) as slow:
            slow.send(b"GET /single HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()
            with Conn(server.port) as other:
                assert other.request(get("/single")).status == 200
            served_other = time.monotonic() - start
            assert slow.closed_by_peer(6)
            elapsed = time.monotonic() - start
        leftover = slow.buf
    assert served_other < 0.9
    assert 0.8 <= elapsed <= 4.0, elapsed
    if leftover:
        assert leftover.startswith(b"HTTP/1.1 408"), leftover


def test_keep_alive_timeout():
    """--keep-alive N (gunicorn's flag; RFC 9112 §9.5: a server may close an idle
    connection): each request moves the deadline on, so requests spaced under N seconds
    keep a connection open past N; a connection idle for N seconds, fresh or after a
    response, is then closed by the server."""
    with (
        running_server("behaviour:app", "--keep-alive", "1") as server,
        Conn(server.port, timeout=6) as fresh,
        Conn(server.port, timeout=6) as used,
    ):
        for _ in range(4):  # 1.6 s in all, never 1 s idle
            assert used.request(get("/single")).status == 200
            time.sleep(0.4)
        start = time.monotonic()
        assert used.closed_by_peer(6)
        # Over HTTP/2 the fresh connection has sent its preface, the start of a first
        # request: --header-timeout bounds it (test_header_timeout), not --keep-alive.
        assert H2 or fresh.closed_by_peer(6)
        elapsed = time.monotonic() - start
    assert elapsed <= 4.0, elapsed


@pytest.mark.http1_only("a request head cut off on the wire; the bridge sends only whole heads")
def test_a_closed_connections_bytes_do_not_reach_the_next(behaviour_server):
    """RFC 9112 §9: each connection is its own byte stream. Connections that close with
    part of a request unread, or after a head large enough to grow the read buffer, leave
    nothing behind for later connections (the server reuses their buffers)."""
    port = behaviour_server.port
    big = b"X-Filler: " + b"f" * 6000 + b"\r\n"
    for _ in range(20):
        with Conn(port) as c:
            c.send(get("/single", headers=big + big) + b"GET /half-a-request")
            assert c.read_response().body == b"one single block"
    for _ in range(20):
        with Conn(port) as c:
            resp = c.request(get("/single"))
            assert resp.status == 200 and resp.body == b"one single block"


def _peer_socket_nodelay(pid: int, client: socket.socket) -> int | None:
    """TCP_NODELAY of the socket process `pid` holds for the other end of `client`, read
    through pidfd_getfd(2); None where the kernel or permissions do not allow it."""
    port = client.getsockname()[1]
    inode = None
    with open(f"/proc/{pid}/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port:  # its remote end is our socket
                inode = fields[9]
    if inode is None:
        return None
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == f"socket:[{inode}]":
            break
    else:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        dup = libc.syscall(438, pidfd, int(fd), 0)  # SYS_pidfd_getfd on x86-64 and arm64
        if dup < 0:
            return None
        with socket.socket(fileno=dup) as theirs:
            return theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        os.close(pidfd)


def test_accepted_connections_have_nodelay(behaviour_server):
    """RFC 1122 §4.2.3.4 (Nagle's algorithm, which an application must be able to turn
    off) on a persistent connection (RFC 9112 §9.3): every accepted connection has
    TCP_NODELAY, so a response sent in several writes is not held back waiting for the
    client's ACK (set once on the listening socket; Linux copies it to accepted ones)."""
    with Conn(behaviour_server.port) as c:
        pid = json.loads(c.request(get("/pid")).body)["pid"]
        nodelay = _peer_socket_nodelay(pid, c.sock)
    if nodelay is None:
        pytest.skip("cannot read another process's socket here (pidfd_getfd)")
    assert nodelay != 0
