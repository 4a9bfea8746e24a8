"""PEP 3333 environ: every key the server must provide, as the app sees it (apps/echo_environ)."""

import json
import socket
import time

import pytest
from conftest import H2, TLS, running_server
from httpclient import Conn, get


def fetch(port, request):
    with Conn(port) as c:
        resp = c.request(request)
        assert resp.status == 200, resp
        report = json.loads(resp.body)
        report["client_port"] = c.sock.getsockname()[1]
        return report


def env_of(port, request):
    return fetch(port, request)["environ"]


@pytest.fixture(scope="module")
def root_path_server():
    with running_server("echo_environ:app", "--root-path", "/app") as server:
        yield server


def test_environ_is_plain_dict_with_str_keys(echo_server):
    """PEP 3333, environ: 'must be a builtin Python dictionary' with native string keys."""
    report = fetch(echo_server.port, get("/"))
    assert report["environ_type"] == "dict"
    assert report["key_types"] == ["str"]


def test_cgi_values_are_latin1_str(echo_server):
    """PEP 3333, native strings: every CGI value is a str of code points below 256."""
    env = env_of(echo_server.port, get("/caf%C3%A9?x=%FF", headers=b"X-Latin: caf\xe9\r\n"))
    cgi = {k: v for k, v in env.items() if "." not in k}
    for key, value in cgi.items():
        assert isinstance(value, str), (key, value)
        assert all(ord(ch) < 256 for ch in value), (key, value)
    assert env["HTTP_X_LATIN"] == "caf\xe9"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH", "PROPFIND"])
def test_request_method(echo_server, method):
    """PEP 3333, environ: REQUEST_METHOD is the request's method, any token allowed."""
    req = f"{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
    assert env_of(echo_server.port, req)["REQUEST_METHOD"] == method


def test_script_name_empty_at_root(echo_server):
    """PEP 3333, environ: SCRIPT_NAME may be empty when the app is at the root."""
    env = env_of(echo_server.port, get("/a/b"))
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"


def test_script_name_from_root_path(root_path_server):
    """PEP 3333, environ: SCRIPT_NAME is the mount point (--root-path), stripped from the path;
    PATH_INFO keeps the rest."""
    env = env_of(root_path_server.port, get("/app/x/y?q=1"))
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/x/y"
    assert env["QUERY_STRING"] == "q=1"


def test_path_info_percent_decoded_as_latin1(echo_server):
    """PEP 3333, environ / native strings: PATH_INFO is the percent-decoded bytes read as
    latin-1 (UTF-8 bytes arrive as their latin-1 code points)."""
    assert env_of(echo_server.port, get("/caf%C3%A9"))["PATH_INFO"] == "/caf\xc3\xa9"


def test_path_info_not_normalised(echo_server):
    """PEP 3333, environ: the server passes the path through; no '//' or '/../' folding."""
    assert env_of(echo_server.port, get("//x/../y/./z"))["PATH_INFO"] == "//x/../y/./z"


def test_query_string_raw(echo_server):
    """PEP 3333, environ: QUERY_STRING is the raw query, not decoded."""
    env = env_of(echo_server.port, get("/p?a=%20b&c=d+e&x=caf%C3%A9&&"))
    assert env["QUERY_STRING"] == "a=%20b&c=d+e&x=caf%C3%A9&&"


def test_query_string_empty(echo_server):
    """PEP 3333, environ: QUERY_STRING may be empty or absent when there is no query."""
    assert env_of(echo_server.port, get("/p")).get("QUERY_STRING", "") == ""


def test_content_type_and_length(echo_server):
    """PEP 3333, environ: CONTENT_TYPE / CONTENT_LENGTH from the headers, not as HTTP_*."""
    req = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-test\r\nContent-Length: 5\r\n\r\nhello"
    )
    report = fetch(echo_server.port, req)
    env = report["environ"]
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert report["body"] == "hello"


def test_content_length_absent_without_body_header(echo_server):
    """PEP 3333, environ: CONTENT_LENGTH 'may be empty or absent'; qiao leaves it absent."""
    env = env_of(echo_server.port, get("/"))
    assert "CONTENT_LENGTH" not in env


def test_server_name_and_port(echo_server):
    """PEP 3333, environ: SERVER_NAME and SERVER_PORT (a str) are always present."""
    env = env_of(echo_server.port, get("/"))
    assert isinstance(env["SERVER_NAME"], str) and env["SERVER_NAME"]
    assert env["SERVER_PORT"] == str(echo_server.port)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_server_protocol(echo_server, version):
    """PEP 3333, environ: SERVER_PROTOCOL is the version the client used (over HTTP/2,
    whatever the request said before the bridge made it a stream: HTTP/2)."""
    env = env_of(echo_server.port, get("/", version=version))
    assert env["SERVER_PROTOCOL"] == ("HTTP/2" if H2 else f"HTTP/{version}")


def test_each_request_gets_a_fresh_environ(echo_server):
    """PEP 3333, environ: each call gets its own dict; what an app did to an earlier one
    (here: overwrote the method, protocol, scheme and SCRIPT_NAME, then cleared it) and
    the earlier request's own method and version do not carry over, on one connection."""
    with Conn(echo_server.port) as c:
        first = c.request(
            b"PROPFIND /?mutate HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        )
        assert first.status == 200, first
        assert json.loads(first.body)["environ"]["REQUEST_METHOD"] == "PROPFIND"
        resp = c.request(get("/"))
        assert resp.status == 200, resp
        env = json.loads(resp.body)["environ"]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == ("HTTP/2" if H2 else "HTTP/1.1")
    assert env["wsgi.url_scheme"] == ("https" if TLS else "http")
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/" and env["QUERY_STRING"] == ""


def test_remote_addr_and_port(echo_server):
    """CGI (RFC 3875 §4.1.8) via PEP 3333: REMOTE_ADDR, and REMOTE_PORT of the client socket."""
    report = fetch(echo_server.port, get("/"))
    assert report["environ"]["REMOTE_ADDR"] == "127.0.0.1"
    assert report["environ"]["REMOTE_PORT"] == str(report["client_port"])


@pytest.mark.parametrize("threads", ["1", "4"])
def test_remote_addr_on_every_request_of_a_connection(threads):
    """REMOTE_ADDR/REMOTE_PORT are the same on each request of a keep-alive connection (made
    once and shared), on one that closes it (`Connection: close`, made for that request
    alone), and on HTTP/1.0; correct again on the next connection."""
    with running_server("echo_environ:app", "--threads", threads) as server:
        for _ in range(2):
            with Conn(server.port) as c:
                port = str(c.sock.getsockname()[1])
                for request in (get("/"), get("/"), get("/", headers=b"Connection: close\r\n")):
                    env = json.loads(c.request(request).body)["environ"]
                    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", port)
            with Conn(server.port) as c:
                env = json.loads(c.request(get("/", version="1.0")).body)["environ"]
                assert env["REMOTE_PORT"] == str(c.sock.getsockname()[1])


@pytest.mark.parametrize("threads", ["1", "4"])
def test_connection_keys_follow_each_request(threads):
    """A keep-alive connection keeps its own copy of the environ's shared keys from its
    second request on (REMOTE_*, SERVER_NAME/SERVER_PORT, HTTP_HOST: RFC 3875 §4.1.8,
    §4.1.14-15). Every request must still see its own: after an app cleared its environ,
    when the Host changes, on HTTP/1.0 without Host, and back; the query and body of an
    earlier request never carry over (PEP 3333, environ)."""
    with (
        running_server("echo_environ:app", "--threads", threads) as server,
        Conn(server.port) as c,
    ):
        client_port = str(c.sock.getsockname()[1])

        def env(request):
            resp = c.request(request)
            assert resp.status == 200, resp
            report = json.loads(resp.body)
            assert report["environ"]["REMOTE_ADDR"] == "127.0.0.1"
            assert report["environ"]["REMOTE_PORT"] == client_port
            assert report["environ"]["SERVER_PORT"] == str(server.port)
            return report

        def host_keys(report):
            e = report["environ"]
            return e.get("HTTP_HOST"), e["SERVER_NAME"]

        a = ("a.example:81", "a.example")
        for request in (get("/", host=a[0]), get("/?mutate", host=a[0])):
            assert host_keys(env(request)) == a
        # The base made at the second request; that request's app cleared its own copy.
        assert host_keys(env(get("/", host=a[0]))) == a
        assert host_keys(env(get("/", host="b.example"))) == ("b.example", "b.example")
        http10 = env(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert host_keys(http10) == (None, "127.0.0.1")
        posted = env(
            f"POST /p?x=1 HTTP/1.1\r\nHost: {a[0]}\r\nContent-Length: 2\r\n\r\nhi".encode()
        )
        assert host_keys(posted) == a
        assert posted["body"] == "hi" and posted["environ"]["QUERY_STRING"] == "x=1"
        after = env(get("/", host=a[0]))
        assert host_keys(after) == a
        assert after["body"] == "" and after["environ"]["QUERY_STRING"] == ""
        assert after["environ"]["REQUEST_METHOD"] == "GET"
        assert "CONTENT_LENGTH" not in after["environ"]


def test_absolute_form_target_host_replaces_the_host_header(echo_server):
    """RFC 9112 §3.2.2: a server receiving an absolute-form target "MUST ignore the received
    Host header field (if any) and instead use the host information of the request-target":
    HTTP_HOST and SERVER_NAME come from the target; SERVER_PORT stays the port the request
    came in on (RFC 3875 §4.1.15). On one connection, an origin-form request after it gets
    its own Host again, and HTTP/1.0 without a Host still gets the target's host."""
    with Conn(echo_server.port) as c:

        def host_keys(request):
            resp = c.request(request)
            assert resp.status == 200, resp
            e = json.loads(resp.body)["environ"]
            return e.get("HTTP_HOST"), e["SERVER_NAME"], e["SERVER_PORT"], e["PATH_INFO"]

        port = str(echo_server.port)
        absolute = b"GET http://a.example:81/p HTTP/1.1\r\nHost: b.example\r\n\r\n"
        assert host_keys(absolute) == ("a.example:81", "a.example", port, "/p")
        assert host_keys(absolute) == ("a.example:81", "a.example", port, "/p")
        assert host_keys(get("/q", host="b.example")) == ("b.example", "b.example", port, "/q")
        http10 = b"GET https://[::1]:8443/r HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        assert host_keys(http10) == ("[::1]:8443", "[::1]", port, "/r")


def _http10_env(addr):
    """The environ of an HTTP/1.0 request without a Host header."""
    with Conn(addr) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        return json.loads(c.read_response().body)["environ"]


def _ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_client_and_server_addresses():
    """RFC 3875 §4.1.8 and §4.1.15-16 via PEP 3333: over IPv6, REMOTE_ADDR is the client's
    address as text (no brackets), REMOTE_PORT its port; SERVER_PORT the listening port,
    SERVER_NAME the Host's name, or the listening address without a Host (HTTP/1.0)."""
    with running_server("echo_environ:app", binds=("[::1]:0",)) as server:
        with Conn(("::1", server.port)) as c:
            env = json.loads(c.request(get("/", host="[::1]:1")).body)["environ"]
            assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("::1", str(c.sock.getsockname()[1]))
            assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", str(server.port))
        env = _http10_env(("::1", server.port))
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("::1", str(server.port))


def test_wildcard_listener_reports_the_address_connected_to():
    """RFC 3875 §4.1.14-15: bound to 0.0.0.0, a request without a Host header (HTTP/1.0)
    gets the address the client connected to as SERVER_NAME, and the port."""
    with running_server("echo_environ:app", binds=("0.0.0.0:0",)) as server:
        env = _http10_env(("127.0.0.1", server.port))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(server.port))
    assert env["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize("close", [False, True])
def test_request_sent_after_the_connection_waited(echo_server, close):
    """A new connection whose request comes later than the connection (a client that
    connects ahead, a slow network) is served when it comes; so is one whose head arrives
    in two parts, on a keep-alive connection and with `Connection: close` (RFC 9112 §9.3)."""
    extra = b"Connection: close\r\n" if close else b""
    with Conn(echo_server.port) as c:
        time.sleep(0.2)
        request = get("/", headers=extra)
        c.send(request[:10])
        time.sleep(0.2)
        c.send(request[10:])
        resp = c.read_response()
        assert resp.status == 200
        assert json.loads(resp.body)["environ"]["PATH_INFO"] == "/"
        if close:
            assert c.closed_by_peer()
        else:
            assert c.request(get("/again")).status == 200


def test_http_headers(echo_server):
    """PEP 3333, environ: HTTP_* from request headers, '-' -> '_', upper-cased."""
    env = env_of(
        echo_server.port, get("/", host="example.org:8080", headers=b"X-Custom-Thing: v1\r\n")
    )
    assert env["HTTP_HOST"] == "example.org:8080"
    assert env["HTTP_X_CUSTOM_THING"] == "v1"


def test_repeated_headers_joined(echo_server):
    """RFC 9110 §5.3 / PEP 3333: repeated field lines are combined with ','."""
    env = env_of(echo_server.port, get("/", headers=b"X-Rep: a\r\nX-Rep: b\r\nX-Rep: c\r\n"))
    assert env["HTTP_X_REP"].replace(" ", "") == "a,b,c"


def test_repeated_common_headers_joined(echo_server):
    """RFC 9110 §5.3: repeats of the headers the server keys specially (Accept, Cookie)
    are joined too, and a header sent once is not joined onto anything. Over HTTP/2 cookie
    fields are joined with '; ' (RFC 9113 §8.2.3)."""
    env = env_of(
        echo_server.port,
        get(
            "/",
            headers=b"Accept: a\r\nCookie: x=1\r\nAccept: b\r\nContent-Type: t/1\r\n"
            b"User-Agent: once\r\nCookie: y=2\r\n",
        ),
    )
    assert env["HTTP_ACCEPT"] == "a,b"
    assert env["HTTP_COOKIE"] == ("x=1; y=2" if H2 else "x=1,y=2")
    assert env["CONTENT_TYPE"] == "t/1"
    assert env["HTTP_USER_AGENT"] == "once"


def test_non_ascii_header_value_is_latin1(echo_server):
    """PEP 3333 "Unicode Issues": header bytes outside ASCII reach the environ as the
    latin-1 code points of those bytes."""
    env = env_of(echo_server.port, get("/", headers=b"X-Name: caf\xe9\r\n"))
    assert env["HTTP_X_NAME"] == "caf\u00e9"


def test_underscore_header_names_dropped(echo_server):
    """CGI header mapping: names with '_' are dropped so 'X_User' cannot pose as 'X-User'."""
    env = env_of(echo_server.port, get("/", headers=b"X_User: evil\r\nX-User: good\r\n"))
    assert env["HTTP_X_USER"] == "good"
    env = env_of(echo_server.port, get("/", headers=b"X_Only: evil\r\n"))
    assert "HTTP_X_ONLY" not in env


def test_wsgi_keys(echo_server):
    """PEP 3333, environ: the wsgi.* keys and their values for a one-process, one-thread server."""
    env = env_of(echo_server.port, get("/"))
    assert env["wsgi.version"] == {"type": "tuple", "value": [1, 0]}
    assert env["wsgi.url_scheme"] == ("https" if TLS else "http")
    assert isinstance(env["wsgi.input"], dict)
    assert isinstance(env["wsgi.errors"], dict)
    assert env["wsgi.multithread"] == {"type": "bool", "value": False}
    assert env["wsgi.multiprocess"] == {"type": "bool", "value": False}
    assert env["wsgi.run_once"] == {"type": "bool", "value": False}
    assert env["wsgi.input_terminated"] == {"type": "bool", "value": True}
    assert "wsgi.file_wrapper" in env


def test_multithread_true_with_threads(threaded_server):
    """PEP 3333, environ: wsgi.multithread is True when --threads > 1."""
    with Conn(threaded_server.port) as c:
        resp = c.request(get("/slow?s=0"))
    assert json.loads(resp.body)["multithread"] is True


def test_wsgi_errors_goes_to_error_log(behaviour_server):
    """PEP 3333, environ: wsgi.errors is a text stream the server logs."""
    mark = behaviour_server.log_mark()
    with Conn(behaviour_server.port) as c:
        assert c.request(get("/log-error")).status == 200
    assert "fixture wrote to wsgi.errors" in behaviour_server.wait_log("fixture wrote", mark)
