"""Behind proxies: forwarding headers believed from trusted peers only (--forwarded-allow-ips),
mapped onto the environ, and the spoofing attempts that must change nothing.

The harness connects from 127.0.0.1, which the default --forwarded-allow-ips trusts; a
server started with --forwarded-allow-ips 10.0.0.0/8 sees the same client as untrusted.
"""

import json

import pytest
import requests
from conftest import is_gunicorn, running_server, short_sock_path
from httpclient import Conn, app_calls, get

pytestmark = pytest.mark.skipif(
    is_gunicorn(), reason="qiao's forwarded-header handling (gunicorn reads only the scheme)"
)


def report(addr, request):
    with Conn(addr) as c:
        resp = c.request(request)
        assert resp.status == 200, resp
        out = json.loads(resp.body)
        name = c.sock.getsockname()
        out["client_port"] = str(name[1]) if isinstance(name, tuple) else ""
        return out


def env_of(addr, headers: bytes = b"", host: str = "localhost", path: str = "/"):
    return report(addr, get(path, host=host, headers=headers))["environ"]


@pytest.fixture(scope="module")
def trusting():
    """The defaults: 127.0.0.1 and ::1 trusted; X-Forwarded-Host/-Port/-Prefix read."""
    with running_server("echo_environ:app", "--forwarded-headers", "host,port,prefix") as s:
        yield s


@pytest.fixture(scope="module")
def chain():
    """Trusts 127.0.0.1 and the 10.0.0.0/8 proxies in front of it."""
    with running_server("echo_environ:app", "--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8") as s:
        yield s


@pytest.fixture(scope="module")
def untrusting():
    """127.0.0.1 is not in --forwarded-allow-ips: the harness is an untrusted client."""
    with running_server(
        "echo_environ:app", "--forwarded-allow-ips", "10.0.0.0/8",
        "--forwarded-headers", "host,port,prefix",
    ) as s:
        yield s


# -- a trusted peer -------------------------------------------------------------------


def test_trusted_proxy_sets_client_and_scheme(trusting):
    """gunicorn forwarded_allow_ips / secure_scheme_headers: from a trusted peer,
    X-Forwarded-Proto: https makes wsgi.url_scheme https; X-Forwarded-For names the
    client (REMOTE_ADDR), the port unknown (REMOTE_PORT empty). The replaced values are
    kept in qiao.original."""
    out = report(trusting.port, get(headers=(
        b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
    )))
    env = out["environ"]
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["REMOTE_PORT"] == ""
    assert env["qiao.original"]["type"] == "mappingproxy"  # read-only
    # The headers themselves still reach the app (CGI: every field is an HTTP_ key).
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"


def test_original_values_are_kept(trusting):
    """qiao.original maps each environ key a proxy header replaced to its value before."""
    out = report(trusting.port, get(host="internal:8000", headers=(
        b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: www.example.com\r\nX-Forwarded-Prefix: /app\r\n"
    )))
    assert out["environ"]["qiao.original"]["value"] == {
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": out["client_port"],
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "internal:8000",
        "SERVER_NAME": "internal",
        "SCRIPT_NAME": "",
    }


def test_no_forwarding_headers_no_original(trusting):
    """A trusted peer that forwards nothing: the connection's own values, no qiao.original."""
    out = report(trusting.port, get())
    env = out["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == out["client_port"]
    assert env["wsgi.url_scheme"] == "http"
    assert "qiao.original" not in env


@pytest.mark.parametrize(
    ("header", "scheme"),
    [
        (b"X-Forwarded-Proto: https", "https"),
        (b"X-Forwarded-Proto: HTTPS", "https"),
        (b"X-Forwarded-Proto: http", "http"),
        (b"X-Forwarded-Ssl: on", "https"),
        (b"X-Forwarded-Protocol: ssl", "https"),
        (b"Forwarded: for=203.0.113.7;proto=https", "https"),
        (b"X-Forwarded-Proto: http, https", "https"),  # the nearest proxy's value
    ],
)
def test_secure_scheme_headers(trusting, header, scheme):
    """gunicorn's secure_scheme_headers defaults, and RFC 7239 §5.4 proto=."""
    assert env_of(trusting.port, header + b"\r\n")["wsgi.url_scheme"] == scheme


def test_configured_secure_scheme_headers():
    """--secure-scheme-headers replaces the set: only the fields it names are read."""
    with running_server("echo_environ:app", "--secure-scheme-headers", "X-Scheme=secure") as s:
        assert env_of(s.port, b"X-Scheme: secure\r\n")["wsgi.url_scheme"] == "https"
        assert env_of(s.port, b"X-Forwarded-Proto: https\r\n")["wsgi.url_scheme"] == "http"


def test_client_is_the_rightmost_untrusted_address(chain):
    """The client is the rightmost X-Forwarded-For address that is not a trusted proxy:
    what a client writes itself stays left of what the first proxy appended."""
    cases = {
        b"203.0.113.7": "203.0.113.7",
        b"198.51.100.1, 203.0.113.7": "203.0.113.7",  # a forged entry, then the real one
        b"198.51.100.1, 203.0.113.7, 10.1.2.3": "203.0.113.7",  # behind two proxies
        b"10.0.0.5, 10.1.2.3": "10.0.0.5",  # every hop trusted: the leftmost
        b"2001:DB8::1": "2001:db8::1",  # IPv6, written canonically
        b"[2001:db8::1]:4711": "2001:db8::1",
        b"::ffff:203.0.113.7": "203.0.113.7",
    }
    for xff, client in cases.items():
        env = env_of(chain.port, b"X-Forwarded-For: " + xff + b"\r\n")
        assert env["REMOTE_ADDR"] == client, xff


def test_forwarded_header_rfc7239(chain):
    """RFC 7239 §4 and §5.2: Forwarded: for= names the client, walked from the right
    like X-Forwarded-For; §6 quoted IPv6 with a port; §6.2 unknown leaves the peer."""
    cases = {
        b"for=192.0.2.60;proto=http;by=203.0.113.43": ("192.0.2.60", ""),
        b'for="[2001:db8:cafe::17]:4711"': ("2001:db8:cafe::17", "4711"),
        b"for=198.51.100.1, for=192.0.2.43, for=10.0.0.2": ("192.0.2.43", ""),
        b'for="192.0.2.43:_hidden"': ("192.0.2.43", ""),
        b"for=unknown": ("127.0.0.1", None),
    }
    for value, (addr, port) in cases.items():
        out = report(chain.port, get(headers=b"Forwarded: " + value + b"\r\n"))
        assert out["environ"]["REMOTE_ADDR"] == addr, value
        assert out["environ"]["REMOTE_PORT"] == (out["client_port"] if port is None else port)


def test_keep_alive_connection_carries_many_clients(trusting):
    """A proxy sends many clients' requests over one keep-alive connection: each request
    sees its own client and scheme, whatever came before it on the connection."""
    sequence = [
        (b"203.0.113.1", b"https"), (b"203.0.113.1", b"https"), (b"203.0.113.2", b"http"),
        (b"203.0.113.1", b"https"), (None, None), (b"203.0.113.3", b"https"),
    ]
    with Conn(trusting.port) as c:
        own_port = str(c.sock.getsockname()[1])
        for client, scheme in sequence:
            headers = b""
            if client:
                headers = b"X-Forwarded-For: " + client + b"\r\nX-Forwarded-Proto: " + scheme + b"\r\n"
            resp = c.request(get(headers=headers))
            env = json.loads(resp.body)["environ"]
            if client is None:
                assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", own_port)
                assert env["wsgi.url_scheme"] == "http" and "qiao.original" not in env
            else:
                assert env["REMOTE_ADDR"] == client.decode()
                assert env["wsgi.url_scheme"] == scheme.decode()


def test_repeated_headers_are_one_list(chain):
    """RFC 9110 §5.3: repeated X-Forwarded-For lines are one list, in order."""
    env = env_of(chain.port, b"X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.7\r\n")
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["HTTP_X_FORWARDED_FOR"] == "198.51.100.1,203.0.113.7"


def test_forwarded_host_port_prefix(trusting):
    """--forwarded-headers host,port,prefix (Werkzeug ProxyFix's x_host/x_port/x_prefix
    = 1): HTTP_HOST, SERVER_NAME, SERVER_PORT from the proxy's fields, the prefix before
    SCRIPT_NAME; the default port of the scheme is left out of HTTP_HOST."""
    env = env_of(trusting.port, (
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: example.com\r\n"
        b"X-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /shop/\r\n"
    ), path="/cart")
    assert env["HTTP_HOST"] == "example.com"
    assert env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == "443"
    assert env["SCRIPT_NAME"] == "/shop"
    assert env["PATH_INFO"] == "/cart"
    env = env_of(trusting.port, b"X-Forwarded-Host: example.com:8443\r\n")
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "example.com:8443", "example.com", "8443")
    env = env_of(trusting.port, b"X-Forwarded-Port: 8080\r\n", host="example.com:81")
    assert (env["HTTP_HOST"], env["SERVER_PORT"]) == ("example.com:8080", "8080")


def test_rfc7239_forwarded_host(trusting, chain):
    """RFC 7239 §5.3: Forwarded host= of the outermost trusted proxy's element is the Host
    the client asked for (with --forwarded-headers host, as X-Forwarded-Host); a client's
    own element to its left is not read; without the setting host= changes nothing."""
    fwd = b'Forwarded: for=192.0.2.1;host=evil.example, for=203.0.113.7;host="example.com:8443";proto=https\r\n'
    env = env_of(trusting.port, fwd)
    assert env["HTTP_HOST"] == "example.com:8443"
    assert env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == "8443"
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    env = env_of(chain.port, fwd)
    assert env["HTTP_HOST"] == "localhost" and env["REMOTE_ADDR"] == "203.0.113.7"


def test_forwarded_host_counts_proxies():
    """ProxyFix's count: host=2 reads the second value from the right, and a field with
    fewer values than proxies is not read at all."""
    with running_server("echo_environ:app", "--forwarded-headers", "host=2") as s:
        env = env_of(s.port, b"X-Forwarded-Host: a.example, b.example\r\n")
        assert env["HTTP_HOST"] == "a.example"
        env = env_of(s.port, b"X-Forwarded-Host: b.example\r\n")
        assert env["HTTP_HOST"] == "localhost"


def test_host_port_prefix_unread_unless_enabled(chain):
    """Without --forwarded-headers, X-Forwarded-Host/-Port/-Prefix change nothing."""
    env = env_of(chain.port, (
        b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Prefix: /x\r\n"
    ))
    assert env["HTTP_HOST"] == "localhost" and env["SERVER_NAME"] == "localhost"
    assert env["SCRIPT_NAME"] == ""


def test_unix_socket_peer_is_trusted(tmp_path):
    """As in gunicorn, a Unix-socket peer is trusted (only processes allowed to open the
    socket file can connect): nginx's usual upstream."""
    path = short_sock_path(tmp_path, "proxy.sock")
    with running_server("echo_environ:app", binds=[f"unix:{path}"]):
        env = env_of(path, b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n",
                     host="example.com")
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["wsgi.url_scheme"] == "https"
    # On a Unix socket SERVER_PORT is the Host's port or the scheme's default.
    assert env["SERVER_PORT"] == "443"


def test_ipv6_loopback_is_trusted_by_default():
    """The default --forwarded-allow-ips is gunicorn's: 127.0.0.1 and ::1."""
    with running_server("echo_environ:app", binds=["[::1]:0"]) as server:
        env = env_of(("::1", server.port), b"X-Forwarded-For: 203.0.113.7\r\n")
    assert env["REMOTE_ADDR"] == "203.0.113.7"


def test_access_log_shows_the_client(tmp_path):
    """The access log's %(h)s is REMOTE_ADDR, as in gunicorn: the client a trusted proxy
    named."""
    log = tmp_path / "access.log"
    with running_server("echo_environ:app", "--access-logfile", str(log),
                        "--access-logformat", "%(h)s %(s)s") as server:
        env_of(server.port, b"X-Forwarded-For: 203.0.113.7\r\n")
        env_of(server.port)
    assert log.read_text().splitlines() == ["203.0.113.7 200", "127.0.0.1 200"]


# -- refusals: malformed or contradictory values from a trusted peer --------------------


def refused(addr, headers: bytes, reason: str) -> None:
    before = app_calls(addr)
    with Conn(addr) as c:
        resp = c.request(get(headers=headers))
        assert resp.status == 400, resp
        assert reason in resp.body.decode()
        assert resp.header("Connection") == "close"
        assert c.closed_by_peer(1.5)
    assert app_calls(addr) == before + 1  # only the probe itself


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n", "contradictory scheme headers"),
        (b"X-Forwarded-Proto: http\r\nForwarded: proto=https\r\n", "contradictory scheme headers"),
        (b"X-Forwarded-For: 127.1\r\n", "invalid X-Forwarded-For"),
        (b"X-Forwarded-For: 0x7f.0.0.1\r\n", "invalid X-Forwarded-For"),
        (b"X-Forwarded-For: 0177.0.0.1\r\n", "invalid X-Forwarded-For"),
        (b"X-Forwarded-For: 2130706433\r\n", "invalid X-Forwarded-For"),
        (b"X-Forwarded-For: evil.example\r\n", "invalid X-Forwarded-For"),
        (b"Forwarded: for=[::1]\r\n", "invalid Forwarded header"),
        (b"Forwarded: for=1.2.3.4;for=5.6.7.8\r\n", "invalid Forwarded header"),
        (b"X-Forwarded-For: 203.0.113.7\r\nForwarded: for=198.51.100.1\r\n",
         "X-Forwarded-For and Forwarded disagree"),
        (b"X-Forwarded-Host: a b\r\n", "invalid X-Forwarded-Host"),
        (b"X-Forwarded-Port: 99999\r\n", "invalid X-Forwarded-Port"),
        (b"X-Forwarded-Prefix: //evil.example\r\n", "invalid X-Forwarded-Prefix"),
    ],
)
def test_malformed_or_contradictory_is_400(trusting, headers, reason):
    """docs/behaviour.md: a value from a trusted peer that cannot be read, or two that
    disagree, are a 400 with Connection: close, and the app is not called; never a guess
    (gunicorn answers contradictory scheme headers with 400 too)."""
    refused(trusting.port, headers, reason)


# -- spoofing: an untrusted peer changes nothing ----------------------------------------


SPOOFS = [
    b"X-Forwarded-For: 10.0.0.1\r\n",
    b"X-Forwarded-For: 127.0.0.1\r\n",
    b"X-Forwarded-For: ::1\r\n",
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Protocol: ssl\r\n",
    b'Forwarded: for="[::1]:80";proto=https;host=evil.example\r\n',
    b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Prefix: /evil\r\n",
    # Malformed or contradictory: from an untrusted peer they are not even read.
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\nX-Forwarded-For: 127.1\r\n",
    b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n",
]


@pytest.mark.parametrize("headers", SPOOFS)
def test_untrusted_peer_changes_nothing(untrusting, headers):
    """From a peer outside --forwarded-allow-ips, forwarding headers change nothing: the
    environ is what the connection shows, whatever the client claims."""
    out = report(untrusting.port, get(headers=headers))
    env = out["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == out["client_port"]
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "localhost" and env["SERVER_NAME"] == "localhost"
    assert env["SERVER_PORT"] == str(untrusting.port)
    assert env["SCRIPT_NAME"] == ""
    assert "qiao.original" not in env


@pytest.mark.parametrize(
    "name", [b"X_Forwarded_For", b"X-Forwarded_For", b"x_forwarded_proto", b"X_FORWARDED_SSL"],
)
def test_underscore_variants_are_not_forwarding_headers(trusting, name):
    """A name with '_' is not X-Forwarded-For (nor any forwarding field), even from a
    trusted peer, and is dropped from the environ: it cannot pose as HTTP_X_FORWARDED_FOR
    for a framework that reads that key itself."""
    value = b"https" if b"ssl" not in name.lower() else b"on"
    if b"for" in name.lower():
        value = b"203.0.113.7"
    env = env_of(trusting.port, name + b": " + value + b"\r\n")
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert not any(k.startswith("HTTP_X_FORWARDED") for k in env)


def test_junk_left_of_the_client_is_not_read(chain):
    """Entries left of the client are the client's own writing: not read, so junk there
    is neither believed nor a 400."""
    env = env_of(chain.port, b"X-Forwarded-For: 127.1, not-an-address, 198.51.100.23\r\n")
    assert env["REMOTE_ADDR"] == "198.51.100.23"


def test_forged_entry_cannot_pass_through_a_trusted_proxy(chain):
    """A client that sends its own X-Forwarded-For through a proxy gets the proxy's
    appended address, not its forgery, even when it forges a trusted one."""
    for forged in (b"127.0.0.1", b"10.0.0.1", b"::1", b"203.0.113.99"):
        env = env_of(chain.port, b"X-Forwarded-For: " + forged + b", 198.51.100.23\r\n")
        assert env["REMOTE_ADDR"] == "198.51.100.23"


# -- frameworks ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flask_behind():
    pytest.importorskip("flask")
    with running_server("flask_app:app", "--forwarded-headers", "host,port,prefix") as s:
        yield s


@pytest.fixture(scope="module")
def django_behind():
    pytest.importorskip("django")
    with running_server("django_app:application", "--forwarded-headers", "host,port") as s:
        yield s


PROXY_HEADERS = {
    "X-Forwarded-For": "198.51.100.1, 203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "www.example.com",
    "X-Forwarded-Port": "443",
}


def test_flask_behind_a_proxy(flask_behind):
    """Flask builds https absolute URLs on the proxy's host, sees the client's address and
    is_secure, with no ProxyFix of its own; the prefix goes into its URLs."""
    r = requests.get(f"{flask_behind.url}/whoami", headers=PROXY_HEADERS, timeout=5)
    assert r.json() == {
        "url": "https://www.example.com/whoami",
        "remote_addr": "203.0.113.7",
        "is_secure": True,
        "host": "www.example.com",
    }
    r = requests.get(f"{flask_behind.url}/whoami",
                     headers=dict(PROXY_HEADERS, **{"X-Forwarded-Prefix": "/app"}), timeout=5)
    assert r.json()["url"] == "https://www.example.com/app/whoami"


def test_django_behind_a_proxy(django_behind):
    """Django's build_absolute_uri, REMOTE_ADDR and is_secure() come out right with no
    SECURE_PROXY_SSL_HEADER nor USE_X_FORWARDED_HOST in its settings."""
    r = requests.get(f"{django_behind.url}/whoami/", headers=PROXY_HEADERS, timeout=5)
    assert r.json() == {
        "url": "https://www.example.com/whoami/",
        "remote_addr": "203.0.113.7",
        "is_secure": True,
        "host": "www.example.com",
    }


def test_flask_untrusted_client_cannot_spoof():
    """The same headers from an untrusted peer: Flask sees the connection as it is."""
    pytest.importorskip("flask")
    with running_server("flask_app:app", "--forwarded-allow-ips", "10.0.0.0/8",
                        "--forwarded-headers", "host,port,prefix") as s:
        r = requests.get(f"{s.url}/whoami", headers=PROXY_HEADERS, timeout=5)
    assert r.json() == {
        "url": f"http://127.0.0.1:{s.port}/whoami",
        "remote_addr": "127.0.0.1",
        "is_secure": False,
        "host": f"127.0.0.1:{s.port}",
    }
