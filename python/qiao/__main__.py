"""The ``qiao`` command: ``qiao [APP] [flags]`` loads APP (or the demo page) and serves it."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from qiao._bind import BindError, bind_all
from qiao._loader import AppLoadError, load_app
from qiao.config import Config, ConfigError, add_arguments

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qiao",
        allow_abbrev=False,
        usage="qiao [APP] [flags]",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "app", nargs="?", metavar="APP", default=None,
        help="the WSGI application, e.g. myproject.wsgi:application (default: a demo page)",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    add_arguments(parser)
    return parser


def _error(message: str, status: int = 2) -> int:
    print(f"qiao: error: {message}", file=sys.stderr)
    return status


def _print_app_traceback(error: BaseException) -> None:
    """Print an error raised by the application's code, without qiao's and importlib's
    frames above it."""
    import importlib

    ours = (os.path.dirname(__file__), os.path.dirname(importlib.__file__ or ""), "<frozen ")
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(ours):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb or error.__traceback__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user error)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cli = {name: value for name, value in vars(args).items() if name != "app"}
    sockets = None
    try:
        # 1. settings
        config = Config(cli=cli)
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

        # 3. the application
        if args.app is None:
            from qiao._demo import demo_app

            app = demo_app
        else:
            try:
                app = load_app(args.app, factory=config.factory, cwd=os.getcwd())
            except (AppLoadError, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 - any error of the app's own code
                # The application's own import or factory failed: its traceback is the news.
                _print_app_traceback(e)
                return 1

        # 4. the sockets
        sockets = bind_all(config.addresses, config.backlog)
    except (ConfigError, AppLoadError, BindError) as e:
        return _error(str(e))

    # 5. the engine
    from qiao.server import WSGIServer, graceful_sigterm

    server = WSGIServer(app, config, sockets)
    with server:
        try:
            server._get_engine()
        except ImportError as e:
            return _error(f"the engine qiao._qiao is not built ({e}); run `maturin develop`", 1)
        except (OSError, ValueError) as e:
            return _error(str(e))
        import qiao

        server._log("info", f"Starting qiao {qiao.__version__}")
        if args.app is None:
            server._log("info", "No APP given: serving the demo page (try: qiao module:app)")
        try:
            with graceful_sigterm(server):
                server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
