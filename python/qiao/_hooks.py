"""Server hooks, gunicorn's: functions a Python config file defines (``post_fork``,
``pre_request``...) that the master and the workers call at the moments gunicorn does, with
``server``, ``worker`` and ``req`` objects carrying the attributes real hooks use.

A hook that raises is logged with its traceback and serving goes on, except where gunicorn
stops too: ``on_starting`` and ``when_ready`` stop the start, ``post_fork`` and
``post_worker_init`` fail the worker's boot as an app that cannot load does.
"""

from __future__ import annotations

from qiao.config import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["HOOKS", "CfgView", "Hooks", "ServerLog", "check"]

# Each hook's parameters, as gunicorn documents them (post_request also takes gunicorn's
# older forms without resp, or without environ and resp).
HOOKS: dict[str, tuple[str, ...]] = {
    "on_starting": ("server",),
    "on_reload": ("server",),
    "when_ready": ("server",),
    "pre_fork": ("server", "worker"),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_int": ("worker",),
    "worker_abort": ("worker",),
    "pre_exec": ("server",),
    "pre_request": ("worker", "req"),
    "post_request": ("worker", "req", "environ", "resp"),
    "child_exit": ("server", "worker"),
    "worker_exit": ("server", "worker"),
    "nworkers_changed": ("server", "new_value", "old_value"),
    "on_exit": ("server",),
}


# Hooks qiao accepts but has no moment for.
NEVER_CALLED = {
    "pre_exec": "qiao has no re-exec of the master (gunicorn's USR2); restart it, or "
    "use HUP to load new code",
}


def _arity(fn: Callable[..., Any], name: str) -> int | None:
    """How many of the hook's arguments ``fn`` takes (a count ``HOOKS`` allows), or None."""
    import inspect

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return len(HOOKS[name])  # a builtin without a signature: take it on trust
    counts = (4, 3, 2) if name == "post_request" else (len(HOOKS[name]),)
    for count in counts:
        try:
            signature.bind(*range(count))
        except TypeError:
            continue
        return count
    return None


def check(name: str, value: object, where: str) -> None:
    """A hook a config file defines is callable with gunicorn's arguments, or a one-line
    ``ConfigError``."""
    params = ", ".join(HOOKS[name])
    if not callable(value):
        raise ConfigError(f"{where}: {name}: expected a function ({params}), got {value!r}")
    if _arity(value, name) is None:
        raise ConfigError(f"{where}: {name}: expected a function taking ({params})")


class Hooks:
    """The hooks a config file defines, by name, and how each is called."""

    def __init__(self, functions: dict[str, Callable[..., Any]], log: Any) -> None:
        self.functions = functions  # hook name -> the config file's function
        self.log = log  # a ServerLog: where failures go

    def __contains__(self, name: str) -> bool:
        return name in self.functions

    def call(self, name: str, *args: Any) -> None:
        """Run hook ``name`` if defined; an exception it raises is logged, not raised."""
        fn = self.functions.get(name)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            self.log.exception(f"Exception in {name} hook")

    def request_hooks(self, worker: Any) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
        """``(begin, end)`` for the engine (``qiao._qiao.Engine``'s ``request_hooks``) when
        ``pre_request`` or ``post_request`` is defined; None otherwise, so that a server
        without them pays nothing per request."""
        pre = self.functions.get("pre_request")
        post = self.functions.get("post_request")
        if pre is None and post is None:
            return None
        if post is not None:
            # gunicorn's older forms take fewer arguments: pass the first `count`.
            count = _arity(post, "post_request") or 4
            self.functions["post_request"] = _first(post, count)

        def begin(environ: dict[str, Any]) -> Request:
            req = Request(environ)
            if pre is not None:
                pre(worker, req)  # what it raises is the request's 500, as in gunicorn
            return req

        def end(req: Request, environ: dict[str, Any], status: int, head: bytes, sent: int) -> None:
            self.call("post_request", worker, req, environ, Response(status, head, sent))

        return begin, end

    def strict(self, name: str, *args: Any) -> None:
        """Run hook ``name`` if defined, letting what it raises through (the hooks that
        stop a start or a worker's boot in gunicorn)."""
        fn = self.functions.get(name)
        if fn is not None:
            fn(*args)


def _first(fn: Callable[..., Any], count: int) -> Callable[..., Any]:
    """``fn`` called with the first ``count`` of the arguments it is given."""
    if count == 4:
        return fn
    return lambda *args: fn(*args[:count])


class Request:
    """``req`` in ``pre_request``/``post_request``: gunicorn's request attributes, read from
    the environ when asked. A hook may set attributes of its own on it (a start time in
    pre_request, read in post_request): it is the same object for both."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self._environ = environ

    @property
    def method(self) -> str:
        return self._environ["REQUEST_METHOD"]  # type: ignore[no-any-return]

    @property
    def uri(self) -> str:
        return self._environ.get("RAW_URI", "")  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        return self.uri.partition("?")[0]

    @property
    def query(self) -> str:
        return self._environ.get("QUERY_STRING", "")  # type: ignore[no-any-return]

    fragment = ""

    @property
    def version(self) -> tuple[int, int]:
        protocol = self._environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        major, _, minor = protocol.partition("/")[2].partition(".")
        return int(major or 1), int(minor or 0)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(NAME, value) pairs, names upper-cased as gunicorn gives them."""
        pairs = []
        for key, value in self._environ.items():
            if key.startswith("HTTP_"):
                pairs.append((key[5:].replace("_", "-"), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                pairs.append((key.replace("_", "-"), value))
        return pairs

    @property
    def scheme(self) -> str:
        return self._environ.get("wsgi.url_scheme", "http")  # type: ignore[no-any-return]

    @property
    def remote_addr(self) -> tuple[str, int]:
        port = self._environ.get("REMOTE_PORT", "")
        return self._environ.get("REMOTE_ADDR", ""), int(port) if port.isdigit() else 0

    peer_addr = remote_addr

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response:
    """``resp`` in ``post_request``: the response as it was sent."""

    def __init__(self, status_code: int, head: bytes, sent: int) -> None:
        self.status_code = status_code
        self.sent = sent  # body bytes sent
        self._head = head

    @property
    def status(self) -> str:
        """The status line as the app gave it: ``"200 OK"``."""
        return self._head.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def headers(self) -> list[tuple[str, str]]:
        lines = self._head.decode("latin-1").split("\r\n")[1:]
        return [(name, value) for name, _, value in (line.partition(": ") for line in lines) if name]

    @property
    def response_length(self) -> int | None:
        for name, value in self.headers:
            if name.lower() == "content-length":
                return int(value)
        return None

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


# gunicorn's names for qiao's settings, for hooks that read ``server.cfg.<name>``.
def _gunicorn_names() -> dict[str, str]:
    from qiao.config import SETTINGS

    return {s.gunicorn: s.name for s in SETTINGS if s.gunicorn is not None}


class CfgView:
    """``server.cfg`` / ``worker.cfg``: the settings, by qiao's names or gunicorn's
    (``cfg.workers``, ``cfg.keepalive``, ``cfg.proc_name``)."""

    def __init__(self, config: Any) -> None:
        self._config = config
        self._aliases = _gunicorn_names()

    def __getattr__(self, name: str) -> Any:
        name = self.__dict__["_aliases"].get(name, name)
        return getattr(self.__dict__["_config"], name)


# logging's numbers for its levels: gunicorn's log.log() takes either.
_LEVELS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}


class ServerLog:
    """``server.log`` / ``worker.log``: gunicorn's logger methods (``info(msg, *args)``...)
    over qiao's error log, which hooks write to as gunicorn's."""

    def __init__(self, target: Any) -> None:
        self.target = target  # a qiao._qiao.Logger (the master) or Engine (a worker)

    def log(self, level: int | str, msg: object, *args: Any, **kwargs: Any) -> None:
        name = _LEVELS.get(level, "info") if isinstance(level, int) else level.lower()
        text = str(msg) % args if args else str(msg)
        if kwargs.get("exc_info"):
            import traceback

            text += "\n" + traceback.format_exc().rstrip()
        self.target.log(name, text)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log("debug", msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log("info", msg, *args, **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log("warning", msg, *args, **kwargs)

    warn = warning

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log("error", msg, *args, **kwargs)

    def critical(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log("critical", msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        # An error with its traceback, which StatsD counts as gunicorn.log.exception.
        self.log("exception", msg, *args, exc_info=True)

    def reopen(self) -> None:
        self.target.reopen()

    reopen_files = reopen
