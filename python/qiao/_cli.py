"""The command line and config file, resolved to plain values: argparse, the TOML reader
and the settings' parsers run here, in a short-lived child of the ``qiao`` command (see
``__main__``), so that the master that serves, and every worker it forks, never holds
them (each module the master imports is resident in every worker).
"""

from __future__ import annotations

import argparse
import os
import sys

from qiao import _gunicorn
from qiao._configfile import locate, read_config_file
from qiao._loader import parse_app_spec
from qiao._privileges import drop_privileges
from qiao._pyconfig import is_python
from qiao.config import Config, ConfigError, add_arguments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

__all__ = ["build_parser", "reread", "resolve"]

_DESCRIPTION = """\
Serve a WSGI application. APP is MODULE:NAME (the module's attribute NAME),
MODULE:FACTORY(ARGS) (call FACTORY with literal arguments), or MODULE (its
'application', else its 'app'). Without APP, qiao serves a demo page.
Every setting can also be set as the environment variable QIAO_<NAME>
(QIAO_THREADS=4), and flags can be given in QIAO_CMD_ARGS (gunicorn's
GUNICORN_CMD_ARGS); command-line flags win over the environment, which wins
over the config file."""


class _VersionAction(argparse.Action):
    """``--version``: reads the version from the engine only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from qiao import _qiao

        print(
            f"qiao {_qiao.__version__} (revision {_qiao.BUILD_REVISION}; built for "
            f"{_qiao.BUILT_FOR} on {_qiao.BUILD_TARGET})"
        )
        parser.exit()


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter, told the width: left to find it, argparse imports shutil
    (and with it bz2, lzma and zlib), which would stay resident in every worker."""
    try:
        width = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            width = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError):
            width = 80
    return argparse.RawDescriptionHelpFormatter(prog, width=max(width - 2, 40))


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose "unrecognized arguments" error names the flags close to a
    misspelt one (abbreviations are off: a flag is written whole)."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            import difflib

            flags = [flag for action in self._actions for flag in action.option_strings
                     if action.help != argparse.SUPPRESS]
            for word in message[len(prefix):].split():
                flag = word.partition("=")[0]
                close = difflib.get_close_matches(flag, flags, n=1) if flag[:2] == "--" else []
                if close:
                    message += f"; {flag}: did you mean {close[0]}?"
        super().error(message)


def build_parser(cls: type[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    parser = (cls or _Parser)(
        prog="qiao",
        allow_abbrev=False,
        usage="qiao [APP] [flags]",
        description=_DESCRIPTION,
        formatter_class=_formatter,
    )
    parser.add_argument(
        "app", nargs="?", metavar="APP", default=None,
        help="the WSGI application, e.g. myproject.wsgi:application (default: a demo page)",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument(
        "-c", "--config", metavar="FILE", default=None,
        help="a config file: TOML (.toml), or Python with gunicorn's setting names and "
        "hooks (gunicorn.conf.py; python:MODULE) (default: the first of ./qiao.toml, "
        "./qiao.conf.py, [tool.qiao] in ./pyproject.toml, ./gunicorn.conf.py)",
    )
    add_arguments(parser)
    _gunicorn.add_arguments(parser)
    return parser


class _EnvArgsParser(_Parser):
    """The parser of ``QIAO_CMD_ARGS``: its errors are one line naming the variable."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ConfigError(f"QIAO_CMD_ARGS: {(message or '').strip().partition('error: ')[2]}")

    def print_usage(self, file: object = None) -> None:
        pass


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """The command line's flags, and those of ``QIAO_CMD_ARGS``."""
    args = build_parser().parse_args(argv)
    text = os.environ.get("QIAO_CMD_ARGS", "")
    if not text.strip():
        return args, argparse.Namespace(app=None, config=None)
    import shlex

    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ConfigError(f"QIAO_CMD_ARGS: {e}") from None
    env_args = build_parser(_EnvArgsParser).parse_args(words)
    if env_args.app is not None:
        raise ConfigError(f"QIAO_CMD_ARGS: takes flags only, not an APP ({env_args.app!r})")
    return args, env_args


def _flags(args: argparse.Namespace, where: str) -> dict[str, Any]:
    """The settings a parsed command line sets, by name; gunicorn's flags that qiao does
    not have are judged (a warning printed, or a ``ConfigError``)."""
    values = {}
    for name, value in vars(args).items():
        if name in ("app", "config"):
            continue
        if name.startswith("gunicorn:"):
            judged = _gunicorn.verdict(name[len("gunicorn:"):], value)
            if judged is not None:
                severity, message = judged
                if severity == "error":
                    raise ConfigError(f"{where}{message}")
                print(f"qiao: warning: {where}{message}", file=sys.stderr)
            continue
        values[name] = value
    return values


def _check_access_log_format(config: Config) -> None:
    """The access-log format parses (whether or not an access log is on), and each name in
    it that is not one of gunicorn's atoms is a warning: it prints '-', as in gunicorn."""
    from qiao import _qiao

    label = config.source("access_logformat")
    try:
        unknown = _qiao.check_access_log_format(config.access_logformat)
    except ValueError as e:
        raise ConfigError(f"{label}: {e}") from None
    for name in unknown:
        print(f"qiao: warning: {label}: %({name})s is not an access-log atom: it prints "
              "'-', as in gunicorn", file=sys.stderr)


def resolve(argv: Sequence[str] | None, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse ``argv``, ``QIAO_CMD_ARGS`` and the config file and check every setting that
    can be checked without serving: what the master needs, as marshal-able values. Raises
    ``SystemExit`` for --help/--version and usage errors (argparse printed them),
    ``ConfigError`` and ``AppLoadError`` for one-line errors, ``OSError``/``ValueError`` from
    the engine's own checks.

    A Python config file must run in the master (its hooks live there): without its
    ``namespace``, the answer is ``{"python_config": LOCATION}``, for the master to run it
    and ask again with what it defined.
    """
    args, env_args = _parse(argv)
    cli = _flags(args, "")
    cmd_args = _flags(env_args, "QIAO_CMD_ARGS: ")
    config_file = locate(args.config or env_args.config)
    if config_file is not None and is_python(config_file) and namespace is None:
        return {"python_config": config_file}
    settings, labels = read_config_file(config_file, namespace=namespace)
    config = Config(settings, cli=cli, cmd_args=cmd_args, settings_label=labels)
    app = args.app if args.app is not None else config.wsgi_app
    if config.paste and args.app is not None:
        raise ConfigError(f"--paste names the application: not with APP {args.app!r}")
    if config.paste:
        app = None
    if config.factory and app is None:
        raise ConfigError("--factory needs an APP to call")
    config.enter_chdir()  # checked here (this process's own); the master changes too
    if app is not None:
        parse_app_spec(app)
    if config.check_config or config.print_config:
        # The open-files limit the master sets first (as root, before dropping privileges),
        # tried here, so that a limit it could not set fails the check as it fails a start.
        from qiao._process import limit_open_files

        limit_open_files(config)
    # Settings the engine checks itself (log files, access log format), checked once by an
    # engine that never serves, as the user the workers will run as, so that an error is
    # one line, not one per worker.
    drop_privileges(config.user, config.group)
    from qiao import _qiao

    _check_access_log_format(config)
    _qiao.Engine(_no_app, config.engine_settings(), [])
    if config.print_config:
        _print_config(config, namespace or {})
    if config.check_config or config.print_config:
        _check_app(app, config)
    return {
        "values": config.as_dict(),
        "sources": config.sources(),
        "app": app,
        "config_file": config_file,
        "cli": cli,
        "cmd_args": cmd_args,
    }


def _print_config(config: Config, namespace: dict[str, Any]) -> None:
    """``--print-config``: every setting, as a config file would write it, with where its
    value came from; then the hooks defined (as gunicorn prints its settings)."""
    from qiao._hooks import HOOKS

    values, sources = config.as_dict(), config.sources()
    width = max(len(name) for name in values)
    for name, value in values.items():
        shown = "'***'" if "password" in name and value else _python_text(name, value)
        source = "" if sources[name] == "default" else f"  # {sources[name]}"
        print(f"{name:<{width}} = {shown}{source}")
    for name in HOOKS:
        if callable(namespace.get(name)):
            print(f"{name:<{width}} = <{getattr(namespace[name], '__qualname__', name)}()>")


def _python_text(name: str, value: object) -> str:
    """A value as users write it: masks in octal, not as the number they make."""
    if name == "umask" and isinstance(value, int):
        return f"0o{value:03o}"
    return repr(value)


def _check_app(app: str | None, config: Config) -> NoReturn:
    """``--check-config``: load the app as a worker would, and exit 0 if it loads, 1 if its
    code raised (with its traceback), 2 if it cannot be found (one line)."""
    from qiao._loader import AppLoadError, load_configured, print_app_traceback

    try:
        load_configured(app, config, os.getcwd())
    except AppLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - the app's own code failed: show where
        print_app_traceback(e)
        raise SystemExit(1) from None
    raise SystemExit(0)


def reread(
    config_file: str | None,
    cli: dict[str, Any],
    cmd_args: dict[str, Any],
    namespace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings again for a reload (HUP): the config file re-read, the same flags."""
    settings, labels = read_config_file(config_file, namespace=namespace)
    config = Config(settings, cli=cli, cmd_args=cmd_args, settings_label=labels)
    return {"values": config.as_dict(), "sources": config.sources()}


def _no_app(environ: object, start_response: object) -> list[bytes]:
    return []
