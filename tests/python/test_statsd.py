"""--statsd-host, --statsd-prefix, --dogstatsd-tags: what qiao sends, received by a UDP
listener in the test, against what gunicorn sends for the same traffic (gunicorn's names
and types, counts and tags: the StatsD line protocol, ``name:value|type[|@rate][|#tags]``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest
from conftest import TESTS_DIR, is_gunicorn
from gunicorn_side import HAVE_GUNICORN, environment
from loadgen import wait_for

pytestmark = pytest.mark.skipif(is_gunicorn(), reason="compares qiao with gunicorn itself")

TRAFFIC = [("GET", "/pid", 200)] * 10 + [("GET", "/no-such-route", 404)] * 3 \
    + [("POST", "/echo", 200)] * 2 + [("GET", "/error?mode=before_start", 500)]
# Refused before the app (a control byte in the method, RFC 9110 §9.1: a token): a warning
# in the error log, and no request for StatsD (none was read).
BAD_REQUEST = b"G\x01T /pid HTTP/1.1\r\nHost: t\r\n\r\n"


class Listener:
    """A StatsD server's socket: every line received, in order."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self.lines += data.decode("ascii").split("\n")

    def close(self) -> None:
        self.done = True
        self.thread.join(2)
        self.sock.close()

    def summary(self) -> dict[str, object]:
        """Per metric name: its type, its total (counters; a timer's sample count, each
        line weighing 1/rate), the tags seen."""
        totals: dict[str, float] = defaultdict(float)
        kinds: dict[str, str] = {}
        tags: set[str] = set()
        gauges: dict[str, float] = {}
        with self.lock:
            lines = list(self.lines)
        for line in lines:
            name, _, rest = line.partition(":")
            fields = rest.split("|")
            value, kind = float(fields[0]), fields[1]
            rate = 1.0
            for field in fields[2:]:
                if field.startswith("@"):
                    rate = float(field[1:])
                elif field.startswith("#"):
                    tags.add(field[1:])
            kinds[name] = kind
            if kind == "c":
                totals[name] += value / rate
            elif kind == "ms":
                totals[name] += 1 / rate
            elif kind == "g":
                gauges[name] = value
        return {"totals": dict(totals), "kinds": kinds, "tags": tags, "gauges": gauges}


def send_traffic(port: int) -> None:
    for method, path, status in TRAFFIC:
        body = b"hello" if method == "POST" else b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                      f"Connection: close\r\n\r\n".encode() + body)
            reply = b""
            while data := s.recv(65536):
                reply += data
        assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:80]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(BAD_REQUEST)
        reply = b""
        while data := s.recv(65536):
            reply += data
    assert reply.startswith(b"HTTP/1.1 400"), reply[:80]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_collect(server: str) -> dict[str, object]:
    """Runs `server` with two workers and StatsD on, sends TRAFFIC, and returns what the
    listener received once the request count is in (then the server is stopped)."""
    listener = Listener()
    port = free_port()
    argv = [sys.executable, "-m", server, "apps.behaviour:app", "-w", "2", "-b",
            f"127.0.0.1:{port}", "--chdir", str(TESTS_DIR),
            "--statsd-host", f"127.0.0.1:{listener.port}", "--statsd-prefix", "app",
            "--dogstatsd-tags", "env:test,team:web"]
    if server == "gunicorn":
        argv += ["-k", "gthread"]
    proc = subprocess.Popen(argv, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=str(TESTS_DIR))
    try:
        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        assert wait_for(up, timeout=20), f"{server} did not listen"
        send_traffic(port)
        # Every request is counted, and the refused one's warning (sent last).
        assert wait_for(
            lambda: listener.summary()["totals"].get("app.gunicorn.requests") == len(TRAFFIC)
            and "app.gunicorn.log.warning" in listener.summary()["totals"],
            timeout=10,
        ), listener.summary()
        time.sleep(1.2)  # a gauge send at least (qiao sends once a second)
        return listener.summary()
    finally:
        proc.terminate()
        proc.wait(20)
        listener.close()


@pytest.mark.skipif(not HAVE_GUNICORN, reason="gunicorn is not installed")
def test_statsd_names_and_counts_match_gunicorns():
    """The same traffic gives the same metric names, types, counts and tags as gunicorn's:
    requests, each status code, one duration sample per request, the workers gauge, and the
    error-log calls by level: the app's exception (``gunicorn.log.exception``, not
    ``.error``) and the refused request's warning."""
    qiao = serve_and_collect("qiao")
    gunicorn = serve_and_collect("gunicorn")
    requests = len(TRAFFIC)
    wanted = {
        "app.gunicorn.requests": ("c", requests),
        "app.gunicorn.request.status.200": ("c", 12),
        "app.gunicorn.request.status.404": ("c", 3),
        "app.gunicorn.request.status.500": ("c", 1),
        "app.gunicorn.request.duration": ("ms", requests),
        "app.gunicorn.log.exception": ("c", 1),
        "app.gunicorn.log.warning": ("c", 1),
    }
    for name, (kind, count) in wanted.items():
        for side, got in (("qiao", qiao), ("gunicorn", gunicorn)):
            assert got["kinds"].get(name) == kind, (side, name, got["kinds"])
            assert round(got["totals"][name]) == count, (side, name, got["totals"])
    for side, got in (("qiao", qiao), ("gunicorn", gunicorn)):
        assert got["gauges"].get("app.gunicorn.workers") == 2, (side, got["gauges"])
        assert got["tags"] == {"env:test,team:web"}, (side, got["tags"])
    # Nothing more on either side (no gunicorn.log.error for the exception, say).
    assert qiao["kinds"] == gunicorn["kinds"]
    assert {k: round(v) for k, v in qiao["totals"].items()} == \
        {k: round(v) for k, v in gunicorn["totals"].items()}


def test_bad_statsd_host_is_one_line_and_status_2():
    """A malformed --statsd-host is refused before anything starts: one line, status 2."""
    run = subprocess.run([sys.executable, "-m", "qiao", "--statsd-host", "host:99999"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--statsd-host" in run.stderr, run.stderr
