"""``--reload`` (development): a worker stops when a Python source file it imported changes,
and the master starts a fresh one, which imports the new code.

On Linux the directories of those files are watched with inotify, so a save is seen at
once without polling; elsewhere (or if inotify is unavailable) the files' modification
times are polled once a second.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

_INTERVAL = 1.0

# <sys/inotify.h>: what counts as "this file changed" (editors write in place or write a
# new file and rename it over the old one).
_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name


# More files to watch (--reload-extra-file: templates, settings that are not Python).
_EXTRA: list[str] = []


def _sources() -> dict[str, float]:
    """The .py files of the imported modules and the extra files, with their modification
    times."""
    paths = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    files = {}
    for path in [p for p in paths if p and p.endswith(".py")] + _EXTRA:
        try:
            files[os.path.abspath(path)] = os.stat(path).st_mtime
        except OSError:
            pass
    return files


def _poll(changed: Callable[[str], None]) -> None:
    seen = _sources()
    while True:
        time.sleep(_INTERVAL)
        now = _sources()
        moved = [p for p, mtime in now.items() if seen.get(p, mtime) != mtime]
        if moved:
            return changed(moved[0])
        seen.update(now)


def _inotify(changed: Callable[[str], None]) -> bool:
    """Watches with inotify until a source file changes; False if inotify is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
    except (OSError, AttributeError):
        return False
    if fd < 0:
        return False
    files = set(_sources()) | {os.path.abspath(p) for p in _EXTRA}
    dirs: dict[int, str] = {}
    for directory in {os.path.dirname(p) for p in files}:
        wd = libc.inotify_add_watch(fd, os.fsencode(directory), _MASK)
        if wd >= 0:
            dirs[wd] = directory
    if not dirs:
        os.close(fd)
        return False
    while True:
        data = os.read(fd, 64 * 1024)
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = os.fsdecode(raw.rstrip(b"\0"))
            path = os.path.join(dirs.get(wd, ""), name)
            if path in files or (path.endswith(".py") and path in _sources()):
                os.close(fd)
                changed(path)
                return True


def watch_sources(engine: Any, extra_files: Sequence[str] = ()) -> threading.Thread:
    """Starts a daemon thread that stops `engine` gracefully once a source file (or one of
    `extra_files`) changes."""
    _EXTRA[:] = list(extra_files)

    def changed(path: str) -> None:
        engine.log("info", f"{path} changed: reloading the worker")
        engine.shutdown(wait=False)

    def watch() -> None:
        if not _inotify(changed):
            _poll(changed)

    thread = threading.Thread(target=watch, name="qiao-reload", daemon=True)
    thread.start()
    return thread
