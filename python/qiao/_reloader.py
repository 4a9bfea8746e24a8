"""``--reload`` (development): a worker stops when a Python source file it imported changes,
and the master starts a fresh one, which imports the new code.

Files are polled (mtime, once a second): it works on every platform and filesystem, and a
second is quick enough for a person saving a file.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

_INTERVAL = 1.0


def _sources() -> dict[str, float]:
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        try:
            files[path] = os.stat(path).st_mtime
        except OSError:
            pass
    return files


def watch_sources(engine: Any) -> threading.Thread:
    """Starts a daemon thread that stops `engine` gracefully once a source file changes."""

    def watch() -> None:
        seen = _sources()
        while True:
            time.sleep(_INTERVAL)
            now = _sources()
            changed = [p for p, mtime in now.items() if seen.get(p, mtime) != mtime]
            if changed:
                engine.log("info", f"{changed[0]} changed: reloading the worker")
                engine.shutdown(wait=False)
                return
            seen.update(now)

    thread = threading.Thread(target=watch, name="qiao-reload", daemon=True)
    thread.start()
    return thread
