"""The access log (gunicorn's --access-logformat atoms) and the error log settings."""

import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import TESTS_DIR, running_server
from httpclient import Conn, get


def wait_lines(path, n, timeout=5.0):
    """The file's lines once it has at least `n` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n or time.monotonic() > deadline:
            return lines


def test_access_log_default_format(tmp_path):
    """gunicorn's default access format: h l u t "r" s b "f" "a"."""
    log = tmp_path / "access.log"
    with running_server("behaviour:app", "--access-logfile", str(log)) as server:
        with Conn(server.port) as c:
            c.request(
                b"GET /echo?x=1 HTTP/1.1\r\nHost: h\r\nReferer: http://r/\r\n"
                b"User-Agent: probe/1\r\n\r\n"
            )
        lines = wait_lines(log, 1)
    assert len(lines) == 1
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
        r'"GET /echo\?x=1 HTTP/1\.1" 200 - "http://r/" "probe/1"',
        lines[0],
    ), lines[0]


def test_access_log_custom_atoms(tmp_path):
    """Atoms m U q H s B, {header}i, {header}o and D render as gunicorn documents them."""
    log = tmp_path / "access.log"
    fmt = "%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%({x-id}i)s|%({content-type}o)s|%(D)s"
    with running_server(
        "behaviour:app", "--access-logfile", str(log), "--access-logformat", fmt
    ) as server:
        with Conn(server.port) as c:
            c.request(b"POST /echo?a=b HTTP/1.0\r\nX-Id: 42\r\nContent-Length: 3\r\n\r\nabc")
        lines = wait_lines(log, 1)
    method, path, query, proto, status, size, xid, ctype, micros = lines[0].split("|")
    assert (method, path, query, proto, status, size, xid) == (
        "POST", "/echo", "a=b", "HTTP/1.0", "200", "3", "42",
    )
    assert ctype.startswith("text/plain")
    assert int(micros) >= 0


@pytest.mark.parametrize("access_log", [True, False], ids=["on", "off"])
def test_bad_access_log_format_is_one_line(tmp_path, access_log):
    """An --access-logformat that does not parse is a one-line error and exit 2, not a
    traceback (checked whether the access log is on or not)."""
    flags = ["--access-logfile", "-"] if access_log else []
    proc = subprocess.run(
        [sys.executable, "-m", "qiao", "-b", "127.0.0.1:0", *flags,
         "--access-logformat", "%(h)s 100% %(nope)s"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr == ("qiao: error: --access-logformat: stray '%' in access log "
                           "format near \"% %(nope)s\"\n")


def test_a_name_that_is_not_an_atom_prints_a_dash(tmp_path):
    """gunicorn's atoms are a mapping whose missing keys read '-' (gunicorn docs, "Access
    log format"): a name that is not an atom prints '-', and qiao says so once at start."""
    log = tmp_path / "access.log"
    with running_server("echo_environ:app", "--access-logfile", str(log),
                        "--access-logformat", "%(h)s <%(asctime)s> <%()s> %(s)s") as s:
        with Conn(s.port) as c:
            assert c.request(get("/")).status == 200
        assert wait_lines(log, 1) == ["127.0.0.1 <-> <-> 200"]
    assert s.log().count("is not an access-log atom: it prints '-'") == 2


def test_error_logfile_gets_wsgi_errors(tmp_path):
    """--error-logfile receives the error log, and wsgi.errors writes into it (PEP 3333)."""
    log = tmp_path / "error.log"
    with FileLoggedServer(log) as (port, path):
        with Conn(port) as c:
            c.request(get("/log-error"))
        text = wait_for(path, "fixture wrote to wsgi.errors")
    assert "fixture wrote to wsgi.errors" in text


def wait_for(path, needle, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


class FileLoggedServer:
    """qiao with its error log in a file: the port comes from the file's banner."""

    def __init__(self, path, *flags):
        self.path, self.flags = path, flags

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qiao", "apps.behaviour:app", "--chdir", str(TESTS_DIR),
             "-b", "127.0.0.1:0", "--error-logfile", str(self.path), *self.flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        text = wait_for(self.path, "Listening at:", timeout=15)
        m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
        assert m, text
        return int(m.group(1)), self.path

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def test_log_level_warning_drops_info(tmp_path):
    """--log-level warning: the banner (info) is not written, warnings would be."""
    log = tmp_path / "error.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiao", "-b", "127.0.0.1:0", "--error-logfile", str(log),
         "--log-level", "warning"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Listening at" not in (log.read_text() if log.exists() else "")


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_ipv6_bind():
    """-b [::1]:0 serves over IPv6; REMOTE_ADDR is the v6 peer."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    with running_server("echo_environ:app", binds=("[::1]:0",)) as server, \
            socket.create_connection(("::1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b'"REMOTE_ADDR": "::1"' in data


def test_access_log_user_and_environ_atoms(tmp_path):
    """gunicorn's %(u)s is the user of Basic authentication, and %({NAME}e)s a key of the
    request's WSGI environ: never a variable of the server's own environment, whose
    secrets a log line must not print."""
    log = tmp_path / "access.log"
    fmt = "%(u)s|%({PATH_INFO}e)s|%({SERVER_SECRET}e)s|%({wsgi.url_scheme}e)s"
    with running_server(
        "behaviour:app", "--access-logfile", str(log), "--access-logformat", fmt,
        extra_env={"SERVER_SECRET": "hunter2"},
    ) as server:
        with Conn(server.port) as c:
            c.request(get("/echo", headers=b"Authorization: Basic YWxpY2U6czNjcjN0\r\n"))
            c.request(get("/echo", headers=b"Authorization: Bearer abc\r\n"))
        lines = wait_lines(log, 2)
    assert lines == ["alice|/echo|-|http", "-|/echo|-|http"]


def test_refused_request_is_logged_as_gunicorn_logs_it(tmp_path):
    """A request refused after its request line was read (here: a chunked body with a bad
    chunk size, 400) gets gunicorn's error-log warning "Invalid request from ip=..." and an
    access log line with its status."""
    log = tmp_path / "access.log"
    with running_server("behaviour:app", "--access-logfile", str(log)) as server:
        with Conn(server.port) as c:
            c.send(
                b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"zz\r\nabc\r\n0\r\n\r\n"
            )
            assert c.read_response().status == 400
        lines = wait_lines(log, 1)
        errors = server.wait_log("Invalid request from ip=127.0.0.1")
    assert len(lines) == 1 and '"POST /echo HTTP/1.1" 400' in lines[0], lines
    assert "Invalid request from ip=127.0.0.1" in errors


def test_log_format_json_one_object_per_line(tmp_path):
    """--log-format json: each access log line is one JSON object (RFC 8259) with a field
    per atom of the format, numbers as numbers and what is unknown as null; each error log
    line is an object with time, level, pid and message (a multi-line message escaped)."""
    import json

    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    fmt = '%(h)s %(l)s %(t)s "%(r)s" %(s)s %(b)s "%(a)s" %(D)s %({x-req}i)s'
    with FileLoggedServer(
        errors, "--log-format", "json", "--access-logfile", str(access),
        "--access-logformat", fmt,
    ) as (port, _):
        with Conn(port) as c:
            c.request(b'GET /echo?q="1" HTTP/1.1\r\nHost: h\r\nX-Req: a"b\\c\r\n\r\n')
            c.request(b"GET /log-error HTTP/1.1\r\nHost: h\r\n\r\n")
        with Conn(port) as c:  # (a 500 closes its connection)
            c.request(b"GET /error?mode=before_start HTTP/1.1\r\nHost: h\r\n\r\n")
        lines = wait_lines(access, 3)
        assert wait_lines(errors, 3)
    first = json.loads(lines[0])
    assert first["remote_addr"] == "127.0.0.1" and first["ident"] is None
    assert first["request"] == 'GET /echo?q="1" HTTP/1.1'
    assert first["status"] == 200 and first["bytes"] == 0
    assert first["user_agent"] is None and isinstance(first["duration_us"], int)
    assert first["request_header.x-req"] == 'a"b\\c'
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", first["time"])
    assert json.loads(lines[2])["status"] == 500
    records = [json.loads(line) for line in errors.read_text().splitlines()]
    assert all(set(r) == {"time", "level", "pid", "message"} for r in records), records
    traceback = [r for r in records if "Traceback" in r["message"]]
    assert traceback and traceback[0]["level"] == "error" and "\n" in traceback[0]["message"]
    # What the app writes to wsgi.errors is a record too.
    assert any(r["message"] == "fixture wrote to wsgi.errors" for r in records), records


def test_log_format_json_every_error_log_line_is_an_object(tmp_path):
    """--log-format json: every line of the error log is one JSON object (RFC 8259), from the
    workers and the master alike, through a refused request (400), an app exception with its
    traceback, a reload (SIGHUP) and a request stuck past --timeout: the worker's Python
    stacks (faulthandler's dump) are one record with that worker's pid, the stuck request's
    traceback another; no raw line of either reaches the log."""
    import json
    import signal

    errors = tmp_path / "error.log"
    server = FileLoggedServer(errors, "--log-format", "json", "--timeout", "1")
    with server as (port, _):
        with Conn(port) as c:
            c.send(b"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert c.read_response().status == 400
        with Conn(port) as c:
            c.request(b"GET /error?mode=before_start HTTP/1.1\r\nHost: h\r\n\r\n")
        with Conn(port, timeout=20) as c:
            c.send(get("/slow?s=8"))
            assert c.read_response().status == 500
        assert "in slow" in wait_for(errors, "Python stacks of worker", timeout=15)
        server.proc.send_signal(signal.SIGHUP)
        assert "replaced by reload" in wait_for(errors, "replaced by reload", timeout=15)
    lines = errors.read_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON object: {line!r}\n" + "\n".join(lines))
    assert all(set(r) == {"time", "level", "pid", "message"} for r in records), records

    def first(text):
        return next((r for r in records if text in r["message"]), None)

    assert first("Invalid request from ip=127.0.0.1")["level"] == "warning"
    assert "RuntimeError: fixture error" in first("Error handling request /error")["message"]
    assert first("Received SIGHUP")["level"] == "info"
    timeout = first("WORKER TIMEOUT")
    dump = first("Python stacks of worker")
    assert timeout["level"] == "critical" and dump["level"] == "error"
    assert dump["pid"] != timeout["pid"] and f"worker {dump['pid']}:" in dump["message"]
    assert "Thread 0x" in dump["message"] or "Current thread 0x" in dump["message"]
    assert "RequestTimeout" in first("Error handling request /slow")["message"]


CRASHING_APP = """
import ctypes

def app(environ, start_response):
    if environ["PATH_INFO"] == "/crash":
        ctypes.string_at(0)  # a segfault: faulthandler's fatal error report
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


def test_a_crashed_workers_stacks_are_one_record_before_its_death(tmp_path):
    """A worker that dies of a fatal error (a segfault in C code): faulthandler's report,
    "Fatal Python error" and its threads' stacks, is one critical record of the error log
    with the worker's pid in its header, logged by the master before the line that says
    the worker died; the next request is served by a new worker."""
    (tmp_path / "crashing.py").write_text(CRASHING_APP)
    log = tmp_path / "error.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiao", "crashing:app", "--chdir", str(tmp_path),
         "-b", "127.0.0.1:0", "--error-logfile", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)",
                      wait_for(log, "Listening at:", timeout=15))
        assert m, log.read_text()
        port = int(m.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /crash HTTP/1.1\r\nHost: h\r\n\r\n")
            assert s.recv(65536) == b""  # the worker is gone: no response
        text = wait_for(log, "died (signal SIGSEGV)", timeout=15)
        with Conn(port) as c:
            assert c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").status == 200
    finally:
        proc.terminate()
        proc.wait(10)
    m = re.search(r"\[(\d+)\] \[CRITICAL\] Python stacks of worker (\d+):\n"
                  r"Fatal Python error: Segmentation fault\n", text)
    assert m and m.group(1) == m.group(2), text
    assert "in app" in text[m.end():]
    assert text.index("Fatal Python error") < text.index(f"Worker {m.group(1)} died"), text


def test_log_format_json_app_that_fails_to_load_is_records(tmp_path):
    """--log-format json: an app whose import raises is one JSON record with its traceback,
    whether the master imports it (--preload) or a worker does, and nothing else on stderr
    is a raw line; the server exits non-zero."""
    import json

    (tmp_path / "broken.py").write_text("raise RuntimeError('the app cannot start')\n")
    for preload in ([], ["--preload"]):
        run = subprocess.run(
            [sys.executable, "-m", "qiao", "broken:app", "--chdir", str(tmp_path),
             "-b", "127.0.0.1:0", "--log-format", "json", *preload],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert run.returncode != 0, run.stderr
        records = [json.loads(line) for line in run.stderr.splitlines()]
        failed = [r for r in records if "the app cannot start" in r["message"]]
        assert len(failed) == 1 and failed[0]["level"] == "error", (preload, records)
        assert "Traceback" in failed[0]["message"], failed
