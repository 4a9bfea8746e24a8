"""The in-process floor: calls each fixture app directly, no server, no sockets.

Usage: python floor.py SECONDS MODULE [MODULE...]   (run from bench/apps)
Prints one JSON object {module: {"calls_per_s": ..., "us_per_call": ..., "calls": ...}}.
Each call gets a copy of a prepared environ (a fresh wsgi.input for POSTs),
a trivial start_response, the body iterated to the end and close() called:
what a server with zero overhead would still have to pay for the app itself.
"""

import importlib
import io
import json
import sys
import time
from wsgiref.util import FileWrapper

POST_BODY = b"p" * 65536


def base_environ(module: str) -> dict:
    env = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input": io.BytesIO(b""),
        "wsgi.file_wrapper": FileWrapper,
    }
    if module == "post_read":
        env["REQUEST_METHOD"] = "POST"
        env["CONTENT_LENGTH"] = str(len(POST_BODY))
        env["CONTENT_TYPE"] = "application/octet-stream"
    return env


def caller(app, module: str):
    """One call of `app` as the floor makes it (also what ref/bare_server.py does per
    request, so the two stay the same work)."""
    template = base_environ(module)
    post = module == "post_read"

    def start_response(status, headers, exc_info=None):
        return None

    def one() -> None:
        env = template.copy()
        if post:
            env["wsgi.input"] = io.BytesIO(POST_BODY)
        body = app(env, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return one


def measure(module: str, seconds: float) -> dict:
    one = caller(importlib.import_module(module).app, module)
    for _ in range(200):  # warm-up: imports, template compilation, caches
        one()
    calls = 0
    batch = 100
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            one()
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - start
    return {"calls": calls, "calls_per_s": calls / elapsed, "us_per_call": elapsed / calls * 1e6}


def main() -> None:
    seconds = float(sys.argv[1])
    sys.path.insert(0, ".")
    out = {m: measure(m, seconds) for m in sys.argv[2:]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
