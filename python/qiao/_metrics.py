"""The master's exporter on ``--metrics-bind``: Prometheus metrics at ``/metrics`` (the
text format, or OpenMetrics when the scraper's ``Accept`` asks for it), and the health
checks ``/healthz`` (the master runs) and ``/readyz`` (a worker serves and the server is
not stopping).

It runs inside the master's own loop, on non-blocking sockets that the loop's ``select``
watches: the master starts no thread (it forks), and its loop is otherwise idle. The
counts come from the workers' rows of the shared metrics table (``qiao._qiao.Metrics``),
written by their engines without a syscall, lock or Python call per request; the master
adds what it knows itself (worker starts and exits, threads busy, the listen queues, each
worker's memory and CPU). A scrape costs the master a few hundred microseconds.
"""

from __future__ import annotations

import os
import socket
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qiao.arbiter import Arbiter

__all__ = ["Exporter", "render"]

# A scraper's request must arrive whole within this time, and be at most this long; the
# exporter keeps at most this many connections (a scraper needs one at a time).
_DEADLINE = 5.0
_MAX_REQUEST = 8192
_MAX_CLIENTS = 16

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# Linux's TCP_INFO on a listening socket: tcpi_unacked is the accept queue's length and
# tcpi_sacked its limit (the backlog as the kernel capped it), at this offset.
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_QUEUE_AT = 24
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class _Client:
    __slots__ = ("deadline", "received", "sock", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""
        self.unsent = b""
        self.deadline = time.monotonic() + _DEADLINE


class Exporter:
    """The listening socket and the scrapers' connections, served from the master's loop."""

    def __init__(self, arbiter: Arbiter, sock: socket.socket) -> None:
        self.arbiter = arbiter
        self.sock = sock
        sock.setblocking(False)
        self.clients: dict[int, _Client] = {}

    def readers(self) -> list[int]:
        """The descriptors the loop waits on to read."""
        waiting = [fd for fd, c in self.clients.items() if not c.unsent]
        return [self.sock.fileno(), *waiting]

    def writers(self) -> list[int]:
        return [fd for fd, c in self.clients.items() if c.unsent]

    def serve(self, readable: list[int], writable: list[int]) -> None:
        """Does what the ready descriptors allow, and drops connections past their time."""
        if self.sock.fileno() in readable:
            self._accept()
        for fd in readable:
            client = self.clients.get(fd)
            if client is not None:
                self._read(client)
        for fd in writable:
            client = self.clients.get(fd)
            if client is not None:
                self._write(client)
        now = time.monotonic()
        for client in [c for c in self.clients.values() if now > c.deadline]:
            self._drop(client)

    def close(self, *, owner: bool = True) -> None:
        """Closes the sockets; the `owner` (the master) also removes a unix socket's file,
        which a forked worker must leave alone."""
        from qiao._bind import close_listener

        for client in list(self.clients.values()):
            self._drop(client)
        if owner:
            close_listener(self.sock)
        else:
            self.sock.close()

    def _accept(self) -> None:
        while len(self.clients) < _MAX_CLIENTS:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: try again at the next wake
                self.arbiter.log.log("error", f"--metrics-bind: accept failed: {e}")
                return
            conn.setblocking(False)
            self.clients[conn.fileno()] = _Client(conn)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.received += data
        end = client.received.find(b"\r\n\r\n")
        if end < 0:
            if len(client.received) > _MAX_REQUEST:
                self._answer(client, 431, "text/plain", b"request head too large\n")
            return
        self._respond(client, client.received[:end].decode("latin-1"))

    def _respond(self, client: _Client, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._answer(client, 400, "text/plain", b"bad request\n")
            return
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            self._answer(client, 405, "text/plain", b"only GET and HEAD\n", "Allow: GET, HEAD\r\n")
            return
        arbiter = self.arbiter
        if target == "/metrics":
            accept = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "accept":
                    accept += value.lower()
            openmetrics = "application/openmetrics-text" in accept
            body = render(arbiter, openmetrics=openmetrics).encode()
            self._answer(client, 200, OPENMETRICS if openmetrics else TEXT, body,
                         head_only=method == "HEAD")
        elif target == "/healthz":
            self._answer(client, 200, "text/plain", b"ok\n", head_only=method == "HEAD")
        elif target == "/readyz":
            why = arbiter.not_ready()
            if why is None:
                self._answer(client, 200, "text/plain", b"ready\n", head_only=method == "HEAD")
            else:
                self._answer(client, 503, "text/plain", why.encode() + b"\n",
                             head_only=method == "HEAD")
        elif target == "/status":
            import json

            body = (json.dumps(status(arbiter), indent=1) + "\n").encode()
            self._answer(client, 200, "application/json", body, head_only=method == "HEAD")
        else:
            self._answer(client, 404, "text/plain", b"not found: try /metrics, /healthz, "
                         b"/readyz, /status\n")

    def _answer(
        self, client: _Client, status: int, kind: str, body: bytes, extra: str = "",
        *, head_only: bool = False,
    ) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  431: "Request Header Fields Too Large",
                  503: "Service Unavailable"}[status]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}"
                f"Connection: close\r\n\r\n")
        client.unsent = head.encode("latin-1") + (b"" if head_only else body)
        self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.unsent = client.unsent[sent:]
        if not client.unsent:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()


class _Families:
    """Metric families written in order, each with its HELP and TYPE lines."""

    def __init__(self, openmetrics: bool) -> None:
        self.openmetrics = openmetrics
        self.lines: list[str] = []

    def family(self, name: str, kind: str, doc: str) -> None:
        # OpenMetrics names a counter's family without its `_total` suffix.
        if self.openmetrics and kind == "counter":
            name = name.removesuffix("_total")
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            name = f"{name}{{{inner}}}"
        self.lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        if self.openmetrics:
            self.lines.append("# EOF")
        return "\n".join(self.lines) + "\n"


def render(arbiter: Arbiter, *, openmetrics: bool = False) -> str:
    """The metrics of the master and its workers, in the text exposition format (or
    OpenMetrics)."""
    from qiao._qiao import Metrics

    methods, classes, bounds, codes, counters, refused, gauges = Metrics.schema()
    workers = list(arbiter.workers.values())
    totals = arbiter.metrics.totals([w.mslot for w in workers])
    out = _Families(openmetrics)

    at = 0
    out.family("qiao_requests_total", "counter",
               "Requests answered by the application, by method and status class.")
    for method in methods:
        for cls in classes:
            out.sample("qiao_requests_total", totals[at], method=method, status_class=cls)
            at += 1
    for name, doc in (
        ("qiao_request_app_duration_seconds",
         "Time from the application's call to the end of its response."),
        ("qiao_request_duration_seconds",
         "Time from the request's first byte to the end of its response."),
    ):
        out.family(name, "histogram", doc)
        cumulative = 0
        for i, bound in enumerate([*bounds, float("inf")]):
            cumulative += totals[at + i]
            out.sample(f"{name}_bucket", cumulative, le=_number(bound))
        out.sample(f"{name}_sum", totals[at + len(bounds) + 1] / 1e6)
        out.sample(f"{name}_count", cumulative)
        at += len(bounds) + 2
    at += len(codes)  # by code: for StatsD (Prometheus has the classes)
    scalar = dict(zip(counters, totals[at:at + len(counters)]))
    at += len(counters)
    for name, key, doc in (
        ("qiao_received_bytes_total", "bytes_received",
         "Request bytes received: heads and bodies (a chunked body with its framing)."),
        ("qiao_sent_bytes_total", "bytes_sent", "Response bytes sent: heads and bodies."),
        ("qiao_connections_accepted_total", "connections_accepted", "Connections accepted."),
        ("qiao_connections_limited_total", "connections_limited",
         ("Times a worker stopped accepting at --worker-connections (clients then wait "
          "in the listen queue).")),
        ("qiao_keepalive_reuses_total", "keepalive_reuses",
         "Requests on a connection that carried one before."),
        ("qiao_spooled_bodies_total", "bodies_spooled",
         ("Request bodies written to a temporary file (past --body-buffer-size).")),
    ):
        out.family(name, "counter", doc)
        out.sample(name, scalar[key])
    out.family("qiao_log_messages_total", "counter",
               "Error-log calls at warning level and above, by level, whatever --log-level "
               "wrote (exception: an error logged with its traceback).")
    for level, count in log_calls(arbiter, scalar).items():
        out.sample("qiao_log_messages_total", count, level=level)
    out.family("qiao_requests_refused_total", "counter",
               "Requests refused before the application, by status (limits, malformed "
               "requests, timeouts).")
    for status in [*map(str, refused), "other"]:
        out.sample("qiao_requests_refused_total", totals[at], status=status)
        at += 1
    gauge = dict(zip(gauges, totals[at:at + len(gauges)]))
    out.family("qiao_requests_in_flight", "gauge", "Requests being served now.")
    out.sample("qiao_requests_in_flight", gauge["requests_in_flight"])
    out.family("qiao_connections_open", "gauge", "Client connections open now.")
    out.sample("qiao_connections_open", gauge["connections_open"])

    busy = waiting = idle = 0
    for w in workers:
        if w.board.ready(w.slot):
            b, wt = w.board.threads_state(w.slot)
            busy, waiting, idle = busy + b, waiting + wt, idle + max(w.threads - b - wt, 0)
    out.family("qiao_threads", "gauge",
               "Application threads of the serving workers: running a request in the "
               "application (busy), waiting for a slow client to read (waiting), or idle.")
    out.sample("qiao_threads", busy, state="busy")
    out.sample("qiao_threads", waiting, state="waiting")
    out.sample("qiao_threads", idle, state="idle")

    out.family("qiao_workers", "gauge", "Worker processes alive.")
    out.sample("qiao_workers", len(workers))
    out.family("qiao_workers_desired", "gauge", "Worker processes wanted (--workers, TTIN, TTOU).")
    out.sample("qiao_workers_desired", arbiter.target)
    out.family("qiao_worker_starts_total", "counter", "Worker processes started.")
    out.sample("qiao_worker_starts_total", arbiter.spawned)
    out.family("qiao_worker_exits_total", "counter", "Worker processes ended, by reason.")
    for reason in EXIT_REASONS:
        out.sample("qiao_worker_exits_total", arbiter.exits.get(reason, 0), reason=reason)

    queues = [(name, q) for name, q in ((_listener_name(s), _listen_queue(s))
                                         for s in arbiter.sockets) if q is not None]
    if queues:
        out.family("qiao_listen_queue_length", "gauge",
                   "Connections waiting in a listening socket's accept queue (the kernel's).")
        for name, (length, _) in queues:
            out.sample("qiao_listen_queue_length", length, listener=name)
        out.family("qiao_listen_queue_limit", "gauge",
                   "The accept queue's limit: --backlog as the kernel capped it.")
        for name, (_, limit) in queues:
            out.sample("qiao_listen_queue_limit", limit, listener=name)

    rows = sorted(workers, key=lambda w: w.mslot)
    out.family("qiao_worker_resident_memory_bytes", "gauge", "Each worker's resident memory.")
    stats = {w.mslot: _process_stats(w.pid) for w in rows}
    for w in rows:
        out.sample("qiao_worker_resident_memory_bytes", stats[w.mslot][0], worker=str(w.mslot))
    out.family("qiao_worker_cpu_seconds_total", "counter",
               "Each worker's CPU time, user and system (from its start).")
    for w in rows:
        out.sample("qiao_worker_cpu_seconds_total", stats[w.mslot][1], worker=str(w.mslot))
    out.family("qiao_worker_requests_total", "counter",
               "Requests each worker has answered (from its start).")
    grid = len(methods) * len(classes)
    for w in rows:
        served = sum(arbiter.metrics.row(w.mslot)[:grid])
        out.sample("qiao_worker_requests_total", served, worker=str(w.mslot))
    out.family("qiao_worker_age_seconds", "gauge", "Time since each worker was started.")
    now = time.monotonic()
    for w in rows:
        out.sample("qiao_worker_age_seconds", round(now - w.started, 3), worker=str(w.mslot))
    return out.text()


def log_calls(arbiter: Arbiter, scalar: dict[str, int]) -> dict[str, int]:
    """The error-log calls by level (gunicorn's StatsD names: critical, error, warning,
    exception): the workers', from the metrics table's `scalar` counters by name, and the
    master's own."""
    calls = {level: count for level, count in arbiter.log.target.logged()}
    for level in calls:
        calls[level] += scalar[f"log_{level}"]
    return calls


def status(arbiter: Arbiter) -> dict:
    """What `qiao status` shows: the master, and each worker with its age, requests, memory,
    CPU and threads, each busy thread with its request and how long it has run."""
    metrics = arbiter.metrics
    from qiao._qiao import Metrics

    methods, classes = Metrics.schema()[:2]
    grid = len(methods) * len(classes)
    now = time.monotonic()
    workers = []
    for w in sorted(arbiter.workers.values(), key=lambda w: w.mslot):
        rss, cpu = _process_stats(w.pid)
        threads = []
        states = w.board.thread_states(w.slot) if w.board.ready(w.slot) else []
        for i, (state, seconds) in enumerate(states[:w.threads]):
            entry: dict[str, object] = {"thread": i,
                                        "state": ("idle", "busy", "waiting")[state]}
            if state:
                entry["request"] = metrics.request(w.mslot, i)
                entry["seconds"] = seconds
            threads.append(entry)
        workers.append({
            "pid": w.pid, "worker": w.mslot, "age": round(now - w.started, 3),
            "requests": sum(metrics.row(w.mslot)[:grid]), "rss": rss,
            "cpu": round(cpu, 3), "serving": w.board.ready(w.slot),
            "retiring": w.retiring, "threads": threads,
        })
    return {
        "master": {"pid": os.getpid(), "workers_desired": arbiter.target,
                   "stopping": bool(arbiter.stopping), "ready": arbiter.not_ready() is None,
                   "worker_starts": arbiter.spawned, "worker_exits": dict(arbiter.exits)},
        "workers": workers,
    }


# Why workers end, as `qiao_worker_exits_total` labels them (all shown, 0 when none).
EXIT_REASONS = (
    "crash", "timeout", "max_requests", "max_worker_lifetime", "max_worker_memory",
    "reload", "scale_down", "stop", "boot_error", "exit",
)


def _listener_name(sock: socket.socket) -> str:
    from qiao._bind import display

    return display(sock)


def _listen_queue(sock: socket.socket) -> tuple[int, int] | None:
    """A TCP listening socket's accept queue: (length, limit), from the kernel (Linux's
    TCP_INFO); None elsewhere."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _QUEUE_AT + 8:
        return None
    length, limit = struct.unpack_from("II", info, _QUEUE_AT)
    return length, limit


def _process_stats(pid: int | None) -> tuple[int, float]:
    """A process's resident bytes and CPU seconds (user + system), 0 when unreadable."""
    rss, cpu = 0, 0.0
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with open(f"/proc/{pid}/stat") as f:
            # The fields after the command name (which may hold spaces), from field 3 on.
            fields = f.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        pass
    return rss, cpu


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if isinstance(value, int) or value == int(value):
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
