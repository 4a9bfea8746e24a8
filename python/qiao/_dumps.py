"""The workers' Python stack dumps, logged by the master as one error-log record each.

A worker's faulthandler writes every thread's stack from a signal handler (the master's
dump signal after ``--timeout``, or a fatal error such as a segfault): raw lines, written
piecemeal, which a log made of records (``--log-format json``, syslog, a logging
configuration) cannot take as they are. So each worker writes them to a pipe of its own,
which the master reads in its loop; a dump is whole once its writer has been quiet for a
moment (faulthandler writes it at once) or is gone, and is then logged as one record, with
the worker's pid, its text in the message.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qiao._qiao import Logger

__all__ = ["Dumps"]

_QUIET = 0.05  # seconds without a byte after which a dump is taken to be whole
_LIMIT = 1 << 20  # bytes of one dump kept; the rest is dropped (faulthandler caps threads
# and frames, so only a worker with very many threads gets there)


class _Pipe:
    __slots__ = ("cut", "data", "ended", "last", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ended = False  # EOF: the worker is gone (not watched until it is reaped)
        self.data = b""
        self.cut = False  # bytes were dropped past _LIMIT
        self.last = 0.0  # when the last bytes came


class Dumps:
    """The read ends of the workers' dump pipes, by file descriptor."""

    def __init__(self, log: Logger) -> None:
        self.log = log  # the master's error log
        self.pipes: dict[int, _Pipe] = {}

    def pipe(self) -> tuple[int, int]:
        """A new pipe for a worker about to be forked: (read end, write end). The child
        keeps the write end (see `in_child`); the master closes it once forked (`attach`)."""
        r, w = os.pipe()
        os.set_blocking(r, False)
        return r, w

    def attach(self, r: int, w: int, pid: int) -> None:
        """In the master, after the fork: read `r` for worker `pid`; its `w` is the
        worker's alone, so that the pipe ends (EOF) when the worker does."""
        os.close(w)
        self.pipes[r] = _Pipe(pid)

    def in_child(self, r: int) -> None:
        """In a just-forked worker: close every read end, its own (`r`) and those of the
        workers before it."""
        for fd in [r, *self.pipes]:
            os.close(fd)
        self.pipes.clear()

    def readers(self) -> list[int]:
        return [fd for fd, pipe in self.pipes.items() if not pipe.ended]

    def wait(self) -> float | None:
        """Seconds until a dump being written may be whole, or None when none is."""
        pending = [p.last for p in self.pipes.values() if p.data]
        if not pending:
            return None
        return max(0.0, min(pending) + _QUIET - time.monotonic())

    def read(self, ready: list[int]) -> None:
        """Reads the pipes in `ready`, then logs the dumps that are whole."""
        for fd in ready:
            if fd in self.pipes:
                self._read(fd)
        now = time.monotonic()
        for fd, pipe in list(self.pipes.items()):
            if pipe.data and now - pipe.last >= _QUIET:
                self._log(pipe)

    def finish(self, pid: int) -> None:
        """Worker `pid` is gone: what its pipe still holds is logged, and the pipe closed."""
        for fd, pipe in list(self.pipes.items()):
            if pipe.pid == pid:
                self._read(fd)
                self._log(pipe)
                os.close(fd)
                del self.pipes[fd]

    def close(self) -> None:
        for fd in list(self.pipes):
            os.close(fd)
        self.pipes.clear()

    def _read(self, fd: int) -> None:
        pipe = self.pipes[fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EAGAIN: nothing more for now
                return
            if not data:
                pipe.ended = True
                return
            pipe.last = time.monotonic()
            room = _LIMIT - len(pipe.data)
            pipe.cut |= len(data) > room
            pipe.data += data[:max(room, 0)]

    def _log(self, pipe: _Pipe) -> None:
        if not pipe.data:
            return
        text = pipe.data.decode("utf-8", "replace").rstrip("\n")
        if pipe.cut:
            text += f"\n(the rest, past {_LIMIT} bytes, was dropped)"
        pipe.data, pipe.cut = b"", False
        # faulthandler's fatal-error report begins "Fatal Python error:"; a dump asked for
        # by the master (--timeout) is the stacks alone.
        level = "critical" if text.startswith("Fatal Python error") else "error"
        self.log.log(level, f"Python stacks of worker {pipe.pid}:\n{text}", pid=pipe.pid)
