"""The ``qiao`` command: ``qiao [APP] [flags]`` loads APP (or the demo page) and serves it."""

from __future__ import annotations

import argparse
import os
import sys

from qiao._bind import BindError, bind_all, close_listener, inherited_sockets
from qiao._configfile import read_config_file as _read_config_file
from qiao._loader import AppLoadError, load_app, parse_app_spec, print_app_traceback
from qiao._privileges import drop_privileges
from qiao.config import Config, ConfigError, add_arguments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["build_parser", "main"]

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
    (and with it bz2, lzma and zlib: 1.7 MiB resident in every worker)."""
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


def _error(message: str, status: int = 2) -> int:
    print(f"qiao: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user error)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cli = {name: value for name, value in vars(args).items() if name not in ("app", "config")}
    sockets: list = []
    try:
        # 1. settings: flags > QIAO_* environment > config file > defaults
        file_settings, label = _read_config_file(args.config)
        config = Config(file_settings, cli=cli, settings_label=label)
        os.umask(config.umask)
        if config.factory and args.app is None:
            raise ConfigError("--factory needs an APP to call")

        # 2. working directory
        if config.chdir is not None:
            try:
                os.chdir(config.chdir)
            except OSError as e:
                reason = os.strerror(e.errno).lower() if e.errno else str(e)
                raise ConfigError(
                    f"{config.source('chdir')}: cannot change to {config.chdir!r}: {reason}"
                ) from None

        # 3. the application: imported here only with --preload; otherwise each worker
        #    imports it (so a reload brings new code) and the master checks the name only.
        preload = config.preload and not config.reload
        app = None
        if args.app is not None:
            parse_app_spec(args.app)
            if preload:
                try:
                    app = load_app(args.app, factory=config.factory, cwd=os.getcwd())
                except (AppLoadError, KeyboardInterrupt):
                    raise
                except Exception as e:  # noqa: BLE001 - any error of the app's own code
                    print_app_traceback(e)
                    return 1
        elif preload:
            from qiao._demo import demo_app

            app = demo_app

        # 4. the sockets, then fewer privileges
        sockets = inherited_sockets() or bind_all(config.addresses, config.backlog)
        drop_privileges(config.user, config.group)

        # 5. settings the engine checks itself (log files, access log format), checked
        #    once here by an engine that never serves, so an error is one line, not N.
        from qiao import _qiao

        _qiao.Engine(_no_app, config.engine_settings(), [])
        logger = _qiao.Logger(config.error_logfile, config.log_level)
    except (ConfigError, AppLoadError, BindError) as e:
        return _error(str(e))
    except ImportError as e:
        return _error(f"the engine qiao._qiao is not built ({e}); run `maturin develop`", 1)
    except (OSError, ValueError) as e:
        return _error(str(e))

    # 6. the master and its workers
    from qiao.arbiter import Arbiter

    def reread() -> Config:
        settings, where = _read_config_file(args.config)
        return Config(settings, cli=cli, settings_label=where)

    arbiter = Arbiter(config, args.app, sockets, logger, app=app, reload_config=reread)
    try:
        return arbiter.run()
    finally:
        for sock in sockets:
            close_listener(sock)


def _no_app(environ: object, start_response: object) -> list[bytes]:
    return []


if __name__ == "__main__":
    sys.exit(main())
