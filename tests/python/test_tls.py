"""HTTPS (RFC 9110 §4.2.2, TLS 1.2 RFC 5246 / TLS 1.3 RFC 8446, served by rustls): the
handshake and its versions, the environ over TLS, keep-alive and pipelining, large bodies
both ways (file_wrapper is read and encrypted, not sent with sendfile), client
certificates, the handshake timeout, certificates read again on HUP, real clients (curl,
Flask, Django), and one-line errors for bad TLS settings."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
from conftest import TESTS_DIR, is_gunicorn, running_server
from httpclient import parse_responses

pytest.importorskip("trustme")
from tls_certs import make_certs

pytestmark = pytest.mark.skipif(is_gunicorn(), reason="tests qiao's TLS engine and environ keys")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module", params=["1", "4"], ids=["inline", "threads4"])
def tls_server(request, certs):
    """apps.behaviour over TLS, with one thread (the loop calls the app) and with four."""
    flags = certs.server_flags() + ["--threads", request.param]
    with running_server("behaviour:app", *flags) as server:
        yield server


@pytest.fixture(scope="module")
def tls_echo(certs):
    with running_server("echo_environ:app", *certs.server_flags()) as server:
        yield server


def context(certs, *, version=None, client_cert=False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if client_cert:
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return ctx


@contextlib.contextmanager
def tls_socket(server, ctx, timeout=10.0):
    """A TLS connection to `server`, verified as localhost."""
    raw_sock = socket.create_connection((server.host, server.port), timeout=timeout)
    with ctx.wrap_socket(raw_sock, server_hostname="localhost") as sock:
        yield sock


def fetch(server, ctx, path="/", method="GET", body=None, headers=None):
    conn = http.client.HTTPSConnection(server.host, server.port, context=ctx, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


def environ_of(server, ctx, path="/"):
    resp, data = fetch(server, ctx, path)
    assert resp.status == 200
    return json.loads(data)["environ"]


def test_banner_says_https(tls_echo):
    assert tls_echo.url.startswith("https://127.0.0.1:")


def test_environ_over_tls13(tls_echo, certs):
    """PEP 3333 wsgi.url_scheme is "https"; mod_ssl's HTTPS and SSL_* keys describe the
    session; no client certificate was asked for."""
    env = environ_of(tls_echo, context(certs))
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    # The server's order decides (AES-128 first), not the client's (OpenSSL: AES-256).
    assert env["SSL_CIPHER"] == "TLS13_AES_128_GCM_SHA256"
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in env
    assert env["SERVER_PORT"] == str(tls_echo.port)


def test_tls12_is_served(tls_echo, certs):
    """TLS 1.2 (RFC 5246) with an ECDHE AEAD suite."""
    env = environ_of(tls_echo, context(certs, version=ssl.TLSVersion.TLSv1_2))
    assert env["SSL_PROTOCOL"] == "TLSv1.2"
    assert env["SSL_CIPHER"].startswith("TLS_ECDHE_")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_protocols_older_than_tls12_are_refused(tls_echo, certs):
    """RFC 8996: TLS 1.0 and 1.1 are deprecated; the server does not speak them (the client
    is allowed to offer them: security level 0)."""
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = context(certs, version=version)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            fetch(tls_echo, ctx)


def test_min_version_13_refuses_tls12(certs):
    flags = certs.server_flags() + ["--tls-min-version", "1.3"]
    with running_server("echo_environ:app", *flags) as server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            fetch(server, context(certs, version=ssl.TLSVersion.TLSv1_2))
        assert environ_of(server, context(certs))["SSL_PROTOCOL"] == "TLSv1.3"


def test_cipher_list_is_the_servers_choice(certs):
    """--ciphers takes OpenSSL's names as well as IANA's; a TLS 1.2 client gets the one
    allowed suite."""
    flags = certs.server_flags() + [
        "--ciphers",
        "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305:TLS13_AES_256_GCM_SHA384",
    ]
    with running_server("echo_environ:app", *flags) as server:
        env = environ_of(server, context(certs, version=ssl.TLSVersion.TLSv1_2))
        assert "CHACHA20_POLY1305" in env["SSL_CIPHER"]
        assert environ_of(server, context(certs))["SSL_CIPHER"] == "TLS13_AES_256_GCM_SHA384"


def test_plain_http_to_the_tls_port_gets_a_400(tls_echo):
    """A client that speaks plain HTTP to the TLS port gets a readable answer, not a TLS
    alert it cannot read."""
    with socket.create_connection((tls_echo.host, tls_echo.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"plain HTTP was sent to a TLS port" in data


def test_keep_alive_and_pipelining(tls_server, certs):
    """RFC 9112 §9.3 persistence and §9.3.2 pipelining, inside one TLS session."""
    ctx = context(certs)
    with tls_socket(tls_server, ctx) as sock:
        req = b"GET /single HTTP/1.1\r\nHost: localhost\r\n\r\n"
        sock.sendall(req * 3)
        data = b""
        while len(parse_responses(data)) < 3:
            chunk = sock.recv(65536)
            assert chunk, "closed before three responses"
            data += chunk
        assert [r.status for r in parse_responses(data)] == [200, 200, 200]
        sock.sendall(b"GET /single HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert parse_responses(rest)[0].status == 200


def test_upload_and_echo_3_mib(tls_server, certs):
    """A body larger than any TLS record or buffer arrives whole in wsgi.input."""
    body = bytes(range(256)) * (3 * 4096)
    resp, data = fetch(tls_server, context(certs), "/echo", "POST", body)
    assert resp.status == 200
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(body).hexdigest()


def test_file_wrapper_over_tls(tls_server, certs):
    """PEP 3333 wsgi.file_wrapper: a 32 MiB file, read and encrypted by the engine."""
    resp, data = fetch(tls_server, context(certs), "/bigfile")
    assert resp.status == 200
    assert len(data) == 32 * 1024 * 1024 and data.count(0) == len(data)


def test_stream_over_tls(tls_server, certs):
    """PEP 3333 streaming: 64 blocks of 64 KiB from a generator, chunked, all there."""
    resp, data = fetch(tls_server, context(certs), "/bigstream?n=64&key=tls")
    assert resp.status == 200
    assert len(data) == 64 * 65536
    assert all(data[i * 65536] == i % 256 for i in range(64))


def test_slow_reader_gets_everything(tls_server, certs):
    """A client that reads late and slowly, so that the server's writes fill the socket
    and wait (encrypted records held back), still receives every byte in order."""
    ctx = context(certs)
    with tls_socket(tls_server, ctx, timeout=20) as sock:
        sock.sendall(b"GET /bigstream?n=128&key=slow HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        time.sleep(0.5)
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
            if len(data) < 1 << 20:
                time.sleep(0.005)
    [resp] = parse_responses(bytes(data))
    assert resp.status == 200 and len(resp.body) == 128 * 65536
    assert all(resp.body[i * 65536] == i % 256 for i in range(128))


def test_client_certificate_required(certs):
    """--cert-reqs 2: a client without a certificate is refused in the handshake; one with
    a certificate signed by --ca-certs is served, and the environ describes it."""
    flags = certs.server_flags() + ["--ca-certs", str(certs.ca), "--cert-reqs", "2"]
    with running_server("echo_environ:app", *flags) as server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            fetch(server, context(certs))
        env = environ_of(server, context(certs, client_cert=True))
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert "CN=test client" in env["SSL_CLIENT_S_DN"]
        assert env["SSL_CLIENT_I_DN"]
        from cryptography import x509

        pem = certs.client_cert.read_bytes()
        expected = x509.load_pem_x509_certificate(pem)
        sent = x509.load_pem_x509_certificate(env["SSL_CLIENT_CERT"].encode())
        assert sent == expected
        assert int(env["SSL_CLIENT_M_SERIAL"], 16) == expected.serial_number


def test_client_certificate_optional(certs, tmp_path):
    """--cert-reqs 1: without a certificate the client is served (SSL_CLIENT_VERIFY NONE);
    a certificate from another authority is refused."""
    flags = certs.server_flags() + ["--ca-certs", str(certs.ca), "--cert-reqs", "optional"]
    with running_server("echo_environ:app", *flags) as server:
        assert environ_of(server, context(certs))["SSL_CLIENT_VERIFY"] == "NONE"
        assert environ_of(server, context(certs, client_cert=True))["SSL_CLIENT_VERIFY"] == (
            "SUCCESS"
        )
        stranger = make_certs(tmp_path)
        ctx = context(certs)
        ctx.load_cert_chain(str(stranger.client_cert), str(stranger.client_key))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            fetch(server, ctx)


def test_handshake_timeout_closes_silent_clients(certs):
    """A client that connects and never sends a ClientHello is closed after
    --tls-handshake-timeout, and others are served meanwhile."""
    flags = certs.server_flags() + ["--tls-handshake-timeout", "0.5"]
    with running_server("echo_environ:app", *flags) as server, socket.create_connection(
        (server.host, server.port), timeout=5
    ) as silent:
        assert environ_of(server, context(certs))["HTTPS"] == "on"
        started = time.monotonic()
        assert silent.recv(100) == b""
        assert time.monotonic() - started < 4


def test_combined_pem_and_pkcs1_rsa_key(certs, tmp_path):
    """--certfile alone with key and chain in one file; an RSA key in PKCS#1 form."""
    with running_server("echo_environ:app", "--certfile", str(certs.combined)) as server:
        assert environ_of(server, context(certs))["HTTPS"] == "on"

    import trustme
    from cryptography.hazmat.primitives import serialization

    rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    issued = rsa_ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    (tmp_path / "rsa-key.pem").write_bytes(pkcs1)
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "rsa-cert.pem"))
    rsa_ca.cert_pem.write_to_path(str(tmp_path / "rsa-ca.pem"))
    flags = ["--certfile", str(tmp_path / "rsa-cert.pem"), "--keyfile", str(tmp_path / "rsa-key.pem")]
    with running_server("echo_environ:app", *flags) as server:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "rsa-ca.pem"))
        assert environ_of(server, ctx)["HTTPS"] == "on"


def test_encrypted_key_with_its_password(certs, tmp_path):
    """An encrypted PKCS#8 key (PBES2) opens with --keyfile-password, or with the password
    in QIAO_KEYFILE_PASSWORD, out of sight of ps."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    ))
    flags = ["--certfile", str(certs.cert), "--keyfile", str(encrypted)]
    with running_server("echo_environ:app", *flags, "--keyfile-password", "s3cret") as server:
        assert environ_of(server, context(certs))["HTTPS"] == "on"
    with running_server("echo_environ:app", *flags,
                        extra_env={"QIAO_KEYFILE_PASSWORD": "s3cret"}) as server:
        assert environ_of(server, context(certs))["HTTPS"] == "on"


def test_certificates_are_read_again_on_hup(certs, tmp_path):
    """A reload (HUP) starts workers that read the certificate files again; a request in
    flight on the old certificate finishes."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(certs.cert, cert)
    shutil.copy(certs.key, key)
    flags = ["--certfile", str(cert), "--keyfile", str(key), "--threads", "2"]

    def serial_seen(server) -> int:
        from cryptography import x509

        with tls_socket(server, context(certs), timeout=5) as sock:
            der = sock.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    with running_server("behaviour:app", *flags) as server:
        first = serial_seen(server)
        renewed = certs.authority.issue_cert("localhost", "127.0.0.1")
        renewed.private_key_pem.write_to_path(str(key))
        renewed.cert_chain_pems[0].write_to_path(str(cert))
        conn = http.client.HTTPSConnection(server.host, server.port, context=context(certs),
                                           timeout=20)
        conn.request("GET", "/slow?s=1.5")
        time.sleep(0.3)
        mark = server.log_mark()
        server.proc.send_signal(signal.SIGHUP)
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["multithread"] is True
        conn.close()
        server.wait_log("Booting worker", mark, timeout=15)
        deadline = time.monotonic() + 10
        while serial_seen(server) == first:
            assert time.monotonic() < deadline, "the new workers still show the old certificate"
            time.sleep(0.2)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(tls_echo, certs):
    """curl, the client users test with, over TLS 1.3 and TLS 1.2."""
    for extra in ([], ["--tlsv1.2", "--tls-max", "1.2"]):
        out = subprocess.run(
            ["curl", "-sS", "--cacert", str(certs.ca), *extra,
             f"https://localhost:{tls_echo.port}/curl?x=1"],
            capture_output=True, timeout=20, check=False,
        )
        assert out.returncode == 0, out.stderr
        env = json.loads(out.stdout)["environ"]
        assert env["QUERY_STRING"] == "x=1" and env["HTTPS"] == "on"
        assert env["SSL_PROTOCOL"] == ("TLSv1.2" if extra else "TLSv1.3")


@pytest.mark.parametrize(
    "app, path",
    [("flask_app:app", "/whoami"), ("django_app:application", "/whoami/")],
    ids=["flask", "django"],
)
def test_frameworks_see_https(certs, app, path):
    """Flask's url_for(_external=True) and Django's build_absolute_uri() make https://
    links, and both call the request secure."""
    pytest.importorskip(app.split("_")[0])
    with running_server(app, *certs.server_flags()) as server:
        _, data = fetch(server, context(certs), path)
        got = json.loads(data)
        assert got["is_secure"] is True
        assert got["url"] == f"https://127.0.0.1:{server.port}{path}"


BAD_SETTINGS = [
    (["--certfile", "{d}/missing.pem"], "--certfile: {d}/missing.pem: no such file"),
    (["--certfile", "{d}/garbage.pem"], "--certfile: {d}/garbage.pem: no PEM certificate"),
    (["--certfile", "{cert}", "--keyfile", "{d}/other-key.pem"],
     "--keyfile: {d}/other-key.pem: the key does not match the certificate"),
    (["--certfile", "{cert}", "--keyfile", "{d}/encrypted.pem"],
     "--keyfile: {d}/encrypted.pem: the key is encrypted; give its password"),
    (["--certfile", "{cert}", "--keyfile", "{d}/encrypted.pem", "--keyfile-password", "wrong"],
     "--keyfile-password: the password does not decrypt {d}/encrypted.pem"),
    (["--certfile", "{cert}", "--keyfile", "{cert}"], "--keyfile: {cert}: no PEM private key"),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--ciphers", "RC4-MD5"],
     "--ciphers: unknown cipher suite \"RC4-MD5\""),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--cert-reqs", "2"],
     "--cert-reqs: client certificates need --ca-certs"),
    (["--keyfile", "{key}"], "--keyfile: needs --certfile"),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--tls-min-version", "1.1"],
     "--tls-min-version: expected 1.2 or 1.3"),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--cert-reqs", "maybe"],
     "--cert-reqs: expected 0, 1, 2, none, optional or required"),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--protocol", "uwsgi"],
     "--protocol: not with --certfile"),
]


@pytest.mark.parametrize("flags, message", BAD_SETTINGS)
def test_bad_tls_settings_exit_2_with_one_line(certs, tmp_path, flags, message):
    """A bad certificate, key or TLS setting stops the start with one line naming it."""
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    other = certs.authority.issue_cert("localhost")
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    (tmp_path / "encrypted.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))
    names = {"d": tmp_path, "cert": certs.cert, "key": certs.key}
    argv = [f.format(**names) for f in flags]
    out = subprocess.run(
        [sys.executable, "-m", "qiao", "apps.echo_environ:app", "-b", "127.0.0.1:0", *argv],
        capture_output=True, text=True, timeout=30, cwd=str(TESTS_DIR), check=False,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("qiao: error: " + message.format(**names)), lines[0]


def test_sslyze_finds_no_old_protocol_and_no_weak_cipher(tls_echo, tmp_path):
    """sslyze's full scan: no SSL 2/3, TLS 1.0 or 1.1 (RFC 8996); every TLS 1.2 suite is
    ECDHE with an AEAD (forward secrecy, no CBC, no RC4); TLS 1.3 served; not vulnerable to
    Heartbleed, ROBOT, CCS injection, compression (CRIME) or client renegotiation."""
    pytest.importorskip("sslyze")
    out = tmp_path / "scan.json"
    run = subprocess.run(
        [sys.executable, "-m", "sslyze", f"127.0.0.1:{tls_echo.port}", f"--json_out={out}"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    # (Its exit status also reflects the test certificate, which no public store trusts.)
    assert out.exists(), run.stdout[-2000:] + run.stderr[-2000:]
    scan = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]

    def accepted(key: str) -> list[str]:
        assert scan[key]["status"] == "COMPLETED", scan[key]
        return [c["cipher_suite"]["name"] for c in scan[key]["result"]["accepted_cipher_suites"]]

    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert accepted(f"{old}_cipher_suites") == [], old
    tls12 = accepted("tls_1_2_cipher_suites")
    assert tls12 and all("ECDHE" in s and ("GCM" in s or "CHACHA20" in s) for s in tls12), tls12
    assert accepted("tls_1_3_cipher_suites")
    result = {k: scan[k]["result"] for k in (
        "heartbleed", "robot", "openssl_ccs_injection", "tls_compression", "session_renegotiation")}
    assert result["heartbleed"]["is_vulnerable_to_heartbleed"] is False
    assert result["robot"]["robot_result"].startswith("NOT_VULNERABLE")
    assert result["openssl_ccs_injection"]["is_vulnerable_to_ccs_injection"] is False
    assert result["tls_compression"]["supports_compression"] is False
    assert result["session_renegotiation"]["is_vulnerable_to_client_renegotiation_dos"] is False


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_a_client_certificate(certs):
    """curl presenting a client certificate (--cert/--key) to --cert-reqs 2: served, and the
    environ names it; without one, curl's handshake fails."""
    flags = certs.server_flags() + ["--ca-certs", str(certs.ca), "--cert-reqs", "2"]
    with running_server("echo_environ:app", *flags) as server:
        url = f"https://localhost:{server.port}/mtls"
        base = ["curl", "-sS", "--cacert", str(certs.ca)]
        out = subprocess.run(
            [*base, "--cert", str(certs.client_cert), "--key", str(certs.client_key), url],
            capture_output=True, timeout=20, check=False, text=True,
        )
        assert out.returncode == 0, out.stderr
        env = json.loads(out.stdout)["environ"]
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS" and "CN=test client" in env["SSL_CLIENT_S_DN"]
        refused = subprocess.run([*base, url], capture_output=True, timeout=20, check=False)
        assert refused.returncode != 0
