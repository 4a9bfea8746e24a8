"""Byte-literal checks of the raw HTTP response parser the other tests rely on."""

import pytest
from httpclient import ParseError, parse_response, parse_responses


def test_content_length_body():
    """RFC 9112 §6.3 (6): Content-Length delimits the body; the rest is the next response."""
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n"
    )
    resp, used = parse_response(data)
    assert (resp.status, resp.reason, resp.body, resp.framing) == (200, "OK", b"abc", "length")
    assert resp.header("x-a") == "1"
    nxt, used2 = parse_response(data[used:])
    assert nxt.status == 204 and used + used2 == len(data)


def test_incomplete_needs_more():
    """A partial head or body is 'need more bytes', not an error."""
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Le") == (None, 0)
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab") == (None, 0)


def test_short_body_at_eof():
    """RFC 9112 §8: a body cut short by the close is reported incomplete."""
    resp, _ = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", eof=True)
    assert resp.body == b"ab" and not resp.complete


def test_chunked_body_and_trailers():
    """RFC 9112 §7.1: chunk sizes in hex, extensions ignored, trailers after the last chunk."""
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: v\r\n\r\nrest"
    )
    resp, used = parse_response(data)
    assert resp.body == b"abc0123456789" and resp.complete and resp.framing == "chunked"
    assert resp.trailers == [("X-T", "v")]
    assert data[used:] == b"rest"


def test_chunked_without_last_chunk():
    """An aborted chunked body (no 0-size chunk) is incomplete at EOF, pending before."""
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    assert parse_response(data) == (None, 0)
    resp, _ = parse_response(data, eof=True)
    assert resp.body == b"abc" and not resp.complete


def test_close_delimited():
    """RFC 9112 §6.3 (8): without framing the body ends at close."""
    data = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    assert parse_response(data) == (None, 0)
    resp, _ = parse_response(data, eof=True)
    assert resp.body == b"all of it" and resp.framing == "close"


def test_no_body_statuses():
    """RFC 9112 §6.3 (1): HEAD, 1xx, 204, 304 responses have no body."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    resp, used = parse_response(head, method="HEAD")
    assert resp.body == b"" and used == len(head)
    out = parse_responses(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n"
    )
    assert [r.status for r in out] == [100, 304]


def test_garbage_is_error():
    with pytest.raises(ParseError):
        parse_response(b"HTTX 200\r\n\r\n")
