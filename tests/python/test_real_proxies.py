"""qiao behind the real proxies: nginx (proxy_pass with the usual X-Forwarded-* lines, and
terminating TLS) and HAProxy (send-proxy, send-proxy-v2, send-proxy-v2-ssl), each started by
the test on free ports with its own configuration and temporary prefix, never the system
service. Flask and Django apps behind them build the right absolute URLs and see the
client's address and is_secure(), with none of ProxyFix / SECURE_PROXY_SSL_HEADER.

The client connects from 127.0.0.2 (Linux routes all of 127.0.0.0/8 to loopback), so its
address differs from the proxies' 127.0.0.1, which qiao trusts by default.

Skips, with the reason, where nginx, haproxy or openssl is not installed (Debian:
`apt-get install nginx-light haproxy`; `.ci/run` installs them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from conftest import is_gunicorn, running_server
from httpclient import parse_response

pytestmark = pytest.mark.skipif(is_gunicorn(), reason="qiao's proxy settings")

CLIENT = "127.0.0.2"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"
)
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (Debian: apt-get install haproxy)"
)
needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is not installed (to make a certificate)"
)


def free_port() -> int:
    """A port for a proxy to listen on, below the kernel's ephemeral range: a port bound
    by asking for port 0 (the upstream qiao, started after this is chosen, or any client)
    can then never be this one, which the proxy binds only later."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(max(low // 2, 1024), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the proxy exited ({proc.returncode}):\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"the proxy did not listen on {port}:\n{log.read_text()}")
            time.sleep(0.05)


class Proxy:
    """A proxy process of the test's own, stopped (and reaped) at the end."""

    def __init__(self, argv: list[str], port: int, log: Path):
        self.log = log
        self.port = port
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        wait_port(port, self.proc, log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_nginx(tmp: Path, server_block: str, port: int) -> Proxy:
    """nginx in the foreground with one process (no user switch, no system paths): its
    prefix, pid, logs and temporary files all under `tmp`."""
    for d in ("logs", "tmp"):
        (tmp / d).mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/tmp/body;
    proxy_temp_path {tmp}/tmp/proxy;
    fastcgi_temp_path {tmp}/tmp/fastcgi;
    uwsgi_temp_path {tmp}/tmp/uwsgi;
    scgi_temp_path {tmp}/tmp/scgi;
    {server_block}
}}
""")
    return Proxy([NGINX, "-p", str(tmp), "-c", str(conf)], port, tmp / "logs" / "nginx.out")


def start_haproxy(tmp: Path, config: str, port: int) -> Proxy:
    conf = tmp / "haproxy.cfg"
    conf.write_text(config)
    return Proxy([HAPROXY, "-f", str(conf), "-db"], port, tmp / "haproxy.out")


# docs/deployment.md's proxy lines.
NGINX_LOCATION = """
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Forwarded "";
            proxy_redirect off;
        }}
"""


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for www.example.com, made with openssl for this test."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=www.example.com", "-addext", "subjectAltName=DNS:www.example.com",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def fetch(port: int, path: str, host: str = "www.example.com", headers: bytes = b"",
          tls: bool = False) -> dict:
    """GET `path` from 127.0.0.2 through the proxy on `port`; the JSON body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(CLIENT, 0))
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
        sock = ctx.wrap_socket(sock, server_hostname=host)
    with sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
            + headers + b"\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    resp, _ = parse_response(data, "GET", eof=True)
    assert resp is not None and resp.status == 200, data[:500]
    return json.loads(resp.body)


@pytest.fixture(scope="module")
def flask_qiao():
    pytest.importorskip("flask")
    with running_server("flask_app:app") as server:
        yield server


@pytest.fixture(scope="module")
def django_qiao():
    pytest.importorskip("django")
    with running_server("django_app:application") as server:
        yield server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (to make a certificate)")
    return make_certificate(tmp_path_factory.mktemp("tls"))


# -- nginx ---------------------------------------------------------------------------


@needs_nginx
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_nginx_proxy_pass(tmp_path, request, framework):
    """nginx proxy_pass with X-Forwarded-For / -Proto (docs/deployment.md): the app sees
    the client's address and builds http URLs on the client's Host; a client's own forged
    X-Forwarded-For is not believed (nginx appends the address it saw)."""
    upstream = request.getfixturevalue(f"{framework}_qiao")
    path = "/whoami" if framework == "flask" else "/whoami/"
    port = free_port()
    proxy = start_nginx(tmp_path, f"""
    server {{
        listen 127.0.0.1:{port};
        {NGINX_LOCATION.format(upstream=upstream.port)}
    }}""", port)
    try:
        got = fetch(port, path)
        assert got == {"url": f"http://www.example.com{path}", "remote_addr": CLIENT,
                       "is_secure": False, "host": "www.example.com"}
        forged = fetch(port, path, headers=b"X-Forwarded-For: 10.9.9.9, 127.0.0.1\r\n"
                                             b"Forwarded: for=10.9.9.9\r\n")
        assert forged["remote_addr"] == CLIENT
    finally:
        proxy.stop()


@needs_nginx
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_nginx_terminating_tls(tmp_path, request, tls_files, framework):
    """nginx terminating TLS with a certificate made here: X-Forwarded-Proto https makes
    Flask's url_for(_external=True) and Django's build_absolute_uri https, and
    is_secure() true."""
    upstream = request.getfixturevalue(f"{framework}_qiao")
    path = "/whoami" if framework == "flask" else "/whoami/"
    cert, key = tls_files
    port = free_port()
    proxy = start_nginx(tmp_path, f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {NGINX_LOCATION.format(upstream=upstream.port)}
    }}""", port)
    try:
        got = fetch(port, path, tls=True)
        assert got == {"url": f"https://www.example.com{path}", "remote_addr": CLIENT,
                       "is_secure": True, "host": "www.example.com"}
    finally:
        proxy.stop()


@needs_nginx
def test_nginx_mounted_under_a_prefix(tmp_path):
    """nginx serving the app under /app/ with X-Forwarded-Prefix and
    --forwarded-headers prefix: Flask's URLs carry the prefix."""
    pytest.importorskip("flask")
    port = free_port()
    with running_server("flask_app:app", "--forwarded-headers", "prefix") as upstream:
        proxy = start_nginx(tmp_path, f"""
    server {{
        listen 127.0.0.1:{port};
        location /app/ {{
            proxy_pass http://127.0.0.1:{upstream.port}/;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Prefix /app;
        }}
    }}""", port)
        try:
            got = fetch(port, "/app/whoami")
        finally:
            proxy.stop()
    assert got["url"] == "http://www.example.com/app/whoami"


@needs_nginx
def test_nginx_from_an_untrusted_address(tmp_path, flask_qiao):
    """The same nginx, with qiao trusting another network: nothing forwarded counts."""
    pytest.importorskip("flask")
    port = free_port()
    with running_server("flask_app:app", "--forwarded-allow-ips", "10.0.0.0/8") as upstream:
        proxy = start_nginx(tmp_path, f"""
    server {{
        listen 127.0.0.1:{port};
        {NGINX_LOCATION.format(upstream=upstream.port)}
    }}""", port)
        try:
            got = fetch(port, "/whoami")
        finally:
            proxy.stop()
    assert got["remote_addr"] == "127.0.0.1"


# -- HAProxy ---------------------------------------------------------------------------

HAPROXY_GLOBAL = """
global
    maxconn 64
defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


@needs_haproxy
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_haproxy_send_proxy(tmp_path, framework, send):
    """HAProxy in TCP mode with send-proxy (PROXY v1) and send-proxy-v2 in front of qiao
    --proxy-protocol: the app sees the client's address; its health checks (which carry
    the header too) keep the server up."""
    pytest.importorskip(framework)
    app = "flask_app:app" if framework == "flask" else "django_app:application"
    path = "/whoami" if framework == "flask" else "/whoami/"
    port = free_port()
    with running_server(app, "--proxy-protocol") as upstream:
        proxy = start_haproxy(tmp_path, HAPROXY_GLOBAL.format(mode="tcp") + f"""
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server qiao 127.0.0.1:{upstream.port} {send} check inter 200ms
""", port)
        try:
            got = fetch(port, path)
        finally:
            proxy.stop()
        assert "Closed the connection" not in upstream.log()
    assert got == {"url": f"http://www.example.com{path}", "remote_addr": CLIENT,
                   "is_secure": False, "host": "www.example.com"}


@needs_haproxy
@needs_openssl
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_haproxy_terminating_tls_with_send_proxy_v2_ssl(tmp_path, tls_files, framework):
    """HAProxy terminating TLS and sending PROXY v2 with the SSL TLV
    (send-proxy-v2-ssl): the app sees https (is_secure, https URLs) and the client."""
    pytest.importorskip(framework)
    app = "flask_app:app" if framework == "flask" else "django_app:application"
    path = "/whoami" if framework == "flask" else "/whoami/"
    cert, key = tls_files
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    port = free_port()
    with running_server(app, "--proxy-protocol") as upstream:
        proxy = start_haproxy(tmp_path, HAPROXY_GLOBAL.format(mode="tcp") + f"""
frontend web
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend app
backend app
    server qiao 127.0.0.1:{upstream.port} send-proxy-v2-ssl
""", port)
        try:
            got = fetch(port, path, tls=True)
        finally:
            proxy.stop()
    assert got == {"url": f"https://www.example.com{path}", "remote_addr": CLIENT,
                   "is_secure": True, "host": "www.example.com"}


@needs_haproxy
@needs_openssl
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_tls_passthrough_with_send_proxy(tmp_path, tls_files, send):
    """HAProxy in TCP mode passing TLS through to qiao (which holds the certificate) with a
    PROXY header in clear before the ClientHello, as HAProxy and cloud load balancers
    send it: qiao reads the header, then the handshake; the app sees https and the
    client's address."""
    pytest.importorskip("flask")
    cert, key = tls_files
    port = free_port()
    with running_server("flask_app:app", "--proxy-protocol", "--certfile", str(cert),
                        "--keyfile", str(key)) as upstream:
        proxy = start_haproxy(tmp_path, HAPROXY_GLOBAL.format(mode="tcp") + f"""
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server qiao 127.0.0.1:{upstream.port} {send}
""", port)
        try:
            got = fetch(port, "/whoami", tls=True)
        finally:
            proxy.stop()
        assert "Closed the connection" not in upstream.log()
    assert got == {"url": "https://www.example.com/whoami", "remote_addr": CLIENT,
                   "is_secure": True, "host": "www.example.com"}


@needs_haproxy
def test_haproxy_http_mode_forwardfor(tmp_path):
    """HAProxy in HTTP mode with `option forwardfor` and X-Forwarded-Proto set: the
    forwarded headers path, as with nginx."""
    pytest.importorskip("flask")
    port = free_port()
    with running_server("flask_app:app") as upstream:
        proxy = start_haproxy(tmp_path, HAPROXY_GLOBAL.format(mode="http") + f"""
frontend web
    bind 127.0.0.1:{port}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend app
backend app
    server qiao 127.0.0.1:{upstream.port}
""", port)
        try:
            got = fetch(port, "/whoami", headers=b"X-Forwarded-For: 10.9.9.9\r\n")
        finally:
            proxy.stop()
    assert got == {"url": "https://www.example.com/whoami", "remote_addr": CLIENT,
                   "is_secure": True, "host": "www.example.com"}


# -- nginx uwsgi_pass ------------------------------------------------------------------

# Debian's /etc/nginx/uwsgi_params, written out so that the test needs no system file.
UWSGI_PARAMS = """
            uwsgi_param QUERY_STRING $query_string;
            uwsgi_param REQUEST_METHOD $request_method;
            uwsgi_param CONTENT_TYPE $content_type;
            uwsgi_param CONTENT_LENGTH $content_length;
            uwsgi_param REQUEST_URI $request_uri;
            uwsgi_param PATH_INFO $document_uri;
            uwsgi_param DOCUMENT_ROOT $document_root;
            uwsgi_param SERVER_PROTOCOL $server_protocol;
            uwsgi_param REQUEST_SCHEME $scheme;
            uwsgi_param HTTPS $https if_not_empty;
            uwsgi_param REMOTE_ADDR $remote_addr;
            uwsgi_param REMOTE_PORT $remote_port;
            uwsgi_param SERVER_PORT $server_port;
            uwsgi_param SERVER_NAME $server_name;
"""


@needs_nginx
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("framework", ["flask", "django"])
def test_nginx_uwsgi_pass(tmp_path, request, framework, tls):
    """nginx uwsgi_pass with Debian's uwsgi_params to qiao --protocol uwsgi (a uWSGI
    team's nginx configuration, unchanged): the app builds the right URLs, sees the
    client's address and is_secure() behind TLS terminated by nginx."""
    pytest.importorskip(framework)
    app = "flask_app:app" if framework == "flask" else "django_app:application"
    path = "/whoami" if framework == "flask" else "/whoami/"
    port = free_port()
    listen = f"listen 127.0.0.1:{port};"
    if tls:
        cert, key = request.getfixturevalue("tls_files")
        listen = (f"listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; "
                  f"ssl_certificate_key {key};")
    with running_server(app, "--protocol", "uwsgi") as upstream:
        proxy = start_nginx(tmp_path, f"""
    server {{
        {listen}
        location / {{
            {UWSGI_PARAMS}
            uwsgi_pass 127.0.0.1:{upstream.port};
        }}
    }}""", port)
        try:
            got = fetch(port, path, tls=tls)
        finally:
            proxy.stop()
    scheme = "https" if tls else "http"
    assert got == {"url": f"{scheme}://www.example.com{path}", "remote_addr": CLIENT,
                   "is_secure": tls, "host": "www.example.com"}


@needs_nginx
def test_nginx_uwsgi_pass_post_body(tmp_path):
    """A request body through uwsgi_pass reaches the app whole (CONTENT_LENGTH framing)."""
    pytest.importorskip("flask")
    port = free_port()
    with running_server("flask_app:app", "--protocol", "uwsgi") as upstream:
        proxy = start_nginx(tmp_path, f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {UWSGI_PARAMS}
            uwsgi_pass 127.0.0.1:{upstream.port};
        }}
    }}""", port)
        try:
            body = b"x" * 100_000
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            with sock:
                sock.sendall(b"POST /data HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                             b"Content-Length: 100000\r\n\r\n" + body)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        finally:
            proxy.stop()
    resp, _ = parse_response(data, "POST", eof=True)
    assert resp.status == 200
    assert json.loads(resp.body)["size"] == 100_000


# -- many instances ----------------------------------------------------------------------


@needs_haproxy
def test_rolling_restart_behind_haproxy_loses_no_request(tmp_path):
    """Two qiao instances behind HAProxy with health checks (docs/deployment.md); under
    load, one is stopped (TERM: a graceful stop) and started again, then the other: no
    request fails, and both instances, before and after their restart, served."""
    from loadgen import Load

    ports = [free_port(), free_port()]
    logs = [[tmp_path / f"access-{i}-{n}.log" for n in range(2)] for i in range(2)]

    def start(i: int, n: int):
        return running_server(
            "echo_environ:app", "--access-logfile", str(logs[i][n]),
            "--access-logformat", "%(s)s", binds=[f"127.0.0.1:{ports[i]}"],
        )

    port = free_port()
    proxy = start_haproxy(tmp_path, HAPROXY_GLOBAL.format(mode="http") + f"""
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    timeout check 1s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    option httpchk GET /healthz
    server a 127.0.0.1:{ports[0]} check inter 100ms fall 1 rise 2
    server b 127.0.0.1:{ports[1]} check inter 100ms fall 1 rise 2
""", port)
    running = [start(0, 0), start(1, 0)]
    servers = [cm.__enter__() for cm in running]
    try:
        time.sleep(0.5)  # both seen up (rise 2 at 100 ms)
        with Load(port, clients=4, seconds=60) as load:
            time.sleep(1.0)
            for i in (0, 1):
                running[i].__exit__(None, None, None)  # TERM, wait for the exit
                running[i] = start(i, 1)
                servers[i] = running[i].__enter__()
                time.sleep(1.0)  # back in rotation, and serving
            tally = load.stop()
    finally:
        for cm in running:
            cm.__exit__(None, None, None)
        proxy.stop()
    assert tally.failed == 0 and tally.refused == 0, tally.errors
    assert tally.ok > 200
    served = [[len(p.read_text().splitlines()) if p.exists() else 0 for p in pair]
              for pair in logs]
    assert all(n > 0 for pair in served for n in pair), served
