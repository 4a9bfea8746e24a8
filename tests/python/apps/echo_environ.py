"""A WSGI app that answers every request with its environ as JSON, for tests to inspect.

Response body: {"environ": {key: value}, "key_types": [...], "environ_type": ...,
"body": <request body as latin-1 text>, "calls": N}. str values are sent as they are;
any other value becomes {"type": <type name>, "value": <value if JSON can hold it>} (a mapping
of str values is held).
With the query "mutate" the app then overwrites and clears its environ (a later request
must not see it).
Every response also carries `X-Calls: N`, the number of app calls so far in this process,
so tests can prove that a rejected request never reached the app.
"""

import json
import threading
from collections.abc import Mapping

_lock = threading.Lock()
_calls = 0

_JSON_SCALARS = (bool, int, float, type(None))


def _describe(value):
    if type(value) is str:
        return value
    out = {"type": type(value).__name__}
    if isinstance(value, _JSON_SCALARS):
        out["value"] = value
    elif isinstance(value, tuple) and all(isinstance(v, _JSON_SCALARS) for v in value):
        out["value"] = list(value)
    elif isinstance(value, Mapping) and all(type(v) is str for v in value.values()):
        out["value"] = {str(k): v for k, v in value.items()}
    return out


def app(environ, start_response):
    global _calls
    with _lock:
        _calls += 1
        calls = _calls
    body = environ["wsgi.input"].read()
    report = {
        "environ_type": type(environ).__name__,
        "key_types": sorted({type(k).__name__ for k in environ}),
        "environ": {str(k): _describe(v) for k, v in environ.items()},
        "body": body.decode("latin-1"),
        "calls": calls,
    }
    data = json.dumps(report).encode("ascii")
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("X-Calls", str(calls)),
        ],
    )
    if environ["QUERY_STRING"] == "mutate":
        # What an app does to its environ must not reach the next request's.
        for key in ("REQUEST_METHOD", "SERVER_PROTOCOL", "wsgi.url_scheme", "SCRIPT_NAME"):
            environ[key] = "mutated"
        environ.clear()
    elif environ["REQUEST_METHOD"] == "HEAD":
        return []
    return [data]
