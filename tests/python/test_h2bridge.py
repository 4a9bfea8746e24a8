"""Byte-literal tests of h2bridge's pure parts: the HTTP/1.1 request parser, the HTTP/2 field
lists it makes of a head, and the HTTP/1.1 response bytes it renders (QIAO_TEST_H2 mode)."""

import pytest

pytest.importorskip("h2")
from h2bridge import (
    Data,
    End,
    Head,
    ParseError,
    RequestParser,
    render_chunk,
    render_head,
    render_last_chunk,
    request_fields,
)
from httpclient import parse_response


def feed_all(*pieces: bytes) -> list:
    parser = RequestParser()
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events


def test_pipelined_requests_in_one_write():
    """RFC 9112 §9.3.2: requests follow each other on the wire; each body ends where its
    Content-Length says (§6.3), the next head starts there."""
    events = feed_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [type(e) for e in events] == [Head, Head, Data, End, Head]
    assert [e.target for e in events if isinstance(e, Head)] == [b"/a", b"/b", b"/c"]
    assert [e.has_body for e in events if isinstance(e, Head)] == [False, True, False]
    assert bytes(events[2].data) == b"hello"


def test_a_head_and_body_in_pieces():
    """A head waits until its empty line; body bytes go on as they come."""
    parser = RequestParser()
    assert parser.feed(b"POST / HTTP/1.1\r\nContent-Le") == []
    [head] = parser.feed(b"ngth: 4\r\n\r\n")
    assert head.headers == [(b"content-length", b"4")] and head.has_body
    assert [bytes(e.data) for e in parser.feed(b"ab")] == [b"ab"]
    data, end = parser.feed(b"cd")
    assert bytes(data.data) == b"cd" and end == End()


def test_chunked_body_with_extensions_and_trailers():
    """RFC 9112 §7.1: chunk sizes in hex, extensions ignored, the last chunk, then trailer
    fields (§7.1.2) and the empty line; split anywhere between writes."""
    wire = (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n"
    )
    for cut in (1, 7, 50, 60, len(wire) - 3):
        events = feed_all(wire[:cut], wire[cut:])
        body = b"".join(bytes(e.data) for e in events if isinstance(e, Data))
        assert body == b"hello0123456789", cut
        assert events[-1] == End([(b"x-sum", b"1")])


def test_empty_lines_before_a_request_are_ignored():
    """RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request line."""
    [head] = feed_all(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert head.method == b"GET"


@pytest.mark.parametrize("wire", [
    b"GET /\r\n\r\n",
    b"GET / HTTP/2\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
])
def test_what_the_bridge_cannot_translate_is_an_error(wire):
    """Malformed or HTTP/1.1-only framing: the test wants an HTTP/1.1 server."""
    with pytest.raises(ParseError):
        feed_all(wire)


@pytest.mark.parametrize("version, connection, keep", [
    (b"HTTP/1.1", b"", True), (b"HTTP/1.1", b"Close", False),
    (b"HTTP/1.0", b"", False), (b"HTTP/1.0", b"keep-alive", True),
])
def test_keep_alive(version, connection, keep):
    """RFC 9112 §9.3: HTTP/1.1 persists unless close; HTTP/1.0 only with keep-alive."""
    head = Head(b"GET", b"/", version, [(b"connection", connection)], False)
    assert head.keep_alive is keep


def fields(wire: bytes) -> list:
    [head] = feed_all(wire)
    return request_fields(head)


def test_fields_of_an_origin_form_request():
    """RFC 9113 §8.3.1: the control data as pseudo-header fields first, :authority from
    Host (which is dropped); §8.2.2: connection-specific fields and the ones Connection
    names dropped, TE kept only as "trailers"."""
    got = fields(
        b"GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: keep-alive, X-Hop\r\n"
        b"Keep-Alive: 5\r\nX-Hop: 1\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTE: trailers\r\n"
        b"Accept: */*\r\n\r\n"
    )
    assert got == [
        (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com:8080"),
        (b":path", b"/p?q=1"), (b"te", b"trailers"), (b"accept", b"*/*"),
    ]
    assert (b"te", b"gzip") not in fields(b"GET / HTTP/1.1\r\nTE: gzip\r\n\r\n")


def test_fields_of_an_absolute_form_request():
    """RFC 9113 §8.3.1: the target's authority is :authority, whatever Host says; an empty
    path is "/"."""
    got = fields(b"GET http://a.example:81?x HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert got[2:] == [(b":authority", b"a.example:81"), (b":path", b"/?x")]


def test_no_authority_without_host():
    """RFC 9113 §8.3.1: an intermediary makes no :authority when the request has none."""
    assert [n for n, _ in fields(b"GET / HTTP/1.0\r\n\r\n")] == [b":method", b":scheme", b":path"]


def test_rendered_response_reads_as_http11():
    """RFC 9113 §8.3.2 has no reason phrase: the bridge writes the standard one; a body
    without a content-length is rendered chunked (RFC 9112 §7.1), trailers at its end."""
    head = render_head(200, [(":status", "200"), ("x-latin", "caf\xe9")], chunked=True)
    assert head == b"HTTP/1.1 200 OK\r\nx-latin: caf\xe9\r\ntransfer-encoding: chunked\r\n\r\n"
    wire = head + render_chunk(b"ab") + render_chunk(b"c") + render_last_chunk([("x-t", "1")])
    resp, used = parse_response(wire)
    assert (resp.body, resp.framing, resp.trailers, used) == (b"abc", "chunked", [("x-t", "1")],
                                                               len(wire))
    assert render_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"
