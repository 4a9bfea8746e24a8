"""A small app wrapped in wsgiref.validate.validator, which asserts PEP 3333 on every call.

Validator warnings (WSGIWarning) are forced to be printed every time so the test can see
them in the server's error log.
"""

import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("always", WSGIWarning)


def inner(environ, start_response):
    inp = environ["wsgi.input"]
    body = b""
    if environ["REQUEST_METHOD"] in ("POST", "PUT"):
        # validator's input wrapper allows read() only with exactly one argument.
        while True:
            piece = inp.read(4096)
            if not piece:
                break
            body += piece
    data = b"method=%s path=%s body=%s" % (
        environ["REQUEST_METHOD"].encode("latin-1"),
        environ["PATH_INFO"].encode("latin-1"),
        body,
    )
    environ["wsgi.errors"].write("")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    if environ["REQUEST_METHOD"] == "HEAD":
        return iter([])
    return iter([data])


app = validator(inner)
