"""The page qiao serves when no application is given: "qiao is running" and the request's
environ, as a plain PEP 3333 application."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any, Callable

__all__ = ["demo_app"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>qiao is running</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
       padding: 0 1rem; color: #222; }}
h1 {{ font-weight: 600; margin-bottom: .2rem; }}
p {{ color: #555; margin-top: 0; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; vertical-align: top; padding: .25rem .6rem;
         border-bottom: 1px solid #eee; font-family: ui-monospace, monospace;
         font-size: 13px; word-break: break-all; }}
th {{ white-space: nowrap; color: #555; font-weight: 500; }}
</style>
</head>
<body>
<h1>qiao is running</h1>
<p>No application was given, so this is qiao's demo page. Run yours with
<code>qiao module:app</code>. This request's WSGI environ:</p>
<table>
{rows}
</table>
</body>
</html>
"""


def demo_app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """Answer every request with an HTML page listing ``environ`` (keys sorted, escaped)."""
    rows = "\n".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(_show(value))}</td></tr>"
        for key, value in sorted(environ.items(), key=lambda item: str(item[0]))
    )
    body = _PAGE.format(rows=rows).encode("utf-8")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    if environ.get("REQUEST_METHOD") == "HEAD":
        return [b""]
    return [body]


def _show(value: object) -> str:
    """Strings as they are (WSGI native strings are latin-1 decoded bytes); others by repr."""
    if isinstance(value, str):
        try:
            return value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return value
    return repr(value)
