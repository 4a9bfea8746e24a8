"""Instructions per request in the worker, counted with callgrind (repeatable whatever else
the machine does, unlike time): the server runs in-process under valgrind, serves N and
then 2N requests of a workload in two runs, and the difference divided by N is the cost
of one request, start-up and shut-down cancelled out.

    bench/.venv/bin/python bench/instructions.py         # hello, keep-alive, run.py's build
    python bench/instructions.py                         # the qiao this interpreter imports
    python bench/instructions.py --workload hello_close  # a new connection per request
    python bench/instructions.py --workload flask_json --requests 400
    python bench/instructions.py --pythonpath bench/.data/baseline/<rev>-<python>  # a baseline build
    python bench/instructions.py --workload hello_untrusted  # the peer not a trusted proxy
    python bench/instructions.py --workload hello_close_proxy  # a PROXY v1 header per connection
    python bench/instructions.py --metrics       # counting on, as with --metrics-bind

It measures the qiao the interpreter running it imports, and names it: `bench/.venv`'s
is the build `run.py` installed from this checkout. Needs valgrind (Debian's package).
The client is a plain socket in this process, one request at a time, so only the
server's work is counted.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"

GET = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
# What nginx in front adds (X-Forwarded-For and -Proto, as docs/deployment.md sets them).
GET_FORWARDED = (
    b"GET / HTTP/1.1\r\nHost: bench\r\nX-Forwarded-For: 203.0.113.7\r\n"
    b"X-Forwarded-Proto: https\r\n\r\n"
)
# The same from a different client each time (nginx multiplexes its clients' requests
# over its keep-alive connections to the upstream).
GET_FORWARDED_CLIENTS = [
    GET_FORWARDED.replace(b"203.0.113.7", f"203.0.113.{i}".encode()) for i in range(1, 201)
]
UNTRUSTED = {"forwarded_allow_ips": ""}
POST64K = b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 65536\r\n\r\n" + b"p" * 65536

# workload -> (fixture module under bench/apps, request bytes, requests sent at once,
# keep-alive, settings given to make_server; a list of requests is sent in turn). The client
# is 127.0.0.1, a trusted proxy by default: `_untrusted` workloads trust no peer.
WORKLOADS: dict[str, tuple[str, bytes | list[bytes], int, bool, dict[str, object]]] = {
    "hello": ("hello", GET, 1, True, {}),
    "hello_untrusted": ("hello", GET, 1, True, UNTRUSTED),
    "hello_forwarded": ("hello", GET_FORWARDED, 1, True, {}),
    "hello_forwarded_untrusted": ("hello", GET_FORWARDED, 1, True, UNTRUSTED),
    "hello_forwarded_clients": ("hello", GET_FORWARDED_CLIENTS, 1, True, {}),
    "hello_close": (
        "hello", b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n", 1, False, {}
    ),
    "hello_close_proxy": (
        "hello",
        (b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8000\r\n"
         b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"),
        1, False, {"proxy_protocol": True},
    ),
    "pipeline16": ("hello", GET, 16, True, {}),
    "flask_json": ("flask_json", GET, 1, True, {}),
    "big_stream": ("big_stream", GET, 1, True, {}),
    "post64k": ("post_read", POST64K, 1, True, {}),
}

SERVER = """
import sys
sys.path.insert(0, {apps!r})
from {module} import app
import qiao
from qiao import make_server
with make_server("127.0.0.1", {port}, app, **{settings!r}) as server:
    # The engine of a worker under a master: it marks its app thread busy in the master's
    # scoreboard (for --timeout) and, with --metrics-bind, counts each request in a
    # metrics table (make_server's own engine has neither).
    from qiao._qiao import Engine, Scoreboard
    kept = {{"scoreboard": Scoreboard(1, 1), "slot": 0}}
    if {metrics!r}:
        from qiao._qiao import Metrics
        kept["metrics"] = (Metrics(1, 1), 0)
    fds = [s.fileno() for s in server.sockets]
    server._engine = Engine(app, server.config.engine_settings(), fds, **kept)
    print("ready", qiao.__file__, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(sock: socket.socket, buf: bytearray) -> None:
    """Reads one response (Content-Length or chunked framing) off `sock`."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length is None:
        raise ValueError(f"no Content-Length in {head[:200]!r}")
    need = int(length.group(1))
    while len(rest) < need:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    buf[:] = rest[need:]


def count(
    workload: str, requests: int, pythonpath: str | None, keep: str | None,
    metrics: bool = False,
) -> tuple[int, str]:
    """Instructions callgrind counted in the server process for `requests` requests
    (the profile copied to `keep`, when given, for callgrind_annotate), and the path of
    the qiao package it ran."""
    module, request, depth, keep_alive, settings = WORKLOADS[workload]
    port = free_port()
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                sys.executable, "-c",
                SERVER.format(apps=str(APPS), module=module, port=port, settings=settings,
                              metrics=metrics),
            ],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert proc.stdout is not None
            ready, _, measured = proc.stdout.readline().strip().partition(" ")
            assert ready == "ready", "the server did not start"
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            sock = None
            buf = bytearray()
            cycle = request if isinstance(request, list) else [request]
            for i in range(requests // depth):
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                    buf = bytearray()
                sock.sendall(cycle[i % len(cycle)] * depth)
                for _ in range(depth):
                    read_response(sock, buf)
                if not keep_alive:
                    sock.close()
                    sock = None
            if sock is not None:
                sock.close()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        text = subprocess.run(
            ["callgrind_annotate", str(out)], capture_output=True, text=True, check=True
        ).stdout
        if keep:
            Path(keep).write_bytes(out.read_bytes())
    total = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text)
    if total is None:
        raise RuntimeError("no PROGRAM TOTALS in callgrind's report")
    return int(total.group(1).replace(",", "")), measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="hello")
    parser.add_argument("--requests", type=int, default=2000, help="N (default 2000)")
    parser.add_argument("--pythonpath", help="put this first on PYTHONPATH (a baseline build)")
    parser.add_argument(
        "--metrics", action="store_true",
        help="count each request in a metrics table, as a worker with --metrics-bind does",
    )
    parser.add_argument(
        "--keep", metavar="PREFIX", help="keep the two profiles as PREFIX.N and PREFIX.2N"
    )
    args = parser.parse_args()
    n = args.requests
    keep = (lambda k: f"{args.keep}.{k}") if args.keep else (lambda k: None)
    low, measured = count(args.workload, n, args.pythonpath, keep(n), args.metrics)
    high, _ = count(args.workload, 2 * n, args.pythonpath, keep(2 * n), args.metrics)
    print(f"qiao measured: {Path(measured).parent}")
    print(f"{args.workload}: {(high - low) / n:,.0f} instructions per request "
          f"({low:,} for {n}, {high:,} for {2 * n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
