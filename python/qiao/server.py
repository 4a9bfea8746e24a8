"""The embedding API: ``WSGIServer`` (wsgiref.simple_server's surface over the Rust engine),
``make_server()`` and ``serve()``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

from qiao._bind import DEFAULT_PORT, bind_all, close_listener, display, tcp_address
from qiao.config import Config, ConfigError

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from qiao._qiao import Engine

__all__ = ["WSGIServer", "make_server", "serve"]

WSGIApp = Callable[..., Any]


class WSGIServer:
    """A WSGI server on already-listening sockets, shaped like ``wsgiref``'s.

    The engine is created on the first ``serve_forever()`` or ``handle_request()``; it
    serves every socket in ``sockets``. The server owns the sockets and closes them in
    ``server_close()``.

    What code written against ``wsgiref.simple_server.WSGIServer`` and
    ``socketserver.BaseServer`` touches is here (see docs/behaviour.md for what differs:
    the engine reads requests and builds environs itself, so the per-request methods
    ``verify_request``, ``handle_error``, ``handle_timeout`` and ``service_actions`` are
    never called by it, and ``base_environ`` is what it puts in every environ, shown).
    """

    # socketserver's class attributes, with qiao's values.
    socket_type = socket.SOCK_STREAM
    allow_reuse_address = True  # SO_REUSEADDR is set on every TCP socket qiao binds
    timeout: float | None = None  # handle_request() waits for a request without limit
    RequestHandlerClass = None  # the engine handles requests: no handler class

    def __init__(self, app: WSGIApp | None, config: Config, sockets: list[socket.socket]) -> None:
        if not sockets:
            raise ValueError("WSGIServer needs at least one listening socket")
        if app is not None and not callable(app):
            raise TypeError(f"app must be a WSGI callable, got {type(app).__name__}")
        self.config = config  # the settings, validated; read-only from here on
        self.sockets = list(sockets)  # listening sockets, owned: closed by server_close()
        self._app = app  # the WSGI application; the engine holds it once created
        self._engine: Engine | None = None  # created lazily so set_app() can still swap apps
        self._lock = threading.Lock()  # guards the three flags below
        self._serving = False  # serve_forever() is running
        self._shutdown_pending = False  # shutdown() came while idle: the next serve returns
        self._closed = False  # server_close() has run
        self._stopped = threading.Event()  # set whenever serve_forever() is not running
        self._stopped.set()

    # -- wsgiref.simple_server.WSGIServer surface

    @property
    def socket(self) -> socket.socket:
        """The first listening socket (``socketserver`` has one; qiao may have several)."""
        return self.sockets[0]

    @property
    def server_address(self) -> Any:
        """The first socket's address: ``(host, port)`` as ``getsockname()`` gives, or a path."""
        return self.sockets[0].getsockname()

    @property
    def server_port(self) -> int | None:
        """The first socket's TCP port; None for a Unix socket."""
        address = self.server_address
        return address[1] if isinstance(address, tuple) else None

    @property
    def server_name(self) -> str:
        """The first socket's host name, as wsgiref reports it (``socket.getfqdn``)."""
        address = self.server_address
        return socket.getfqdn(address[0]) if isinstance(address, tuple) else str(address)

    @property
    def addresses(self) -> list[str]:
        """Every listening address, for people: ``http://127.0.0.1:8000``, ``unix:/path``."""
        scheme = "http" if self.config.certfile is None else "https"
        return [display(sock, scheme) for sock in self.sockets]

    def fileno(self) -> int:
        return self.sockets[0].fileno()

    @property
    def address_family(self) -> int:
        return self.sockets[0].family

    @property
    def allow_reuse_port(self) -> bool:
        return bool(self.config.reuse_port)

    @property
    def request_queue_size(self) -> int:
        """The listen backlog (``backlog`` setting)."""
        return int(self.config.backlog)

    @property
    def base_environ(self) -> dict[str, str]:
        """The CGI keys every request's environ starts from (wsgiref's ``setup_environ``):
        a copy, for reading; the engine builds each environ itself."""
        port = self.server_port
        return {
            "SERVER_NAME": self.server_name,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PORT": "" if port is None else str(port),
            "REMOTE_HOST": "",
            "CONTENT_LENGTH": "",
            "SCRIPT_NAME": self.config.root_path,
        }

    def setup_environ(self) -> None:
        """wsgiref calls it from ``server_bind()``; qiao's environ needs no set-up."""

    def server_bind(self) -> None:
        """The sockets are bound by ``make_server()``/``serve()`` already; nothing to do."""

    def server_activate(self) -> None:
        """The sockets are listening already; nothing to do."""

    def verify_request(self, request: object, client_address: object) -> bool:
        """socketserver's hook to refuse a client; the engine never calls it (use
        ``--forwarded-allow-ips`` and a proxy to choose clients)."""
        return True

    def handle_error(self, request: object, client_address: object) -> None:
        """socketserver's report of an exception in a request; qiao logs an application's
        exception itself (500 and a traceback in the error log), so this only prints the
        exception being handled, as socketserver does, when user code calls it."""
        import traceback

        traceback.print_exc()

    def handle_timeout(self) -> None:
        """socketserver calls it when ``handle_request()`` times out; qiao's waits for a
        request without a time limit (``timeout`` is None)."""

    def service_actions(self) -> None:
        """socketserver calls it on each turn of ``serve_forever()``; the engine's loop does
        not run Python between requests, so it is never called."""

    @property
    def application(self) -> WSGIApp | None:
        """wsgiref's attribute: the application (``get_app()``/``set_app()``)."""
        return self._app

    @application.setter
    def application(self, app: WSGIApp) -> None:
        self.set_app(app)

    def get_app(self) -> WSGIApp | None:
        return self._app

    def set_app(self, application: WSGIApp) -> None:
        """Serve ``application`` from the next ``serve_forever()``/``handle_request()`` on."""
        with self._lock:
            if self._serving:
                raise RuntimeError("cannot change the application while serving")
            self._app = application
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until ``shutdown()`` (from another thread) or Ctrl-C, after which it
        returns: a script's ``make_server(...).serve_forever()`` stops cleanly, without a
        KeyboardInterrupt traceback (wsgiref's would print one).

        ``poll_interval`` is accepted for wsgiref compatibility; the engine wakes on
        ``shutdown()`` at once, so it is not used.
        """
        engine = self._get_engine()
        with self._lock:
            if self._serving:
                raise RuntimeError("serve_forever() is already running")
            if self._shutdown_pending:
                self._shutdown_pending = False
                return
            self._serving = True
            self._stopped.clear()
        try:
            engine.serve_forever()
        except KeyboardInterrupt:
            pass  # Ctrl-C: the engine stopped gracefully; a clean return
        finally:
            with self._lock:
                self._serving = False
                self._shutdown_pending = False
                self._stopped.set()

    def handle_request(self) -> None:
        """Wait for one request, serve it, and return."""
        engine = self._get_engine()
        with self._lock:
            if self._serving:
                raise RuntimeError("handle_request() while serve_forever() is running")
        engine.handle_request()

    def shutdown(self) -> None:
        """Stop ``serve_forever()`` and wait until it has returned.

        Call it from another thread. If the server is not serving, it returns at once and
        the next ``serve_forever()`` returns immediately, so a shutdown that races a
        starting server is not lost.
        """
        with self._lock:
            if not self._serving:
                if not self._closed:
                    self._shutdown_pending = True
                return
            engine = self._engine
        assert engine is not None
        # Engine.shutdown() only stops a run that has begun; serve_forever() may be between
        # setting _serving and entering the engine, so repeat until it has returned.
        while not self._stopped.is_set():
            engine.shutdown()
            self._stopped.wait(0.01)

    def stop_soon(self) -> None:
        """Begin a graceful stop without waiting: new connections are refused, requests in
        flight finish, ``serve_forever()`` then returns. Safe from a signal handler."""
        with self._lock:
            engine = self._engine
        if engine is not None:
            engine.shutdown(wait=False)

    def server_close(self) -> None:
        """Stop serving if needed, close the engine and the sockets; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            serving = self._serving
        if serving:
            self.shutdown()
        with self._lock:
            self._closed = True
            self._shutdown_pending = False
            engine, self._engine = self._engine, None
        try:
            if engine is not None:
                engine.close()
        finally:
            for sock in self.sockets:
                close_listener(sock)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server_close()

    def __repr__(self) -> str:
        where = "closed" if self._closed else " ".join(self.addresses)
        return f"<{type(self).__name__} {where}>"

    # -- qiao's own

    def _get_engine(self) -> Engine:
        with self._lock:
            if self._closed:
                raise ValueError("the server is closed")
            if self._engine is None:
                if self._app is None:
                    raise RuntimeError("no application: call set_app() first")
                from qiao._qiao import Engine

                fds = [sock.fileno() for sock in self.sockets]
                self._engine = Engine(self._app, self.config.engine_settings(), fds)
            return self._engine

    def _log(self, level: str, message: str) -> None:
        """Write one line to the engine's error log."""
        self._get_engine().log(level, message)


@contextlib.contextmanager
def graceful_sigterm(server: WSGIServer) -> Iterator[None]:
    """While serving from the main thread, SIGTERM stops ``server`` gracefully (as
    gunicorn, docker stop and Kubernetes expect); the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: server.stop_soon())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_server(
    host: str,
    port: int,
    app: WSGIApp | None,
    server_class: object = None,
    handler_class: object = None,
    **settings: object,
) -> WSGIServer:
    """Bind ``host:port`` now and return a ``WSGIServer`` for ``app`` (wsgiref's signature).

    ``host=''`` listens on every IPv4 interface and ``port=0`` on an ephemeral port (read
    it from ``server_address``). Other settings are keyword arguments, as for ``serve()``.
    """
    if server_class is not None or handler_class is not None:
        raise TypeError(
            "qiao's make_server() has its own server and handler; "
            "server_class and handler_class must be left as None"
        )
    if "bind" in settings:
        raise TypeError(
            "make_server() takes the address as host and port; use serve(app, bind=...) "
            "for several addresses or a Unix socket"
        )
    config = Config(settings)
    try:
        address = tcp_address(host, port)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return WSGIServer(app, config, bind_all([address], config.backlog, socket.socket))


def serve(
    app: WSGIApp,
    *,
    host: str | None = None,
    port: int | None = None,
    **settings: object,
) -> None:
    """Bind the configured addresses and serve ``app`` until Ctrl-C (then return quietly).

    ``host``/``port`` are a shorthand for ``bind="HOST:PORT"``; the other keyword
    arguments are the settings of ``qiao.config`` (``threads=8``, ``keep_alive=5``...).
    ``QIAO_<NAME>`` environment variables override them.
    """
    if host is not None or port is not None:
        if "bind" in settings:
            raise ConfigError("pass either bind or host/port, not both")
        try:
            address = tcp_address(
                "127.0.0.1" if host is None else host, DEFAULT_PORT if port is None else port
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        settings["bind"] = [str(address)]
    config = Config(settings)
    if config.chdir is not None:
        os.chdir(config.chdir)
    from qiao._process import limit_open_files

    limit_open_files(config)
    if config.workers > 1:
        # Several processes: a master forks workers that inherit `app` (it is preloaded).
        from qiao import _qiao
        from qiao.arbiter import Arbiter

        sockets = bind_all(config.addresses, config.backlog, socket.socket)
        try:
            logger = _qiao.Logger(
                config.error_logfile, config.log_level, None, config.log_format == "json"
            )
            name = getattr(app, "__qualname__", type(app).__name__)
            Arbiter(config, None, sockets, logger, app=app, app_name=name).run()
        finally:
            for sock in sockets:
                close_listener(sock)
        return
    server = WSGIServer(app, config, bind_all(config.addresses, config.backlog, socket.socket))
    with server, graceful_sigterm(server):
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
