"""StatsD, as gunicorn sends it (``--statsd-host``, ``--statsd-prefix``,
``--dogstatsd-tags``), so that dashboards made for gunicorn keep working:
``gunicorn.requests`` and ``gunicorn.request.status.<code>`` (counters),
``gunicorn.request.duration`` (a timer, in milliseconds), ``gunicorn.workers`` (a gauge)
and ``gunicorn.log.critical``, ``.error``, ``.warning`` and ``.exception`` (counters of the
error-log calls at those levels, whatever --log-level writes, an error logged with its
traceback counted as an exception), under the same prefix and with the same dogstatsd
tags.

gunicorn's workers send three datagrams per request. qiao's master sends instead, once a
second, what the workers counted in shared memory since the last time and what it logged
itself (the counters' increments; the request durations as the histogram's buckets hold
them), so that a request costs no system call. The durations are therefore known to the
histogram's resolution: each bucket's requests are sent as its midpoint (the mean itself
when they all fell in one bucket), with a sample rate when there are many, which keeps
counts, rates and percentiles right to within a bucket.
"""

from __future__ import annotations

import re
import socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qiao.arbiter import Arbiter

__all__ = ["Statsd", "parse_host"]

INTERVAL = 1.0  # seconds between two sends
_LINES = 200  # the most duration samples sent per interval (the rest by sample rate)
_DATAGRAM = 1432  # bytes: one Ethernet frame's UDP payload over IPv6


def parse_host(text: str) -> tuple[str, object]:
    """gunicorn's forms: ``HOST:PORT``, ``HOST`` (port 8125), ``[IPV6]:PORT``, or
    ``unix:PATH`` (a datagram socket); ValueError names what is wrong."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError("expected a socket path after 'unix:'")
        return "unix", path
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text)
    if not m:
        raise ValueError("expected HOST:PORT, [IPV6]:PORT or unix:PATH")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or 8125)
    if not 0 < port <= 65535:
        raise ValueError("expected a port from 1 to 65535")
    return "inet", (host, port)


class Statsd:
    """Sends the increments of the master's totals to a StatsD server, once a second."""

    def __init__(self, arbiter: Arbiter, host: str, prefix: str, tags: str) -> None:
        from qiao._qiao import Metrics

        self.arbiter = arbiter
        # gunicorn's: one dot after a prefix that has none.
        self.prefix = re.sub(r"^(.+[^.]+)\.*$", "\\g<1>.", prefix)
        self.tags = ("|#" + tags) if tags else ""
        kind, address = parse_host(host)
        self.address = address
        self.sock: socket.socket | None = None
        self.family = socket.AF_UNIX if kind == "unix" else None
        self.schema = Metrics.schema()
        self.levels = ("critical", "error", "warning", "exception")  # gunicorn.log.<level>
        self.last: list[int] | None = None
        self.due = time.monotonic()

    def _socket(self) -> socket.socket | None:
        """The datagram socket, connected (a name is resolved once, when it first works)."""
        if self.sock is None:
            try:
                if self.family == socket.AF_UNIX:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sock.connect(self.address)
                else:
                    host, port = self.address  # type: ignore[misc]
                    family, _, _, _, addr = socket.getaddrinfo(
                        host, port, 0, socket.SOCK_DGRAM)[0]
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    sock.connect(addr)
                sock.setblocking(False)
                self.sock = sock
            except OSError:
                return None
        return self.sock

    def tick(self, *, force: bool = False) -> None:
        """Sends what changed, when a second has passed since the last send (or `force`)."""
        now = time.monotonic()
        if not force and now < self.due:
            return
        self.due = now + INTERVAL
        arbiter = self.arbiter
        totals = arbiter.metrics.totals([w.mslot for w in arbiter.workers.values()])
        totals += self._log_calls(totals)
        last, self.last = self.last, totals
        lines = [f"gunicorn.workers:{len(arbiter.workers)}|g"]
        if last is not None:
            lines += self._increments(last, totals)
        self._send(lines)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _increments(self, last: list[int], totals: list[int]) -> list[str]:
        methods, classes, bounds, codes, _counters, _refused, _gauges = self.schema
        delta = [new - old for new, old in zip(totals, last)]
        grid = len(methods) * len(classes)
        lines = []
        requests = sum(delta[:grid])
        if requests:
            lines.append(f"gunicorn.requests:{requests}|c|@1.0")
        # The second histogram: from the request's first byte to the end of its response
        # (gunicorn's timer starts at its parsed request: the same but for the head's
        # arrival).
        at = grid + (len(bounds) + 2)
        lines += _durations(delta[at:at + len(bounds) + 1], delta[at + len(bounds) + 1],
                            bounds)
        at += len(bounds) + 2
        for i, code in enumerate(codes):
            if delta[at + i]:
                lines.append(f"gunicorn.request.status.{code}:{delta[at + i]}|c|@1.0")
        # The error-log calls, appended to the totals by tick, in _log_calls' order.
        for level, n in zip(self.levels, delta[len(delta) - len(self.levels):]):
            if n:
                lines.append(f"gunicorn.log.{level}:{n}|c|@1.0")
        return lines

    def _log_calls(self, totals: list[int]) -> list[int]:
        """The error-log calls of the master and its workers, by level (``self.levels``)."""
        from qiao._metrics import log_calls

        methods, classes, bounds, codes, counters, _refused, _gauges = self.schema
        # The scalar counters follow the request grid, two histograms and the codes.
        at = len(methods) * len(classes) + 2 * (len(bounds) + 2) + len(codes)
        calls = log_calls(self.arbiter, dict(zip(counters, totals[at:at + len(counters)])))
        return [calls[level] for level in self.levels]

    def _send(self, lines: list[str]) -> None:
        sock = self._socket()
        if sock is None:
            return
        # Several lines to a datagram (StatsD servers split them at newlines), each
        # datagram within one frame.
        packet = b""
        for line in lines:
            data = f"{self.prefix}{line}{self.tags}".encode("ascii", "replace")
            if packet and len(packet) + 1 + len(data) > _DATAGRAM:
                self._send_one(sock, packet)
                packet = b""
            packet = data if not packet else packet + b"\n" + data
        if packet:
            self._send_one(sock, packet)

    def _send_one(self, sock: socket.socket, packet: bytes) -> None:
        try:
            sock.send(packet)
        except OSError:
            # Nobody listening (ECONNREFUSED), a full buffer: StatsD is best effort, as
            # gunicorn's is; a unix socket is connected again at the next send.
            if self.family == socket.AF_UNIX:
                self.close()


def _durations(buckets: list[int], sum_us: int, bounds: list[float]) -> list[str]:
    """The timer lines for one interval's requests, from its histogram's new counts."""
    count = sum(buckets)
    if not count:
        return []
    used = [i for i, n in enumerate(buckets) if n]
    lines = []
    for i in used:
        n = buckets[i]
        if len(used) == 1:
            ms = sum_us / count / 1000
        else:
            low = bounds[i - 1] if i > 0 else 0.0
            high = bounds[i] if i < len(bounds) else bounds[-1] * 2
            ms = (low + high) / 2 * 1000
        value = f"{ms:.3f}".rstrip("0").rstrip(".")
        if count <= _LINES:
            lines += [f"gunicorn.request.duration:{value}|ms"] * n
        else:
            k = max(1, round(n * _LINES / count))
            rate = k / n
            lines += [f"gunicorn.request.duration:{value}|ms|@{rate:.6g}"] * k
    return lines
