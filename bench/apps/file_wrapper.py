"""Fixture: a 1 MiB file sent through wsgi.file_wrapper (BENCH_FILE names the file)."""

import os

PATH = os.environ.get("BENCH_FILE", os.path.join(os.path.dirname(__file__), "..", ".data", "1mib.bin"))
SIZE = os.path.getsize(PATH)
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]


def app(environ, start_response):
    f = open(PATH, "rb")  # noqa: SIM115 -- the server closes it (PEP 3333: close())
    start_response("200 OK", HEADERS)
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 65536)
    return _iter_file(f)


def _iter_file(f):
    with f:
        while True:
            block = f.read(65536)
            if not block:
                return
            yield block
