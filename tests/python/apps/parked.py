"""A WSGI app whose requests say which app thread runs them, then stay in the application
until the test creates their gate file (the scoreboard tests: a request stuck on a known
thread).

GET /?key=K answers, chunked, ``thread=<name>;`` at once (the engine's name of the thread,
``qiao-app-N`` in a pool), then ``end`` once ``gate_path(K)`` exists or MAX_WAIT passed.
"""

import os
import tempfile
import threading
import time
from urllib.parse import parse_qs

# Upper bound of every wait, so a failing test never leaves a request parked forever.
MAX_WAIT = 10.0


def gate_path(key):
    """The file whose creation lets request `key` finish."""
    return os.path.join(tempfile.gettempdir(), f"qiao-parked-{key}")


def _thread_name():
    """The OS name of the calling thread: Python knows the engine's threads only as
    "Dummy-N", the kernel by the name the engine gave them."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def parked_in_app(name, path):
    yield f"thread={name};".encode("ascii")
    deadline = time.monotonic() + MAX_WAIT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"end"


def app(environ, start_response):
    key = parse_qs(environ["QUERY_STRING"])["key"][0]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return parked_in_app(_thread_name(), gate_path(key))
