"""Static files answered by the engine (`--static URL_PREFIX=DIRECTORY`), without Python:
bodies byte for byte, the fields, conditional requests (RFC 9110 §13), ranges (§14),
precompressed siblings (§12.5.3), what is never served (traversal, dotfiles, links out),
methods, misses, the access log, HTTP/2 and TLS; and nginx's answers to the same requests
where RFC 9110 leaves a choice (nginx-light, started by the test; skips without it).
"""

from __future__ import annotations

import email.utils
import os
import re
import resource
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest
from conftest import TLS, is_gunicorn, running_server
from httpclient import Conn, Response, parse_response, raw
from loadgen import children, wait_for
from test_real_proxies import free_port, needs_nginx, start_nginx

pytestmark = [
    pytest.mark.skipif(is_gunicorn(), reason="qiao's --static"),
    pytest.mark.http1_only("the raw requests check HTTP/1.1 framing; HTTP/2 has its own test"),
]

SMALL = b"hello, static\n" * 73  # 1022 bytes
BIG = os.urandom(1 << 20)
CSS = b"body { color: #123; }\n"
HASHED = "app.0123456789ab.css"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The mounted directory, and a secret beside it that no request may reach."""
    base = tmp_path_factory.mktemp("static")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"SECRET")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "small.txt").write_bytes(SMALL)
    (root / "big.bin").write_bytes(BIG)
    (root / "empty.txt").write_bytes(b"")
    (root / HASHED).write_bytes(CSS)
    (root / (HASHED + ".gz")).write_bytes(b"GZ" + CSS)
    (root / (HASHED + ".br")).write_bytes(b"BR" + CSS)
    (root / "Roboto-BoldItalic.woff2").write_bytes(b"wOF2")
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>\n")
    (root / ".env").write_bytes(b"SECRET")
    (root / "sub" / ".hidden").write_bytes(b"SECRET")
    (root / "%2e%2e").mkdir()
    (root / "link-out.txt").symlink_to(outside / "secret.txt")
    (root / "link-in.txt").symlink_to(root / "small.txt")
    # An hour old, as a deployed file is: its Last-Modified is then a strong validator
    # (RFC 9110 §8.8.2.2), which If-Range needs.
    old = time.time() - 3600
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            os.utime(path, (old, old))
    return root


@pytest.fixture(scope="module")
def server(tree):
    log = tree.parent / "access.log"
    flags = ["--static", f"/static={tree}", "--static-index", "--access-logfile", str(log)]
    with running_server("echo_environ:app", *flags) as s:
        s.access_log = log
        yield s


def request(server, path: str, method: str = "GET", headers: str = "") -> Response:
    with Conn(server.port) as c:
        return c.request(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode(), method)


def test_files_are_sent_whole_with_their_fields(server, tree):
    """Bodies byte-identical to the files, on one keep-alive connection; the fields a
    static file carries (RFC 9110 §8.8.2 Last-Modified, §8.8.3 ETag, §14.3 Accept-Ranges)."""
    with Conn(server.port) as c:
        for name, data in (("small.txt", SMALL), ("big.bin", BIG), ("empty.txt", b"")):
            r = c.request(f"GET /static/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert r.status == 200 and r.body == data and r.complete, name
            assert r.header("Content-Length") == str(len(data))
            st = (tree / name).stat()
            assert r.header("ETag") == f'"{int(st.st_mtime):x}-{len(data):x}"'
            assert r.header("Last-Modified") == email.utils.formatdate(int(st.st_mtime), usegmt=True)
            assert r.header("Accept-Ranges") == "bytes"
            assert r.header("Cache-Control") == "max-age=60, public"
            assert r.header("Date") and r.header("Server") == "qiao"
        r = c.request(b"GET /static/small.txt?v=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.header("Content-Type") == "text/plain; charset=utf-8" and r.body == SMALL
        r = c.request(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.header("Content-Type") == "application/octet-stream"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_pipelined_with_the_app_s_responses(tree, threads):
    """RFC 9112 §9.3.2: pipelined requests, static and the app's, answered in order, on
    one thread (the app called inline) and with app threads (the app on a pool)."""
    flags = ["--static", f"/static={tree}", "--threads", threads]
    with running_server("echo_environ:app", *flags) as s, Conn(s.port) as c:
        c.send(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /app HTTP/1.1\r\nHost: x\r\n\r\n"
               b"HEAD /static/small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /static/small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_response().body == BIG
        assert b"PATH_INFO" in c.read_response().body
        r = c.read_response("HEAD")
        assert r.status == 200 and r.body == b""
        assert c.read_response().body == SMALL


def test_head_has_the_fields_and_no_body(server):
    """RFC 9110 §9.3.2: HEAD answers with GET's fields, Content-Length included."""
    with Conn(server.port) as c:
        r = c.request(b"HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD")
        assert r.status == 200 and r.body == b""
        assert r.header("Content-Length") == str(len(BIG))
        # The connection is still in step: nothing of the body followed.
        r = c.request(b"GET /static/small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.body == SMALL


def test_other_methods(server):
    """RFC 9110 §15.5.6: 405 with Allow; OPTIONS (§9.3.7) answered with Allow."""
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = request(server, "/static/small.txt", method, "Content-Length: 0\r\n")
        assert r.status == 405 and r.header("Allow") == "GET, HEAD, OPTIONS", method
    r = request(server, "/static/small.txt", "OPTIONS")
    assert r.status == 204 and r.header("Allow") == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../outside/secret.txt",
        "/static/%2e%2e/outside/secret.txt",
        "/static/%2E%2E/outside/secret.txt",
        "/static/.%2e/outside/secret.txt",
        "/static/%252e%252e/outside/secret.txt",
        "/static/..%2foutside/secret.txt",
        "/static/..%5coutside%5csecret.txt",
        "/static/..\\outside\\secret.txt",
        "/static/small.txt%00.png",
        "/static/sub/../../outside/secret.txt",
        "/static//../outside/secret.txt",
        "/static/link-out.txt",
        "/static/.env",
        "/static/%2eenv",
        "/static/sub/.hidden",
    ],
)
def test_nothing_outside_the_directory_and_no_dotfiles(server, path):
    """No path traversal in any spelling, no link out of the directory, no dotfile: 404."""
    r = request(server, path)
    assert r.status == 404, path
    assert b"SECRET" not in r.body


def test_links_inside_the_directory_are_followed(server):
    r = request(server, "/static/link-in.txt")
    assert r.status == 200 and r.body == SMALL


def test_a_miss_is_404_and_other_paths_reach_the_app(server):
    r = request(server, "/static/nope.txt")
    assert r.status == 404 and r.body == b"404 Not Found\n"
    r = request(server, "/elsewhere")
    assert r.status == 200 and b"PATH_INFO" in r.body
    # A prefix is a whole path segment: /staticfiles is not under /static.
    r = request(server, "/staticfiles/small.txt")
    assert r.status == 200 and b"PATH_INFO" in r.body


def test_a_miss_falls_through_to_the_app_when_asked(tree):
    with running_server(
        "echo_environ:app", "--static", f"/static={tree}", "--static-fallthrough"
    ) as s:
        r = request(s, "/static/nope.txt")
        assert r.status == 200 and b"/static/nope.txt" in r.body
        r = request(s, "/static/small.txt")
        assert r.status == 200 and r.body == SMALL


def test_directories_and_index_html(server):
    """--static-index: a directory's index.html; without the slash, a redirect to it."""
    r = request(server, "/static/sub/")
    assert r.status == 200 and r.body == b"<p>index</p>\n"
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    r = request(server, "/static/sub?x=1")
    assert r.status == 301 and r.header("Location") == "/static/sub/?x=1"
    r = request(server, "/static/small.txt/")
    assert r.status == 404


def test_conditional_requests(server):
    """RFC 9110 §13.1 and the order of §13.2.2."""
    r = request(server, "/static/small.txt")
    etag, lm = r.header("ETag"), r.header("Last-Modified")
    before = email.utils.formatdate(email.utils.parsedate_to_datetime(lm).timestamp() - 10,
                                    usegmt=True)

    def h(headers: str) -> Response:
        return request(server, "/static/small.txt", headers=headers)

    # §13.1.2: If-None-Match, weak comparison → 304 with the validators, no body.
    for value in (etag, f"W/{etag}", f'"x", {etag}', "*"):
        r = h(f"If-None-Match: {value}\r\n")
        assert r.status == 304 and r.body == b"", value
        assert r.header("ETag") == etag and r.header("Cache-Control") == "max-age=60, public"
    assert h('If-None-Match: "x"\r\n').status == 200
    # §13.1.3: If-Modified-Since.
    assert h(f"If-Modified-Since: {lm}\r\n").status == 304
    assert h(f"If-Modified-Since: {before}\r\n").status == 200
    assert h("If-Modified-Since: not a date\r\n").status == 200
    # §13.2.2 step 3 before 4: If-None-Match present, If-Modified-Since is ignored.
    assert h(f'If-None-Match: "x"\r\nIf-Modified-Since: {lm}\r\n').status == 200
    # §13.1.1: If-Match, strong comparison → 412 when false.
    assert h(f"If-Match: {etag}\r\n").status == 200
    assert h(f"If-Match: W/{etag}\r\n").status == 412
    assert h('If-Match: "x"\r\n').status == 412
    # §13.1.4: If-Unmodified-Since.
    assert h(f"If-Unmodified-Since: {lm}\r\n").status == 200
    assert h(f"If-Unmodified-Since: {before}\r\n").status == 412
    # §13.2.2 step 1 before 3: a failed If-Match wins over a matching If-None-Match.
    assert h(f'If-Match: "x"\r\nIf-None-Match: {etag}\r\n').status == 412
    # HEAD: the same decisions.
    r = request(server, "/static/small.txt", "HEAD", f"If-None-Match: {etag}\r\n")
    assert r.status == 304


def multipart(r: Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/byteranges body: (Content-Range, data)."""
    boundary = r.header("Content-Type").split("boundary=", 1)[1].encode()
    parts = []
    for chunk in r.body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        assert data.endswith(b"\r\n")
        crange = re.search(rb"Content-Range: (.*)\r\n", head + b"\r\n").group(1).decode()
        parts.append((crange, data[:-2]))
    assert r.body.endswith(b"--" + boundary + b"--\r\n")
    return parts


def test_ranges(server):
    """RFC 9110 §14: 206 with Content-Range; several ranges as multipart/byteranges
    (§14.6); 416 with `bytes */len` (§15.5.17); invalid ranges ignored (§14.2)."""
    p, n = "/static/big.bin", len(BIG)
    r = request(server, p, headers="Range: bytes=100-199\r\n")
    assert r.status == 206 and r.body == BIG[100:200]
    assert r.header("Content-Range") == f"bytes 100-199/{n}"
    assert r.header("Content-Length") == "100"
    r = request(server, p, headers="Range: bytes=-10\r\n")
    assert r.body == BIG[-10:] and r.header("Content-Range") == f"bytes {n - 10}-{n - 1}/{n}"
    r = request(server, p, headers=f"Range: bytes={n - 5}-\r\n")
    assert r.body == BIG[-5:]
    r = request(server, p, headers="Range: bytes=0-0,1000-1999,-3\r\n")
    assert r.status == 206 and r.header("Content-Length") == str(len(r.body))
    assert multipart(r) == [
        (f"bytes 0-0/{n}", BIG[:1]),
        (f"bytes 1000-1999/{n}", BIG[1000:2000]),
        (f"bytes {n - 3}-{n - 1}/{n}", BIG[-3:]),
    ]
    r = request(server, p, headers=f"Range: bytes={n}-\r\n")
    assert r.status == 416 and r.header("Content-Range") == f"bytes */{n}"
    for ignored in ("items=0-5", "bytes=", "bytes=0-999999,0-999999"):
        r = request(server, p, headers=f"Range: {ignored}\r\n")
        assert r.status == 200 and r.body == BIG, ignored
    for malformed in ("bytes=5-1", "bytes=x", "bytes=0-4,x"):
        r = request(server, p, headers=f"Range: {malformed}\r\n")
        assert r.status == 416 and r.header("Content-Range") == f"bytes */{n}", malformed
    # HEAD never gets a range (§14.2: Range applies to GET).
    r = request(server, p, "HEAD", "Range: bytes=0-9\r\n")
    assert r.status == 200 and r.header("Content-Length") == str(n)


def test_if_range(server):
    """RFC 9110 §13.1.5: the range only with a strong validator that matches."""
    r = request(server, "/static/big.bin")
    etag, lm = r.header("ETag"), r.header("Last-Modified")
    rng = "Range: bytes=0-9\r\n"
    assert request(server, "/static/big.bin", headers=f"{rng}If-Range: {etag}\r\n").status == 206
    assert request(server, "/static/big.bin", headers=f"{rng}If-Range: {lm}\r\n").status == 206
    r = request(server, "/static/big.bin", headers=f"{rng}If-Range: W/{etag}\r\n")
    assert r.status == 200 and r.body == BIG
    assert request(server, "/static/big.bin", headers=f'{rng}If-Range: "x"\r\n').status == 200


def written_early_in_a_second(path: Path, data: bytes) -> str:
    """Writes `path` just after a second begins, so that requests made at once fall in the
    second it was modified in; returns its Last-Modified."""
    time.sleep(1.02 - time.time() % 1)
    path.write_bytes(data)
    return email.utils.formatdate(int(path.stat().st_mtime), usegmt=True)


def test_if_range_date_of_a_file_modified_this_second(server, tree):
    """RFC 9110 §13.1.5: a date in If-Range only counts as a strong validator
    (§8.8.2.2). A file modified in the second the response is made in may change again
    under the same Last-Modified, so the whole file is sent; once that second is over, the
    range."""
    data = BIG[:100_000]
    range_if = "Range: bytes=0-9\r\nIf-Range: {}\r\n"
    for attempt in range(5):
        path = tree / f"fresh-{attempt}.bin"
        lm = written_early_in_a_second(path, data)
        r = request(server, f"/static/{path.name}", headers=range_if.format(lm))
        if r.header("Date") == lm:
            break
        # The second turned between the write and the response: not this case.
    else:
        pytest.fail("no response within the second its file was written in")
    assert r.header("Last-Modified") == lm
    assert r.status == 200 and r.body == data
    time.sleep(1.02 - time.time() % 1)
    r = request(server, f"/static/{path.name}", headers=range_if.format(lm))
    assert r.header("Date") != lm and r.header("Last-Modified") == lm
    assert r.status == 206 and r.body == data[:10]


def test_precompressed_siblings_and_hashed_names(server):
    """RFC 9110 §12.5.3: a .br/.gz sibling by Accept-Encoding and its q-values, with
    Content-Encoding and Vary (§12.5.5); a hashed name cached for good."""
    p = f"/static/{HASHED}"
    cases = [
        ("", CSS, None),
        ("Accept-Encoding: gzip, deflate, br\r\n", b"BR" + CSS, "br"),
        ("Accept-Encoding: gzip\r\n", b"GZ" + CSS, "gzip"),
        ("Accept-Encoding: br;q=0.1, gzip;q=0.9\r\n", b"GZ" + CSS, "gzip"),
        ("Accept-Encoding: br;q=0, gzip;q=0\r\n", CSS, None),
        ("Accept-Encoding: zstd\r\n", CSS, None),
    ]
    etags = set()
    for headers, body, coding in cases:
        r = request(server, p, headers=headers)
        assert r.status == 200 and r.body == body, headers
        assert r.header("Content-Encoding") == coding, headers
        assert r.header("Vary") == "Accept-Encoding"
        assert r.header("Content-Type") == "text/css; charset=utf-8"
        assert r.header("Cache-Control") == "max-age=315360000, public, immutable"
        etags.add((coding, r.header("ETag")))
    # Each representation has its own strong validator (§8.8.3).
    assert len({tag for _, tag in etags}) == 3
    # A font named in capitalised words has no hash: the configured max-age, so a new
    # version reaches clients.
    r = request(server, "/static/Roboto-BoldItalic.woff2")
    assert r.status == 200 and r.header("Cache-Control") == "max-age=60, public"


def test_the_access_log_has_static_responses(server):
    """gunicorn's default line, for a 200 and a 304 of the engine's."""
    r = request(server, "/static/small.txt?logged=1")
    request(server, "/static/small.txt?logged=2", headers=f"If-None-Match: {r.header('ETag')}\r\n")
    deadline = time.monotonic() + 5
    while "logged=2" not in server.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.access_log.read_text()
    assert re.search(r'"GET /static/small\.txt\?logged=1 HTTP/1\.1" 200 1022 ', log), log
    assert re.search(r'"GET /static/small\.txt\?logged=2 HTTP/1\.1" 304 - ', log), log


def test_a_replaced_file_is_served_whole_and_a_shrunk_one_never_short(tree, server):
    """A file renamed over (a deploy) keeps the old response whole until the entry is
    looked at again (within a second), then the new one; a file cut short in place while
    its descriptor is cached ends the connection instead of a short body that says it is
    whole."""
    path = tree / "changing.bin"
    path.write_bytes(b"a" * 100_000)
    r = request(server, "/static/changing.bin")
    assert r.body == b"a" * 100_000
    tmp = tree / "changing.tmp"
    tmp.write_bytes(b"b" * 50_000)
    os.replace(tmp, path)
    time.sleep(1.2)
    r = request(server, "/static/changing.bin")
    assert r.status == 200 and r.body == b"b" * 50_000
    # Cut in place, right after the descriptor was cached by the request above.
    with open(path, "r+b") as f:
        f.truncate(10_000)
    data = raw(server.port, b"GET /static/changing.bin HTTP/1.1\r\nHost: x\r\n\r\n",
               shutdown=True, timeout=3)
    resp, _ = parse_response(data, "GET", eof=True)
    assert resp is not None
    assert not (resp.complete and resp.body != path.read_bytes()), "a corrupt whole response"


def test_bad_static_settings_are_one_line(tmp_path):
    import subprocess
    import sys

    for flag, why in (
        ("static=/tmp", "the prefix starting with /"),
        ("/static=/nowhere/at/all", "not a directory"),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "qiao", "--static", flag, "--check-config"],
            check=False, capture_output=True, text=True, timeout=60,
        )
        assert p.returncode == 2 and why in p.stderr and len(p.stderr.strip().splitlines()) == 1


# -- other transports ------------------------------------------------------------------


@pytest.mark.skipif(TLS, reason="cleartext HTTP/2 prior knowledge")
def test_http2_serves_static_files(tree):
    """HTTP/2 (RFC 9113) streams get the same answers: body, range, 304."""
    flags = ["--static", f"/static={tree}", "--http2-cleartext", "prior-knowledge"]
    with (
        running_server("echo_environ:app", *flags) as s,
        httpx.Client(http1=False, http2=True, base_url=s.url, timeout=10) as c,
    ):
        r = c.get("/static/big.bin")
        assert r.http_version == "HTTP/2" and r.status_code == 200 and r.content == BIG
        etag = r.headers["etag"]
        r = c.get("/static/big.bin", headers={"Range": "bytes=5-9"})
        assert r.status_code == 206 and r.content == BIG[5:10]
        r = c.get("/static/big.bin", headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b""
        r = c.head("/static/small.txt")
        assert r.status_code == 200 and r.headers["content-length"] == str(len(SMALL))


def test_tls_sends_files_through_the_engine_s_reads(tree, tmp_path):
    """Over TLS the file is read and encrypted (no sendfile): the same bytes."""
    from tls_certs import make_certs

    certs = make_certs(tmp_path)
    flags = ["--static", f"/static={tree}", "--certfile", str(certs.cert), "--keyfile",
             str(certs.key)]
    with running_server("echo_environ:app", *flags) as s:
        url = f"https://localhost:{s.port}"
        verify = ssl.create_default_context(cafile=str(certs.ca))
        with httpx.Client(verify=verify, timeout=10) as c:
            r = c.get(url + "/static/big.bin")
            assert r.status_code == 200 and r.content == BIG
            r = c.get(url + "/static/big.bin", headers={"Range": "bytes=0-1,-2"})
            assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/")


# -- nginx, for what RFC 9110 leaves open ----------------------------------------------

@pytest.fixture(scope="module")
def nginx(tree, tmp_path_factory):
    port = free_port()
    tmp = tmp_path_factory.mktemp("nginx")
    proxy = start_nginx(tmp, f"""
    server {{
        listen 127.0.0.1:{port};
        if_modified_since before;
        location /static/ {{ alias {tree}/; }}
    }}""", port)
    yield port
    proxy.stop()


COMPARED = [
    ("plain", ""),
    ("one range", "Range: bytes=10-19\r\n"),
    ("suffix range", "Range: bytes=-7\r\n"),
    ("open range", "Range: bytes=1000-\r\n"),
    ("past the end", "Range: bytes=2000-3000\r\n"),
    ("cut to the end", "Range: bytes=1000-5000\r\n"),
    ("some unsatisfiable", "Range: bytes=5000-6000,0-4\r\n"),
    ("two ranges", "Range: bytes=0-4,10-14\r\n"),
    ("backwards", "Range: bytes=9-5\r\n"),
    ("backwards and forwards", "Range: bytes=9-5,0-4\r\n"),
    ("malformed", "Range: bytes=0-4,x\r\n"),
    ("empty set", "Range: bytes=\r\n"),
    ("unit in capitals", "Range: BYTES=0-4\r\n"),
    ("three ranges", "Range: bytes=0-0,-1,500-509\r\n"),
    ("other unit", "Range: items=0-4\r\n"),
    ("overlapping", "Range: bytes=0-999,0-999\r\n"),
    ("If-Range etag", "Range: bytes=0-4\r\nIf-Range: {etag}\r\n"),
    ("If-Range weak", "Range: bytes=0-4\r\nIf-Range: W/{etag}\r\n"),
    ("If-Range date", "Range: bytes=0-4\r\nIf-Range: {lm}\r\n"),
    ("If-Range other", 'Range: bytes=0-4\r\nIf-Range: "x"\r\n'),
    ("If-None-Match", "If-None-Match: {etag}\r\n"),
    ("If-None-Match weak", "If-None-Match: W/{etag}\r\n"),
    ("If-Modified-Since", "If-Modified-Since: {lm}\r\n"),
    ("If-Match other", 'If-Match: "x"\r\n'),
    ("If-Match", "If-Match: {etag}\r\n"),
    ("If-Unmodified-Since old", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
]


def comparable(r: Response) -> tuple:
    parts = multipart(r) if (r.header("Content-Type") or "").startswith("multipart/") else None
    return (r.status, r.header("Content-Range"), r.header("ETag"), r.header("Last-Modified"),
            parts if parts is not None else r.body if r.status in (200, 206) else None)


@needs_nginx
@pytest.mark.parametrize("case", COMPARED, ids=[c[0] for c in COMPARED])
def test_the_same_answers_as_nginx(server, nginx, case):
    """Status, Content-Range, validators and body (each part of a multipart body) as
    nginx gives them for the same file."""
    first = request(server, "/static/small.txt")
    headers = case[1].format(etag=first.header("ETag"), lm=first.header("Last-Modified"))
    ours = request(server, "/static/small.txt", headers=headers)
    with Conn(nginx) as c:
        theirs = c.request(
            f"GET /static/small.txt HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode(), "GET"
        )
    assert comparable(ours) == comparable(theirs)


@needs_nginx
def test_if_range_date_of_a_fresh_file_differs_from_nginx(server, nginx, tree):
    """Where qiao and nginx differ (docs/behaviour.md): nginx takes an If-Range date equal
    to Last-Modified even within the second the file was modified in, and sends the range;
    qiao holds to RFC 9110 §13.1.5 and §8.8.2.2 and sends the whole file."""
    data = BIG[:100_000]
    for attempt in range(5):
        path = tree / f"fresh-nginx-{attempt}.bin"
        lm = written_early_in_a_second(path, data)
        headers = f"Range: bytes=0-9\r\nIf-Range: {lm}\r\n"
        ours = request(server, f"/static/{path.name}", headers=headers)
        with Conn(nginx) as c:
            theirs = c.request(
                f"GET /static/{path.name} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode(), "GET"
            )
        if ours.header("Date") == lm == theirs.header("Date"):
            break
    else:
        pytest.fail("no responses within the second their file was written in")
    assert theirs.header("Last-Modified") == lm == ours.header("Last-Modified")
    assert (theirs.status, theirs.body) == (206, data[:10])
    assert (ours.status, ours.body) == (200, data)


# -- out of descriptors ----------------------------------------------------------------

def lowest_free_fd(pid: int) -> int:
    """The descriptor number `pid`'s next open would get (the lowest one not in use)."""
    used = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    return min(set(range(len(used) + 1)) - used)


def test_out_of_descriptors_is_503_then_served_again(tree):
    """RFC 9110 §15.6.4: a worker out of descriptors (EMFILE) answers a static request it
    cannot open a file for with 503 and Retry-After, keeps its connections and serves them
    again once descriptors are free; a connection that arrived meanwhile waits to be
    accepted, and is answered then (not lost). A file kept in memory needs no descriptor."""
    with running_server("echo_environ:app", "--static", f"/static={tree}") as s:
        workers = wait_for(lambda: children(s.proc.pid), timeout=10)
        assert len(workers) == 1, workers
        pid = workers[0]
        get = "GET {} HTTP/1.1\r\nHost: x\r\n\r\n"
        with Conn(s.port) as c:
            assert c.request(get.format("/").encode(), "GET").status == 200
            assert c.request(get.format("/static/small.txt").encode(), "GET").body == SMALL
            limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            mark = s.log_mark()
            try:
                # Every new descriptor is now past the limit.
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free_fd(pid), limits[1]))
            except PermissionError as e:
                pytest.skip(f"cannot lower the worker's RLIMIT_NOFILE: {e}")
            try:
                r = c.request(get.format("/static/big.bin").encode(), "GET")
                assert r.status == 503 and r.header("Retry-After") == "1"
                r = c.request(get.format("/static/small.txt").encode(), "GET")
                assert r.status == 200 and r.body == SMALL
                late = socket.create_connection(("127.0.0.1", s.port), timeout=10)
                late.sendall(get.format("/static/big.bin").encode())
                s.wait_log("accept failed", mark, timeout=10)
                time.sleep(0.5)  # the accept loop retries meanwhile, every 50 ms
            finally:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
            r = c.request(get.format("/static/big.bin").encode(), "GET")
            assert r.status == 200 and r.body == BIG
        with late:
            resp, _ = parse_response(read_response(late), "GET", eof=False)
        assert resp is not None and resp.status == 200 and resp.body == BIG
        assert s.proc.poll() is None and children(s.proc.pid) == [pid]
        # The streak of failed accepts is one line, not one per retry, then its end.
        log = s.wait_log("accepting again, after", mark, timeout=10)
        assert "accepting again, after" in log and log.count("accept failed") == 1, log


def read_response(sock: socket.socket) -> bytes:
    """Bytes from `sock` until one whole response to a GET has come."""
    data = b""
    while True:
        if parse_response(data, "GET")[0] is not None:
            return data
        chunk = sock.recv(1 << 16)
        assert chunk, "the connection closed before a whole response"
        data += chunk


EMPTY_FILE_RANGES = [("bytes=0-", 200), ("bytes=-5", 200), ("bytes=0-0", 200),
                     ("bytes=5-", 416), ("bytes=x", 416)]


@needs_nginx
@pytest.mark.parametrize(("value", "status"), EMPTY_FILE_RANGES, ids=[v for v, _ in EMPTY_FILE_RANGES])
def test_ranges_of_an_empty_file_as_nginx(server, nginx, value, status):
    """RFC 9110 §14.2 lets a server ignore Range: an empty file, which has no byte a 206
    could carry, asked from its start or for its end, is sent whole (200), as nginx does;
    a range past its end or a malformed set is 416 as for any file."""
    ours = request(server, "/static/empty.txt", headers=f"Range: {value}\r\n")
    with Conn(nginx) as c:
        theirs = c.request(
            f"GET /static/empty.txt HTTP/1.1\r\nHost: x\r\nRange: {value}\r\n\r\n".encode(),
            "GET",
        )
    assert comparable(ours) == comparable(theirs)
    assert ours.status == status


# -- a Django project after collectstatic ----------------------------------------------

STORAGES = {
    "manifest": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",
    "whitenoise": "whitenoise.storage.CompressedManifestStaticFilesStorage",
}


def collectstatic(root: Path, storage: str) -> dict[str, str]:
    """Runs collectstatic for apps/django_static into `root`: the environment that
    project then needs."""
    import subprocess
    import sys

    env = dict(os.environ, QIAO_TEST_STATIC_ROOT=str(root), QIAO_TEST_STATIC_STORAGE=storage)
    code = ("import apps.django_static\nfrom django.core.management import call_command\n"
            "call_command('collectstatic', interactive=False, verbosity=0)\n")
    here = Path(__file__).parent
    subprocess.run([sys.executable, "-c", code], env=env, cwd=here, check=True, timeout=120)
    return {"QIAO_TEST_STATIC_ROOT": str(root), "QIAO_TEST_STATIC_STORAGE": storage}


@pytest.fixture(scope="module", params=sorted(STORAGES))
def django_static(request, tmp_path_factory):
    pytest.importorskip("whitenoise")
    root = tmp_path_factory.mktemp("collected")
    env = collectstatic(root, STORAGES[request.param])
    log = root.parent / f"{request.param}-access.log"
    flags = ["--static", f"/static={root}", "--access-logfile", str(log)]
    with running_server("django_static:application", *flags, extra_env=env) as s:
        s.access_log = log
        yield request.param, root, s


def asset_paths(html: bytes) -> list[str]:
    return sorted(set(re.findall(r'(?:href|src)="(/static/[^"]+)"', html.decode())))


def test_django_collectstatic_output_is_served_byte_identical(django_static):
    """Every asset the admin login page names, as collectstatic wrote it (hashed names:
    cached for good); with WhiteNoise's compressed output, its .gz (and .br) siblings for
    clients that take them."""
    storage, root, server = django_static
    page = request(server, "/admin/login/")
    assert page.status == 200, page.body[:500]
    assets = asset_paths(page.body)
    assert any(a.endswith(".css") for a in assets), page.body[:2000]
    for path in assets:
        on_disk = root / path[len("/static/"):]
        r = request(server, path)
        assert r.status == 200 and r.body == on_disk.read_bytes(), path
        assert r.header("Cache-Control") == "max-age=315360000, public, immutable", path
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        assert r.header("Content-Type").replace("application/javascript", "text/javascript") \
            == f"{kind}; charset=utf-8", path
        assert request(server, path, headers=f"If-None-Match: {r.header('ETag')}\r\n").status == 304
        for coding, suffix in (("gzip", ".gz"), ("br", ".br")):
            sibling = on_disk.with_name(on_disk.name + suffix)
            r = request(server, path, headers=f"Accept-Encoding: {coding}\r\n")
            if sibling.exists():
                assert r.header("Content-Encoding") == coding and r.body == sibling.read_bytes()
                assert r.header("Vary") == "Accept-Encoding"
            else:
                assert r.header("Content-Encoding") is None and r.body == on_disk.read_bytes()
    if storage == "whitenoise":
        assert any((root / (a[len("/static/"):] + ".gz")).exists() for a in assets)


def chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed")
def test_chromium_loads_the_django_admin_with_its_assets(django_static, tmp_path):
    """Headless Chromium loads the admin login page: the page renders, and the access log
    shows each stylesheet and script fetched from the engine (200); a second load with
    the same profile takes them from its cache (hashed names are immutable) or revalidates
    them (304), never fetching them whole again."""
    import subprocess

    _, _, server = django_static
    profile = tmp_path / "chrome"

    def load() -> tuple[str, list[str]]:
        before = server.access_log.read_text() if server.access_log.exists() else ""
        dom = subprocess.run(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom",
             f"http://127.0.0.1:{server.port}/admin/login/"],
            check=False, capture_output=True, text=True, timeout=90,
        ).stdout
        time.sleep(0.3)
        lines = server.access_log.read_text()[len(before):].splitlines()
        return dom, [line for line in lines if '"GET /static/' in line]

    dom, fetched = load()
    assert 'id="login-form"' in dom, dom[:2000]
    assets = asset_paths(dom.encode())
    assert any(a.endswith(".css") for a in assets), dom[:2000]
    for path in assets:
        assert any(f'"GET {path} HTTP/1.1" 200 ' in line for line in fetched), (path, fetched)
    dom, again = load()
    assert 'id="login-form"' in dom
    assert all('" 304 ' in line for line in again), again
