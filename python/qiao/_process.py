"""The master process made as the settings ask, before the app loads: environment
variables (``-e``), ``sys.path`` (``--pythonpath``), Python's logging (``--log-config*``),
captured output (``--capture-output``) and detaching (``--daemon``)."""

from __future__ import annotations

import os
import sys

from qiao.config import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from qiao.config import Config

__all__ = ["capture_output", "configure_logging", "daemonize", "prepare", "routed_loggers"]

# The loggers gunicorn writes its own lines through: a logging configuration that names
# one of them gets qiao's lines of that kind (``routed_loggers``).
ERROR_LOGGER = "gunicorn.error"
ACCESS_LOGGER = "gunicorn.access"

# gunicorn's logging defaults: a dictConfig given with --log-config-dict or
# --log-config-json takes from here each top-level key it leaves out, as gunicorn does
# (so one without "loggers" sends the error lines to stderr and the access lines to
# stdout, in gunicorn's format).
_DICT_DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        ERROR_LOGGER: {"level": "INFO", "handlers": ["error_console"], "propagate": True},
        ACCESS_LOGGER: {"level": "INFO", "handlers": ["console"], "propagate": True},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]"},
    },
}

# The loggers the logging configuration named, of ERROR_LOGGER and ACCESS_LOGGER.
_named: set[str] = set()


def prepare(config: Config) -> None:
    """``-e KEY=VALUE`` into the environment, ``--pythonpath`` first on ``sys.path`` and
    the open-files limit, in the master, so that the app (and every worker forked from
    here) sees them."""
    for key, value in config.raw_env.items():
        os.environ[key] = value
    for directory in reversed(config.pythonpath):
        path = os.path.abspath(directory)
        if path not in sys.path:
            sys.path.insert(0, path)
    limit_open_files(config)


def limit_open_files(config: Config) -> None:
    """``--rlimit-nofile``: the soft limit of open files, which the workers inherit.

    ``auto`` raises it to the hard limit, as Go's runtime does at start: the default soft
    limit (1024) is kept low only for programs that pass descriptors to ``select()``,
    whose sets end at 1024, while a worker's connections and static files alone can go
    past it (then static requests are answered 503 and new connections wait). Raising it
    costs nothing until descriptors are used. Code that calls ``select()`` fails the same
    way either way once a process holds 1024 descriptors (``EMFILE`` before, ``ValueError``
    now); programs the app starts inherit the higher limit. A number sets the soft limit
    (lower too), and the hard limit as well where it is above it, which only root may.
    Runs before privileges are dropped."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = config.rlimit_nofile
    if wanted == "auto":
        target = hard if hard != resource.RLIM_INFINITY else _nr_open()
        if target is not None and target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError):
                pass  # kept as it is: a best effort, as Go's
        return
    try:
        if hard == resource.RLIM_INFINITY or wanted <= hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (OSError, ValueError) as e:
        why = (f"above the hard limit {hard} (raise it: ulimit -Hn, systemd's LimitNOFILE=, "
               "or start qiao as root)" if wanted > hard else (e.strerror or str(e)))
        raise ConfigError(f"{config.source('rlimit_nofile')}: cannot set the open-files "
                          f"limit to {wanted}: {why}") from None


def _nr_open() -> int | None:
    """The kernel's ceiling on a process's descriptors (``fs.nr_open``), if readable."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def configure_logging(config: Config) -> None:
    """Python's logging, from ``--log-config`` (an ini file), ``--log-config-json`` (a JSON
    file) or ``--log-config-dict``, as gunicorn configures it; errors are one line. The
    loggers it names of gunicorn's two get qiao's error and access lines."""
    _named.clear()
    if not (config.log_config or config.log_config_json or config.log_config_dict):
        return
    import logging.config

    source = config.source("log_config")
    try:
        if config.log_config:
            if not os.path.isfile(config.log_config):
                raise ConfigError(f"{source}: no such file {config.log_config!r}")
            logging.config.fileConfig(config.log_config, disable_existing_loggers=False)
            _named.update(_ini_loggers(config.log_config))
        if config.log_config_json:
            import json

            source = config.source("log_config_json")
            try:
                with open(config.log_config_json, encoding="utf-8") as f:
                    data = json.load(f)
            except OSError as e:
                raise ConfigError(f"{source}: cannot read {config.log_config_json!r}: "
                                  f"{e.strerror}") from None
            _dict_config(data)
        if config.log_config_dict:
            source = config.source("log_config_dict")
            _dict_config(config.log_config_dict)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError) as e:
        raise ConfigError(f"{source}: {type(e).__name__}: {e}") from None


def _dict_config(data: object) -> None:
    import logging.config

    if not isinstance(data, dict):
        raise TypeError(f"expected a dict, got {type(data).__name__}")
    merged = {**_DICT_DEFAULTS, **data}
    handlers = merged.get("handlers") or {}
    users = {"root": merged.get("root") or {}, **(merged.get("loggers") or {})}
    for name, logger in users.items():
        missing = [h for h in (logger or {}).get("handlers", []) if h not in handlers]
        if missing:
            whose = "gunicorn's default " if data.get(
                "root" if name == "root" else "loggers") is None else ""
            raise ValueError(f"{whose}logger {name!r} uses the handler {missing[0]!r}, which "
                             "the configuration's 'handlers' do not define")
    logging.config.dictConfig(merged)
    _named.update(name for name in merged.get("loggers") or {} if isinstance(name, str))


def _ini_loggers(path: str) -> set[str]:
    """The qualified names of the loggers a ``fileConfig`` ini file configures."""
    import configparser

    ini = configparser.ConfigParser(interpolation=None)
    ini.read(path, encoding="utf-8")
    keys = [k.strip() for k in ini.get("loggers", "keys", fallback="").split(",")]
    return {
        ini.get(f"logger_{key}", "qualname", fallback=key)
        for key in keys if key and key != "root"
    }


def routed_loggers() -> dict[str, Any]:
    """The loggers qiao's own lines go to, as ``Engine`` and ``Logger`` take them: gunicorn's
    ``gunicorn.error`` and ``gunicorn.access`` where the logging configuration named them
    (``configure_logging``), else None (the --error-logfile and --access-logfile)."""
    if not _named:  # no logging configuration: no need to import logging
        return {"error_logger": None, "access_logger": None}
    import logging

    def named(name: str) -> logging.Logger | None:
        return logging.getLogger(name) if name in _named else None

    return {"error_logger": named(ERROR_LOGGER), "access_logger": named(ACCESS_LOGGER)}


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
