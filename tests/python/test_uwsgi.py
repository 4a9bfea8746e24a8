"""The uwsgi protocol (--protocol uwsgi), as nginx's uwsgi_pass speaks it: a 4-byte header
(modifier1 0, little-endian size, modifier2 0), the request's CGI variables as
length-prefixed pairs, then the body; one request per connection, answered in HTTP.
Raw packets over sockets here; the real nginx in test_real_proxies.py."""

import json
import struct

import pytest
from conftest import is_gunicorn, running_server
from httpclient import connect, parse_response

pytestmark = pytest.mark.skipif(is_gunicorn(), reason="qiao's --protocol uwsgi")


def packet(variables: dict[str, str], body: bytes = b"") -> bytes:
    data = b""
    for key, value in variables.items():
        k, v = key.encode("latin-1"), value.encode("latin-1")
        data += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return b"\x00" + struct.pack("<H", len(data)) + b"\x00" + data + body


# What nginx's uwsgi_params send for `GET /p%20q?a=1` from 203.0.113.7 over https.
NGINX = {
    "QUERY_STRING": "a=1",
    "REQUEST_METHOD": "GET",
    "CONTENT_TYPE": "",
    "CONTENT_LENGTH": "",
    "REQUEST_URI": "/p%20q?a=1",
    "PATH_INFO": "/p q",
    "DOCUMENT_URI": "/p q",
    "DOCUMENT_ROOT": "/srv/www",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "https",
    "HTTPS": "on",
    "REMOTE_ADDR": "203.0.113.7",
    "REMOTE_PORT": "40000",
    "SERVER_PORT": "443",
    "SERVER_NAME": "www.example.com",
    "HTTP_HOST": "www.example.com",
    "HTTP_USER_AGENT": "curl/8",
    "HTTP_CONNECTION": "keep-alive",
}


def exchange(addr, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends one packet and reads until the server closes (one request per connection)."""
    with connect(addr, timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


@pytest.fixture(scope="module")
def uwsgi_server():
    with running_server("echo_environ:app", "--protocol", "uwsgi") as server:
        yield server


def test_variables_become_the_environ(uwsgi_server):
    """The packet's variables become the environ (PEP 3333 keys from CGI ones): method,
    path, query, headers, the client and https from a trusted peer (nginx on the same
    host), SERVER_PROTOCOL and the rest as nginx gave them; the response is HTTP,
    delimited by its length, and the connection closes after it."""
    raw = exchange(uwsgi_server.port, packet(NGINX))
    resp, _ = parse_response(raw, "GET", eof=True)
    assert resp.status == 200
    env = json.loads(resp.body)["environ"]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/p q"
    assert env["QUERY_STRING"] == "a=1"
    assert env["HTTP_HOST"] == "www.example.com" and env["HTTP_USER_AGENT"] == "curl/8"
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "40000")
    assert env["wsgi.url_scheme"] == "https"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("www.example.com", "443")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["DOCUMENT_ROOT"] == "/srv/www" and env["HTTPS"] == "on"
    assert "HTTP_CONNECTION" not in env  # the client's hop, not this connection's


def test_body_follows_the_packet(uwsgi_server):
    """CONTENT_LENGTH frames the body that follows the variables (PEP 3333 wsgi.input)."""
    variables = dict(NGINX, REQUEST_METHOD="POST", CONTENT_LENGTH="11",
                     CONTENT_TYPE="text/plain")
    raw = exchange(uwsgi_server.port, packet(variables, b"hello world"))
    resp, _ = parse_response(raw, "POST", eof=True)
    report = json.loads(resp.body)
    assert report["body"] == "hello world"
    assert report["environ"]["CONTENT_TYPE"] == "text/plain"


def test_untrusted_peer_cannot_name_the_client():
    """From a peer outside --forwarded-allow-ips, REMOTE_ADDR and HTTPS in the packet do
    not name the client nor the scheme: the connection's own stand."""
    with running_server("echo_environ:app", "--protocol", "uwsgi",
                        "--forwarded-allow-ips", "10.0.0.0/8") as server:
        raw = exchange(server.port, packet(NGINX))
    env = json.loads(parse_response(raw, "GET", eof=True)[0].body)["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x05\x02\x00\x00ab", id="modifier1-not-0"),
        pytest.param(b"\x00\x04\x00\x00\x03\x00ab", id="variable-past-the-end"),
        pytest.param(packet(dict(NGINX, HTTP_X_A="a\r\nX-B: b")), id="crlf-in-a-value"),
        pytest.param(packet(dict(NGINX, REQUEST_URI="/ HTTP/1.0\r\n\r\nGET /x")),
                     id="request-smuggled-in-request-uri"),
        pytest.param(packet({"PATH_INFO": "/"}), id="no-request-method"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-not-uwsgi"),
    ],
)
def test_bad_packets_close(uwsgi_server, data):
    """A malformed packet closes the connection without a response."""
    assert exchange(uwsgi_server.port, data) == b""


def test_packet_over_the_head_limit_closes():
    """The variables are bounded by --limit-request-head-size."""
    with running_server("echo_environ:app", "--protocol", "uwsgi",
                        "--limit-request-head-size", "256") as server:
        assert exchange(server.port, packet(dict(NGINX, HTTP_COOKIE="x" * 300))) == b""


def test_invalid_request_in_a_packet_is_400(uwsgi_server):
    """Variables that make no valid request (a space in the target, two Content-Length
    values) get the HTTP refusal such a request would: 400, and the app is not called."""
    raw = exchange(uwsgi_server.port, packet(dict(NGINX, REQUEST_URI="/a b")))
    assert raw.startswith(b"HTTP/1.1 400 ")
    raw = exchange(uwsgi_server.port, packet(dict(NGINX, CONTENT_LENGTH="1, 2")))
    assert raw.startswith(b"HTTP/1.1 400 ")
