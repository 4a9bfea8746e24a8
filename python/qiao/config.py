"""The one table of qiao's settings, and the Config object built from CLI, env and kwargs."""

from __future__ import annotations

import os
import sys

from qiao._bind import Address, parse_bind

# Annotations only: `typing` is not imported at run time, since every module the master
# imports is carried, resident, by each worker it forks. (mypy knows this name.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Mapping
    from types import ModuleType
    from typing import Any, Callable

__all__ = ["SETTINGS", "Config", "ConfigError", "Setting", "add_arguments"]

ENV_PREFIX = "QIAO_"


def _re() -> ModuleType:
    """`re`, imported when a value is first parsed from text: the master that serves
    (and every worker it forks) only receives values already parsed (see __main__)."""
    import re

    return re


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; ``str()`` is one line naming it."""


class _Invalid(ValueError):
    """Raised by a parser or validator: the reason, without the setting's name.

    ``got`` is the offending part when it is not the whole raw value (one of several
    addresses, say).
    """

    def __init__(self, reason: str, got: object = None) -> None:
        super().__init__(reason)
        self.got = got


# -- parsers: turn a raw value (a string from the CLI or env, or a Python value from
# -- kwargs or a config file) into the setting's type, or raise _Invalid(reason).


def _linux_only(parse: Callable[[object], int], why: str) -> Callable[[object], int]:
    """``parse``, refusing any value but 0 (off) where the feature has no implementation
    (qiao builds on macOS too; see build.rs)."""

    def linux_only(raw: object) -> int:
        value = parse(raw)
        if value and not sys.platform.startswith("linux"):
            raise _Invalid(f"this works on Linux only ({why}); this is {sys.platform}")
        return value

    return linux_only


def _integer(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    if maximum is not None:
        expected = f"expected an integer from {minimum} to {maximum}"
    elif minimum == 1:
        expected = "expected a positive integer"
    else:
        expected = f"expected an integer >= {minimum}"

    def parse(raw: object) -> int:
        if isinstance(raw, bool):
            raise _Invalid(expected)
        if isinstance(raw, str):
            text = raw.strip().replace("_", "")
            if not _re().fullmatch(r"[+-]?\d+", text):
                raise _Invalid(expected)
            raw = int(text)
        if not isinstance(raw, int) or raw < minimum or (maximum is not None and raw > maximum):
            raise _Invalid(expected)
        return raw

    return parse


def _seconds(*, zero_ok: bool) -> Callable[[object], float]:
    expected = "expected a number of seconds" + (" >= 0" if zero_ok else " > 0")

    def parse(raw: object) -> float:
        if isinstance(raw, bool):
            raise _Invalid(expected)
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise _Invalid(expected) from None
        import math  # here: the master imports no module it does not need

        if not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise _Invalid(expected)
        if raw < 0 or (raw == 0 and not zero_ok):
            raise _Invalid(expected)
        return float(raw)

    return parse


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(raw: object) -> int:
    """A byte count: an integer, or a string with an optional K/M/G/T (binary) suffix."""
    expected = "expected a size in bytes >= 0, such as 1048576 or 1M"
    if isinstance(raw, bool):
        raise _Invalid(expected)
    if isinstance(raw, str):
        match = _re().fullmatch(r"(\d+)\s*([kmgt]?)(?:i?b)?", raw.strip().lower())
        if match is None:
            raise _Invalid(expected)
        raw = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if not isinstance(raw, int) or raw < 0:
        raise _Invalid(expected)
    return raw


def _string(raw: object) -> str:
    if not isinstance(raw, str):
        raise _Invalid("expected a string")
    return raw


def _optional_string(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _Invalid("expected a string or None")
    return raw or None


def _path(raw: object) -> str | None:
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    return _optional_string(raw)


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
    raise _Invalid("expected true or false")


def _choice(*choices: str) -> Callable[[object], str]:
    expected = "expected one of " + ", ".join(choices)

    def parse(raw: object) -> str:
        if not isinstance(raw, str) or raw.strip().lower() not in choices:
            raise _Invalid(expected)
        return raw.strip().lower()

    return parse


def _bind_list(raw: object) -> list[str]:
    """One or more bind strings: a list (CLI, kwargs), or one string split on spaces/commas."""
    if isinstance(raw, str):
        items = [item for item in _re().split(r"[\s,]+", raw) if item]
    elif isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        items = [item.strip() for item in raw]
    else:
        raise _Invalid("expected an address string or a list of them")
    if not items:
        raise _Invalid("expected at least one address")
    for item in items:
        try:
            parse_bind(item)
        except ValueError as e:
            raise _Invalid(str(e), got=item) from None
    return items


def _metrics_bind(raw: object) -> str | None:
    """Where the exporter listens: one TCP or unix-socket address, or None (off)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise _Invalid("expected an address string")
    try:
        address = parse_bind(raw)
    except ValueError as e:
        raise _Invalid(str(e), got=raw) from None
    if address.kind == "fd":
        raise _Invalid("expected HOST:PORT, [IPV6]:PORT or unix:/path", got=raw)
    return raw.strip()


def _statsd_host(raw: object) -> str | None:
    """gunicorn's --statsd-host: HOST:PORT, HOST, [IPV6]:PORT or unix:PATH; None: off."""
    from qiao._statsd import parse_host

    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise _Invalid("expected an address string")
    try:
        parse_host(raw)
    except ValueError as e:
        raise _Invalid(str(e), got=raw) from None
    return raw.strip()


def _root_path(raw: object) -> str:
    """SCRIPT_NAME: empty, or a path that starts with '/'; a trailing '/' is dropped."""
    value = _string(raw).strip()
    if value and not value.startswith("/"):
        raise _Invalid("expected a path that starts with '/', or ''")
    return value.rstrip("/")


_CERT_REQS = {"none": 0, "optional": 1, "required": 2}


def _cert_reqs(raw: object) -> int:
    """gunicorn's ``cert_reqs``: 0, 1 or 2 (``ssl.CERT_*``), or the names of those."""
    expected = "expected 0, 1, 2, none, optional or required"
    if isinstance(raw, str):
        word = raw.strip().lower().removeprefix("cert_")
        if word in _CERT_REQS:
            return _CERT_REQS[word]
        if word in ("0", "1", "2"):
            return int(word)
        raise _Invalid(expected)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw not in (0, 1, 2):
        raise _Invalid(expected)
    return int(raw)


def _protocols(raw: object) -> str:
    """A list of ``h1`` and ``h2`` (gunicorn's ``http_protocols``), normalised: ``h2,h1``."""
    expected = "expected a comma-separated list of h1 and h2, such as h2,h1"
    items = raw if isinstance(raw, (list, tuple)) else _string(raw).split(",")
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if not names or any(name not in ("h1", "h2") for name in names) or len(set(names)) != len(
        names
    ):
        raise _Invalid(expected)
    return ",".join(names)


def _tls_version(raw: object) -> str:
    """``1.2`` or ``1.3`` (also ``TLSv1.2``, ``TLSv1_3``)."""
    if isinstance(raw, str):
        text = raw.strip().lower().removeprefix("tlsv").removeprefix("tls").replace("_", ".")
        if text in ("1.2", "1.3"):
            return text
    raise _Invalid("expected 1.2 or 1.3")


def _workers(raw: object) -> int:
    """A worker count, or ``auto``: one per CPU the process may run on."""
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    try:
        return _integer(1)(raw)
    except _Invalid:
        raise _Invalid("expected a positive integer or 'auto'") from None


def _open_files(raw: object) -> int | str:
    """``auto``, or a number of open files (at least 64: a worker's own descriptors)."""
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    try:
        return _integer(64)(raw)
    except _Invalid:
        raise _Invalid("expected 'auto' or an integer >= 64") from None


def _umask(raw: object) -> int:
    """A file mode creation mask: an int, or a string in octal (``022``, ``0o22``)."""
    expected = "expected an octal mask such as 022 or 0o22"
    if isinstance(raw, str):
        text = raw.strip().lower().removeprefix("0o")
        if not _re().fullmatch(r"[0-7]{1,4}", text):
            raise _Invalid(expected)
        raw = int(text, 8)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 0o7777:
        raise _Invalid(expected)
    return raw


def _ip_networks(raw: object) -> list[str]:
    """IP addresses and CIDR networks (a list, or one string split on spaces/commas), or
    ``*`` for every address; normalised (``10.1.0.0/16``, ``::1``)."""
    expected = "expected IP addresses or networks (CIDR) separated by commas, or '*'"
    if isinstance(raw, str):
        items = [item for item in _re().split(r"[\s,]+", raw) if item]
    elif isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        items = [item.strip() for item in raw if item.strip()]
    else:
        raise _Invalid(expected)
    if "*" in items:
        return ["*"]
    import ipaddress  # only while parsing: see TYPE_CHECKING above

    networks = []
    for item in items:
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise _Invalid(expected, got=item) from None
        single = net.prefixlen == net.max_prefixlen
        networks.append(str(net.network_address) if single else str(net))
    return networks


# RFC 9110 §5.6.2 token characters, without '_': a name with '_' never reaches the app
# (see docs/behaviour.md), so it could not be a forwarding field either.
_FIELD_NAME = r"[A-Za-z0-9!#$%&'*+.^`|~-]+"


def _scheme_headers(raw: object) -> dict[str, str]:
    """gunicorn's ``secure_scheme_headers``: a dict of field name to the value that
    means https, or ``NAME=VALUE`` pairs separated by commas; names are upper-cased."""
    expected = "expected NAME=VALUE pairs separated by commas (a dict in a config file)"
    if isinstance(raw, str):
        pairs: list[tuple[object, object]] = []
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            if not sep:
                raise _Invalid(expected, got=item)
            pairs.append((name.strip(), value.strip()))
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise _Invalid(expected)
    if len(pairs) > 8:  # the engine keeps their values on the stack
        raise _Invalid("expected at most 8 headers")
    headers = {}
    for name, value in pairs:
        if not isinstance(name, str) or not _re().fullmatch(_FIELD_NAME, name):
            raise _Invalid("expected header field names (letters, digits, '-'; no '_')", got=name)
        if not isinstance(value, str) or not value or value != value.strip():
            raise _Invalid("expected a non-empty value for each header", got=f"{name}={value}")
        headers[name.upper()] = value
    return headers


_FORWARDED_FIELDS = ("host", "port", "prefix")


def _forwarded_fields(raw: object) -> dict[str, int]:
    """Which of X-Forwarded-Host/-Port/-Prefix to read, each with the number of proxies
    that set it: ``host,prefix`` or ``host=2,port`` (a list, or a dict in a config file)."""
    expected = (
        "expected some of host, port, prefix separated by commas, each optionally =N "
        "(the number of proxies that set it)"
    )
    if isinstance(raw, str):
        items = [item for item in _re().split(r"[\s,]+", raw) if item]
    elif isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        items = [item.strip() for item in raw if item.strip()]
    elif isinstance(raw, dict):
        items = [f"{name}={count}" for name, count in raw.items()]
    else:
        raise _Invalid(expected)
    fields = {}
    for item in items:
        name, sep, count = item.partition("=")
        name = name.strip().lower().removeprefix("x-forwarded-")
        count = count.strip()
        if name not in _FORWARDED_FIELDS or (sep and not _re().fullmatch(r"[1-9]\d{0,2}", count)):
            raise _Invalid(expected, got=item)
        fields[name] = int(count) if sep else 1
    return fields


# gunicorn's worker classes, as its -k accepts them, by what qiao runs for each.
_WORKER_CLASSES = {
    "sync": "sync", "gthread": "gthread",
    "gunicorn.workers.sync.syncworker": "sync", "egg:gunicorn#sync": "sync",
    "gunicorn.workers.gthread.threadworker": "gthread", "egg:gunicorn#gthread": "gthread",
}


def _worker_class(raw: object) -> str:
    """gunicorn's ``worker_class``: ``sync`` and ``gthread`` (in any of gunicorn's
    spellings) are what qiao's workers are; any other class is refused, saying why."""
    text = _string(raw).strip()
    found = _WORKER_CLASSES.get(text.lower())
    if found is not None:
        return found
    lowered = text.lower()
    if "uvicorn" in lowered or "asgi" in lowered or "aiohttp" in lowered:
        why = "it runs ASGI (asyncio) applications and qiao serves WSGI ones"
    else:
        why = (
            "qiao's workers are sync (one thread) or gthread (--threads N); its engine "
            "already serves idle and slow connections without holding a thread, which is "
            "what the gevent, eventlet and tornado workers are for"
        )
    raise _Invalid(f"expected sync or gthread: {why}")


def _strings(raw: object) -> list[str]:
    """A list of strings: a list (CLI flags repeated, a config file), or one string split
    on commas (an environment variable)."""
    if isinstance(raw, str):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if isinstance(raw, (list, tuple)) and all(isinstance(item, (str, os.PathLike)) for item in raw):
        return [os.fspath(item) for item in raw]
    raise _Invalid("expected a string or a list of strings")


def _pairs(raw: object) -> dict[str, str]:
    """``KEY=VALUE`` strings (gunicorn's ``raw_env``, ``--paste-global``): a list of them, one
    string, or a dict."""
    if isinstance(raw, dict):
        items = [f"{k}={v}" for k, v in raw.items()]
    elif isinstance(raw, str):
        items = [raw]
    elif isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        items = list(raw)
    else:
        raise _Invalid("expected KEY=VALUE strings")
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _Invalid("expected KEY=VALUE", got=item)
        pairs[key.strip()] = value
    return pairs


def _static_mounts(raw: object) -> list[str]:
    """``--static URL_PREFIX=DIRECTORY`` mounts: a list of such strings (the flag repeated,
    a config file), one string (an environment variable: comma-separated), or a dict of
    prefix to directory."""
    if isinstance(raw, dict):
        items = [f"{k}={os.fspath(v)}" for k, v in raw.items()]
    else:
        items = _strings(raw)
    mounts = []
    for item in items:
        prefix, sep, directory = item.partition("=")
        prefix, directory = prefix.strip(), directory.strip()
        if not sep or not directory or not prefix.startswith("/"):
            raise _Invalid("expected URL_PREFIX=DIRECTORY, the prefix starting with /", got=item)
        if any(c in prefix for c in "?#%\\") or "/." in prefix:
            raise _Invalid("the URL prefix must be a plain path", got=item)
        mounts.append(f"{prefix}={directory}")
    prefixes = [m.partition("=")[0].rstrip("/") for m in mounts]
    if len(set(prefixes)) != len(prefixes):
        raise _Invalid("a URL prefix is given twice")
    return mounts


def _dict_config(raw: object) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict, or its JSON text."""
    if isinstance(raw, str):
        import json  # only while parsing: see TYPE_CHECKING above

        try:
            raw = json.loads(raw)
        except ValueError as e:
            raise _Invalid(f"expected a JSON object ({e})") from None
    if not isinstance(raw, dict):
        raise _Invalid("expected a dict (logging.config.dictConfig's schema)")
    return raw


def _syslog_address(raw: object) -> str:
    """Where syslog lines go, as gunicorn writes it: ``udp://HOST:PORT``, ``tcp://HOST:PORT``
    or ``unix://PATH[#dgram|#stream]``."""
    text = _string(raw).strip()
    expected = "expected udp://HOST:PORT, tcp://HOST:PORT or unix://PATH[#dgram|#stream]"
    scheme, sep, rest = text.partition("://")
    if not sep or not rest or scheme not in ("udp", "tcp", "unix"):
        raise _Invalid(expected)
    if scheme == "unix":
        _path_part, _, kind = rest.partition("#")
        if kind not in ("", "dgram", "stream"):
            raise _Invalid(expected)
    else:
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _Invalid(expected)
    return text


# The facilities syslog(3) names (<syslog.h>), as gunicorn's --log-syslog-facility takes them.
_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "syslog",
    "user", "uucp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
)


def _directory(value: str | None) -> None:
    if value is not None and not os.path.isdir(value):
        raise _Invalid("expected an existing directory")


def _id_or_name(raw: object) -> str | None:
    """A user or group: a name, or a numeric id (gunicorn's config files give ints)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return str(raw)
    return _optional_string(raw)


def _proxy_mode(raw: object) -> bool:
    """``--proxy-protocol [MODE]``: gunicorn's modes ``off``, ``v1``, ``v2``, ``auto`` (qiao
    tells v1 from v2 by their first bytes, so each of the last three accepts both), or a
    boolean."""
    if isinstance(raw, str) and raw.strip().lower() in ("v1", "v2", "auto"):
        return True
    try:
        return _boolean(raw)
    except _Invalid:
        raise _Invalid("expected off, v1, v2, auto, or true/false") from None


class Setting:
    """One row of the table: a setting's name, parser, default and documentation."""

    __slots__ = (
        "const", "default", "doc", "engine", "env_aliases", "flags", "gunicorn", "metavar",
        "name", "parse", "repeat", "switch", "validate",
    )

    def __init__(
        self,
        name: str,  # the keyword argument and config-file key; env var is QIAO_<NAME>
        parse: Callable[[object], Any],  # raw value (str or Python value) -> typed value
        default: Any,  # the value when no source sets it (copied for lists)
        doc: str,  # one sentence for --help and docs/configuration.md
        flags: tuple[str, ...] = (),  # CLI flags; the first long one names it in errors
        validate: Callable[[Any], None] | None = None,  # raises _Invalid on a bad value
        metavar: str | None = None,  # placeholder shown by --help
        repeat: bool = False,  # the CLI flag may be given more than once (values collected)
        switch: bool = False,  # the CLI flag takes no value and sets the opposite of default
        engine: bool = False,  # passed to the Rust engine by Config.engine_settings()
        env_aliases: tuple[str, ...] = (),  # other environment variables, weaker than QIAO_<NAME>
        gunicorn: str | None = None,  # gunicorn's name for it in a Python config file, if other
        const: object = None,  # the flag's value may be left out, meaning this (nargs='?')
    ) -> None:
        self.name = name
        self.parse = parse
        self.default = default
        self.doc = doc
        self.flags = flags
        self.validate = validate
        self.metavar = metavar
        self.repeat = repeat
        self.switch = switch
        self.engine = engine
        self.env_aliases = env_aliases
        self.gunicorn = gunicorn
        self.const = const

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        """The flag used to name this setting in CLI error messages."""
        longs = [f for f in self.flags if f.startswith("--")]
        return (longs or list(self.flags) or ["--" + self.name.replace("_", "-")])[0]


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# gunicorn's default access log line: remote host, ident, user, time, request line,
# status, response length, referer, user agent.
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "bind", _bind_list,
        # Bounds who can connect: loopback only until the user opens it up.
        ["127.0.0.1:8000"],
        "Address to listen on: HOST:PORT, [IPV6]:PORT, :PORT, HOST, unix:PATH or fd://N; "
        "repeat the flag to listen on several.",
        ("-b", "--bind"), metavar="ADDRESS", repeat=True,
    ),
    Setting(
        "workers", _workers,
        # Bounds the worker processes the master keeps running.
        1,
        "Number of worker processes; 'auto' means one per CPU.",
        ("-w", "--workers"), metavar="INT", engine=True,
    ),
    Setting(
        "threads", _integer(1),
        # Bounds how many requests one worker runs in the application at once.
        1,
        "Number of threads per worker that call the application.",
        ("--threads",), metavar="INT", engine=True,
    ),
    Setting(
        "backlog", _integer(1),
        # Bounds the kernel's queue of connections not yet accepted (listen(2)).
        2048,
        "Maximum number of pending connections in the listen queue.",
        ("--backlog",), metavar="INT",
    ),
    Setting(
        "root_path", _root_path,
        # Bounds nothing: the SCRIPT_NAME prefix the application is mounted under.
        "",
        "SCRIPT_NAME for every request: the URL prefix the application is mounted at.",
        ("--root-path",), metavar="PATH", engine=True, env_aliases=("SCRIPT_NAME",),
    ),
    Setting(
        "access_logfile", _optional_string,
        # Bounds log output: no access log unless asked for.
        None,
        "Access log file; '-' means stdout. Unset: no access log.",
        ("--access-logfile",), metavar="FILE", engine=True, gunicorn="accesslog",
    ),
    Setting(
        "access_logformat", _string,
        # Bounds nothing: the layout of one access log line (gunicorn's atoms).
        DEFAULT_ACCESS_LOG_FORMAT,
        "Format of an access log line, with gunicorn's %(x)s atoms.",
        ("--access-logformat",), metavar="STRING", engine=True, gunicorn="access_log_format",
    ),
    Setting(
        "log_format", _choice("text", "json"),
        # Bounds nothing: the shape of the error and access log lines.
        "text",
        "text: gunicorn's log lines; json: one JSON object per line, in the error log "
        "(time, level, pid, message) and the access log (a field per access log atom).",
        ("--log-format",), metavar="FORMAT", engine=True,
    ),
    Setting(
        "error_logfile", _string,
        # Bounds nothing: where the error log goes, stderr by default.
        "-",
        "Error log file; '-' means stderr.",
        ("--error-logfile", "--log-file"), metavar="FILE", engine=True, gunicorn="errorlog",
    ),
    Setting(
        "log_level", _choice(*_LOG_LEVELS),
        # Bounds the error log's volume: info and above.
        "info",
        "Least severe error log level written: " + ", ".join(_LOG_LEVELS) + ".",
        ("--log-level",), metavar="LEVEL", engine=True, gunicorn="loglevel",
    ),
    Setting(
        "chdir", _path,
        # Bounds nothing: the directory to change to before loading the app.
        None,
        "Change to this directory before loading the application.",
        ("--chdir",), metavar="DIR",
    ),
    Setting(
        "factory", _boolean,
        # Bounds nothing: whether APP names a factory to call with no arguments.
        False,
        "Treat APP's attribute as a factory: call it with no arguments to get the app.",
        ("--factory",), switch=True,
    ),
    Setting(
        "keep_alive", _seconds(zero_ok=True),
        # Bounds how long an idle keep-alive connection is held open (0: no keep-alive).
        2.0,
        "Seconds to wait for the next request on a keep-alive connection; 0 disables "
        "keep-alive.",
        ("--keep-alive",), metavar="SECONDS", engine=True, gunicorn="keepalive",
    ),
    Setting(
        "header_timeout", _seconds(zero_ok=False),
        # Bounds how long a client may take to send a complete request head (slowloris).
        10.0,
        "Seconds a client has to send a complete request line and headers.",
        ("--header-timeout",), metavar="SECONDS", engine=True,
    ),
    Setting(
        "body_timeout", _seconds(zero_ok=False),
        # Bounds the pause between two pieces of a request body (slow POST).
        30.0,
        "Seconds a client may pause while sending a request body; then 408 and close.",
        ("--body-timeout",), metavar="SECONDS", engine=True,
    ),
    Setting(
        "write_timeout", _seconds(zero_ok=False),
        # Bounds how long a client that stopped reading the response can hold the worker.
        60.0,
        "Seconds a client may stop reading the response before it is disconnected.",
        ("--write-timeout",), metavar="SECONDS", engine=True,
    ),
    Setting(
        "certfile", _path,
        # Bounds nothing: set, every listener serves HTTPS (TLS 1.2 and 1.3, rustls).
        None,
        "TLS certificate chain (PEM, the server's certificate first); serves HTTPS on "
        "every address.",
        ("--certfile",), metavar="FILE", engine=True,
    ),
    Setting(
        "keyfile", _path,
        # Bounds nothing: the certificate's private key.
        None,
        "TLS private key (PEM: PKCS#8, RSA or EC); unset, it is read from --certfile.",
        ("--keyfile",), metavar="FILE", engine=True,
    ),
    Setting(
        "keyfile_password", _optional_string,
        # Bounds nothing: opens an encrypted private key (better from the environment).
        None,
        "Password of an encrypted --keyfile (PKCS#8); QIAO_KEYFILE_PASSWORD keeps it out of ps.",
        ("--keyfile-password",), metavar="PASSWORD", engine=True,
    ),
    Setting(
        "ca_certs", _path,
        # Bounds who may present a client certificate: the authorities that sign them.
        None,
        "CA certificates (PEM) that client certificates are verified with.",
        ("--ca-certs",), metavar="FILE", engine=True,
    ),
    Setting(
        "cert_reqs", _cert_reqs,
        # Bounds which clients may connect: 2 refuses those without a valid certificate.
        0,
        "Client certificates: 0 (none asked), 1 (optional, verified if sent), 2 (required); "
        "also none, optional, required.",
        ("--cert-reqs",), metavar="INT", engine=True,
    ),
    Setting(
        "ciphers", _optional_string,
        # Bounds the cipher suites a client may negotiate (unset: rustls's, all strong).
        None,
        "TLS cipher suites in preference order, ':'-separated, by IANA or OpenSSL name.",
        ("--ciphers",), metavar="LIST", engine=True,
    ),
    Setting(
        "tls_min_version", _tls_version,
        # Bounds the oldest protocol a client may use; nothing older than TLS 1.2 exists here.
        "1.2",
        "Oldest TLS version accepted: 1.2 or 1.3.",
        ("--tls-min-version",), metavar="VERSION", engine=True,
    ),
    Setting(
        "http_protocols", _protocols,
        # Bounds nothing: which protocols ALPN offers over TLS, by preference.
        "h2,h1",
        "Protocols offered over TLS, by preference: h2,h1 (HTTP/2, then HTTP/1.1) or h1.",
        ("--http-protocols",), metavar="LIST", engine=True,
    ),
    Setting(
        "http2_cleartext", _choice("off", "prior-knowledge"),
        # Bounds who speaks HTTP/2 without TLS: only a proxy that knows it should.
        "off",
        "Cleartext HTTP/2: off, or prior-knowledge (a plain connection that opens with the "
        "HTTP/2 preface is served as HTTP/2; for proxies that speak it upstream).",
        ("--http2-cleartext",), metavar="MODE", engine=True,
    ),
    Setting(
        "http2_max_concurrent_streams", _integer(1, 2**31 - 1),
        # Bounds the requests one HTTP/2 connection runs at once.
        100,
        "Streams one HTTP/2 connection may have open at once.",
        ("--http2-max-concurrent-streams",), metavar="INT", engine=True,
    ),
    Setting(
        "http2_initial_window_size", _integer(1, 2**31 - 1),
        # Bounds what a client may send of a body on one stream before the server reads it.
        65535,
        "Each HTTP/2 stream's initial flow-control window, in bytes.",
        ("--http2-initial-window-size",), metavar="BYTES", engine=True,
    ),
    Setting(
        "http2_max_frame_size", _integer(16384, 16777215),
        # Bounds one HTTP/2 frame the server accepts (RFC 9113 §4.2 range).
        16384,
        "The largest HTTP/2 frame payload accepted, 16384 to 16777215 bytes.",
        ("--http2-max-frame-size",), metavar="BYTES", engine=True,
    ),
    Setting(
        "http2_max_header_list_size", _integer(1, 2**32 - 1),
        # Bounds a request's decoded header list (HPACK bombs, CONTINUATION floods).
        65536,
        "The largest decoded header list an HTTP/2 request may carry, in bytes.",
        ("--http2-max-header-list-size",), metavar="BYTES", engine=True,
    ),
    Setting(
        "tls_handshake_timeout", _seconds(zero_ok=False),
        # Bounds how long a client may hold a connection without completing a handshake.
        10.0,
        "Seconds a client has to complete the TLS handshake.",
        ("--tls-handshake-timeout",), metavar="SECONDS", engine=True,
    ),
    Setting(
        "worker_connections", _integer(1),
        # Bounds the connections one worker holds open; more wait in the listen backlog.
        1000,
        "Maximum open connections per worker; further clients wait in the listen backlog.",
        ("--worker-connections",), metavar="INT", engine=True,
    ),
    Setting(
        "rlimit_nofile", _open_files,
        # Bounds the descriptors a worker may hold (connections, static files, the app's).
        "auto",
        "Open files a worker may hold (RLIMIT_NOFILE's soft limit, set by the master at "
        "start, or by qiao.serve()): 'auto' raises it to the hard limit; a number sets it "
        "(and the hard limit too when the master starts as root).",
        ("--rlimit-nofile",), metavar="N",
    ),
    Setting(
        "body_buffer_size", _size,
        # Bounds the memory a request body may take: larger bodies go to a temporary file.
        1 << 20,
        "Request bodies up to this size (bytes) are kept in memory, larger ones spooled to "
        "an unnamed temporary file; both are read whole before the app runs.",
        ("--body-buffer-size",), metavar="BYTES", engine=True,
    ),
    Setting(
        "output_budget", _size,
        # Bounds the response bytes one worker holds in memory for clients that read
        # slowly, across all its connections.
        64 << 20,
        "Response bytes one worker may hold in memory for clients that read slowly, across "
        "its connections; past it, application threads that stream wait for their clients "
        "(0: no bound).",
        ("--output-budget",), metavar="BYTES", engine=True,
    ),
    Setting(
        "limit_request_line", _integer(0),
        # Bounds the request line's length in bytes (0 or more than 8190: the 8190 cap).
        4094,
        "Maximum size of the request line in bytes; 0 or values over 8190 mean 8190.",
        ("--limit-request-line",), metavar="INT", engine=True,
    ),
    Setting(
        "limit_request_fields", _integer(0),
        # Bounds the number of header fields in one request (0 or over 32768: the cap).
        100,
        "Maximum number of header fields in a request; 0 or values over 32768 mean 32768.",
        ("--limit-request-fields",), metavar="INT", engine=True,
    ),
    Setting(
        "limit_request_field_size", _integer(0),
        # Bounds one header field's size in bytes, name and value (0: no limit).
        8190,
        "Maximum size of one header field in bytes; 0 means no limit.",
        # gunicorn spells this flag with an underscore; both are accepted.
        ("--limit-request-field-size", "--limit-request-field_size"), metavar="INT", engine=True,
    ),
    Setting(
        "max_request_body_size", _size,
        # Bounds a request body's size in bytes: 1 GiB (0: no limit).
        1 << 30,
        "Maximum size of a request body in bytes (K/M/G suffixes allowed); larger "
        "requests get 413; 0 means no limit.",
        ("--max-request-body-size",), metavar="BYTES", engine=True,
    ),
    Setting(
        "limit_request_head_size", _size,
        # Bounds the whole request head (request line and header fields) in bytes.
        65536,
        "Maximum size of the request line and header fields together, in bytes; larger "
        "heads get 431.",
        ("--limit-request-head-size",), metavar="BYTES", engine=True,
    ),
    Setting(
        "limit_chunk_ext_size", _integer(1),
        # Bounds one chunk extension (RFC 9112 §7.1.1) of a chunked request body.
        4096,
        "Maximum size of one chunk extension in a chunked request body, in bytes.",
        ("--limit-chunk-ext-size",), metavar="INT", engine=True,
    ),
    Setting(
        "limit_trailer_size", _integer(1),
        # Bounds the trailer section (RFC 9112 §7.1.2) of a chunked request body.
        8192,
        "Maximum size of the trailer section of a chunked request body, in bytes.",
        ("--limit-trailer-size",), metavar="INT", engine=True,
    ),
    Setting(
        "graceful_timeout", _seconds(zero_ok=True),
        # Bounds how long a stopping worker may finish requests in flight.
        30.0,
        "Seconds a stopping worker has to finish requests in flight before it is killed.",
        ("--graceful-timeout",), metavar="SECONDS", engine=True,
    ),
    Setting(
        "timeout", _seconds(zero_ok=True),
        # Bounds how long one request may run in the app before its worker is replaced.
        30.0,
        "A request running longer than this gets its worker's Python stacks logged and "
        "the worker replaced; 0 disables.",
        ("-t", "--timeout"), metavar="SECONDS",
    ),
    Setting(
        "max_requests", _integer(0),
        # Bounds how many requests a worker serves before it is replaced (0: no bound).
        0,
        "Replace a worker (gracefully) after it has served this many requests; 0 never.",
        ("--max-requests",), metavar="INT", engine=True,
    ),
    Setting(
        "max_requests_jitter", _integer(0),
        # Bounds the random extra added to max_requests, so workers do not all recycle at once.
        0,
        "Add a random 0..N to each worker's --max-requests.",
        ("--max-requests-jitter",), metavar="INT",
    ),
    Setting(
        "max_worker_lifetime", _seconds(zero_ok=True),
        # Bounds a worker's age in seconds (0: no bound).
        0.0,
        "Replace a worker (gracefully) once it is this many seconds old; 0 never.",
        ("--max-worker-lifetime",), metavar="SECONDS",
    ),
    Setting(
        "max_worker_memory", _linux_only(_integer(0), "it reads /proc"),
        # Bounds a worker's resident memory in MiB (0: no bound).
        0,
        "Replace a worker (gracefully) once its resident memory passes this many MiB; "
        "0 never. Linux only (read from /proc).",
        ("--max-worker-memory",), metavar="MB",
    ),
    Setting(
        "preload", _boolean,
        # Bounds nothing: import the app once in the master, before forking workers.
        False,
        "Load the application in the master before forking the workers (less memory, "
        "faster worker start; a reload then keeps the old code).",
        ("--preload",), switch=True, gunicorn="preload_app",
    ),
    Setting(
        "reload", _boolean,
        # Bounds nothing: development mode, restart workers when a source file changes.
        False,
        "Restart workers when a Python source file of the app changes (development).",
        ("--reload",), switch=True,
    ),
    Setting(
        "metrics_bind", _metrics_bind,
        # Bounds who can read the metrics: off unless an address is given.
        None,
        "Serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz) from "
        "the master at this address (HOST:PORT, [IPV6]:PORT or unix:PATH); off if unset.",
        ("--metrics-bind",), metavar="ADDRESS",
    ),
    Setting(
        "statsd_host", _statsd_host,
        # Bounds nothing: where the master sends StatsD metrics (off unless set).
        None,
        "Send gunicorn's StatsD metrics (gunicorn.requests, gunicorn.request.duration, "
        "gunicorn.request.status.CODE, gunicorn.workers) to this address each second: "
        "HOST:PORT, [IPV6]:PORT or unix:PATH.",
        ("--statsd-host",), metavar="ADDRESS",
    ),
    Setting(
        "statsd_prefix", _string,
        # Bounds nothing: put before every StatsD metric name.
        "",
        "A prefix for the StatsD metric names (a dot is added after it).",
        ("--statsd-prefix",), metavar="PREFIX",
    ),
    Setting(
        "dogstatsd_tags", _string,
        # Bounds nothing: Datadog tags sent with every StatsD metric.
        "",
        "Datadog (dogstatsd) tags sent with every StatsD metric: tag1:value1,tag2:value2.",
        ("--dogstatsd-tags",), metavar="TAGS",
    ),
    Setting(
        "pid", _path,
        # Bounds nothing: where the master writes its process id.
        None,
        "Write the master's process id to this file.",
        ("-p", "--pid"), metavar="FILE", gunicorn="pidfile",
    ),
    Setting(
        "user", _id_or_name,
        # Bounds privileges: the user to switch to once the sockets are bound.
        None,
        "Switch to this user (name or uid) after binding.",
        ("-u", "--user"), metavar="USER",
    ),
    Setting(
        "group", _id_or_name,
        # Bounds privileges: the group to switch to once the sockets are bound.
        None,
        "Switch to this group (name or gid) after binding.",
        ("-g", "--group"), metavar="GROUP",
    ),
    Setting(
        "umask", _umask,
        # Bounds the permissions of files qiao creates (Unix sockets, logs, pid file).
        0o022,
        "File mode creation mask, in octal.",
        ("-m", "--umask"), metavar="MASK",
    ),
    Setting(
        "forwarded_allow_ips", _ip_networks,
        # Bounds whose forwarding headers are believed: the local host only.
        ["127.0.0.1", "::1"],
        "Peers (IP addresses, CIDR networks, or '*' for all) trusted as proxies: from them "
        "the client's address, the scheme and (with --forwarded-headers) the host, port and "
        "prefix are read from X-Forwarded-* and Forwarded headers.",
        ("--forwarded-allow-ips",), metavar="ADDRESSES", engine=True,
        env_aliases=("FORWARDED_ALLOW_IPS",),
    ),
    Setting(
        "secure_scheme_headers", _scheme_headers,
        # Bounds nothing: the headers (and values) by which a trusted proxy says https.
        {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"},
        "Headers by which a trusted proxy says the client used https, with the value that "
        "means it: NAME=VALUE pairs separated by commas.",
        ("--secure-scheme-headers",), metavar="PAIRS", engine=True,
    ),
    Setting(
        "forwarded_headers", _forwarded_fields,
        # Bounds which proxy-set fields may change the host, port and prefix: none.
        {},
        "Also read X-Forwarded-Host, -Port, -Prefix from trusted proxies: some of host, "
        "port, prefix, each optionally =N for N proxies that set it.",
        ("--forwarded-headers",), metavar="FIELDS",
    ),
    Setting(
        "proxy_protocol", _proxy_mode,
        # Bounds nothing: whether connections from --proxy-allow-from begin with a PROXY
        # protocol header (v1 or v2) naming the client.
        False,
        "Connections from --proxy-allow-from must begin with a PROXY protocol header "
        "(HAProxy's v1 or v2, told apart by their first bytes), which names the client.",
        ("--proxy-protocol",), metavar="MODE", const="auto", engine=True,
    ),
    Setting(
        "proxy_allow_ips", _ip_networks,
        # Bounds who may say who the client is with a PROXY header: the local host only.
        ["127.0.0.1", "::1"],
        "Peers (IP addresses, CIDR networks, or '*' for all) that send a PROXY protocol "
        "header with --proxy-protocol; from others one closes the connection.",
        ("--proxy-allow-from",), metavar="ADDRESSES", engine=True,
    ),
    Setting(
        "protocol", _choice("http", "uwsgi"),
        # Bounds nothing: what the listeners speak.
        "http",
        "What the listeners speak: http, or uwsgi (for nginx's uwsgi_pass and uWSGI's "
        "routers; one request per connection).",
        ("--protocol",), metavar="PROTOCOL", engine=True,
    ),
    Setting(
        "worker_class", _worker_class,
        # Bounds nothing: gunicorn's worker classes, of which qiao's workers are two.
        "sync",
        "gunicorn's worker class: sync (one thread, or gthread when --threads is above 1, "
        "as in gunicorn) or gthread; others are refused.",
        ("-k", "--worker-class"), metavar="CLASS",
    ),
    Setting(
        "wsgi_app", _optional_string,
        # Bounds nothing: APP, for a config file (gunicorn's wsgi_app); APP on the command
        # line wins.
        None,
        "The application, as APP names it, when the command line names none.",
        (), metavar="APP",
    ),
    Setting(
        "raw_env", _pairs,
        # Bounds nothing: environment variables set in the master before the app loads.
        {},
        "Set an environment variable (KEY=VALUE) before loading the app; repeatable.",
        ("-e", "--env"), metavar="KEY=VALUE", repeat=True,
    ),
    Setting(
        "pythonpath", _strings,
        # Bounds nothing: directories put first on sys.path before the app loads.
        [],
        "Directories (comma-separated) to put first on sys.path before loading the app.",
        ("--pythonpath",), metavar="DIRS",
    ),
    Setting(
        "paste", _path,
        # Bounds nothing: the app comes from a PasteDeploy ini file instead of APP.
        None,
        "Load the app from a PasteDeploy ini file (config.ini, or config.ini#name), as "
        "Pyramid apps ship; its logging sections configure Python's logging.",
        ("--paste", "--paster"), metavar="INI",
    ),
    Setting(
        "paste_global", _pairs,
        # Bounds nothing: global_conf values handed to the PasteDeploy ini.
        {},
        "A KEY=VALUE for the --paste ini's global configuration; repeatable.",
        ("--paste-global",), metavar="KEY=VALUE", repeat=True, gunicorn="raw_paste_global_conf",
    ),
    Setting(
        "proc_name", _optional_string,
        # Bounds nothing: the name ps and top show (default: the app's).
        None,
        "The name of the processes in ps and top (with setproctitle installed, the whole "
        "title), instead of the app's.",
        ("-n", "--name"), metavar="NAME",
    ),
    Setting(
        "reuse_port", _boolean,
        # Bounds nothing: whether other processes may bind the same TCP port (SO_REUSEPORT).
        False,
        "Set SO_REUSEPORT on the TCP sockets, so that another server (a new deploy) can "
        "listen on the same port; the kernel shares connections between them.",
        ("--reuse-port",), switch=True,
    ),
    Setting(
        "static", _static_mounts,
        # Bounds nothing: the URL prefixes the engine answers from directories itself.
        [],
        "Serve the files of DIRECTORY under URL_PREFIX from the engine, without Python "
        "(GET/HEAD, ETag and Last-Modified, conditional and range requests, .br/.zst/.gz "
        "siblings); repeatable.",
        ("--static",), metavar="URL_PREFIX=DIRECTORY", repeat=True,
    ),
    Setting(
        "static_max_age", _integer(0),
        # Bounds how long clients and caches keep a static file without a content hash
        # in its name before asking again (hashed names are kept for good).
        60,
        "Cache-Control max-age, in seconds, of static files without a content hash in "
        "their name (0: no Cache-Control); hashed names get a year's and immutable.",
        ("--static-max-age",), metavar="SECONDS", engine=True,
    ),
    Setting(
        "static_index", _boolean,
        # Bounds nothing: whether a directory is answered with its index.html.
        False,
        "Answer a directory under a static prefix with its index.html (a URL without its "
        "trailing slash is redirected to it).",
        ("--static-index",), switch=True, engine=True,
    ),
    Setting(
        "static_fallthrough", _boolean,
        # Bounds nothing: whether a miss under a static prefix reaches the application.
        False,
        "Hand a request under a static prefix that names no file to the application, "
        "instead of answering 404.",
        ("--static-fallthrough",), switch=True, engine=True,
    ),
    Setting(
        "static_follow_symlinks", _boolean,
        # Bounds nothing: whether symbolic links may lead out of a static directory.
        False,
        "Follow symbolic links that lead out of a static directory (refused by default).",
        ("--static-follow-symlinks",), switch=True, engine=True,
    ),
    Setting(
        "static_cache_size", _integer(1),
        # Bounds the static files each worker keeps open, with their metadata.
        256,
        "Static files each worker keeps open with their metadata (each looked at again "
        "on disk after a second).",
        ("--static-cache-size",), metavar="FILES", engine=True,
    ),
    Setting(
        "sendfile", _boolean,
        # Bounds nothing: whether wsgi.file_wrapper responses use sendfile(2).
        True,
        "Send wsgi.file_wrapper files with sendfile(2); --no-sendfile reads and writes them "
        "instead (for file systems where sendfile misbehaves).",
        ("--no-sendfile",), switch=True, engine=True,
    ),
    Setting(
        "capture_output", _boolean,
        # Bounds nothing: whether print() and stray writes of the app reach the error log.
        False,
        "Send the workers' stdout and stderr (print(), stray writes) to --error-logfile.",
        ("--capture-output",), switch=True,
    ),
    Setting(
        "log_config", _path,
        # Bounds nothing: Python logging configured from an ini file (fileConfig).
        None,
        "Configure Python's logging from this ini file (logging.config.fileConfig) before "
        "loading the app.",
        ("--log-config",), metavar="FILE", gunicorn="logconfig",
    ),
    Setting(
        "log_config_json", _path,
        # Bounds nothing: Python logging configured from a JSON file (dictConfig).
        None,
        "Configure Python's logging from this JSON file (logging.config.dictConfig).",
        ("--log-config-json",), metavar="FILE", gunicorn="logconfig_json",
    ),
    Setting(
        "log_config_dict", _dict_config,
        # Bounds nothing: Python logging configured from a dict (dictConfig).
        {},
        "Configure Python's logging with this dict (logging.config.dictConfig); JSON text "
        "on the command line.",
        ("--log-config-dict",), metavar="JSON", gunicorn="logconfig_dict",
    ),
    Setting(
        "log_syslog", _boolean,
        # Bounds nothing: the error log also goes to syslog.
        False,
        "Also send the error log to syslog (--log-syslog-to).",
        ("--log-syslog",), switch=True, gunicorn="syslog",
    ),
    Setting(
        "log_syslog_to", _syslog_address,
        # Bounds nothing: where syslog lines go.
        "udp://localhost:514",
        "Where syslog lines go: udp://HOST:PORT, tcp://HOST:PORT or unix://PATH[#dgram].",
        ("--log-syslog-to",), metavar="ADDRESS", gunicorn="syslog_addr",
    ),
    Setting(
        "log_syslog_prefix", _optional_string,
        # Bounds nothing: the program name syslog lines carry.
        None,
        "The program name syslog lines carry (default: qiao.<proc name>).",
        ("--log-syslog-prefix",), metavar="PREFIX", gunicorn="syslog_prefix",
    ),
    Setting(
        "log_syslog_facility", _choice(*_FACILITIES),
        # Bounds nothing: the syslog facility.
        "user",
        "The syslog facility: user, daemon, local0...local7...",
        ("--log-syslog-facility",), metavar="FACILITY", gunicorn="syslog_facility",
    ),
    Setting(
        "reload_extra_files", _strings,
        # Bounds nothing: more files whose change restarts the workers under --reload.
        [],
        "With --reload, also restart the workers when this file changes (templates, "
        "settings files); repeatable.",
        ("--reload-extra-file",), metavar="FILE", repeat=True,
    ),
    Setting(
        "initgroups", _boolean,
        # Bounds privileges: the supplementary groups kept after switching user.
        False,
        "With --user, also take the user's supplementary groups (initgroups) besides "
        "--group.",
        ("--initgroups",), switch=True,
    ),
    Setting(
        "daemon", _boolean,
        # Bounds nothing: detach from the terminal once the sockets are bound.
        False,
        "Detach from the terminal and run in the background (use --pid to find it).",
        ("-D", "--daemon"), switch=True,
    ),
    Setting(
        "worker_tmp_dir", _path,
        # Bounds nothing: qiao keeps its heartbeats in shared memory, never in files.
        None,
        "Accepted for gunicorn's configurations: qiao's workers report to the master through "
        "shared memory, so no heartbeat file is written (a directory that is not there is "
        "still an error).",
        ("--worker-tmp-dir",), metavar="DIR", validate=_directory,
    ),
    Setting(
        "check_config", _boolean,
        # Bounds nothing: check the settings and the app, then exit.
        False,
        "Check the settings and that the app loads, then exit (0 when all is well).",
        ("--check-config",), switch=True,
    ),
    Setting(
        "print_config", _boolean,
        # Bounds nothing: print the settings in effect, then check as --check-config.
        False,
        "Print every setting's value and where it came from, check the app, then exit.",
        ("--print-config",), switch=True,
    ),
)

# Limits where 0 means the cap and larger values are capped (as gunicorn does)...
_CAPS = {"limit_request_line": 8190, "limit_request_fields": 32768}
# ...and limits where 0 means no limit at all.
_UNLIMITED_IF_ZERO = (
    "limit_request_field_size", "max_request_body_size", "limit_request_head_size",
)

_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` naming the choices close to ``name``, or ``""``."""
    import difflib  # only on this error path: see TYPE_CHECKING above

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=cutoff)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def _unknown(name: str, where: str) -> ConfigError:
    return ConfigError(f"unknown {where} {name!r}{did_you_mean(name, _BY_NAME)}")


class Config:
    """qiao's settings, built once from the sources and validated once.

    Precedence, strongest first: ``cli`` (parsed flags), the environment (``QIAO_<NAME>``,
    and ``SCRIPT_NAME`` for ``root_path``), ``settings`` (keyword arguments or a config
    file), then the table's defaults. Each setting is an attribute: ``config.threads``.
    """

    def __init__(
        self,
        settings: Mapping[str, object] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cli: Mapping[str, object] | None = None,
        settings_label: str | Mapping[str, str] = "{name}",
        cmd_args: Mapping[str, object] | None = None,
    ) -> None:
        """Build and validate.

        ``settings`` are keyword arguments (unknown names are errors); ``env`` defaults to
        ``os.environ`` (pass ``{}`` to ignore it); ``cli`` maps setting names to the raw
        values of the flags given. ``settings_label`` formats how a setting from
        ``settings`` is named in errors (a config file may pass ``"qiao.toml: {name}"``), or
        maps each name to its label. ``cmd_args`` are flags parsed from ``QIAO_CMD_ARGS``
        (gunicorn's ``GUNICORN_CMD_ARGS``): weaker than ``cli``, stronger than the rest of
        the environment.
        """
        env = os.environ if env is None else env
        settings = dict(settings or {})
        for name in settings:
            if name not in _BY_NAME:
                raise _unknown(name, "setting")
        cli = dict(cli or {})
        cmd_args = dict(cmd_args or {})
        for name in (*cli, *cmd_args):
            if name not in _BY_NAME:
                raise _unknown(name, "setting")

        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for setting in SETTINGS:
            raw, label = self._pick(setting, settings, env, cli, cmd_args, settings_label)
            if label is None:
                default = setting.default
                values[setting.name] = _copy(default)
                sources[setting.name] = "default"
                continue
            try:
                value = setting.parse(raw)
                if setting.validate is not None:
                    setting.validate(value)
            except _Invalid as e:
                got = _show(raw) if e.got is None else repr(e.got)
                raise ConfigError(f"{label}: {e}, got {got}") from None
            values[setting.name] = value
            sources[setting.name] = label
        self._values = values
        self._sources = sources
        self._check_combinations()
        self._check_static()
        if values["certfile"] is not None:
            self._check_tls()
        elif values["keyfile"] is not None or values["cert_reqs"]:
            name = "keyfile" if values["keyfile"] is not None else "cert_reqs"
            raise ConfigError(f"{sources[name]}: needs --certfile, the server's certificate")

    def _check_combinations(self) -> None:
        """Settings that each work but not together: one line naming the pair."""
        values, sources = self._values, self._sources
        pairs = [
            ("protocol", values["protocol"] == "uwsgi", "certfile",
             values["certfile"] is not None, "uwsgi_pass speaks no TLS"),
            ("http2_cleartext", values["http2_cleartext"] != "off", "protocol",
             values["protocol"] == "uwsgi", "a uwsgi listener speaks no HTTP/2"),
        ]
        if values["worker_class"] == "sync" and values["threads"] > 1:
            values["worker_class"] = "gthread"  # as gunicorn does with --threads above 1
        for name, on, other, other_on, why in pairs:
            if on and other_on:
                label = sources[name] if sources[name] != "default" else _BY_NAME[name].flag
                raise ConfigError(
                    f"{label}: not with {_BY_NAME[other].flag}: {why}"
                )

    def _check_static(self) -> None:
        """Each --static directory exists (a relative one under --chdir, where the
        workers look for it)."""
        for mount in self._values["static"]:
            prefix, _, directory = mount.partition("=")
            where = os.path.join(self._values["chdir"] or "", directory)
            if not os.path.isdir(where):
                label = self._sources["static"]
                raise ConfigError(f"{label}: {prefix}={directory}: not a directory")

    def _check_tls(self) -> None:
        """Builds the TLS configuration once, so that a missing file, a key that does not
        match or a bad cipher list stops the start with one line naming the setting."""
        from qiao import _qiao

        values = self._values
        try:
            _qiao.check_tls(
                values["certfile"], values["keyfile"], values["keyfile_password"],
                values["ca_certs"],
                values["cert_reqs"], values["ciphers"], values["tls_min_version"],
            )
        except ValueError as e:
            setting, reason = e.args
            label = self._sources[setting]
            if label == "default":
                label = _BY_NAME[setting].flag
            raise ConfigError(f"{label}: {reason}") from None

    @classmethod
    def resolved(cls, values: Mapping[str, Any], sources: Mapping[str, str]) -> Config:
        """A Config of values already parsed and validated by a Config built elsewhere
        (its ``as_dict()`` and ``sources()``), taken as they are."""
        missing = [s.name for s in SETTINGS if s.name not in values or s.name not in sources]
        if missing:
            raise ConfigError(f"resolved settings lack {', '.join(missing)}")
        config = cls.__new__(cls)
        config._values = dict(values)
        config._sources = dict(sources)
        return config

    def sources(self) -> dict[str, str]:
        """Where each setting's value came from, by name (a copy)."""
        return dict(self._sources)

    @staticmethod
    def _pick(
        setting: Setting,
        settings: Mapping[str, object],
        env: Mapping[str, str],
        cli: Mapping[str, object],
        cmd_args: Mapping[str, object],
        settings_label: str | Mapping[str, str],
    ) -> tuple[object, str | None]:
        """The raw value and the name of its source, by precedence; (None, None) if unset."""
        if setting.name in cli:
            return cli[setting.name], setting.flag
        if setting.name in cmd_args:
            return cmd_args[setting.name], f"QIAO_CMD_ARGS {setting.flag}"
        for var in (setting.env, *setting.env_aliases):
            if var in env:
                return env[var], var
        if setting.name in settings:
            if isinstance(settings_label, str):
                return settings[setting.name], settings_label.format(name=setting.name)
            return settings[setting.name], settings_label.get(setting.name, setting.name)
        return None, None

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get(self, name: str) -> Any:
        """The value of one setting; an unknown name is a ``ConfigError``."""
        if name not in _BY_NAME:
            raise _unknown(name, "setting")
        return self._values[name]

    def source(self, name: str) -> str:
        """Where a setting's value came from: a flag, an env var, a key, or "default"."""
        if name not in _BY_NAME:
            raise _unknown(name, "setting")
        return self._sources[name]

    def as_dict(self) -> dict[str, Any]:
        """Every setting's value, by name (a copy)."""
        return {name: _copy(v) for name, v in self._values.items()}

    def enter_chdir(self) -> None:
        """Change to the ``chdir`` setting's directory, if set; a ``ConfigError`` naming
        where the setting came from if that fails."""
        if self.chdir is None:
            return
        try:
            os.chdir(self.chdir)
        except OSError as e:
            reason = os.strerror(e.errno).lower() if e.errno else str(e)
            raise ConfigError(
                f"{self.source('chdir')}: cannot change to {self.chdir!r}: {reason}"
            ) from None

    @property
    def addresses(self) -> list[Address]:
        """The parsed ``bind`` addresses."""
        return [parse_bind(text) for text in self._values["bind"]]

    def engine_settings(self) -> dict[str, object]:
        """The settings dict that ``qiao._qiao.Engine`` takes (every key present)."""
        settings: dict[str, object] = {
            setting.name: self._values[setting.name] for setting in SETTINGS if setting.engine
        }
        # The engine always gets a concrete bound.
        for name, cap in _CAPS.items():
            value = self._values[name]
            settings[name] = cap if value == 0 else min(value, cap)
        for name in _UNLIMITED_IF_ZERO:
            settings[name] = self._values[name] or sys.maxsize
        settings["url_scheme"] = "http" if self._values["certfile"] is None else "https"
        settings.update(self.syslog_settings())
        settings["secure_scheme_headers"] = list(self._values["secure_scheme_headers"].items())
        settings["static_mounts"] = [tuple(m.partition("=")[::2]) for m in self._values["static"]]
        for field in _FORWARDED_FIELDS:
            settings["forwarded_" + field] = self._values["forwarded_headers"].get(field, 0)
        # A worker of a master learns the master's pid (to stop when it is gone).
        settings["parent_pid"] = 0
        return settings

    def syslog_settings(self, name: str | None = None) -> dict[str, object]:
        """The engine's syslog keys: where lines go (None: not to syslog), the facility,
        and the prefix of the program names (``--log-syslog-prefix``, else the process
        name ``name``, as gunicorn's ``gunicorn.<prefix>.error``)."""
        values = self._values
        prefix = values["log_syslog_prefix"] or values["proc_name"] or name or "qiao"
        return {
            "log_syslog_to": values["log_syslog_to"] if values["log_syslog"] else None,
            "log_syslog_facility": values["log_syslog_facility"],
            "log_syslog_prefix": prefix.replace(":", "."),
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        changed = ", ".join(
            f"{name}={'***' if 'password' in name else repr(value)}"
            for name, value in self._values.items()
            if self._sources[name] != "default"
        )
        return f"Config({changed})"


def _copy(value: Any) -> Any:
    """A list or dict value copied, so that no caller shares the table's own."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _show(raw: object) -> str:
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    return repr(raw)


# How --help groups the settings (gunicorn's sections, where it has them): every setting
# is in exactly one.
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("server socket", ("bind", "backlog", "reuse_port", "protocol")),
    ("worker processes", (
        "workers", "worker_class", "threads", "worker_connections", "rlimit_nofile", "timeout",
        "graceful_timeout", "keep_alive", "max_requests", "max_requests_jitter",
        "max_worker_lifetime", "max_worker_memory", "output_budget",
    )),
    ("limits and timeouts of requests", (
        "limit_request_line", "limit_request_fields", "limit_request_field_size",
        "limit_request_head_size", "max_request_body_size", "body_buffer_size",
        "limit_chunk_ext_size", "limit_trailer_size", "header_timeout", "body_timeout",
        "write_timeout",
    )),
    ("the application", (
        "wsgi_app", "factory", "chdir", "pythonpath", "raw_env", "paste", "paste_global",
        "preload", "root_path", "sendfile",
    )),
    ("development and checks", (
        "reload", "reload_extra_files", "check_config", "print_config",
    )),
    ("logging", (
        "access_logfile", "access_logformat", "log_format", "error_logfile", "log_level",
        "capture_output",
        "log_config", "log_config_json", "log_config_dict", "log_syslog", "log_syslog_to",
        "log_syslog_prefix", "log_syslog_facility",
    )),
    ("metrics and health checks", (
        "metrics_bind", "statsd_host", "statsd_prefix", "dogstatsd_tags",
    )),
    ("process", (
        "proc_name", "pid", "user", "group", "initgroups", "umask", "daemon", "worker_tmp_dir",
    )),
    ("static files", (
        "static", "static_max_age", "static_index", "static_fallthrough",
        "static_follow_symlinks", "static_cache_size",
    )),
    ("behind a proxy", (
        "forwarded_allow_ips", "secure_scheme_headers", "forwarded_headers", "proxy_protocol",
        "proxy_allow_ips",
    )),
    ("TLS (HTTPS)", (
        "certfile", "keyfile", "keyfile_password", "ca_certs", "cert_reqs", "ciphers",
        "tls_min_version", "tls_handshake_timeout",
    )),
    ("HTTP/2", (
        "http_protocols", "http2_cleartext", "http2_max_concurrent_streams",
        "http2_initial_window_size", "http2_max_frame_size", "http2_max_header_list_size",
    )),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting, grouped by ``TOPICS``; values stay raw strings for
    ``Config(cli=...)``.

    Flags not given are absent from the namespace (``default=SUPPRESS``), so the
    environment and defaults can fill them in with the right precedence.
    """
    import argparse

    for title, members in TOPICS:
        group = parser.add_argument_group(title)
        for name in members:
            setting = _BY_NAME[name]
            if not setting.flags:
                continue
            help_text = setting.doc
            if not setting.switch:
                help_text += f" [default: {default_text(setting)}]"
            help_text = help_text.replace("%", "%%")
            if setting.switch:
                # A switch sets the opposite of the default: --preload True, --no-sendfile
                # False.
                group.add_argument(
                    *setting.flags, dest=setting.name, action="store_const",
                    const=not setting.default, default=argparse.SUPPRESS, help=help_text,
                )
            else:
                optional = {} if setting.const is None else {"nargs": "?", "const": setting.const}
                group.add_argument(
                    *setting.flags, dest=setting.name,
                    action="append" if setting.repeat else "store",
                    default=argparse.SUPPRESS, metavar=setting.metavar, help=help_text,
                    **optional,
                )


def default_text(setting: Setting) -> str:
    """A setting's default as a user writes it (see ``value_text``)."""
    return value_text(setting.name, setting.default)


def value_text(name: str, value: object) -> str:
    """A setting's value as a user writes it: a mask in octal (``0o022``, not 18), whole
    seconds without ``.0``, lists comma-separated, a password hidden."""
    if "password" in name and value:
        return "***"
    if name == "umask" and isinstance(value, int):
        return f"0o{value:03o}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(value) if value else "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) if value else "none"
    if value is None:
        return "unset"
    if value == "":
        return "''"
    return str(value)


def names() -> Iterable[str]:
    """The setting names, in table order."""
    return (setting.name for setting in SETTINGS)
