"""A small load generator for the process-model tests: threads on keep-alive connections
sending requests back to back, counting what came back. Bounded in time and count.

Each client follows HTTP/1.1 as a browser does: it reuses its connection until the server
says `Connection: close`, then opens a new one. A request is *failed* when it was written
and no complete 200 came back; a connection that could not be opened (refused) is counted
apart, because no request was accepted on it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from httpclient import Conn
from typing_extensions import Self


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, detail: str = "") -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)
            if detail and len(self.errors) < 20:
                self.errors.append(detail)


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return sorted(kids)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Polls `predicate` until it returns a true value or `timeout` passes; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Load:
    """`clients` threads requesting `path` on `port` until stop() (or `seconds` pass)."""

    def __init__(self, port: int, path: str = "/", clients: int = 8, seconds: float = 20.0):
        self.port, self.path, self.clients, self.seconds = port, path, clients, seconds
        self.tally = Tally()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> Tally:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        return self.tally

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        request = f"GET {self.path} HTTP/1.1\r\nHost: load\r\n\r\n".encode()
        conn = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                try:
                    conn = Conn(self.port, timeout=10)
                except OSError:
                    self.tally.add("refused")
                    time.sleep(0.01)
                    continue
            try:
                resp = conn.request(request)
            except Exception as e:  # noqa: BLE001 - any failure of a written request counts
                self.tally.add("failed", f"{type(e).__name__}: {e}")
                conn.close()
                conn = None
                continue
            if resp.status == 200 and resp.complete:
                self.tally.add("ok")
            else:
                self.tally.add("failed", f"status {resp.status}")
            if (resp.header("Connection") or "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
