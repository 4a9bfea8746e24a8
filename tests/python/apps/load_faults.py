"""A WSGI app for the load and fault tests: tiny answers, endless streams whose close() is
counted, a large stream, and an upload reader that keeps nothing.

GET /stats answers {"pid", "started", "closed", "ok"}: the worker's pid (for its RSS), how
many /stream iterables were started and closed, and how many /ok calls, in this process.
"""

import json
import os
import threading
import time

_lock = threading.Lock()
_counts = {"started": 0, "closed": 0, "ok": 0}

# Upper bound of every stream, so a failing test never leaves a worker streaming forever.
MAX_SECONDS = 30.0
BLOCK = b"x" * 65536


def _json(start_response, obj):
    data = json.dumps(obj).encode("ascii")
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class CountedStream:
    """64 KiB blocks until `total` bytes or MAX_SECONDS; close() is counted. `fresh`: each
    block a new object, as an app that renders its output makes them (not one shared
    constant, which costs nothing however many clients hold it)."""

    def __init__(self, total, fresh=False):
        self.fresh = fresh
        self.left = total
        self.deadline = time.monotonic() + MAX_SECONDS
        with _lock:
            _counts["started"] += 1

    def __iter__(self):
        return self

    def __next__(self):
        if self.left <= 0 or time.monotonic() > self.deadline:
            raise StopIteration
        self.left -= len(BLOCK)
        return BLOCK[:-1] + b"\n" if self.fresh else BLOCK

    def close(self):
        with _lock:
            _counts["closed"] += 1


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ok":
        with _lock:
            _counts["ok"] += 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/stats":
        with _lock:
            return _json(start_response, dict(_counts, pid=os.getpid()))
    if path == "/stream":
        # ?mb=N: a stream of N MiB (default: until the client goes or MAX_SECONDS).
        query = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
        total = int(query.get("mb", "100000")) << 20
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return CountedStream(total, fresh=query.get("fresh") == "1")
    if path == "/upload":
        # Reads the body in 64 KiB pieces and keeps only the count.
        read = environ["wsgi.input"].read
        total = 0
        while True:
            piece = read(65536)
            if not piece:
                break
            total += len(piece)
        return _json(start_response, {"received": total})
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
