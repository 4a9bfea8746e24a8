"""Fixture: the 13-byte "Hello, world!" response (hello, hello_close, pipeline, idle_rss)."""

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
