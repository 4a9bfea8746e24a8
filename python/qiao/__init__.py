"""qiao (桥): a WSGI server with a Rust engine; this is its public Python API."""

from __future__ import annotations

from typing import Any

from qiao.config import Config, ConfigError
from qiao.server import WSGIServer, make_server, serve

__all__ = ["Config", "ConfigError", "WSGIServer", "__version__", "make_server", "serve"]


def __getattr__(name: str) -> Any:
    # The version lives in the compiled engine; it is read on first use so that
    # qiao.config can be imported (and tested) before the extension is built.
    if name == "__version__":
        from qiao._qiao import __version__

        return __version__
    raise AttributeError(f"module 'qiao' has no attribute {name!r}")
