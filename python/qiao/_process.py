"""The master process made as the settings ask, before the app loads: environment
variables (``-e``), ``sys.path`` (``--pythonpath``), Python's logging (``--log-config*``),
captured output (``--capture-output``) and detaching (``--daemon``)."""

from __future__ import annotations

import os
import sys

from qiao.config import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qiao.config import Config

__all__ = ["capture_output", "configure_logging", "daemonize", "prepare"]


def prepare(config: Config) -> None:
    """``-e KEY=VALUE`` into the environment and ``--pythonpath`` first on ``sys.path``, in
    the master, so that the app (and every worker forked from here) sees them."""
    for key, value in config.raw_env.items():
        os.environ[key] = value
    for directory in reversed(config.pythonpath):
        path = os.path.abspath(directory)
        if path not in sys.path:
            sys.path.insert(0, path)


def configure_logging(config: Config) -> None:
    """Python's logging, from ``--log-config`` (an ini file), ``--log-config-json`` (a JSON
    file) or ``--log-config-dict``, as gunicorn configures it; errors are one line."""
    if not (config.log_config or config.log_config_json or config.log_config_dict):
        return
    import logging.config

    source = config.source("log_config")
    try:
        if config.log_config:
            if not os.path.isfile(config.log_config):
                raise ConfigError(f"{source}: no such file {config.log_config!r}")
            logging.config.fileConfig(config.log_config, disable_existing_loggers=False)
        if config.log_config_json:
            import json

            source = config.source("log_config_json")
            try:
                with open(config.log_config_json, encoding="utf-8") as f:
                    data = json.load(f)
            except OSError as e:
                raise ConfigError(f"{source}: cannot read {config.log_config_json!r}: "
                                  f"{e.strerror}") from None
            logging.config.dictConfig(data)
        if config.log_config_dict:
            source = config.source("log_config_dict")
            settings = {"version": 1, "disable_existing_loggers": False}
            logging.config.dictConfig({**settings, **config.log_config_dict})
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError) as e:
        raise ConfigError(f"{source}: {type(e).__name__}: {e}") from None


def capture_output(config: Config) -> None:
    """``--capture-output``: this process's (and so each worker's) stdout and stderr become
    the error log file, as in gunicorn; with the error log on stderr, nothing changes."""
    if not config.capture_output or config.error_logfile == "-":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(config.error_logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def daemonize() -> None:
    """Detach from the terminal (fork, setsid, fork), as gunicorn's ``--daemon`` does; the
    standard streams go to /dev/null (the error log, when a file, keeps its own)."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
