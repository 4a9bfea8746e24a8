"""HTTP/2 (RFC 9113) by the `h2` crate: over TLS by ALPN (RFC 7301) and cleartext by prior
knowledge (§3.3); each stream one WSGI call (PEP 3333), streams of a connection served
concurrently; flow control, limits, and the attacks the field has seen (rapid reset, the
CONTINUATION flood, HPACK bombs, floods of control frames, streams that never open their
window, connections that never finish their preface), with real clients (curl, h2load,
httpx) and frameworks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import uuid

import pytest
from apps.behaviour import burst_gate
from conftest import is_gunicorn, running_server

pytest.importorskip("trustme")
pytest.importorskip("h2")
from h2client import H2Client, RawH2
from tls_certs import make_certs

pytestmark = pytest.mark.skipif(is_gunicorn(), reason="tests qiao's HTTP/2 engine")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("h2"))


@pytest.fixture(scope="module", params=["1", "4"], ids=["inline", "threads4"])
def h2_server(request, certs):
    flags = [*certs.server_flags(), "--threads", request.param]
    with running_server("behaviour:app", *flags) as server:
        server.threads = int(request.param)
        yield server


@pytest.fixture(scope="module")
def h2_echo(certs):
    with running_server("echo_environ:app", *certs.server_flags()) as server:
        yield server


def client(server, certs, **kwargs) -> H2Client:
    return H2Client(server.host, server.port, ca=str(certs.ca), **kwargs)


def environ_of(result) -> dict:
    assert result.status == 200, (result.status, bytes(result.body[:200]))
    return json.loads(bytes(result.body))["environ"]


def test_alpn_chooses_h2_and_the_environ_says_so(h2_echo, certs):
    """RFC 9113 §3.2: h2 by ALPN; PEP 3333 environ: SERVER_PROTOCOL HTTP/2, the
    :authority as HTTP_HOST, the :path split into PATH_INFO and QUERY_STRING."""
    with client(h2_echo, certs) as c:
        r = c.get("/a%20b?x=1", authority=f"localhost:{h2_echo.port}")
    env = environ_of(r)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["HTTP_HOST"] == f"localhost:{h2_echo.port}"
    assert env["SERVER_NAME"] == "localhost"
    assert env["PATH_INFO"] == "/a b" and env["QUERY_STRING"] == "x=1"
    assert env["RAW_URI"] == "/a%20b?x=1"
    # RFC 9113 §8.2.2: no connection-specific fields in an HTTP/2 response.
    names = {n for n, _ in r.headers}
    assert not names & {"connection", "keep-alive", "transfer-encoding"}
    assert r.header("content-length") == str(len(r.body))
    assert r.header("server") == "qiao" and r.header("date")


def test_http11_is_still_offered(h2_echo, certs, tmp_path):
    """A client that offers only http/1.1 gets HTTP/1.1; `--http-protocols h1` offers no
    h2 at all."""
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection((h2_echo.host, h2_echo.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
    with running_server("echo_environ:app", *certs.server_flags(),
                        "--http-protocols", "h1") as server:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection((server.host, server.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.selected_alpn_protocol() == "http/1.1"


def test_split_cookies_are_one_header(h2_echo, certs):
    """RFC 9113 §8.2.3: cookie fields split by the client reach the app joined by '; '."""
    with client(h2_echo, certs) as c:
        r = c.get("/", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-thing", "y")])
    env = environ_of(r)
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_THING"] == "y"


def test_request_body_without_content_length(h2_echo, certs):
    """A body in DATA frames with no content-length field: read whole, and the app sees
    CONTENT_LENGTH (PEP 3333: it may then read wsgi.input to the end or by length)."""
    body = os.urandom(200_000)
    with client(h2_echo, certs) as c:
        r = c.wait(c.request("/upload", "POST", body=body))[0]
    report = json.loads(bytes(r.body))
    assert report["environ"]["CONTENT_LENGTH"] == str(len(body))
    assert report["body"].encode("latin-1") == body


def test_expect_100_continue(h2_echo, certs):
    """RFC 9110 §10.1.1 over HTTP/2: a client that sends `expect: 100-continue` and waits
    gets the 100 before it sends its body; one over the size limit gets its 413 instead."""
    with client(h2_echo, certs) as c:
        sid = c.request("/", "POST", headers=[("expect", "100-continue"),
                                               ("content-length", "5")], end=False)
        c.pump(time.monotonic() + 5, lambda: c.streams[sid].informational == [100])
        c.send_body(sid, b"hello")
        [r] = c.wait(sid)
    assert r.status == 200 and json.loads(bytes(r.body))["body"] == "hello"


def test_expect_100_continue_over_the_limit_gets_413(certs):
    flags = [*certs.server_flags(), "--max-request-body-size", "1000"]
    with running_server("echo_environ:app", *flags) as server, client(server, certs) as c:
        sid = c.request("/", "POST", headers=[("expect", "100-continue"),
                                               ("content-length", "5000")], end=False)
        [r] = c.wait(sid)
    assert r.status == 413 and r.informational == []


def test_upload_and_echo_3_mib(h2_server, certs):
    """A body larger than the stream's window arrives whole (the server opens the window as
    it reads)."""
    body = bytes(range(256)) * (3 * 4096)
    with client(h2_server, certs) as c:
        r = c.wait(c.request("/echo", "POST", body=body, headers=[
            ("content-length", str(len(body)))]), timeout=30)[0]
    assert r.status == 200
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(body).hexdigest()


def test_a_body_that_cannot_be_stored_is_refused_and_logged(certs):
    """A body past --body-buffer-size goes to a spool file; when none can be made (here
    TMPDIR does not exist) the stream is answered 500 saying so, the app is not called,
    and the error log says why, as over HTTP/1.1."""
    with running_server("echo_environ:app", *certs.server_flags(), "--body-buffer-size", "1024",
                        extra_env={"TMPDIR": "/nonexistent/qiao-test"}) as server:
        with client(server, certs) as c:
            r = c.wait(c.request("/upload", "POST", body=b"x" * 8192), timeout=10)[0]
        assert r.status == 500
        assert b"could not be stored" in r.body
        server.wait_log("Cannot store a request body")


def test_file_wrapper_and_stream(h2_server, certs):
    """PEP 3333 wsgi.file_wrapper (32 MiB) and a generator's blocks, in DATA frames as the
    client's windows allow."""
    with client(h2_server, certs) as c:
        big, stream = c.wait(c.request("/bigfile"), c.request("/bigstream?n=64&key=h2"),
                             timeout=60)
    assert big.status == 200 and len(big.body) == 32 * 1024 * 1024
    assert big.body.count(0) == len(big.body)
    assert stream.status == 200 and len(stream.body) == 64 * 65536
    assert all(stream.body[i * 65536] == i % 256 for i in range(64))


def test_many_small_blocks_all_arrive(h2_server, certs):
    """PEP 3333 "Buffering and Streaming" over HTTP/2: a generator's 200 small blocks, each
    sent as it comes, all arrive and the stream ends (RFC 9113 §8.1), on each of 10
    streams. With a thread pool, capacity `h2` had granted a stream beyond the block it
    was spent on was once left unused, and the stream waited for a grant that never came
    (until the write timeout) in most of such responses."""
    expected = b"".join(b"block%d;" % i for i in range(200))
    with client(h2_server, certs, timeout=5) as c:
        for _ in range(10):
            r = c.get("/generator?n=200")
            assert (r.status, r.ended, bytes(r.body)) == (200, True, expected)


def test_an_idle_connection_is_closed_after_its_last_stream(certs):
    """--keep-alive over HTTP/2 (RFC 9113 §6.8, RFC 9112 §9.5's idle close): a connection
    whose streams have all ended is closed with GOAWAY once idle that long. The idle timer
    started only when the connection looked for a new stream, which it last did while the
    last stream was still open: such a connection stayed open for good."""
    flags = [*certs.server_flags(), "--keep-alive", "1"]
    with running_server("behaviour:app", *flags) as server, client(server, certs) as c:
        assert c.get("/single").status == 200
        c.pump(time.monotonic() + 5, lambda: False)  # returns when the server closes
    assert c.closed


def test_a_block_is_written_before_the_app_goes_on(h2_server, certs):
    """PEP 3333 "Buffering and Streaming": a block is transmitted before the server asks for
    the next. The app yields 8 blocks of 16 KiB, then waits at its gate until the client
    has them all. With one app thread it waits on the event loop's own thread, and the
    last block, handed to `h2` but not yet written by the connection's task, once stayed
    unsent until the gate gave up."""
    key = uuid.uuid4().hex
    blocks = b"".join(bytes([65 + i]) * 16384 for i in range(8))
    with client(h2_server, certs, timeout=5) as c:
        sid = c.request(f"/burst?key={key}&n=8")
        c.pump(time.monotonic() + 5, lambda: len(c.streams[sid].body) >= len(blocks))
        with open(burst_gate(key), "x"):
            pass
        [r] = c.wait(sid)
    assert bytes(r.body) == blocks + b"|end:gate-opened"


@pytest.mark.parametrize("path, sent", [("/error?mode=after_headers_chunked", b"partial"),
                                        ("/cl-short", b"0123456789")], ids=["error", "short"])
def test_an_aborted_response_sends_its_blocks_before_the_reset(h2_server, certs, path, sent):
    """PEP 3333 "Error Handling": an error after the headers aborts the response, as does a
    body short of the app's Content-Length; over HTTP/2 the stream is reset
    (RST_STREAM INTERNAL_ERROR, RFC 9113 §8.1), never ended, so the client knows it is
    incomplete. The blocks the app yielded before go out first (PEP 3333 "Buffering and
    Streaming"): `h2` drops what a stream still holds when it is reset, and with one app
    thread the reset once came before the connection had written them."""
    with client(h2_server, certs) as c:
        r = c.get(path)
    assert (r.status, r.ended, r.reset) == (200, False, 2)
    assert bytes(r.body) == sent


def test_streams_of_one_connection_run_concurrently(certs):
    """Streams are independent (RFC 9113 §5): a response waiting on its gate does not hold
    the connection; a second stream, which opens the gate, is served meanwhile, and the
    first block of the first response arrived before (PEP 3333 streaming)."""
    with running_server("behaviour:app", *certs.server_flags(), "--threads", "4") as server, \
            client(server, certs) as c:
        key = uuid.uuid4().hex
        first = c.request(f"/stream?key={key}")
        c.pump(time.monotonic() + 10, lambda: bytes(c.streams[first].body) == b"block-one;")
        second = c.request(f"/release?key={key}")
        a, b = c.wait(first, second)
    assert b.status == 200
    assert bytes(a.body) == b"block-one;block-two:gate-opened"


def test_head_and_no_content(h2_echo, certs):
    """RFC 9110 §9.3.2: HEAD gets the head only, ended on the HEADERS frame."""
    with client(h2_echo, certs) as c:
        r = c.get("/", method="HEAD")
    assert r.status == 200 and r.ended and r.body == b""


def test_body_over_the_limit_is_refused(certs):
    """--max-request-body-size applies to HTTP/2 bodies too: 413, the app not called."""
    flags = [*certs.server_flags(), "--max-request-body-size", "1000"]
    with running_server("echo_environ:app", *flags) as server, client(server, certs) as c:
        declared = c.wait(c.request("/", "POST", body=b"x" * 5000,
                                    headers=[("content-length", "5000")]))[0]
        undeclared = c.wait(c.request("/", "POST", body=b"x" * 5000))[0]
        assert declared.status == 413 and undeclared.status == 413
        r = c.get("/")
        assert environ_of(r) and r.header("x-calls") == "1"


def test_more_streams_than_allowed_are_refused(certs):
    """RFC 9113 §5.1.2: past SETTINGS_MAX_CONCURRENT_STREAMS a stream is refused
    (REFUSED_STREAM); the ones within run."""
    flags = [*certs.server_flags(), "--threads", "4", "--http2-max-concurrent-streams", "2"]
    with running_server("behaviour:app", *flags) as server, \
            RawH2(server.host, server.port, ca=str(certs.ca)) as raw:
        from hyperframe.frame import HeadersFrame

        raw.start()
        key = uuid.uuid4().hex
        for sid in (1, 3, 5):
            frame = HeadersFrame(sid, raw.headers_block(f"/stream?key={key}-{sid}"),
                                 flags=["END_HEADERS", "END_STREAM"])
            raw.send(frame.serialize())
        raw.read(2)
        refused = [f.stream_id for f in raw.of_type("RstStreamFrame") if f.error_code == 7]
        assert refused == [5]
        answered = {f.stream_id for f in raw.of_type("HeadersFrame")}
        assert answered == {1, 3}


def test_rapid_reset_is_bounded(h2_echo, certs):
    """CVE-2023-44487: a client that opens and resets streams as fast as it can gets a
    GOAWAY once past the bound, the app is not run for each, and others are served."""
    from hyperframe.frame import HeadersFrame, RstStreamFrame

    with RawH2(h2_echo.host, h2_echo.port, ca=str(certs.ca)) as raw:
        raw.start()
        burst = bytearray()
        for i in range(5000):
            sid = 1 + 2 * i
            frame = HeadersFrame(sid, raw.headers_block("/reset"), flags=["END_HEADERS", "END_STREAM"])
            burst += frame.serialize() + RstStreamFrame(sid, error_code=8).serialize()
        raw.send(bytes(burst))
        raw.read(3)
        assert raw.of_type("GoAwayFrame") or raw.closed
    with client(h2_echo, certs) as c:
        r = c.get("/after")
    assert r.status == 200
    assert int(r.header("x-calls")) < 1000


def test_continuation_flood_is_cut_off(h2_echo, certs):
    """CVE-2024-27316: HEADERS followed by CONTINUATION frames without end: the server
    stops reading them once past its header-list bound (GOAWAY or close), holding no
    more than that bound."""
    from hyperframe.frame import ContinuationFrame, HeadersFrame

    with RawH2(h2_echo.host, h2_echo.port, ca=str(certs.ca)) as raw:
        raw.start()
        raw.send(HeadersFrame(1, raw.headers_block("/flood")).serialize())
        chunk = raw.encoder.encode([("x-junk", "y" * 8000)])
        sent = 0
        for _ in range(2000):
            if not raw.send(ContinuationFrame(1, chunk).serialize()):
                break
            sent += 1
            if sent % 50 == 0:
                raw.read(0.01)
                if raw.closed or raw.of_type("GoAwayFrame"):
                    break
        raw.read(2)
        assert raw.closed or raw.of_type("GoAwayFrame") or raw.of_type("RstStreamFrame")
        assert sent < 2000, "the server read 16 MB of header block without objecting"
    with client(h2_echo, certs) as c:
        assert c.get("/after").status == 200


def test_hpack_bomb_is_refused(h2_echo, certs):
    """An HPACK bomb: one large entry in the dynamic table, then a header block that
    refers to it many times, which decodes to far more than the header-list bound. The
    request is refused; the connection's other streams go on."""
    import hpack
    from hyperframe.frame import HeadersFrame

    with RawH2(h2_echo.host, h2_echo.port, ca=str(certs.ca)) as raw:
        raw.start()
        encoder = hpack.Encoder()
        first = encoder.encode([(":method", "GET"), (":scheme", "https"),
                                (":authority", "localhost"), (":path", "/"),
                                ("x-bomb", "b" * 4000)])
        frame = HeadersFrame(1, first, flags=["END_HEADERS", "END_STREAM"])
        raw.send(frame.serialize())
        # The entry is now in the dynamic table (index 62): 200 references, ~1 byte each.
        block = encoder.encode([(":method", "GET"), (":scheme", "https"),
                                (":authority", "localhost"), (":path", "/bomb")])
        block += bytes([0x80 | 62]) * 200
        frame = HeadersFrame(3, block, flags=["END_HEADERS", "END_STREAM"])
        raw.send(frame.serialize())
        raw.read(2)
        statuses = {}
        decoder = hpack.Decoder()
        for f in raw.of_type("HeadersFrame"):
            fields = dict(decoder.decode(f.data))
            statuses[f.stream_id] = fields.get(":status") or fields.get(b":status")
        assert str(statuses.get(1)) in ("200", "b'200'")
        bomb = statuses.get(3)
        reset = [f for f in raw.of_type("RstStreamFrame") if f.stream_id == 3]
        assert (bomb is not None and str(bomb) not in ("200", "b'200'")) or reset or \
            raw.of_type("GoAwayFrame") or raw.closed


def test_control_frame_floods_do_not_starve_others(h2_echo, certs):
    """PING, SETTINGS and empty DATA frames sent without end, the client reading nothing:
    the server's memory stays bounded and another client is served meanwhile."""
    from hyperframe.frame import DataFrame, HeadersFrame, PingFrame, SettingsFrame

    pid = worker_pid(h2_echo)
    before = rss_kib(pid)
    with RawH2(h2_echo.host, h2_echo.port, ca=str(certs.ca)) as raw:
        raw.start()
        frame = HeadersFrame(1, raw.headers_block("/upload", "POST"), flags=["END_HEADERS"])
        raw.send(frame.serialize())
        flood = (PingFrame(0, opaque_data=b"12345678").serialize()
                 + SettingsFrame(0).serialize() + DataFrame(1, b"").serialize()) * 2000
        deadline = time.monotonic() + 3
        raw.sock.settimeout(0.5)
        while time.monotonic() < deadline and not raw.closed:
            try:
                raw.sock.sendall(flood)
            except (TimeoutError, OSError):
                break  # the server stopped reading (its replies wait for us): bounded
        with client(h2_echo, certs) as c:
            assert c.get("/meanwhile").status == 200
        grown = rss_kib(pid) - before
    assert grown < 64 * 1024, f"worker grew {grown} KiB under the flood"


def test_a_stream_that_never_opens_its_window_is_dropped(certs):
    """A client that never gives the server window for a response: after --write-timeout
    the stream is reset and the app's iterable closed; the connection's other streams and
    other clients are served meanwhile."""
    flags = [*certs.server_flags(), "--threads", "4", "--write-timeout", "1"]
    with running_server("behaviour:app", *flags) as server:
        c = client(server, certs, window=0)
        with c:
            c.auto_ack = False
            key = uuid.uuid4().hex
            stuck = c.request(f"/bigstream?n=4&key={key}")
            with client(server, certs) as other:
                assert other.get("/single").status == 200
            [r] = c.wait(stuck, timeout=10)
            assert r.reset is not None and not r.ended
        with client(server, certs) as other:
            deadline = time.monotonic() + 5
            while key + ":closed" not in other.get("/events").body.decode():
                assert time.monotonic() < deadline, "the app's iterable was not closed"
                time.sleep(0.1)


def test_a_connection_that_never_sends_its_preface_is_closed(certs):
    """A client that completes TLS with h2 and then sends nothing is closed after the
    header timeout."""
    flags = [*certs.server_flags(), "--header-timeout", "1"]
    with running_server("echo_environ:app", *flags) as server, \
            RawH2(server.host, server.port, ca=str(certs.ca)) as raw:
        raw.read(5)
        assert raw.closed


def test_cleartext_by_prior_knowledge(certs):
    """RFC 9113 §3.3, with --http2-cleartext prior-knowledge: a connection that opens with
    the preface is HTTP/2; other connections on the same port stay HTTP/1.1."""
    import requests

    with running_server("echo_environ:app", "--http2-cleartext", "prior-knowledge") as server:
        with H2Client(server.host, server.port) as c:
            env = environ_of(c.get("/h2c"))
        assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["wsgi.url_scheme"] == "http"
        r = requests.get(f"{server.url}/h1", timeout=5)
        assert r.json()["environ"]["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_cleartext_is_off_by_default(h2_echo):
    """Without --http2-cleartext the preface is an HTTP/1.1 request qiao refuses."""
    with running_server("echo_environ:app") as server, \
            socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(RawH2.PREFACE)
        assert sock.recv(100).startswith(b"HTTP/1.1 ")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(h2_echo, certs):
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(certs.ca), "-w", "\n%{http_version}",
         f"https://localhost:{h2_echo.port}/curl?x=1"],
        capture_output=True, timeout=20, check=False, text=True,
    )
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.rsplit("\n", 1)
    assert version == "2"
    assert json.loads(body)["environ"]["QUERY_STRING"] == "x=1"


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load(h2_server, certs):
    """nghttp2's load generator: 2000 requests, 50 concurrent streams on each of two
    connections, every one answered."""
    out = subprocess.run(
        ["h2load", "-n", "2000", "-c", "2", "-m", "50", f"{h2_server.url}/single"],
        capture_output=True, timeout=60, check=False, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
def test_nghttp_gets_a_page_and_its_assets(certs):
    """nghttp2's client with -a: the page, then its 40 scripts as concurrent streams of
    the same connection (RFC 9113 §5), every one a 200 with the length the app gave."""
    with running_server("page:app", *certs.server_flags(), "--threads", "4") as server:
        out = subprocess.run(
            ["nghttp", "-a", "-s", "-n", f"https://localhost:{server.port}/page?n=40"],
            capture_output=True, timeout=60, check=False, text=True,
        )
    assert out.returncode == 0, out.stdout + out.stderr
    # The statistics table: one row per stream, "... code size request path".
    rows = [line.split() for line in out.stdout.splitlines() if "/asset/" in line or "/page" in line]
    paths = sorted(row[-1] for row in rows)
    assert paths == sorted(["/page?n=40", *(f"/asset/{i}.js" for i in range(40))]), out.stdout
    assert all(row[-3] == "200" for row in rows), out.stdout


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
def test_nghttp_uploads_a_body(h2_server, certs, tmp_path):
    """nghttp -d: a 1 MiB request body in DATA frames, echoed back whole."""
    body = bytes(range(256)) * 4096
    (tmp_path / "body").write_bytes(body)
    out = subprocess.run(
        ["nghttp", "-d", str(tmp_path / "body"), f"{h2_server.url}/echo"],
        capture_output=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "app, path",
    [("flask_app:app", "/whoami"), ("django_app:application", "/whoami/")],
    ids=["flask", "django"],
)
def test_frameworks_over_http2_with_httpx(certs, app, path):
    """httpx's HTTP/2 client against Flask and Django: https:// absolute URLs, secure."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip(app.split("_")[0])
    with running_server(app, *certs.server_flags()) as server, \
            httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(certs.ca))) \
            as http:
        r = http.get(f"https://localhost:{server.port}{path}")
    assert r.http_version == "HTTP/2"
    got = r.json()
    assert got["is_secure"] is True
    assert got["url"] == f"https://localhost:{server.port}{path}"


def worker_pid(server) -> int:
    children = f"/proc/{server.proc.pid}/task/{server.proc.pid}/children"
    with open(children) as f:
        return int(f.read().split()[0])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def h2_http(certs):
    httpx = pytest.importorskip("httpx")
    return httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(certs.ca)),
                        timeout=20)


def test_validator_over_http2(certs):
    """PEP 3333 as wsgiref.validate checks it, over HTTP/2: GET, POST with and without a
    content-length, HEAD; no AssertionError, no WSGIWarning, every iterable closed."""
    with running_server("validated:app", *certs.server_flags()) as server:
        with h2_http(certs) as http:
            base = f"https://localhost:{server.port}"
            r = http.get(f"{base}/g?x=1")
            assert (r.http_version, r.content) == ("HTTP/2", b"method=GET path=/g body=")
            r = http.post(f"{base}/p", content=b"hello")
            assert r.content == b"method=POST path=/p body=hello"
            r = http.post(f"{base}/c", content=iter([b"abc", b"de"]))  # no content-length
            assert r.content == b"method=POST path=/c body=abcde"
            assert http.head(f"{base}/h").status_code == 200
        server.stop()
        log = server.log()
    for bad in ("AssertionError", "WSGIWarning", "Traceback", "garbage collected"):
        assert bad not in log, log


FRAMEWORK_CASES = [
    ("falcon_app:app", "POST", "/items/a1", {"x": [1, 2, 3]}, 201,
     {"id": "a1", "stored": {"x": [1, 2, 3]}}),
    ("bottle_app:app", "GET", "/hello/ann/3?q=x", None, 200,
     {"name": "ann", "count": 3, "q": "x"}),
    ("django_app:application", "GET", "/api/42/", None, 200,
     {"id": 42, "method": "GET", "path": "/api/42/"}),
    ("flask_app:app", "GET", "/json?a=1", None, 200, {"hello": "world", "args": {"a": "1"}}),
]


@pytest.mark.parametrize("app, method, path, payload, status, expected", FRAMEWORK_CASES,
                         ids=["falcon", "bottle", "django", "flask"])
def test_frameworks_over_http2(certs, app, method, path, payload, status, expected):
    """The framework routes the HTTP/1.1 tests use, over HTTP/2 (httpx)."""
    pytest.importorskip(app.split("_")[0])
    with running_server(app, *certs.server_flags(), "--threads", "2") as server, \
            h2_http(certs) as http:
        r = http.request(method, f"https://localhost:{server.port}{path}", json=payload)
    assert r.http_version == "HTTP/2"
    assert r.status_code == status and r.json() == expected


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed")
def test_headless_chromium_loads_a_page_of_40_scripts_over_http2(certs):
    """A real browser: Chromium, trusting the test certificate by its key, loads a page
    whose 40 scripts it fetches over one HTTP/2 connection; each script ran and says it
    came over HTTP/2 and https."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    pin = base64.b64encode(digest.finalize()).decode()
    with running_server("page:app", *certs.server_flags(), "--threads", "4") as server:
        out = subprocess.run(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={certs.dir / 'chrome'}",
             f"--ignore-certificate-errors-spki-list={pin}", "--virtual-time-budget=10000",
             "--dump-dom", f"https://localhost:{server.port}/page?n=40"],
            capture_output=True, text=True, timeout=120, check=False,
        )
    lines = [line for line in out.stdout.split("<p>")[1:]]
    seen = sorted(int(line.split()[1]) for line in lines)
    assert seen == list(range(40)), out.stdout[-2000:] + out.stderr[-2000:]
    assert all(" HTTP/2 https</p>" in line for line in lines), lines[:3]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_graceful_stop_finishes_open_streams(certs):
    """A graceful stop (TERM) during a stream: the server sends GOAWAY (RFC 9113 §6.8), the
    stream in flight finishes with its response (curl, a client that follows GOAWAY), and
    the server exits cleanly."""
    import signal

    flags = [*certs.server_flags(), "--threads", "2"]
    with running_server("behaviour:app", *flags) as server:
        curl = subprocess.Popen(
            ["curl", "-sS", "--http2", "--cacert", str(certs.ca), "-w", "\n%{http_version} %{http_code}",
             f"https://localhost:{server.port}/slow?s=1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(0.4)
        server.proc.send_signal(signal.SIGTERM)
        out, err = curl.communicate(timeout=20)
        assert curl.returncode == 0, err
        body, status = out.rsplit("\n", 1)
        assert status == "2 200"
        assert json.loads(body)["multithread"] is True
        assert server.proc.wait(15) == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_http2_prior_knowledge():
    """curl --http2-prior-knowledge against --http2-cleartext prior-knowledge (RFC 9113
    §3.3): HTTP/2 without TLS, as a proxy speaks it upstream."""
    with running_server("echo_environ:app", "--http2-cleartext", "prior-knowledge") as server:
        out = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
             f"{server.url}/h2c?via=curl"],
            capture_output=True, timeout=20, check=False, text=True,
        )
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.rsplit("\n", 1)
    assert version == "2"
    env = json.loads(body)["environ"]
    assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["QUERY_STRING"] == "via=curl"
