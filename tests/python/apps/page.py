"""A page with many assets, for a browser: /page links N scripts (?n=, 40), each of which
adds a line to the page saying which protocol carried it (SERVER_PROTOCOL)."""

from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/asset/") and path.endswith(".js"):
        n = path[len("/asset/") : -len(".js")]
        line = f"asset {n} {environ['SERVER_PROTOCOL']} {environ['wsgi.url_scheme']}"
        body = (
            f'document.getElementById("out").insertAdjacentHTML("beforeend", "<p>{line}</p>");'
        ).encode()
        ctype = "application/javascript"
    else:
        n = int(parse_qs(environ.get("QUERY_STRING", "")).get("n", ["40"])[0])
        scripts = "".join(f'<script src="/asset/{i}.js"></script>' for i in range(n))
        body = f'<!doctype html><html><body><div id="out"></div>{scripts}</body></html>'.encode()
        ctype = "text/html; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
