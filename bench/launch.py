"""Starts a server that has no command line of its own (bjoern, fastwsgi, pyruvate).

Usage: python launch.py SERVER MODULE:ATTR PORT THREADS
Run with the bench venv's interpreter, from bench/apps (the fixture apps).
"""

import importlib
import sys


def main() -> None:
    server, spec, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    module, _, attr = spec.partition(":")
    sys.path.insert(0, ".")
    app = getattr(importlib.import_module(module), attr or "app")
    if server == "bjoern":
        import bjoern

        bjoern.run(app, "127.0.0.1", port)
    elif server == "fastwsgi":
        import fastwsgi

        fastwsgi.run(wsgi_app=app, host="127.0.0.1", port=port)
    elif server == "pyruvate":
        import pyruvate

        pyruvate.serve(app, f"127.0.0.1:{port}", threads)
    else:
        sys.exit(f"launch.py: unknown server {server!r}")


if __name__ == "__main__":
    main()
