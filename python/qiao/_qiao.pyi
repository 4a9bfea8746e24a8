"""The Rust engine (built by maturin as ``qiao._qiao``)."""

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Callable, final

__all__ = [
    "BUILD_REVISION",
    "BUILD_TARGET",
    "BUILT_FOR",
    "ENGINE_SETTINGS",
    "Engine",
    "Errors",
    "FileWrapper",
    "Input",
    "Logger",
    "Scoreboard",
    "StartResponse",
    "__version__",
    "check_access_log_format",
    "set_process_name",
    "trim_memory",
]

__version__: str
# The build's git revision ("unknown" when built from an sdist), the Python it was built
# for ("CPython 3.12") and the Rust target ("x86_64-unknown-linux-gnu").
BUILD_REVISION: str
BUILT_FOR: str
BUILD_TARGET: str
# The keys of the settings dict Engine() takes: exactly these, no other.
ENGINE_SETTINGS: list[str]

@final
class Engine:
    """Serves one WSGI application on listening sockets, in this process."""

    def __new__(
        cls,
        app: Callable[..., object],
        settings: dict[str, object],
        fds: list[int],
        scoreboard: Scoreboard | None = None,
        slot: int = 0,
        request_hooks: tuple[Callable[..., object], Callable[..., object]] | None = None,
        metrics: tuple[Metrics, int] | None = None,
        error_logger: logging.Logger | None = None,
        access_logger: logging.Logger | None = None,
    ) -> Engine:
        """``fds``: listening sockets (bound, listening); the engine dup()s them and the
        caller keeps and closes its own. ``scoreboard``/``slot``: the master's table and
        this worker's row (a worker of a master). ``request_hooks``: ``(begin, end)``:
        ``begin(environ)`` before the app is called returns a token (what it raises is the
        request's 500), ``end(token, environ, status, head, sent)`` once the response is
        over, with the status code, the response head's lines as bytes and the body bytes
        sent. ``metrics``: the master's metrics table and this worker's row in it (the
        engine then counts its requests there). ``settings``: every key of ``ENGINE_SETTINGS`` (the engine's one table of
        them; their meanings are in docs/configuration.md), as
        ``qiao.config.Config.engine_settings()`` gives them: validated, and the limits
        always concrete (Python maps a user's 0, "no limit", to the cap).
        ``error_logger``, ``access_logger``: the loggers a logging configuration routes the
        error and access lines to, instead of the settings' files (the access log is then
        on without ``access_logfile``).
        """
    def serve_forever(self) -> None:
        """Serve until ``shutdown()``; the GIL is released while waiting. Ctrl-C stops
        cleanly, then KeyboardInterrupt propagates."""
    def handle_request(self) -> None:
        """Wait for exactly one request, serve it, and return."""
    def shutdown(self, wait: bool = True) -> None:
        """Make ``serve_forever()`` return; with ``wait``, block until it has (from another
        thread). ``wait=False`` only asks, and is safe from a signal handler."""
    def close(self) -> None:
        """Release the engine's (duplicated) listening sockets."""
    def log(self, level: str, message: str) -> None:
        """Write one line to the engine's error log at ``level`` (or "exception": an
        error with its traceback, counted apart for StatsD)."""
    def reopen_logs(self) -> None:
        """Reopen the error and access log files (after log rotation)."""
    @property
    def requests_served(self) -> int:
        """Requests served so far."""

@final
class Logger:
    """The error log for code that runs without an engine (the master process)."""

    def __new__(
        cls,
        target: str,
        level: str,
        syslog: tuple[str, str, str] | None = None,
        json: bool = False,
        python: logging.Logger | None = None,
    ) -> Logger:
        """``target``: a path, or "-" for stderr; ``level``: the least severe one written;
        ``syslog``: ``(address, facility, ident)`` to send each line to syslog as well;
        ``json``: one JSON object per line (``--log-format json``); ``python``: a logger to
        hand each line to instead of ``target``."""
    def log(self, level: str, message: str, pid: int | None = None) -> None:
        """Write one line at ``level`` (or "exception": an error with its traceback);
        ``pid``: the process it is about when not this one (a worker's stack dump)."""
    def logged(self) -> list[tuple[str, int]]:
        """This process's error-log calls so far by kind (critical, error, warning,
        exception), whatever the level let through."""
    def reopen(self) -> None: ...

@final
class Metrics:
    """Memory shared by a master and its workers (mapped before forking): per worker, its
    request counters, time histograms, bytes, connections and refusals, added to by its
    engine; the master reads them, and folds a gone worker's counters into its totals."""

    def __new__(cls, slots: int, threads: int = 1) -> Metrics:
        """Room for `slots` workers, and the request text of `threads` app threads each."""
    def request(self, slot: int, thread: int) -> str | None:
        """What an app thread serves or served last: ``METHOD /path`` (None before its
        first request)."""
    @staticmethod
    def schema() -> tuple[
        list[str], list[str], list[float], list[int], list[str], list[int], list[str]
    ]:
        """A row's layout: methods, status classes (the request grid, method-major), bucket
        bounds in seconds (``+Inf`` left out; each histogram is its buckets then its sum in
        microseconds), the status codes (a cell each), counter names, refusal statuses
        (then one cell for the others), gauge names."""
    @property
    def slots(self) -> int: ...
    def reset(self, slot: int) -> None:
        """Clear a row for a new worker."""
    def fold(self, slot: int) -> None:
        """Add a gone worker's counters to the master's totals and clear its row."""
    def row(self, slot: int) -> list[int]:
        """The cells of one worker's row."""
    def totals(self, slots: list[int]) -> list[int]:
        """The sum of the rows of `slots` and of the folded totals."""

@final
class Scoreboard:
    """Memory shared by a master and its workers (mapped before forking): each worker's
    heartbeat and, per app thread, its current request's time in the application, or
    that it is waiting on its client."""

    def __new__(cls, slots: int, threads: int) -> Scoreboard: ...
    @property
    def slots(self) -> int: ...
    @property
    def threads(self) -> int:
        """The most app threads a worker using this board may have (one cell each)."""
    def reset(self, slot: int) -> None:
        """Clear a row for a new worker."""
    def ready(self, slot: int) -> bool:
        """Whether the worker has started serving."""
    def silence(self, slot: int) -> float:
        """Seconds since the worker's loop last beat."""
    def busiest(self, slot: int) -> float:
        """Seconds its longest-running request has spent in the application (0 when idle):
        threads waiting on a client are left out, and time waited is not counted."""
    def threads_state(self, slot: int) -> tuple[int, int]:
        """``(busy, waiting)``: how many of the worker's app threads are running a request
        in the application, and how many are waiting on a client to read a response."""
    def thread_states(self, slot: int) -> list[tuple[int, float]]:
        """Each app thread's ``(state, seconds)``: 0 idle; 1 in the application, for that
        long; 2 waiting on its client, after that long in the application."""

def set_process_name(title: str) -> None:
    """Name this process for ps/top (the first 15 bytes)."""

def trim_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim; else no-op)."""

def check_tls(
    certfile: str,
    keyfile: str | None,
    keyfile_password: str | None,
    ca_certs: str | None,
    cert_reqs: int,
    ciphers: str | None,
    min_version: str,
) -> None:
    """Build the TLS configuration these settings make, reading the files; raises
    ``ValueError(setting, reason)`` naming the setting at fault."""

def check_access_log_format(format: str) -> list[str]:
    """The names in an access-log format that are not gunicorn atoms (each printed as
    ``-``); raises ``ValueError`` saying what does not parse."""

# The PEP 3333 objects the engine hands to the application; created only by the engine.

@final
class Errors:
    """``environ['wsgi.errors']``: text written here goes to the error log."""

    def write(self, text: str) -> None: ...
    def writelines(self, lines: Iterable[str]) -> None: ...
    def flush(self) -> None: ...

@final
class Input:
    """``environ['wsgi.input']``: the request body; never reads past its end."""

    def read(self, size: int | None = None) -> bytes: ...
    def readline(self, size: int | None = None) -> bytes: ...
    def readlines(self, hint: int | None = None) -> list[bytes]: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...

@final
class FileWrapper:
    """``environ['wsgi.file_wrapper']``: lets the engine send a real file with sendfile."""

    def __new__(cls, filelike: Any, block_size: int = 8192) -> FileWrapper: ...
    @property
    def filelike(self) -> Any: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None: ...

@final
class StartResponse:
    """One response: the app is handed its bound ``start_response``, which returns its
    bound ``write`` (PEP 3333)."""

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]: ...
    def write(self, data: bytes) -> None: ...
