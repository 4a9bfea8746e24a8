"""The command line and config file, resolved to plain values: argparse, the TOML reader
and the settings' parsers run here, in a short-lived child of the ``qiao`` command (see
``__main__``), so that the master that serves, and every worker it forks, never holds
them (each module the master imports is resident in every worker).
"""

from __future__ import annotations

import argparse
import os
import sys

from qiao._configfile import read_config_file
from qiao._loader import parse_app_spec
from qiao._privileges import drop_privileges
from qiao.config import Config, ConfigError, add_arguments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["build_parser", "reread", "resolve"]

_DESCRIPTION = """\
Serve a WSGI application. APP is MODULE:NAME (the module's attribute NAME),
MODULE:FACTORY(ARGS) (call FACTORY with literal arguments), or MODULE (its
'application', else its 'app'). Without APP, qiao serves a demo page.
Every setting can also be set as the environment variable QIAO_<NAME>
(QIAO_THREADS=4); command-line flags win over the environment."""


class _VersionAction(argparse.Action):
    """``--version``: reads the version from the engine only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        import qiao

        print(f"qiao {qiao.__version__}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        help="a TOML file of settings (default: ./qiao.toml, else [tool.qiao] in "
        "./pyproject.toml, when present)",
    )
    add_arguments(parser)
    return parser


def resolve(argv: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``argv`` and the config file and check every setting that can be checked
    without serving: what the master needs, as marshal-able values. Raises ``SystemExit``
    for --help/--version and usage errors (argparse printed them), ``ConfigError`` and
    ``AppLoadError`` for one-line errors, ``OSError``/``ValueError`` from the engine's
    own checks."""
    args = build_parser().parse_args(argv)
    cli = {name: value for name, value in vars(args).items() if name not in ("app", "config")}
    settings, label = read_config_file(args.config)
    config = Config(settings, cli=cli, settings_label=label)
    if config.factory and args.app is None:
        raise ConfigError("--factory needs an APP to call")
    config.enter_chdir()  # checked here (this process's own); the master changes too
    if args.app is not None:
        parse_app_spec(args.app)
    # Settings the engine checks itself (log files, access log format), checked once by an
    # engine that never serves, as the user the workers will run as, so that an error is
    # one line, not one per worker.
    drop_privileges(config.user, config.group)
    from qiao import _qiao

    _qiao.Engine(_no_app, config.engine_settings(), [])
    return {
        "values": config.as_dict(),
        "sources": config.sources(),
        "app": args.app,
        "config_file": args.config,
        "cli": cli,
    }


def reread(config_file: str | None, cli: dict[str, Any]) -> dict[str, Any]:
    """The settings again for a reload (HUP): the config file re-read, the same flags."""
    settings, label = read_config_file(config_file)
    config = Config(settings, cli=cli, settings_label=label)
    return {"values": config.as_dict(), "sources": config.sources()}


def _no_app(environ: object, start_response: object) -> list[bytes]:
    return []
