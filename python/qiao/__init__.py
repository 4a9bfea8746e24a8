"""qiao (桥): a WSGI server with a Rust engine; this is its public Python API."""

from __future__ import annotations

import importlib
import sys

if sys.platform == "win32":  # the build refuses it too (build.rs); this is for a copied tree
    raise ImportError(
        "qiao does not support Windows: it runs on Linux and macOS. "
        "On Windows, run it under WSL or in a Linux container."
    )

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

if TYPE_CHECKING:
    from qiao.config import Config, ConfigError
    from qiao.server import WSGIServer, make_server, serve

__all__ = ["Config", "ConfigError", "WSGIServer", "__version__", "make_server", "serve"]

# The public names load on first use (PEP 562), so that the `qiao` command and the
# workers it forks do not carry modules they never call (threading, the wsgiref-style
# server): every module imported before the fork is resident in every worker.
_LAZY = {
    "Config": "qiao.config",
    "ConfigError": "qiao.config",
    "WSGIServer": "qiao.server",
    "make_server": "qiao.server",
    "serve": "qiao.server",
    # The version lives in the compiled engine, read on first use so that qiao.config
    # can be imported (and tested) before the extension is built.
    "__version__": "qiao._qiao",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qiao' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
