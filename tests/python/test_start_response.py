"""PEP 3333 start_response and write(): argument checks, exc_info, when headers go out."""

import json
import uuid

import pytest
from conftest import H2, is_gunicorn
from httpclient import Conn, get


@pytest.mark.parametrize(
    "case",
    [
        "status_no_code",
        "status_bytes",
        "status_short",
        "status_crlf",
        "value_crlf",
        "value_lf",
        "name_crlf",
        "name_colon",
        "value_non_latin1",
        "value_bytes",
        "name_bytes",
        "value_int",
        "headers_not_list",
        "header_not_pair",
        "hop_connection",
        "hop_transfer_encoding",
        "hop_keep_alive",
        "hop_upgrade",
    ],
)
def test_invalid_arguments_raise_in_app(behaviour_server, case):
    """PEP 3333, start_response: an invalid status or header list (CR/LF, non-latin-1 or
    non-str values, hop-by-hop headers) raises inside the app; nothing invalid reaches the wire."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get(f"/start-response/invalid?case={case}"))
    assert resp.status == 200
    assert resp.body != b"NO_ERROR", f"start_response accepted invalid arguments ({case})"
    assert resp.body.decode().isidentifier(), resp.body
    assert not resp.has_header("X-Injected") and not resp.has_header("X-Bad")


def test_latin1_status_and_headers_go_out_as_their_bytes(behaviour_server):
    """PEP 3333 "Unicode Issues": status and header strings are latin-1; each code point
    below 256 is sent as that one byte, also from a str subclass. HTTP/2 has no reason
    phrase (RFC 9113 §8.3.2) and sends field names in lower case (§8.2)."""
    with Conn(behaviour_server.port) as c:
        c.send(get("/start-response/latin1"))
        raw = c.read_until(b"\r\n\r\n")
    if H2:
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw  # the bridge's standard reason
        assert b"\r\nx-latin: caf\xe9 \xff\r\n" in raw, raw
    else:
        assert raw.startswith(b"HTTP/1.1 200 \xc7a va\r\n"), raw
        assert b"\r\nX-Latin: caf\xe9 \xff\r\n" in raw, raw


def test_second_call_without_exc_info_raises(behaviour_server):
    """PEP 3333, start_response: calling it again without exc_info is an error."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/start-response/twice"))
    assert resp.status == 200
    assert resp.body != b"NO_ERROR"


def test_exc_info_before_headers_sent_replaces_them(behaviour_server):
    """PEP 3333, start_response: with exc_info before headers are sent, the new status and
    headers replace the old ones."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/exc-info/before"))
    assert resp.status == 503
    assert resp.header("X-Second") == "1" and not resp.has_header("X-First")
    assert resp.body == b"replaced"


def test_exc_info_after_headers_sent_reraises(threaded_server):
    """PEP 3333, start_response: with exc_info after headers were sent, start_response
    re-raises the exception; the server then aborts the response."""
    key = uuid.uuid4().hex
    with Conn(threaded_server.port) as c:
        c.send(get(f"/exc-info/after?key={key}"))
        resp = c.read_response()
        assert resp.status == 200
        assert resp.body == b"first block" and not resp.complete
        assert c.closed_by_peer()
    with Conn(threaded_server.port) as c:
        events = json.loads(c.request(get("/events")).body)
    assert f"{key}:reraised:ValueError" in events


def test_headers_not_sent_before_first_non_empty_block(behaviour_server):
    """PEP 3333, start_response: headers go out with the first non-empty block; an app that
    yields b'' and then fails still gets a 500, not its first status."""
    mark = behaviour_server.log_mark()
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/empty-then-error"))
    assert resp.status == 500
    assert "Traceback" in behaviour_server.wait_log("Traceback", mark)


def test_start_response_inside_generator(behaviour_server):
    """PEP 3333, start_response: it may first be called in the iterable's first __next__."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/lazy-start"))
    assert resp.status == 201 and resp.header("X-Lazy") == "yes"
    assert resp.body == b"lazy body"


def test_write_belongs_to_its_own_response(behaviour_server):
    """PEP 3333, the write() callable: start_response returns a write() for its own
    response. One kept from an earlier request cannot put bytes into a later response."""
    with Conn(behaviour_server.port) as c:
        bodies = [c.request(get("/write-stale")).body for _ in range(3)]
    for body in bodies[1:]:  # each called the write() of the request before it
        assert body.startswith(b"fresh:") and b"stale!" not in body, body
        assert body != b"fresh:none", body


@pytest.mark.parametrize("query", ["sr", "weak-write"])
def test_kept_callables_stay_with_their_response(behaviour_server, query):
    """PEP 3333, start_response and write(): a keep-alive connection reuses its
    start_response and write() objects for later requests when nothing else holds them.
    One an app kept (start_response itself, or write() through a weak reference) must not
    act on a later response on the same connection: calling it raises, or it is gone."""
    with Conn(behaviour_server.port) as c:
        responses = [c.request(get(f"/held?{query}")) for _ in range(4)]
    for resp in responses:  # the first may find what an earlier test's request kept
        assert resp.status == 200, resp
        assert resp.body in (b"none", b"AssertionError", b"gone"), resp.body
    assert all(resp.body != b"none" for resp in responses[1:])


def test_write_before_iterable(behaviour_server):
    """PEP 3333, the write() callable: written data goes out before the iterable's data."""
    with Conn(behaviour_server.port) as c:
        resp = c.request(get("/write"))
    assert resp.status == 200
    assert resp.body == b"written-twice-iterated"


@pytest.mark.skipif(is_gunicorn(), reason="qiao's answer to an interim status from the app")
@pytest.mark.parametrize("code", ["100", "101", "103"])
def test_an_interim_status_is_a_500_and_never_desyncs_the_connection(behaviour_server, code):
    """PEP 3333 has no interim responses. A 1xx sent as the response would be read as an
    interim one (RFC 9110 §15.2), and the next response on the connection as this
    request's: start_response refuses it, the request is a 500 with Connection: close, and
    nothing is answered in its place to a request pipelined behind it. Over HTTP/2 the
    500 ends its own stream and the connection carries on: the next stream gets its own
    answer (RFC 9113 §8.1)."""
    with Conn(behaviour_server.port) as c:
        c.send(get(f"/status?code={code}&body=1") + get("/single"))
        resp = c.read_response()
        assert resp.status == 500, (resp.status, resp.body[:100])
        if H2:
            nxt = c.read_response()
            assert (nxt.status, nxt.body) == (200, b"one single block")
            return
        assert resp.header("Connection", "").lower() == "close"
        assert c.closed_by_peer(3), "the connection stayed open after the refused response"
        assert c.buf == b"", f"a response followed the 500: {c.buf[:100]!r}"
