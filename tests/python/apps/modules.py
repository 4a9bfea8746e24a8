"""Reports the modules loaded in the worker before this app was imported: what the master
imported before forking (every worker carries it) plus the worker's own start-up."""

import json
import sys

AT_IMPORT = sorted(sys.modules)


def app(environ, start_response):
    body = json.dumps(AT_IMPORT).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
