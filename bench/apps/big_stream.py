"""Fixture: 1 MiB streamed by a generator as 64 chunks of 16 KiB (Content-Length set)."""

CHUNK = b"y" * (16 << 10)
COUNT = 64
HEADERS = [
    ("Content-Type", "application/octet-stream"),
    ("Content-Length", str(len(CHUNK) * COUNT)),
]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return _chunks()


def _chunks():
    for _ in range(COUNT):
        yield CHUNK
