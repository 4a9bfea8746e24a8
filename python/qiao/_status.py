"""``qiao status``: what each worker of a running server does now, as uwsgitop shows it:
its age, requests served, memory and CPU, and each busy thread's request and time. Read
from the master's ``--metrics-bind`` socket (``/status``), which reads the shared memory
its workers write."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

__all__ = ["main"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="qiao status",
        description="Show what a running qiao's workers do (it needs --metrics-bind).",
    )
    parser.add_argument(
        "address", nargs="?", default=os.environ.get("QIAO_METRICS_BIND"),
        help="the server's --metrics-bind: HOST:PORT or unix:PATH (default: $QIAO_METRICS_BIND)",
    )
    parser.add_argument("--json", action="store_true", help="print the state as JSON")
    args = parser.parse_args(argv)
    if not args.address:
        parser.error("give the server's --metrics-bind address (or set QIAO_METRICS_BIND)")
    try:
        state = fetch(args.address)
    except ValueError as e:
        parser.error(f"{args.address}: {e}")
    except OSError as e:
        reason = e.strerror or str(e)
        print(f"qiao status: error: cannot reach a qiao master at {args.address}: {reason}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print(render(state), end="")
    return 0


def fetch(address: str, timeout: float = 5.0) -> dict:
    """GET /status from the master's exporter; ValueError for a malformed address or an
    answer that is not qiao's status."""
    from qiao._bind import parse_bind

    where = parse_bind(address)
    if where.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = where.path
    elif where.kind == "tcp":
        sock = socket.socket(
            socket.AF_INET6 if ":" in where.host else socket.AF_INET, socket.SOCK_STREAM)
        target = (where.host or "127.0.0.1", where.port)
    else:
        raise ValueError("expected HOST:PORT or unix:PATH")
    with sock:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: qiao\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError("the answer is not a qiao status (is it qiao's --metrics-bind?)")
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError("the answer is not a qiao status") from None


def render(state: dict) -> str:
    master = state["master"]
    workers = state["workers"]
    health = "stopping" if master["stopping"] else ("ready" if master["ready"] else "not ready")
    lines = [
        f"master {master['pid']}: {len(workers)} worker(s) of {master['workers_desired']} "
        f"wanted, {health}; {master['worker_starts']} started"
        + "".join(f", {n} {reason}" for reason, n in sorted(master["worker_exits"].items())),
        "",
        (f"{'PID':>7} {'WORKER':>6} {'AGE':>8} {'REQUESTS':>9} {'RSS':>8} {'CPU':>8} "
         f"{'BUSY':>6}"),
    ]
    for w in workers:
        threads = w["threads"]
        busy = sum(1 for t in threads if t["state"] != "idle")
        flag = " retiring" if w["retiring"] else ("" if w["serving"] else " booting")
        lines.append(
            f"{w['pid']:>7} {w['worker']:>6} {_age(w['age']):>8} {w['requests']:>9} "
            f"{w['rss'] / 1048576:>7.1f}M {w['cpu']:>7.2f}s {busy:>2}/{len(threads):<3}{flag}"
        )
        for t in threads:
            if t["state"] == "idle":
                continue
            what = "in the app" if t["state"] == "busy" else "waiting on its client"
            lines.append(f"{'':>16}thread {t['thread']}: {t['seconds']:.1f}s {what}: "
                         f"{t['request'] or '?'}")
    return "\n".join(lines) + "\n"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
