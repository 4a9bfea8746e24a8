"""Every class of request qiao refuses, over a raw socket: the status, a closed connection,
and an app that was never called (docs/behaviour.md, "Requests qiao refuses").

Each test sends exact bytes to apps.echo_environ:app, whose X-Calls counter proves the app
did not run. The connection must close promptly on its own: the client keeps its write
side open, so a close that only followed our EOF or a timeout would fail the test.
"""

from __future__ import annotations

import json
import socket

import pytest
from conftest import is_gunicorn, running_server
from httpclient import Conn, app_calls

pytestmark = pytest.mark.skipif(
    is_gunicorn(), reason="qiao's refusals; gunicorn accepts several of these by design"
)

# Well under --header-timeout (10 s) and the keep-alive timeout plus drain: a close
# within this is the server's decision, not a timer.
PROMPT = 1.5


@pytest.fixture(scope="module")
def server():
    """apps.echo_environ:app in its own process, so its call counter is ours alone."""
    with running_server("echo_environ:app") as s:
        yield s


def refused(server, data: bytes, status: int, *, client_eof: bool = False):
    """Send `data`; assert `status`, `Connection: close`, a close by the server and no app call.

    The close must come within PROMPT, far below every server timer, so it is the
    server's decision; this bounds a wait, it does not time the server."""
    before = app_calls(server.port)
    with Conn(server.port) as c:
        c.send(data)
        if client_eof:
            c.sock.shutdown(socket.SHUT_WR)
        resp = c.read_response(timeout=PROMPT + 3)
        assert resp.status == status, f"{resp.status} {resp.reason} {resp.body[:200]!r}"
        assert resp.header("Connection", "").lower() == "close"
        assert c.closed_by_peer(PROMPT), "connection kept open after an invalid request"
        assert c.buf == b"", f"bytes after the error response: {c.buf[:200]!r}"
    assert app_calls(server.port) == before + 1, "the app was called for an invalid request"
    return resp


def post(headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /upload " + version + b"\r\nHost: h\r\n" + headers + b"\r\n" + body


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


# --- body framing: Content-Length and Transfer-Encoding -------------------------------------


def test_content_length_with_transfer_encoding_is_400(server):
    """RFC 9112 §6.1: a server MAY reject CL together with TE; qiao does (smuggling)."""
    refused(
        server,
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
    )
    refused(
        server,
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", b"0\r\n\r\n"),
        400,
    )


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5, 5\r\n",
        b"Content-Length: 5,5\r\n",
    ],
    ids=["twice-equal", "twice-different", "list", "list-no-space"],
)
def test_several_content_lengths_are_400(server, headers):
    """RFC 9112 §6.3 (5): several Content-Length values make the length unreliable."""
    refused(server, post(headers, b"hello"), 400)


@pytest.mark.parametrize(
    "value",
    [b"abc", b"5a", b"0x5", b"+5", b"-5", b"5.0", b"", b"99999999999999999999999"],
    ids=["letters", "trailing-letter", "hex", "plus", "minus", "decimal", "empty", "overflow"],
)
def test_malformed_content_length_is_400(server, value):
    """RFC 9112 §6.3 (5) / §8.6: Content-Length = 1*DIGIT; no sign, no overflow."""
    refused(server, post(b"Content-Length: " + value + b"\r\n", b"hello"), 400)


@pytest.mark.parametrize(
    "te", [b"gzip, chunked", b"gzip", b"identity", b"deflate, chunked", b"x-custom, chunked"]
)
def test_unknown_or_stacked_transfer_coding_is_501(server, te):
    """RFC 9112 §6.1: a transfer coding the server does not understand SHOULD be 501."""
    refused(server, post(b"Transfer-Encoding: " + te + b"\r\n", b"0\r\n\r\n"), 501)


@pytest.mark.parametrize(
    "headers",
    [
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    ],
    ids=["chunked-identity", "chunked-gzip", "chunked-twice", "two-te-lines", "te-lines-not-last"],
)
def test_chunked_not_exactly_once_and_last_is_400(server, headers):
    """RFC 9112 §6.3 (4): chunked must be the final coding; §6.1: applied only once."""
    refused(server, post(headers, b"0\r\n\r\n"), 400)


@pytest.mark.parametrize(
    "te",
    [b"chunked;x=y", b"chunked ; x = y", b'chunked;x="y"', b"gzip;q=1, chunked;x=y"],
    ids=["param", "param-ows", "quoted-param", "param-after-gzip"],
)
def test_parameters_on_chunked_are_400(server, te):
    """RFC 9112 §7.1 defines chunked without parameters (RFC 9110 §10.1.4 gives codings
    their parameter syntax): chunked;x=y is not a coding qiao can decode, and guessing its
    framing is a smuggling risk; gunicorn, waitress and granian refuse it too."""
    resp = refused(server, post(b"Transfer-Encoding: " + te + b"\r\n", b"0\r\n\r\n"), 400)
    assert b"parameters on chunked" in resp.body


@pytest.mark.parametrize(
    "te",
    [b"chunked;", b"chunked;x", b"chunked;x=", b'chunked;x="y', b"gzip;, chunked"],
    ids=["empty-param", "no-equals", "no-value", "open-quote", "empty-param-on-gzip"],
)
def test_malformed_transfer_coding_parameter_is_400(server, te):
    """RFC 9110 §10.1.4: transfer-coding = token *( OWS ";" OWS transfer-parameter ),
    transfer-parameter = token BWS "=" BWS ( token / quoted-string ); chunked; is not
    that grammar, on chunked or on any other coding."""
    resp = refused(server, post(b"Transfer-Encoding: " + te + b"\r\n", b"0\r\n\r\n"), 400)
    assert b"invalid Transfer-Encoding" in resp.body


@pytest.mark.parametrize("te", [b"gzip;q=1", b'gzip;level="1,2", chunked'])
def test_parameters_on_an_unknown_coding_stay_501(server, te):
    """RFC 9112 §6.1: a coding the server does not understand SHOULD be 501; well-formed
    parameters (RFC 9110 §10.1.4, a comma inside a quoted-string included) do not change
    that."""
    refused(server, post(b"Transfer-Encoding: " + te + b"\r\n", b"0\r\n\r\n"), 501)


def test_transfer_encoding_on_http10_is_400(server):
    """RFC 9112 §6.1: TE in an HTTP/1.0 message means the framing is faulty."""
    refused(server, post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"HTTP/1.0"), 400)


# --- the chunked body -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
    ],
    ids=["empty", "plus", "minus", "0x-prefix", "leading-space", "trailing-space"],
)
def test_malformed_chunk_size_is_400(server, body):
    """RFC 9112 §7.1: chunk-size = 1*HEXDIG (BWS only before a chunk-ext ';')."""
    refused(server, chunked(body), 400)


def test_chunk_size_overflowing_u64_is_400():
    """RFC 9112 §7.1: a recipient MUST guard against integer overflow of chunk-size. With
    no body limit (0) nothing else stops such a size; under a limit it is a 413 first
    (test_declared_chunk_size_over_the_limit_is_413_at_once). "No limit" is the largest
    size a body can have (2^63 - 1), which `f` * 17 passes before it overflows."""
    with running_server("echo_environ:app", "--max-request-body-size", "0") as s:
        refused(s, chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n"), 400)
        refused(s, chunked(b"000" + b"1" + b"0" * 16 + b"\r\nhello\r\n"), 400)


def test_chunk_size_past_the_limit_is_413_before_it_overflows(server):
    """RFC 9110 §15.5.14: a size with more hex digits than u64 holds passes the default
    body limit (1 GiB) on its way, and is refused for that first."""
    refused(server, chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n"), 413)


def test_chunked_body_over_the_limit_is_413():
    """RFC 9110 §15.5.14: a chunked body that passes --max-request-body-size is refused."""
    with running_server("echo_environ:app", "--max-request-body-size", "1000") as s:
        refused(s, chunked(b"3e9\r\n" + b"x" * 1001 + b"\r\n0\r\n\r\n"), 413)
        refused(s, chunked(b"200\r\n" + b"x" * 512 + b"\r\n200\r\n" + b"y" * 512 + b"\r\n"), 413)


def test_declared_chunk_size_over_the_limit_is_413_at_once():
    """RFC 9110 §15.5.14: a chunk whose declared size alone passes the body limit can be
    refused before its data arrives (the client may never send it)."""
    with running_server("echo_environ:app", "--max-request-body-size", "1000") as s:
        refused(s, chunked(b"1000\r\nhello"), 413)


def test_chunk_sizes_that_would_wrap_a_sum_are_413():
    """RFC 9110 §15.5.14 and RFC 9112 §7.1 (guard against overflow): a small chunk then one
    declaring 2^64 - 1 bytes. Summed in wrapping arithmetic the two made 0 and the body
    was spooled to disk past the limit for as long as the client sent; it is refused
    before any of that chunk's data is stored."""
    with running_server("echo_environ:app", "--max-request-body-size", "1M") as s:
        refused(s, chunked(b"1\r\na\r\nffffffffffffffff\r\n" + b"z" * (256 << 10)), 413)
        refused(s, chunked(b"2\r\nab\r\nfffffffffffffffe\r\n" + b"z" * 1024), 413)


@pytest.mark.parametrize(
    "body",
    [
        b"5\nhello\r\n0\r\n\r\n",
        b"5\rhello\r\n0\r\n\r\n",
        b"5;a=b\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\r\nhello\r\n0\r\nX: y\n\r\n",
    ],
    ids=["size-lf", "size-cr", "ext-lf", "data-lf", "last-lf", "end-lf", "trailer-lf"],
)
def test_bare_line_endings_in_chunk_framing_are_400(server, body):
    """RFC 9112 §2.2 / §7.1: chunk lines end in CRLF; qiao accepts no bare LF or CR."""
    refused(server, chunked(body), 400)


@pytest.mark.parametrize("ctl", [b"\x00", b"\x01", b"\x0b", b"\x7f", b"\r"])
def test_control_bytes_in_chunk_extension_are_400(server, ctl):
    """RFC 9112 §7.1.1: chunk-ext is tokens and quoted strings; no control bytes."""
    refused(server, chunked(b"5;a" + ctl + b"b\r\nhello\r\n0\r\n\r\n"), 400)


def test_chunk_data_without_crlf_is_400(server):
    """RFC 9112 §7.1: chunk = chunk-size CRLF chunk-data CRLF; exactly size bytes."""
    refused(server, chunked(b"5\r\nhelloX0\r\n\r\n"), 400)
    refused(server, chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400)


def test_truncated_chunked_body_is_not_served(server):
    """RFC 9112 §8: a message cut short by the connection closing is incomplete; the app
    never sees it, and the server closes (a 400, if anything, is all it may send)."""
    before = app_calls(server.port)
    for body in (b"5\r\nhel", b"5\r\nhello\r\n", b"5\r\nhello\r\n0\r\n", b"5\r\nhello\r\n0\r\n\r"):
        with Conn(server.port) as c:
            c.send(chunked(body))
            c.sock.shutdown(socket.SHUT_WR)
            assert c.closed_by_peer(PROMPT)
            assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 400 "), c.buf[:100]
    assert app_calls(server.port) == before + 1


@pytest.mark.parametrize(
    "name",
    [
        b"Content-Length",
        b"Transfer-Encoding",
        b"Host",
        b"Authorization",
        b"Trailer",
        b"Connection",
        b"Content-Encoding",
        b"Cache-Control",
    ],
)
def test_forbidden_trailer_fields_are_400(server, name):
    """RFC 9110 §6.5.1: framing, routing, control and authentication fields must not
    arrive in a trailer, where a later hop might act on them."""
    refused(server, chunked(b"5\r\nhello\r\n0\r\n" + name + b": 1\r\n\r\n"), 400)


def test_allowed_trailer_is_accepted(server):
    """RFC 9112 §7.1.2: other trailer fields are read and the body is served."""
    with Conn(server.port) as c:
        resp = c.request(chunked(b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"))
    assert resp.status == 200
    assert json.loads(resp.body)["body"] == "hello"


def test_chunk_extension_over_its_limit_is_400(server):
    """RFC 9112 §7.1.1: extensions are ignored but bounded (4096 bytes on one chunk line),
    so a client cannot make the server read an endless size line."""
    refused(server, chunked(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400)
    with Conn(server.port) as c:
        resp = c.request(chunked(b"5;" + b"a" * 4000 + b"\r\nhello\r\n0\r\n\r\n"))
    assert resp.status == 200


def test_trailer_section_over_its_limit_is_400(server):
    """RFC 9112 §7.1.2: the trailer section is bounded (8192 bytes) like the header section."""
    refused(server, chunked(b"0\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"), 400)
    many = b"".join(b"X-T%d: v\r\n" % i for i in range(1000))
    refused(server, chunked(b"0\r\n" + many + b"\r\n"), 400)


def test_chunk_extension_and_trailer_limits_are_settings():
    """The chunk-extension and trailer bounds are configurable like the header limits."""
    with running_server(
        "echo_environ:app", "--limit-chunk-ext-size", "16", "--limit-trailer-size", "32"
    ) as s:
        refused(s, chunked(b"5;" + b"a" * 20 + b"\r\nhello\r\n0\r\n\r\n"), 400)
        refused(s, chunked(b"0\r\nX-Big: " + b"a" * 40 + b"\r\n\r\n"), 400)


# --- the header section -----------------------------------------------------------------------


def test_bare_lf_in_head_is_400(server):
    """RFC 9112 §2.2: a recipient MAY accept a bare LF; qiao does not (smuggling)."""
    refused(server, b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nHost: h\r\n\n", 400)


def test_bare_cr_in_head_is_400(server):
    """RFC 9112 §2.2: a bare CR outside the content MUST be refused or replaced; 400."""
    refused(server, b"GET / HTTP/1.1\rHost: h\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400)


def test_obs_fold_is_400(server):
    """RFC 9112 §5.2: a server MUST reject obs-fold with 400 or replace it; qiao rejects."""
    refused(server, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400)


def test_whitespace_before_colon_is_400(server):
    """RFC 9112 §5.1: a server MUST reject whitespace between field name and colon."""
    refused(server, b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 0\r\n\r\n", 400)


@pytest.mark.parametrize(
    "line",
    [
        b"X\x00Y: 1",
        b"X\x01Y: 1",
        b"X\x7fY: 1",
        b"X Y: 1",
        b"X(Y): 1",
        b"X: a\x00b",
        b"X: a\x01b",
        b"X: a\x7fb",
        b"X: \x1b[31m",
    ],
    ids=[
        "nul-name",
        "soh-name",
        "del-name",
        "space-name",
        "paren-name",
        "nul-value",
        "soh-value",
        "del-value",
        "esc-value",
    ],
)
def test_control_bytes_in_field_names_and_values_are_400(server, line):
    """RFC 9110 §5.1 / §5.5: field-name is a token; field-value has no CTL but HTAB."""
    refused(server, b"GET / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n", 400)


def test_empty_field_name_is_400(server):
    """RFC 9110 §5.1: field-name = token, at least one character."""
    refused(server, b"GET / HTTP/1.1\r\nHost: h\r\n: value\r\n\r\n", 400)


@pytest.mark.parametrize(
    "method", [b"G(T", b"GE\x00T", b"G\x7fT", b"GET\t", b"[GET]", b"G\xc3\xa9T"]
)
def test_non_token_method_is_400(server, method):
    """RFC 9110 §9.1 / RFC 9112 §3.1: method = token."""
    refused(server, method + b" / HTTP/1.1\r\nHost: h\r\n\r\n", 400)


@pytest.mark.parametrize("method", [b"GE#T", b"#GET", b"GET#"])
def test_method_with_hash_is_400(server, method):
    """RFC 9110 §5.6.2 lists '#' among tchar, so GE#T is a token (RFC 9110 §9.1); qiao
    refuses it anyway as hardening: no registered method contains '#', the fragment
    delimiter that request-smuggling scanners put in methods, and gunicorn refuses it by
    default too (METHOD_BADCHAR)."""
    resp = refused(server, method + b" / HTTP/1.1\r\nHost: h\r\n\r\n", 400)
    assert b"invalid request method" in resp.body


@pytest.mark.parametrize("method", [b"-blargh", b"M-SEARCH", b"PROPFIND"])
def test_other_token_methods_are_served(server, method):
    """RFC 9110 §9.1: method = token, case-sensitive; refusing '#' leaves every other
    token a method, passed on as sent."""
    with Conn(server.port) as c:
        resp = c.request(method + b" /m HTTP/1.1\r\nHost: h\r\n\r\n")
        assert resp.status == 200, resp
        assert json.loads(resp.body)["environ"]["REQUEST_METHOD"] == method.decode()


@pytest.mark.parametrize(
    "version", [b"http/1.1", b"HTTP/01.1", b"HTTP/1.10", b"HTTP/0.9", b"HTTP/1", b"HTTP1.1"]
)
def test_malformed_or_old_version_is_400(server, version):
    """RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive; 0.9 is gone."""
    refused(server, b"GET / " + version + b"\r\nHost: h\r\n\r\n", 400)


def test_http2_preface_is_505(server):
    """RFC 9113 §3.4 / RFC 9110 §15.6.6: the HTTP/2 preface is not an HTTP/1 request."""
    refused(server, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505)


def test_http2_version_is_505(server):
    """RFC 9110 §15.6.6: a major version the server does not support is 505."""
    refused(server, b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505)


def test_http12_is_served_as_http11(server):
    """RFC 9110 §2.5: a higher minor version is served as the highest 1.x supported."""
    before = app_calls(server.port)
    with Conn(server.port) as c:
        resp = c.request(b"GET /v HTTP/1.2\r\nHost: h\r\n\r\n")
        assert resp.status == 200
        assert resp.version == "HTTP/1.1"
        assert json.loads(resp.body)["environ"]["SERVER_PROTOCOL"] == "HTTP/1.2"
        # Persistent, as an HTTP/1.1 connection is.
        assert c.request(b"GET /v HTTP/1.2\r\nHost: h\r\n\r\n").status == 200
    assert app_calls(server.port) == before + 3


@pytest.mark.parametrize(
    "line",
    [
        b"GET example.com/x HTTP/1.1",
        b"GET h:80 HTTP/1.1",
        b"GET * HTTP/1.1",
        b"POST * HTTP/1.1",
        b"CONNECT /x HTTP/1.1",
        b"CONNECT h HTTP/1.1",
        b"CONNECT http://h/ HTTP/1.1",
        b"GET ftp://h/x HTTP/1.1",
        b"GET http:///x HTTP/1.1",
        b"GET x HTTP/1.1",
        b"GET ../x HTTP/1.1",
    ],
    ids=[
        "no-form",
        "authority-not-connect",
        "asterisk-get",
        "asterisk-post",
        "connect-origin",
        "connect-no-port",
        "connect-absolute",
        "ftp-scheme",
        "empty-host",
        "relative",
        "dot-relative",
    ],
)
def test_target_in_wrong_form_is_400(server, line):
    """RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT only) and
    asterisk-form (OPTIONS only); nothing else is a request-target."""
    refused(server, line + b"\r\nHost: h\r\n\r\n", 400)


def test_each_target_form_where_allowed_is_served(server):
    """RFC 9112 §3.2.1-§3.2.4: each form is served where the RFC allows it."""
    with Conn(server.port) as c:
        for line in (
            b"GET /p?q HTTP/1.1",
            b"GET http://h/p HTTP/1.1",
            b"CONNECT h:443 HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
        ):
            assert c.request(line + b"\r\nHost: h\r\n\r\n").status == 200, line


@pytest.mark.parametrize("target", [b"/#f", b"/p?q#f", b"http://h/p#f", b"/#"])
def test_fragment_in_target_is_400(server, target):
    """RFC 9112 §3.2: a request-target has no fragment component."""
    refused(server, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n", 400)


@pytest.mark.parametrize(
    "target",
    [b"http://user@a.example/p", b"http://user:pass@a.example:8080/p", b"https://@a.example/"],
    ids=["user", "user-password", "empty-userinfo"],
)
def test_userinfo_in_absolute_form_target_is_400(server, target):
    """RFC 9110 §4.2.4: a recipient SHOULD treat userinfo in an http(s) URI as an error;
    the absolute-form authority replaces Host (RFC 9112 §3.2.2), so user@host never
    reaches the app as its host."""
    resp = refused(server, b"GET " + target + b" HTTP/1.1\r\nHost: a.example\r\n\r\n", 400)
    assert b"userinfo in request-target" in resp.body


@pytest.mark.parametrize(
    "target", [b"http://:80/p", b"http://a{b}/p"], ids=["empty-host", "bad-host-byte"]
)
def test_bad_authority_in_absolute_form_target_is_400(server, target):
    """RFC 9110 §4.2.1: an http URI with an empty host MUST be rejected; RFC 9112 §3.2:
    the authority, used as the Host, has a Host value's characters."""
    refused(server, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n", 400)


def test_absolute_form_target_still_needs_host_on_http11(server):
    """RFC 9112 §3.2: an HTTP/1.1 request without Host is 400, even when its absolute-form
    target names the host that replaces it (§3.2.2)."""
    refused(server, b"GET http://a.example/p HTTP/1.1\r\n\r\n", 400)


def test_missing_host_on_http11_is_400(server):
    """RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host."""
    refused(server, b"GET / HTTP/1.1\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400)


def test_duplicate_host_is_400(server):
    """RFC 9112 §3.2: more than one Host field line MUST be answered 400."""
    refused(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400)
    refused(server, b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400)


# --- not HTTP at all --------------------------------------------------------------------------

# A TLS 1.2 ClientHello record header and the start of its handshake message.
TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303" + "00" * 32 + "000020c02bc02fc02cc030cca9cca8c013c014"
)


def test_tls_client_hello_is_400_at_once(server):
    """RFC 9112 §3: a request starts with a method token; a TLS handshake on the plain
    port is refused on its first bytes, not after --header-timeout."""
    refused(server, TLS_CLIENT_HELLO, 400)


@pytest.mark.parametrize(
    "data", [b"\x00\x00\x00\x00", b"\xff\xfe\xfd", b"\x05\x01\x00", b"\x1b[A\x1b[B"]
)
def test_binary_garbage_is_400_at_once(server, data):
    """RFC 9112 §3: bytes that cannot begin a method are refused without waiting."""
    refused(server, data, 400)


# --- what comes before an error ---------------------------------------------------------------


def test_valid_request_pipelined_before_an_invalid_one_is_answered_first(server):
    """RFC 9112 §9.3.2: pipelined requests are answered in order; the valid one gets its
    whole response, then the invalid one its error, then the connection closes."""
    before = app_calls(server.port)
    good = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
    bad = b"GET /second HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"
    with Conn(server.port) as c:
        c.send(good + bad)
        first = c.read_response()
        assert first.status == 200
        assert first.complete
        assert json.loads(first.body)["environ"]["PATH_INFO"] == "/first"
        second = c.read_response()
        assert second.status == 400
        assert c.closed_by_peer(PROMPT)
    assert app_calls(server.port) == before + 2


def test_smuggled_request_in_a_refused_body_is_never_served(server):
    """RFC 9112 §6.3 / §11.2: after a framing error nothing more on the connection is
    read, so a request hidden in the body never reaches the app."""
    before = app_calls(server.port)
    hidden = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    data = post(
        b"Content-Length: " + str(len(hidden)).encode() + b"\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\n" + hidden,
    )
    with Conn(server.port) as c:
        c.send(data)
        assert c.read_response().status == 400
        assert c.closed_by_peer(PROMPT)
        assert c.buf == b""
    assert app_calls(server.port) == before + 1
