"""The PROXY protocol (HAProxy's proxy-protocol.txt, v1 and v2) with --proxy-protocol: the
header a load balancer sends first names the client; a missing, malformed, late or
unwanted header closes the connection and nothing reaches the app.

The harness connects from 127.0.0.1, in the default --proxy-allow-from; a server started
with --proxy-allow-from 10.0.0.0/8 sees it as a peer not allowed to send one.
"""

import ipaddress
import json
import signal
import socket
import ssl
import struct
import time

import pytest
from conftest import is_gunicorn, running_server, short_sock_path
from h2client import H2Client
from httpclient import Conn, connect, get, parse_response
from tls_certs import make_certs

pytestmark = pytest.mark.skipif(is_gunicorn(), reason="qiao's PROXY protocol handling")

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_SSL = 0x20
PP2_CLIENT_SSL = 0x01


def v1(src="203.0.113.7", dst="198.51.100.1", sport=40000, dport=443, proto="TCP4") -> bytes:
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src="203.0.113.7", dst="198.51.100.1", sport=40000, dport=443, *, command=1,
       tlvs=b"", family=None) -> bytes:
    """Section 2.2: signature, version 2 + command, family + STREAM, length, addresses."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = family if family is not None else (0x11 if s.version == 4 else 0x21)
    block = s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs
    return SIGNATURE + bytes([0x20 | command, fam]) + struct.pack("!H", len(block)) + block


def ssl_tlv(client=PP2_CLIENT_SSL) -> bytes:
    """PP2_TYPE_SSL: client flags, verify (0), a PP2_SUBTYPE_SSL_VERSION sub-TLV."""
    version = b"TLSv1.3"
    value = bytes([client]) + b"\x00\x00\x00\x00" + bytes([0x21]) + struct.pack(
        "!H", len(version)) + version
    return bytes([PP2_TYPE_SSL]) + struct.pack("!H", len(value)) + value


def env_of(addr, data: bytes) -> dict:
    with Conn(addr) as c:
        resp = c.request(data, method="GET")
        assert resp.status == 200, resp
        return json.loads(resp.body)["environ"]


def calls(addr) -> int:
    """The app's call count, through a probe that brings its own PROXY header."""
    with Conn(addr) as c:
        resp = c.request(b"PROXY UNKNOWN\r\nGET /probe HTTP/1.0\r\n\r\n", method="GET")
        return int(resp.header("X-Calls"))


def closed_without_response(addr, data: bytes, timeout: float = 3.0) -> float:
    """Sends `data` and keeps the socket open: the server must close it without a byte,
    within `timeout`; returns how long that took."""
    with connect(addr, timeout) as sock:
        start = time.monotonic()
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"not closed within {timeout}s")
        assert got == b""
        return time.monotonic() - start


@pytest.fixture(scope="module")
def proxied():
    with running_server("echo_environ:app", "--proxy-protocol") as server:
        yield server


def test_v1_tcp4(proxied):
    """PROXY protocol §2.1: the source address and port become REMOTE_ADDR/REMOTE_PORT;
    SERVER_PORT is the destination port (the port the client connected to)."""
    env = env_of(proxied.port, v1() + get(host="example.com"))
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "40000")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "443")
    assert env["wsgi.url_scheme"] == "http"


def test_v1_tcp6(proxied):
    env = env_of(proxied.port, v1("2001:db8::7", "2001:db8::1", 1234, 80, "TCP6") + get())
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::7", "1234")


def test_v1_unknown_keeps_the_connection(proxied):
    """§2.1: PROXY UNKNOWN: the receiver uses the connection's own addresses."""
    with Conn(proxied.port) as c:
        resp = c.request(b"PROXY UNKNOWN\r\n" + get(), method="GET")
        env = json.loads(resp.body)["environ"]
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["REMOTE_PORT"] == str(c.sock.getsockname()[1])


def test_v2_ipv4_ipv6_and_ssl(proxied):
    """§2.2: v2 over IPv4 and IPv6; §2.2.5 the SSL TLV with PP2_CLIENT_SSL makes the
    scheme https (the balancer terminated TLS)."""
    env = env_of(proxied.port, v2() + get())
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "40000")
    assert env["wsgi.url_scheme"] == "http"
    env = env_of(proxied.port, v2("2001:db8::7", "2001:db8::1", 5, 443) + get())
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::7", "5")
    env = env_of(proxied.port, v2(tlvs=b"\x01\x00\x02h2" + ssl_tlv()) + get())
    assert env["wsgi.url_scheme"] == "https"
    env = env_of(proxied.port, v2(tlvs=ssl_tlv(client=0)) + get())
    assert env["wsgi.url_scheme"] == "http"


def test_v2_local_command(proxied):
    """§2.2: LOCAL (the balancer's own health check): the connection's own addresses."""
    env = env_of(proxied.port, v2(command=0) + get())
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_header_in_pieces_and_keep_alive(proxied):
    """The header may arrive in pieces; it is read once, and every request of the
    connection has the client it names."""
    header = v2("203.0.113.9", "198.51.100.1", 7, 80)
    with Conn(proxied.port) as c:
        for piece in (header[:5], header[5:17], header[17:]):
            c.send(piece)
            time.sleep(0.05)
        for _ in range(3):
            resp = c.request(get(), method="GET")
            assert json.loads(resp.body)["environ"]["REMOTE_ADDR"] == "203.0.113.9"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(get(), id="no-header"),
        pytest.param(b"PROXY TCP4 127.1 198.51.100.1 1 2\r\n" + get(), id="v1-bad-address"),
        pytest.param(b"PROXY TCP4 203.0.113.7 198.51.100.1 01 2\r\n" + get(), id="v1-zero"),
        pytest.param(b"PROXY TCP4 203.0.113.7 198.51.100.1 1 2\n" + get(), id="v1-bare-lf"),
        pytest.param(b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n" + get(), id="v1-too-long"),
        pytest.param(v2(command=2) + get(), id="v2-bad-command"),
        pytest.param(v2(family=0x12) + get(), id="v2-udp"),
        pytest.param(v2(tlvs=b"\x20\x00\x09\x01") + get(), id="v2-tlv-past-the-end"),
        pytest.param(SIGNATURE + b"\x21\x11\xff\xff", id="v2-too-long"),
        pytest.param(SIGNATURE[:-1] + b"X" + b"\x21\x11\x00\x00" + get(), id="v2-bad-signature"),
    ],
)
def test_missing_or_malformed_header_closes(proxied, data):
    """§2: a receiver configured for the protocol "MUST not try to guess whether the
    protocol header is present"; a missing or malformed one (§2.1 grammar, §2.2 version,
    command, transport, TLV bounds, qiao's 4 KiB bound) closes the connection without a
    response, and the app is not called."""
    before = calls(proxied.port)
    closed_without_response(proxied.port, data)
    assert calls(proxied.port) == before + 1  # only the probe


def test_header_read_under_the_header_timeout():
    """A header that never completes is bounded by --header-timeout."""
    with running_server("echo_environ:app", "--proxy-protocol", "--header-timeout", "1") as s:
        took = closed_without_response(s.port, b"PROXY TCP4 203.0.113.7", timeout=5)
    assert 0.9 <= took < 2.5


def test_a_stop_waits_for_a_header_still_arriving():
    """A connection accepted but still sending its PROXY header when a graceful stop comes
    is counted open from its accept: the stop waits for it, and its request is answered
    (then the connection closes, RFC 9112 §9.6), not cut with the process."""
    with running_server("echo_environ:app", "--proxy-protocol") as s:
        header = v1("203.0.113.7")
        with Conn(s.port, timeout=10) as c:
            c.send(header[:10])
            time.sleep(0.3)
            s.proc.send_signal(signal.SIGTERM)
            s.wait_log("Shutting down")
            c.send(header[10:] + get())
            resp = c.read_response(method="GET")
            assert resp.status == 200
            assert json.loads(resp.body)["environ"]["REMOTE_ADDR"] == "203.0.113.7"
            assert c.closed_by_peer(timeout=10)
        assert s.proc.wait(timeout=10) == 0


@pytest.fixture(scope="module")
def not_allowed():
    """--proxy-protocol, but 127.0.0.1 is not in --proxy-allow-from."""
    with running_server(
        "echo_environ:app", "--proxy-protocol", "--proxy-allow-from", "10.0.0.0/8"
    ) as server:
        yield server


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_header_from_a_peer_not_allowed_closes(not_allowed, header):
    """gunicorn's --proxy-allow-from: a PROXY header from any other peer is a forgery
    attempt (the client naming itself): closed without a response, nothing reaches the
    app, and the server says so in its log."""
    mark = not_allowed.log_mark()
    closed_without_response(not_allowed.port, header + get())
    log = not_allowed.wait_log("not in --proxy-allow-from", mark)
    assert "Closed the connection from 127.0.0.1: PROXY header from a peer not in " in log


def test_peer_not_allowed_speaks_plain_http(not_allowed):
    """A peer not in --proxy-allow-from sends no header: its requests are served as they
    come, with its own address."""
    env = env_of(not_allowed.port, get())
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_forwarding_headers_follow_the_proxied_client():
    """After a PROXY header, the client it names is the peer whose forwarding headers are
    read or not: an untrusted client cannot set X-Forwarded-For through a TCP balancer,
    a trusted one (a proxy behind the balancer) can."""
    with running_server("echo_environ:app", "--proxy-protocol",
                        "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8") as s:
        forged = b"X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n"
        env = env_of(s.port, v1("203.0.113.7") + get(headers=forged))
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "http")
        env = env_of(s.port, v1("10.1.2.3") + get(headers=forged))
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("192.0.2.1", "https")


def test_unix_socket_peer_sends_the_header(tmp_path):
    """A Unix-socket peer is in --proxy-allow-from, as in gunicorn."""
    path = short_sock_path(tmp_path, "pp.sock")
    with running_server("echo_environ:app", "--proxy-protocol", binds=[f"unix:{path}"]):
        env = env_of(path, v1() + get())
        assert env["REMOTE_ADDR"] == "203.0.113.7"
        closed_without_response(path, get())


def test_without_the_setting_a_proxy_line_is_400(echo_server):
    """Without --proxy-protocol a PROXY line is not HTTP: 400, as before."""
    with Conn(echo_server.port) as c:
        resp = c.request(v1() + get(), method="GET")
        assert resp.status == 400


def test_access_log_shows_the_proxied_client(tmp_path):
    """The access log's %(h)s is the client the PROXY header names."""
    log = tmp_path / "access.log"
    with running_server("echo_environ:app", "--proxy-protocol", "--access-logfile", str(log),
                        "--access-logformat", "%(h)s %(s)s") as server:
        env_of(server.port, v2("2001:db8::7", "2001:db8::1", 5, 443) + get())
    assert log.read_text().splitlines() == ["2001:db8::7 200"]


# -- before TLS and HTTP/2 ---------------------------------------------------------------


def test_header_before_tls(tmp_path):
    """The header comes in clear before the TLS ClientHello (HAProxy `send-proxy` with TLS
    passed through to qiao, cloud load balancers' PROXY v2): the client it names is the
    peer of the HTTPS request, over HTTP/1.1 and over HTTP/2 chosen by ALPN."""
    certs = make_certs(tmp_path)
    with running_server("echo_environ:app", "--proxy-protocol", *certs.server_flags()) as s:
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        raw.sendall(v1(src="203.0.113.7", sport=40001))
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(get("/h1", headers=b"Connection: close\r\n"))
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        resp, _ = parse_response(data, "GET", eof=True)
        env = json.loads(resp.body)["environ"]
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "40001")
        assert env["wsgi.url_scheme"] == "https" and env["SERVER_PROTOCOL"] == "HTTP/1.1"

        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        raw.sendall(v2(src="2001:db8::7", dst="2001:db8::1", sport=40002))
        with H2Client(None, None, ca=str(certs.ca), sock=raw) as c:
            r = c.wait(c.request("/h2"))[0]
        env = json.loads(bytes(r.body))["environ"]
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::7", "40002")
        assert env["wsgi.url_scheme"] == "https" and env["SERVER_PROTOCOL"] == "HTTP/2"
        assert "Closed the connection" not in s.log()


def test_header_before_cleartext_http2():
    """With --http2-cleartext prior-knowledge, the HTTP/2 preface (RFC 9113 §3.3) is looked
    for after the PROXY header; an HTTP/1.1 request after a header is served as before."""
    with running_server("echo_environ:app", "--proxy-protocol",
                        "--http2-cleartext", "prior-knowledge") as s:
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        raw.sendall(v1(src="203.0.113.9", sport=40003))
        with H2Client(None, None, sock=raw) as c:
            r = c.wait(c.request("/h2c"))[0]
        env = json.loads(bytes(r.body))["environ"]
        assert env["REMOTE_ADDR"] == "203.0.113.9" and env["SERVER_PROTOCOL"] == "HTTP/2"
        env = env_of(s.port, v1(src="203.0.113.10") + get("/h1"))
        assert env["REMOTE_ADDR"] == "203.0.113.10" and env["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_a_tls_listener_without_the_header_closes(tmp_path):
    """A TLS listener with --proxy-protocol: a ClientHello where the header should be is
    a malformed header, and the connection is closed without a response."""
    certs = make_certs(tmp_path)
    with running_server("echo_environ:app", "--proxy-protocol", *certs.server_flags()) as s:
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname="localhost")
        s.wait_log("Closed the connection from 127.0.0.1")
