"""The ``qiao`` command: ``qiao [APP] [flags]`` loads APP (or the demo page) and serves it.

This process becomes the master. It keeps its imports to what serving needs: the
command line, config file and settings are resolved in a short-lived child (``_cli``)
that hands back plain values, because every module the master imports is resident in
each worker it forks (argparse, re, the TOML reader and the settings' parsers would add
about 1.3 MiB to every worker's RSS).
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from qiao.config import Config

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (see ``qiao._cli``)."""
    from qiao._cli import build_parser

    return build_parser()


def _error(message: str, status: int = 2) -> int:
    print(f"qiao: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user error).

    ``argv`` given (a call from Python) resolves the settings in this process;
    ``None`` (the command) in a child, to keep the master lean."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["status"]:
        from qiao._status import main as status

        return status(args[1:])
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 0


def _resolve_here(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | int:
    """``call()``'s values, or the exit status and one-line error it ended with."""
    from qiao._loader import AppLoadError
    from qiao.config import ConfigError

    try:
        return call()
    except SystemExit as e:  # argparse: --help, --version, or a usage error it printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except (ConfigError, AppLoadError) as e:
        return _error(str(e))
    except ImportError as e:
        return _error(f"the engine qiao._qiao is not built ({e}); run `maturin develop`", 1)
    except (OSError, ValueError) as e:
        return _error(str(e))


def _resolve_in_child(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | int:
    """``_resolve_here(call)`` run in a forked child that sends the values back through a
    pipe (marshal) and exits: its imports die with it."""
    from qiao._child import run_child

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)

        def send() -> int:
            result = _resolve_here(call)
            if isinstance(result, int):
                return result
            with os.fdopen(w, "wb") as pipe:
                pipe.write(marshal.dumps(result))
            return 0

        run_child(send)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not data:  # --help/--version (0), or an error the child printed
        return code if code >= 0 else 1
    values = marshal.loads(data)
    return values if isinstance(values, dict) else 1


def _resolve_command(argv: list[str], namespace: dict[str, Any] | None) -> dict[str, Any]:
    from qiao._cli import resolve  # in the child: argparse and friends die with it

    return resolve(argv, namespace)


def _run_config(location: str) -> dict[str, Any] | int:
    """A Python config file run here, in the master (its hooks are called here and in the
    workers forked from here): its names, or the exit status of its one-line error."""
    from qiao._pyconfig import execute
    from qiao.config import ConfigError

    try:
        return execute(location)
    except ConfigError as e:
        return _error(str(e))


def _main(argv: Sequence[str] | None) -> int:
    in_child = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    run = _resolve_in_child if in_child else _resolve_here
    resolved = run(lambda: _resolve_command(args, None))
    if isinstance(resolved, int):
        return resolved
    namespace: dict[str, Any] = {}
    if "python_config" in resolved:
        ran = _run_config(resolved["python_config"])
        if isinstance(ran, int):
            return ran
        namespace = ran
        resolved = run(lambda: _resolve_command(args, ran))
        if isinstance(resolved, int):
            return resolved

    def reread() -> tuple[dict[str, Any] | int, dict[str, Any]]:
        """The settings and the config file's names again, for a reload (HUP)."""
        from qiao._pyconfig import execute, is_python
        from qiao.config import ConfigError

        location = resolved["config_file"]
        again_namespace: dict[str, Any] | None = None
        if location is not None and is_python(location):
            try:
                again_namespace = execute(location)
            except ConfigError as e:  # the master logs it and keeps its settings
                return {"error": str(e)}, namespace

        def again() -> dict[str, Any]:
            from qiao._cli import reread

            try:
                return reread(location, resolved["cli"], resolved["cmd_args"], again_namespace)
            except ConfigError as e:  # the master logs it and keeps its settings
                return {"error": str(e)}

        return run(again), (namespace if again_namespace is None else again_namespace)

    return _serve(resolved, namespace, reread)


def _serve(
    resolved: dict[str, Any],
    namespace: dict[str, Any],
    reread: Callable[[], tuple[dict[str, Any] | int, dict[str, Any]]],
) -> int:
    """The master's part: the resolved settings applied, the app (with --preload), the
    sockets, fewer privileges, then the arbiter and its workers."""
    from qiao import _process
    from qiao._bind import BindError, bind_all, close_listener, inherited_sockets
    from qiao._loader import AppLoadError, load_configured, print_app_traceback
    from qiao._privileges import drop_privileges
    from qiao.config import Config, ConfigError

    config = Config.resolved(resolved["values"], resolved["sources"])
    spec: str | None = resolved["app"]
    sockets: list = []
    metrics_socket = None
    try:
        os.umask(config.umask)
        _process.prepare(config)
        config.enter_chdir()
        _process.configure_logging(config)

        # The application: imported here only with --preload; otherwise each worker
        # imports it (so a reload brings new code) and the settings check parsed the name.
        preload = config.preload and not config.reload
        app = None
        if preload:
            try:
                app = load_configured(spec, config, os.getcwd())
            except (AppLoadError, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 - any error of the app's own code
                if config.log_format == "json":
                    # Before the error log exists: one record on stderr, where the text
                    # form is printed, so that every line there stays a JSON object.
                    from qiao import _qiao
                    from qiao._loader import format_app_traceback

                    _qiao.Logger("-", "error", json=True).log(
                        "error", format_app_traceback(e))
                else:
                    print_app_traceback(e)
                return 1

        # The sockets, then fewer privileges.
        sockets = inherited_sockets() or bind_all(
            config.addresses, config.backlog, reuse_port=config.reuse_port
        )
        if config.metrics_bind is not None:
            import socket

            from qiao._bind import parse_bind

            metrics_socket = bind_all([parse_bind(config.metrics_bind)], 64, socket.socket)[0]
        drop_privileges(config.user, config.group, initgroups=config.initgroups)
        if config.daemon:
            _process.daemonize()
        _process.capture_output(config)

        from qiao import _qiao

        syslog = config.syslog_settings(spec or config.paste)
        logger = _qiao.Logger(
            config.error_logfile, config.log_level,
            None if syslog["log_syslog_to"] is None else (
                syslog["log_syslog_to"], syslog["log_syslog_facility"],
                f"qiao.{syslog['log_syslog_prefix']}.error",
            ),
            config.log_format == "json",
            _process.routed_loggers()["error_logger"],
        )
    except (ConfigError, AppLoadError, BindError) as e:
        return _error(str(e))
    except (OSError, ValueError) as e:
        return _error(str(e))

    from qiao._hooks import HOOKS
    from qiao.arbiter import Arbiter

    def hooks_of(names: dict[str, Any]) -> dict[str, Any]:
        return {name: names[name] for name in HOOKS if callable(names.get(name))}

    def reload_config() -> tuple[Config, dict[str, Any]]:
        again, names = reread()
        if isinstance(again, int):
            raise ConfigError("the settings could not be read again (see above)")
        if "error" in again:
            raise ConfigError(again["error"])
        return Config.resolved(again["values"], again["sources"]), hooks_of(names)

    arbiter = Arbiter(
        config, spec, sockets, logger, app=app, reload_config=reload_config,
        app_name=spec or config.paste, hooks=hooks_of(namespace),
        metrics_socket=metrics_socket,
    )
    try:
        return arbiter.run()
    finally:
        for sock in sockets:
            close_listener(sock)
        if arbiter.exporter is not None:
            arbiter.exporter.close()


if __name__ == "__main__":
    sys.exit(main())
