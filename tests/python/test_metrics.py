"""--metrics-bind: the master's Prometheus exporter and health checks, read by real clients
(``prometheus_client``'s parsers, ``promtool``, a Prometheus server scraping it).

The exposition formats are Prometheus' text format 0.0.4 and OpenMetrics 1.0; the counts
are checked against traffic the test sends, across two workers and a worker replaced at
``--max-requests``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import is_gunicorn, running_server
from loadgen import wait_for

pytestmark = pytest.mark.skipif(is_gunicorn(), reason="--metrics-bind is qiao's")

parser = pytest.importorskip("prometheus_client.parser")
openmetrics_parser = pytest.importorskip("prometheus_client.openmetrics.parser")

METRICS_RE = re.compile(r"Metrics and health checks at: (\S+)")


def metrics_url(server) -> str:
    log = server.wait_log("Metrics and health checks at:", timeout=15)
    m = METRICS_RE.search(log)
    assert m, log
    return m.group(1).rstrip("/")


def fetch(url: str, accept: str | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a text-format page, parsed by prometheus_client: (name, labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def request(port: int, raw: bytes) -> bytes:
    """One request on its own connection (so that either worker may take it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


def test_counts_across_two_workers_and_a_replaced_one():
    """Requests by method and status class, the histograms' counts, bytes and refusals add up
    to the traffic sent, over two workers, one of them replaced at --max-requests (its counts
    stay in the totals), as prometheus_client parses the text format."""
    with running_server(
        "behaviour:app", "-w", "2", "--max-requests", "12", "--metrics-bind", "127.0.0.1:0"
    ) as server:
        url = metrics_url(server)
        sent = received = 0
        for _ in range(20):
            reply = request(server.port, get("/pid"))
            assert reply.startswith(b"HTTP/1.1 200"), reply
        for _ in range(3):
            raw = (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                   b"Connection: close\r\n\r\nhello")
            received += len(raw)
            assert request(server.port, raw).startswith(b"HTTP/1.1 200")
        for _ in range(2):
            assert request(server.port, get("/no-such-route")).startswith(b"HTTP/1.1 404")
        # RFC 9112 §6.3: Content-Length and Transfer-Encoding together: refused with 400.
        refused = request(server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 400"), refused
        sent = 25

        def counted():
            found = samples(fetch(url + "/metrics")[2])
            exits = value(found, "qiao_worker_exits_total", reason="max_requests")
            return found if exits >= 1 else None

        found = wait_for(counted, timeout=15)
        assert found, "no worker was replaced at --max-requests"
        assert value(found, "qiao_requests_total", method="GET", status_class="2xx") == 20
        assert value(found, "qiao_requests_total", method="POST", status_class="2xx") == 3
        assert value(found, "qiao_requests_total", method="GET", status_class="4xx") == 2
        total = sum(v for (name, _), v in found.items() if name == "qiao_requests_total")
        assert total == sent
        for histogram in ("qiao_request_duration_seconds", "qiao_request_app_duration_seconds"):
            assert value(found, histogram + "_count") == sent
            assert value(found, histogram + "_bucket", le="+Inf") == sent
            assert value(found, histogram + "_sum") > 0
        assert value(found, "qiao_requests_refused_total", status="400") == 1
        # Its error-log warning, counted in the worker's row (as StatsD's gunicorn.log.*).
        assert value(found, "qiao_log_messages_total", level="warning") == 1
        assert value(found, "qiao_log_messages_total", level="exception") == 0
        assert value(found, "qiao_received_bytes_total") >= received
        assert value(found, "qiao_sent_bytes_total") > 0
        assert value(found, "qiao_connections_accepted_total") == sent + 1
        assert value(found, "qiao_worker_starts_total") >= 3
        assert value(found, "qiao_workers") == 2
        # Every request was answered: nothing is left in flight, no connection open.
        assert value(found, "qiao_requests_in_flight") == 0
        assert wait_for(lambda: value(samples(fetch(url + "/metrics")[2]),
                                      "qiao_connections_open") == 0 or None, timeout=5)
        # Per live worker, from its start (both may be replacements by now).
        served = [v for (name, _), v in found.items() if name == "qiao_worker_requests_total"]
        assert len(served) == 2 and sum(served) <= sent

        def resident() -> list[float] | None:
            # (A worker that has just exited reads 0 until the master reaps it.)
            found = samples(fetch(url + "/metrics")[2])
            rss = [v for (name, _), v in found.items()
                   if name == "qiao_worker_resident_memory_bytes"]
            return rss if len(rss) == 2 and all(v > 1 << 20 for v in rss) else None

        assert wait_for(resident, timeout=5)
        limit = [v for (name, _), v in found.items() if name == "qiao_listen_queue_limit"]
        assert limit and limit[0] > 0


def test_openmetrics_when_asked_and_promtool_accepts_both():
    """Accept: application/openmetrics-text gets OpenMetrics 1.0 (ending with # EOF),
    otherwise the text format 0.0.4; `promtool check metrics` finds no problem in the text
    format's names, types and help."""
    with running_server("behaviour:app", "--metrics-bind", "127.0.0.1:0") as server:
        url = metrics_url(server)
        request(server.port, get("/pid"))
        status, headers, text = fetch(url + "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        status, headers, om = fetch(
            url + "/metrics", "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
        )
        assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.endswith("# EOF\n")
        families = {f.name: f for f in openmetrics_parser.text_string_to_metric_families(om)}
        assert families["qiao_requests"].type == "counter"
        assert families["qiao_request_duration_seconds"].type == "histogram"
        names = {f.name for f in parser.text_string_to_metric_families(text)}
        assert {"qiao_requests", "qiao_threads", "qiao_worker_exits"} <= names
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool not installed (Debian package prometheus)")
        check = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                               capture_output=True, timeout=30, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_health_checks_and_readiness_while_stopping():
    """/healthz answers while the master runs; /readyz is 200 once a worker serves and 503
    once a graceful stop began, while a request in flight keeps the server up."""
    with running_server(
        "behaviour:app", "--graceful-timeout", "10", "--metrics-bind", "127.0.0.1:0"
    ) as server:
        url = metrics_url(server)
        assert fetch(url + "/healthz")[:1] == (200,)
        status, _, body = fetch(url + "/readyz")
        assert (status, body) == (200, "ready\n")
        assert fetch(url + "/nothing")[0] == 404
        # A HEAD has the GET's head and no body; other methods are refused (RFC 9110 §15.5.6).
        head = request(int(url.rsplit(":", 1)[1]),
                       b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        post = request(int(url.rsplit(":", 1)[1]),
                       b"POST /readyz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in post

        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(get("/slow?s=4"))
        time.sleep(0.5)  # the request is in the app
        server.proc.send_signal(signal.SIGTERM)
        stopping = wait_for(lambda: fetch(url + "/readyz")[0] == 503 or None, timeout=5)
        assert stopping, "/readyz stayed ready during the stop"
        status, _, body = fetch(url + "/readyz")
        assert body == "stopping\n"
        assert fetch(url + "/healthz")[0] == 200
        reply = slow.recv(65536)
        slow.close()
        assert reply.startswith(b"HTTP/1.1 200")


def test_bad_metrics_bind_is_one_line_and_status_2():
    """A malformed --metrics-bind is refused before anything starts: one line, status 2."""
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "qiao", "--metrics-bind", "fd://3"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "--metrics-bind" in run.stderr, run.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_prometheus_server_scrapes_it(tmp_path):
    """A real Prometheus scrapes the exporter every second: `up` is 1, and the rate of
    qiao_requests_total it computes is above zero while traffic runs."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    with running_server("behaviour:app", "--metrics-bind", "127.0.0.1:0") as server:
        target = metrics_url(server).split("://", 1)[1]
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: qiao\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        port = free_port()
        prometheus = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            api = f"http://127.0.0.1:{port}/api/v1/query?query="

            def query(expr: str) -> float | None:
                try:
                    status, _, body = fetch(api + urllib.parse.quote(expr))
                except OSError:
                    return None
                result = json.loads(body)["data"]["result"] if status == 200 else []
                return float(result[0]["value"][1]) if result else None

            assert wait_for(lambda: query('up{job="qiao"}') == 1.0 or None, timeout=30), \
                "Prometheus never scraped qiao"

            def rate() -> float | None:
                for _ in range(20):
                    request(server.port, get("/pid"))
                r = query("sum(rate(qiao_requests_total[5s]))")
                return r if r and r > 0 else None

            assert wait_for(rate, timeout=20), "no request rate seen by Prometheus"
        finally:
            prometheus.terminate()
            prometheus.wait(10)


def test_qiao_status_shows_each_worker_and_busy_threads_request():
    """`qiao status ADDRESS` (and --json): each worker with its requests, memory and
    threads; a thread busy in the app shows its request (method and path, not the query)
    and for how long."""
    import sys

    with running_server(
        "behaviour:app", "-w", "2", "--threads", "2", "--metrics-bind", "127.0.0.1:0"
    ) as server:
        address = metrics_url(server).split("://", 1)[1]
        for _ in range(3):
            request(server.port, get("/pid"))
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(get("/slow?s=3&token=secret"))

        def status() -> dict | None:
            run = subprocess.run([sys.executable, "-m", "qiao", "status", address, "--json"],
                                 capture_output=True, text=True, timeout=30, check=False)
            assert run.returncode == 0, run.stderr
            state = json.loads(run.stdout)
            busy = [t for w in state["workers"] for t in w["threads"] if t["state"] == "busy"]
            return state if busy and busy[0]["seconds"] >= 0.2 else None

        state = wait_for(status, timeout=5)
        assert state, "no busy thread seen"
        assert len(state["workers"]) == 2
        assert sum(w["requests"] for w in state["workers"]) == 3
        assert all(w["rss"] > 1 << 20 and len(w["threads"]) == 2 for w in state["workers"])
        busy = [t for w in state["workers"] for t in w["threads"] if t["state"] == "busy"]
        assert [t["request"] for t in busy] == ["GET /slow"]
        assert state["master"]["ready"] is True

        text = subprocess.run([sys.executable, "-m", "qiao", "status", address],
                              capture_output=True, text=True, timeout=30, check=False)
        assert text.returncode == 0, text.stderr
        assert "GET /slow" in text.stdout and "in the app" in text.stdout
        assert "secret" not in text.stdout
        slow.recv(65536)
        slow.close()


def test_qiao_status_over_a_unix_socket(tmp_path):
    """--metrics-bind unix:PATH is a local control socket, without a TCP port (its file's
    mode decides who may read it): `qiao status unix:PATH` reads the master through it."""
    import sys

    path = tmp_path / "qiao.sock"
    with running_server("behaviour:app", "--metrics-bind", f"unix:{path}") as server:
        request(server.port, get("/pid"))

        def status() -> dict | None:
            run = subprocess.run(
                [sys.executable, "-m", "qiao", "status", f"unix:{path}", "--json"],
                capture_output=True, text=True, timeout=30, check=False)
            return json.loads(run.stdout) if run.returncode == 0 else None

        state = wait_for(status, timeout=10)
        assert state, "qiao status never reached the master over its unix socket"
        assert state["master"]["pid"] == server.proc.pid
        assert [w["requests"] for w in state["workers"]] == [1]
    assert not path.exists(), "the master left its socket file behind"


def test_qiao_status_without_a_server_says_so():
    """Nothing listening: one line naming the address, status 1; no address: usage, 2."""
    import sys

    run = subprocess.run([sys.executable, "-m", "qiao", "status", f"127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "cannot reach a qiao master" in run.stderr
    env = {k: v for k, v in __import__("os").environ.items() if k != "QIAO_METRICS_BIND"}
    run = subprocess.run([sys.executable, "-m", "qiao", "status"], env=env,
                         capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2 and "--metrics-bind" in run.stderr


def test_counts_from_concurrent_app_threads_add_up():
    """--threads 4 under 8 concurrent clients: each app thread counts in cells of its own,
    and the totals are exactly the requests sent, with none left in flight."""
    from concurrent.futures import ThreadPoolExecutor

    with running_server(
        "behaviour:app", "--threads", "4", "--metrics-bind", "127.0.0.1:0"
    ) as server:
        url = metrics_url(server)
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: request(server.port, get("/slow?s=0.01")),
                                    range(80)))
        assert all(r.startswith(b"HTTP/1.1 200") for r in replies)
        found = samples(fetch(url + "/metrics")[2])
        assert value(found, "qiao_requests_total", method="GET", status_class="2xx") == 80
        assert value(found, "qiao_request_app_duration_seconds_count") == 80
        assert value(found, "qiao_requests_in_flight") == 0
        assert value(found, "qiao_connections_accepted_total") == 80


def test_static_files_are_counted_without_app_time(tmp_path):
    """Static responses (--static) are requests like the app's in the metrics: by method
    and status class, with their total time, bytes sent and none left in flight; they add
    nothing to the time in the application, which none served."""
    (tmp_path / "site.css").write_text("body { color: red }\n")
    with running_server(
        "behaviour:app", "--static", f"/static={tmp_path}", "--metrics-bind", "127.0.0.1:0"
    ) as server:
        url = metrics_url(server)
        for _ in range(3):
            assert request(server.port, get("/static/site.css")).startswith(b"HTTP/1.1 200")
        assert request(server.port, get("/static/missing.css")).startswith(b"HTTP/1.1 404")
        assert request(server.port, get("/single")).startswith(b"HTTP/1.1 200")
        found = samples(fetch(url + "/metrics")[2])
    assert value(found, "qiao_requests_total", method="GET", status_class="2xx") == 4
    assert value(found, "qiao_requests_total", method="GET", status_class="4xx") == 1
    assert value(found, "qiao_request_duration_seconds_count") == 5
    assert value(found, "qiao_request_app_duration_seconds_count") == 1
    assert value(found, "qiao_requests_in_flight") == 0


def test_request_time_runs_from_the_first_byte_and_chunked_bodies_count_as_sent(tmp_path):
    """The request duration runs from the request's first byte: a head sent in two parts a
    second apart spends that second in qiao_request_duration_seconds but not in the
    application's time, whose call came after the head, and the access log's %(D)s is the
    same duration. A chunked body (RFC 9112 §7.1) counts in the bytes received as it was
    sent, sizes and trailer included, not as its decoded length."""
    gap = 1.0
    log = tmp_path / "access.log"
    with running_server(
        "echo_environ:app", "--metrics-bind", "127.0.0.1:0",
        "--access-logfile", str(log), "--access-logformat", "%(D)s",
    ) as server:
        url = metrics_url(server)
        first, rest = b"GET /slow-head HTTP/1.1\r\nHo", b"st: t\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(first)
            time.sleep(gap)
            s.sendall(rest)
            reply = b""
            while data := s.recv(65536):
                reply += data
        assert reply.startswith(b"HTTP/1.1 200")
        found = samples(fetch(url + "/metrics")[2])
        total = value(found, "qiao_request_duration_seconds_sum")
        app = value(found, "qiao_request_app_duration_seconds_sum")
        assert total - app >= gap, (total, app)
        wait_for(lambda: log.exists() and log.read_text().strip(), timeout=5)
        assert int(log.read_text().split()[0]) >= gap * 1e6

        received = value(found, "qiao_received_bytes_total")
        assert received == len(first + rest)
        head = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n")
        body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
        assert request(server.port, head + body).startswith(b"HTTP/1.1 200")
        found = samples(fetch(url + "/metrics")[2])
        assert value(found, "qiao_received_bytes_total") - received == len(head + body)


def test_the_grafana_dashboard_queries_only_exported_metrics():
    """docs/grafana-dashboard.json: every metric a panel's query names is one the exporter
    serves (a histogram by its _bucket, _sum and _count series), so that no panel is
    empty because of a renamed metric. (bench/dashboard.py runs each query against a real
    Prometheus.)"""
    from pathlib import Path

    dashboard = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
    if not dashboard.exists():
        pytest.skip("docs/ is not beside the tests (an installed test tree)")
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"]
             for t in p.get("targets", [])]
    named = {name for expr in exprs for name in re.findall(r"\bqiao_[a-z_]+", expr)}
    with running_server("behaviour:app", "--metrics-bind", "127.0.0.1:0") as server:
        served = set(samples(fetch(metrics_url(server) + "/metrics")[2]))
    exported = {name for name, _ in served}
    assert named and named <= exported, sorted(named - exported)


HIGH_DESCRIPTORS = """
import os
import resource

_held = []


def on_starting(server):
    # Every descriptor the master opens from now on is numbered past select()'s 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    while len(_held) < 1100:
        _held.append(os.open(os.devnull, os.O_RDONLY))
"""


def test_the_master_watches_descriptors_numbered_past_1024(tmp_path):
    """A master with enough workers, listeners and exporter clients holds descriptors
    numbered 1024 and more, which select() refuses: it must still serve scrapes and
    `qiao status` and watch its workers (their dump pipes) through them."""
    import resource
    import sys

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 2048:
        pytest.skip("the hard RLIMIT_NOFILE is below 2048")
    conf = tmp_path / "high.conf.py"
    conf.write_text(HIGH_DESCRIPTORS)
    with running_server("behaviour:app", "-c", str(conf), "-w", "2",
                        "--metrics-bind", "127.0.0.1:0") as server:
        url = metrics_url(server)
        for _ in range(3):
            assert request(server.port, get("/pid")).startswith(b"HTTP/1.1 200")

        def counted() -> dict | None:
            found = samples(fetch(url + "/metrics")[2])
            done = value(found, "qiao_requests_total", method="GET", status_class="2xx") == 3
            return found if done else None

        assert wait_for(counted, timeout=10), "the exporter never counted the three requests"
        status = subprocess.run(
            [sys.executable, "-m", "qiao", "status", url.split("://", 1)[1], "--json"],
            capture_output=True, text=True, timeout=30, check=False)
        assert status.returncode == 0, status.stderr
        assert len(json.loads(status.stdout)["workers"]) == 2
        fds = [int(fd) for fd in os.listdir(f"/proc/{server.proc.pid}/fd")]
        assert max(fds) > 1100, "the master's descriptors did not reach past 1024"
        assert server.alive(), server.log()
