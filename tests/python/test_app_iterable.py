"""PEP 3333 application iterable: streaming, close() on every path, errors before and after
headers, wsgi.file_wrapper, and Content-Length the app declares but does not keep."""

import json
import re
import time
import uuid

import pytest
from apps.behaviour import burst_gate
from conftest import running_server, short_sock_path
from httpclient import Conn, get

FILE_DATA = bytes(range(256)) * 40  # apps/behaviour.py FILE_DATA


def closed_keys(port):
    with Conn(port) as c:
        return json.loads(c.request(get("/closed")).body)


def wait_closed(port, key, timeout=5.0):
    """Poll GET /closed (bounded) until `key` is recorded; return how often it was."""
    deadline = time.monotonic() + timeout
    while True:
        count = closed_keys(port).count(key)
        if count or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


SHORT_BODY_LOG = re.compile(r"(?i)content.length|short|fewer|incomplete|truncat|mismatch")


def wait_log_match(server, mark, pattern, timeout=3.0):
    """Wait (bounded) until `pattern` matches the log after `mark`; return the match or None."""
    deadline = time.monotonic() + timeout
    while True:
        m = pattern.search(server.log_since(mark))
        if m or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def assert_still_serving(server):
    with Conn(server.port) as c:
        resp = c.request(get("/single"))
    assert resp.status == 200 and resp.body == b"one single block"


# --- streaming ---------------------------------------------------------------------------------


def test_each_block_sent_before_next_is_requested(threaded_server):
    """PEP 3333, buffering and streaming: a block is transmitted before the server asks the
    iterable for the next one (the app waits for the test to have received block one)."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        c.send(get(f"/stream?key={key}"))
        c.read_until(b"block-one;", timeout=5)
        with Conn(threaded_server.port) as other:
            assert other.request(get(f"/release?key={key}")).status == 200
        resp = c.read_response()
    assert resp.body == b"block-one;block-two:gate-opened"


@pytest.mark.parametrize("server", ["behaviour_server", "threaded_server"])
def test_blocks_gathered_from_a_fast_generator_still_reach_the_client(server, request):
    """PEP 3333, buffering and streaming: blocks a generator yields back to back may be held
    to go out in one write only because another thread sends them if the app then takes its
    time. The app yields 8 blocks at once, then waits until the test has all of them."""
    port = request.getfixturevalue(server).port
    key = uuid.uuid4().hex
    blocks = b"".join(bytes([65 + i]) * 16384 for i in range(8))
    with Conn(port) as c:
        c.send(get(f"/burst?key={key}&n=8"))
        c.read_body_until(bytes([72]) * 16384, timeout=5)  # all of the last block, "H" * 16 KiB
        with open(burst_gate(key), "x"):
            pass
        resp = c.read_response()
    assert resp.body == blocks + b"|end:gate-opened"


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_block_the_socket_could_not_take_keeps_going_while_the_app_waits(tmp_path, threads):
    """PEP 3333, buffering and streaming: a block is transmitted whole, or its
    transmission continues while the app produces the next. Over a Unix socket (whose
    buffer does not grow) a 768 KiB block fills the socket while the client is not yet
    reading; what the kernel does not hold stays queued in qiao, and the connection writes
    it as the client reads (one thread: the generator is paused meanwhile; four: the app's
    thread goes on, its connection holding under 1 MiB). The app then waits at its gate
    until the client has the whole block."""
    path = short_sock_path(tmp_path, "slow.sock")
    key = uuid.uuid4().hex
    size = 768 * 1024
    server = running_server("behaviour:app", "--threads", threads, binds=[f"unix:{path}"])
    with server, Conn(path) as c:
        # delay: a block the app took its time over is sent at once, not gathered.
        c.send(get(f"/burst?key={key}&n=1&size={size}&delay=0.01"))
        time.sleep(0.3)  # the app has handed over its block and waits at the gate
        c.read_body_until(b"A" * size, timeout=5)  # the whole block
        with open(burst_gate(key), "x"):
            pass
        resp = c.read_response()
    assert resp.body == b"A" * size + b"|end:gate-opened"


# --- close() -----------------------------------------------------------------------------------


def test_close_called_after_normal_end(threaded_server):
    """PEP 3333, application iterable: close() is called when the response is complete."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        assert c.request(get(f"/close?mode=normal&key={key}")).body == b"ab"
    assert wait_closed(threaded_server.port, key) == 1


def test_close_called_after_error_mid_iteration(threaded_server):
    """PEP 3333, application iterable: close() is called when iteration raises."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        c.send(get(f"/close?mode=error&key={key}"))
        try:
            c.read_response()
        except EOFError:
            pass
    assert wait_closed(threaded_server.port, key) == 1


def test_close_called_after_client_disconnect(threaded_server):
    """PEP 3333, application iterable: close() is called when the client goes away
    mid-response."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        c.send(get(f"/close?mode=disconnect&key={key}"))
        c.read_until(b"xxxxxxxx")
    assert wait_closed(threaded_server.port, key, timeout=8) == 1
    assert_still_serving(threaded_server)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["before_start", "after_start", "str_chunk"])
def test_error_before_headers_is_500(behaviour_server, mode):
    """PEP 3333, error handling: an exception (or a str block) before headers are sent gives
    a 500 and a traceback in the log; the server keeps serving. A str block has no Python
    frame to show: the log names the iterable and what it yielded instead."""
    mark = behaviour_server.log_mark()
    with Conn(behaviour_server.port) as c:
        resp = c.request(get(f"/error?mode={mode}"))
    assert resp.status == 500
    needle = "yielded str, not bytes" if mode == "str_chunk" else "Traceback"
    assert needle in behaviour_server.wait_log(needle, mark)
    assert_still_serving(behaviour_server)


def test_error_after_headers_aborts_chunked(behaviour_server):
    """PEP 3333, error handling: after headers were sent the server aborts the connection;
    a chunked body gets no terminating 0-size chunk."""
    mark = behaviour_server.log_mark()
    with Conn(behaviour_server.port) as c:
        c.send(get("/error?mode=after_headers_chunked"))
        resp = c.read_response()
        assert resp.status == 200 and resp.framing == "chunked"
        assert resp.body == b"partial" and not resp.complete
        assert c.closed_by_peer()
    assert "Traceback" in behaviour_server.wait_log("Traceback", mark)
    assert_still_serving(behaviour_server)


def test_error_after_headers_aborts_content_length(behaviour_server):
    """PEP 3333, error handling: with a declared Content-Length the client sees fewer bytes,
    then the close."""
    with Conn(behaviour_server.port) as c:
        c.send(get("/error?mode=after_headers_length"))
        resp = c.read_response()
        assert resp.status == 200 and resp.header("Content-Length") == "100"
        assert resp.body == b"partial" and not resp.complete
    assert_still_serving(behaviour_server)


# --- Content-Length the app declares -----------------------------------------------------------


def test_declared_length_not_reached_closes(behaviour_server):
    """PEP 3333, handling Content-Length / RFC 9112 §8: a body shorter than the app's
    Content-Length ends with a close (the client sees it incomplete) and a log line."""
    mark = behaviour_server.log_mark()
    with Conn(behaviour_server.port) as c:
        c.send(get("/cl-short"))
        resp = c.read_response()
        assert resp.body == b"0123456789" and not resp.complete
    assert wait_log_match(behaviour_server, mark, SHORT_BODY_LOG), (
        "nothing logged about the short body:\n" + behaviour_server.log_since(mark)
    )
    assert_still_serving(behaviour_server)


def test_declared_length_exceeded_is_truncated(behaviour_server):
    """PEP 3333, handling Content-Length: the server sends no more than the app declared."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/cl-long"))
        assert resp.body == b"01234"
        # Either the connection is closed or the next response is clean: no leaked bytes.
        try:
            nxt = c.request(get("/single"))
        except (EOFError, ConnectionError):
            return
        assert nxt.status == 200 and nxt.body == b"one single block"
    assert b"56789" not in c.buf


# --- wsgi.file_wrapper -------------------------------------------------------------------------


def test_file_wrapper_real_file_from_position_with_length(threaded_server):
    """PEP 3333, optional platform-specific file handling: a real file is sent from its
    current position, honouring the app's Content-Length, and its close() is called."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        resp = c.request(get(f"/file?kind=real&offset=10&length=1000&key={key}"))
    assert resp.status == 200
    assert resp.header("Content-Length") == "1000"
    assert resp.body == FILE_DATA[10:1010]
    assert wait_closed(threaded_server.port, key) == 1


def test_file_wrapper_real_file_one_thread(behaviour_server):
    """PEP 3333, file_wrapper, with the app on the event loop's own thread (--threads 1):
    the file range is queued and sent by the connection, the same bytes arrive."""
    key = uuid.uuid4().hex
    with Conn(behaviour_server.port) as c:
        resp = c.request(get(f"/file?kind=real&offset=10&length=1000&key={key}"))
        again = c.request(get(f"/file?kind=real&key={key}x"))
    assert resp.body == FILE_DATA[10:1010]
    assert again.body == FILE_DATA  # the connection stays in step after a file body
    assert wait_closed(behaviour_server.port, key) == 1


def test_file_wrapper_slow_reader_does_not_hold_the_worker(behaviour_server):
    """PEP 3333 "Optional Platform-Specific File Handling": a client that stops reading
    a large file_wrapper response must not stall the others, since a slow client never
    holds a Python thread (docs/behaviour.md, Responses): with one app thread the file is
    sent from the event loop as the socket drains, not by a blocking wait (which would
    hold everything until --write-timeout, 60 s)."""
    with Conn(behaviour_server.port) as stalled:
        stalled.send(get("/bigfile"))
        time.sleep(0.3)  # let the server fill the stalled socket
        with Conn(behaviour_server.port, timeout=10) as other:
            resp = other.request(get("/single"))
        assert resp.status == 200
        # The stalled client still gets the whole file once it reads.
        got = stalled.read_response(timeout=30)
    assert got.status == 200
    assert len(got.body) == 32 * 1024 * 1024 and got.body.count(0) == len(got.body)


def test_generator_ahead_of_a_slow_reader_does_not_hold_the_worker(behaviour_server):
    """PEP 3333 "Buffering and Streaming" (blocks are sent before the next is asked for)
    with a client that stops reading: past the 1 MiB gathered for it the iteration pauses,
    and with one app thread the event loop goes on serving other connections meanwhile (a
    slow client never holds the worker: docs/behaviour.md, Responses) instead of blocking
    until --write-timeout. Read later, the body is whole and in order, and the
    generator's close() is called once."""
    key = uuid.uuid4().hex
    with Conn(behaviour_server.port) as stalled:
        stalled.send(get(f"/bigstream?n=128&key={key}"))
        time.sleep(0.3)  # let the server fill the stalled socket and its buffer
        with Conn(behaviour_server.port, timeout=10) as other:
            assert other.request(get("/single")).status == 200
        got = stalled.read_response(timeout=30)
    assert got.status == 200
    assert got.header("Transfer-Encoding") == "chunked"
    assert len(got.body) == 128 * 65536
    assert all(got.body[i * 65536] == i % 256 for i in range(128))
    with Conn(behaviour_server.port) as c:
        events = json.loads(c.request(get("/events")).body)
    assert events.count(f"{key}:closed") == 1


def test_file_wrapper_real_file_to_end(threaded_server):
    """PEP 3333, file_wrapper: without a Content-Length the rest of the file is sent."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        resp = c.request(get(f"/file?kind=real&offset=10&key={key}"))
    assert resp.body == FILE_DATA[10:]
    assert wait_closed(threaded_server.port, key) == 1


def test_file_wrapper_bytesio(threaded_server):
    """PEP 3333, file_wrapper: a file-like object without fileno() works too."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        resp = c.request(get(f"/file?kind=bytesio&offset=10&block=100&key={key}"))
    assert resp.body == FILE_DATA[10:]
    assert wait_closed(threaded_server.port, key) == 1


def test_file_wrapper_has_close(threaded_server):
    """PEP 3333, file_wrapper: the returned iterable has a close() method."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        assert c.request(get(f"/file?kind=bytesio&key={key}")).status == 200
        events = json.loads(c.request(get("/events")).body)
    assert f"{key}:wrapper-has-close:True" in events


@pytest.mark.parametrize("kind", ["list", "tuple"])
def test_list_or_tuple_gets_content_length(behaviour_server, kind):
    """PEP 3333 "Handling the Content-Length Header": the length of a list or tuple of
    bytes is known, so the response carries it (RFC 9112 §6.3) instead of chunking."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get(f"/sequence?kind={kind}"))
    assert resp.status == 200 and resp.body == b"one,two,three"
    assert resp.header("Content-Length") == "13" and not resp.has_header("Transfer-Encoding")


def test_list_subclass_is_iterated(behaviour_server):
    """PEP 3333: the server iterates the returned iterable; a list subclass with its own
    __iter__ is sent in the order that iteration gives, not its items' order."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/sequence?kind=sub"))
    assert resp.status == 200 and resp.body == b"threetwo,one,"


def test_list_holding_a_str_is_500(behaviour_server):
    """PEP 3333: the iterable must yield bytes; a str in a list fails the request with a
    500 before any of it is sent, and the worker goes on serving."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/sequence?kind=bad"))
    assert resp.status == 500 and b"one," not in resp.body
    with Conn(behaviour_server.port) as c:
        assert c.request(get("/single")).status == 200
