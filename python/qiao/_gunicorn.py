"""gunicorn's settings that qiao does not have, and what qiao does when one is set.

The rule (docs/configuration.md, "Switching from gunicorn"): a gunicorn setting left at
gunicorn's default asks for nothing, and is passed over. Set to anything else, it is
*ignored with a warning* when ignoring it changes only what is measured or logged, or how
the server goes about its work; it is *an error* when ignoring it would change which
requests are accepted, what the application sees, or which code runs. Settings qiao has
(under gunicorn's name or its own, see ``Setting.gunicorn``) are read as qiao's.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

__all__ = ["ABSENT", "HOOK_ERRORS", "Absent", "add_arguments", "verdict"]

WARN = "warning"
ERROR = "error"


class Absent:
    """A gunicorn setting that qiao does not have."""

    __slots__ = ("default", "flags", "name", "reason", "severity", "switch")

    def __init__(
        self,
        name: str,  # gunicorn's name, as a config file writes it
        flags: tuple[str, ...],  # gunicorn's flags, accepted so that its command lines run
        default: object,  # gunicorn's default: a value equal to it asks for nothing
        severity: str,  # WARN or ERROR, by the rule above
        reason: str,  # what qiao does instead, or why it cannot
        switch: bool = False,  # the flag takes no value
    ) -> None:
        self.name = name
        self.flags = flags
        self.default = default
        self.severity = severity
        self.reason = reason
        self.switch = switch


_ASGI = "an ASGI worker's setting; qiao serves WSGI applications"
_BACKLOG = (
    "qiao's listen queue is the Prometheus gauge qiao_listen_queue_length (--metrics-bind)"
)
_STRICT = (
    "qiao refuses such requests, as RFC 9112 asks (request smuggling), and has no switch "
    "to accept them"
)
_DIRTY = "qiao has no dirty arbiters, so these applications would not run"
_CONTROL = "qiao has no control socket (gunicornc); signals to the master do the same"

ABSENT: dict[str, Absent] = {a.name: a for a in (
    Absent("reload_engine", ("--reload-engine",), "auto", WARN,
           "qiao's --reload watches with inotify where it can, else polls each second"),
    Absent("spew", ("--spew",), False, WARN,
           "qiao has no line tracer; run the app under a debugger instead", switch=True),
    Absent("disable_redirect_access_to_syslog", ("--disable-redirect-access-to-syslog",),
           False, WARN, "qiao's access log never goes to syslog", switch=True),
    Absent("enable_stdio_inheritance", ("-R", "--enable-stdio-inheritance"), False, WARN,
           "qiao's workers always keep the master's stdout and stderr", switch=True),
    Absent("logger_class", ("--logger-class",), "gunicorn.glogging.Logger", ERROR,
           "a logger class is gunicorn code that qiao would not run; qiao's own log lines "
           "are written by its engine (--error-logfile, --access-logfile), the app's by "
           "Python's logging (--log-config-dict)"),
    Absent("enable_backlog_metric", ("--enable-backlog-metric",), False, WARN, _BACKLOG,
           switch=True),
    Absent("tmp_upload_dir", (), None, WARN,
           "request bodies over --body-buffer-size go to an unnamed file in $TMPDIR"),
    Absent("ssl_version", ("--ssl-version",), 2, WARN,
           "gunicorn ignores it too; qiao speaks TLS 1.2 and 1.3 only (--tls-min-version)"),
    Absent("suppress_ragged_eofs", ("--suppress-ragged-eofs",), True, WARN,
           "rustls reports a connection cut without close_notify as a closed connection"),
    Absent("do_handshake_on_connect", ("--do-handshake-on-connect",), False, WARN,
           "qiao completes the TLS handshake on the event loop, bounded by "
           "--tls-handshake-timeout", switch=True),
    Absent("uwsgi_allow_ips", ("--uwsgi-allow-from",), "127.0.0.1,::1", ERROR,
           "qiao believes a uwsgi packet's client address and scheme from the peers of "
           "--forwarded-allow-ips; set that instead"),
    Absent("permit_obsolete_folding", ("--permit-obsolete-folding",), False, ERROR,
           _STRICT, switch=True),
    Absent("strip_header_spaces", ("--strip-header-spaces",), False, ERROR, _STRICT,
           switch=True),
    Absent("permit_unconventional_http_method", ("--permit-unconventional-http-method",),
           False, ERROR, _STRICT, switch=True),
    Absent("permit_unconventional_http_version", ("--permit-unconventional-http-version",),
           False, ERROR, _STRICT, switch=True),
    Absent("casefold_http_method", ("--casefold-http-method",), False, ERROR, _STRICT,
           switch=True),
    Absent("forwarder_headers", ("--forwarder-headers",), "SCRIPT_NAME,PATH_INFO", ERROR,
           "qiao sets SCRIPT_NAME from --root-path or X-Forwarded-Prefix "
           "(--forwarded-headers prefix), never from other request headers"),
    Absent("header_map", ("--header-map",), "drop", ERROR,
           "qiao drops header fields whose names hold '_' (gunicorn's 'drop') and has no "
           "other mapping"),
    Absent("asgi_loop", ("--asgi-loop",), "auto", WARN, _ASGI),
    Absent("asgi_lifespan", ("--asgi-lifespan",), "auto", WARN, _ASGI),
    Absent("asgi_disconnect_grace_period", ("--asgi-disconnect-grace-period",), 3, WARN,
           _ASGI),
    Absent("websocket_max_message_size", ("--websocket-max-message-size",), 16777216, WARN,
           _ASGI),
    Absent("http_parser", ("--http-parser",), "auto", WARN, "qiao parses HTTP in Rust"),
    Absent("dirty_apps", ("--dirty-app",), [], ERROR, _DIRTY),
    Absent("dirty_workers", ("--dirty-workers",), 0, ERROR, _DIRTY),
    Absent("dirty_timeout", ("--dirty-timeout",), 300, WARN, _DIRTY),
    Absent("dirty_threads", ("--dirty-threads",), 1, WARN, _DIRTY),
    Absent("dirty_graceful_timeout", ("--dirty-graceful-timeout",), 30, WARN, _DIRTY),
    Absent("control_socket", ("--control-socket",), None, WARN, _CONTROL),
    Absent("control_socket_mode", ("--control-socket-mode",), 0o600, WARN, _CONTROL),
    Absent("control_socket_disable", ("--no-control-socket",), False, WARN, _CONTROL,
           switch=True),
)}

# Hooks gunicorn has and qiao cannot call: defining one is an error.
HOOK_ERRORS = {
    "ssl_context": "qiao's TLS is rustls, not Python's ssl module: set --certfile, "
    "--keyfile, --ciphers and --tls-min-version instead",
    "on_dirty_starting": _DIRTY,
    "dirty_post_fork": _DIRTY,
    "dirty_worker_init": _DIRTY,
    "dirty_worker_exit": _DIRTY,
}


def verdict(name: str, value: object) -> tuple[str, str] | None:
    """``(severity, message)`` for gunicorn setting ``name`` set to ``value``; ``None`` when
    it asks for nothing (gunicorn's default) or is not a setting qiao lacks."""
    absent = ABSENT.get(name)
    if absent is None or value is None or value == absent.default:
        return None
    if isinstance(value, str) and value == str(absent.default):  # from the command line
        return None
    if absent.severity == WARN:
        return WARN, f"gunicorn's {name} is not a qiao setting ({absent.reason}): ignored"
    return ERROR, f"gunicorn's {name} is not a qiao setting: {absent.reason}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """gunicorn's flags for the settings above, accepted (and hidden from --help) so that a
    gunicorn command line runs: the value is judged by ``verdict`` as a config file's is."""
    import argparse

    for absent in ABSENT.values():
        if not absent.flags:
            continue
        if absent.switch:
            parser.add_argument(
                *absent.flags, dest="gunicorn:" + absent.name, action="store_const",
                const=not absent.default, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
            )
        else:
            parser.add_argument(
                *absent.flags, dest="gunicorn:" + absent.name, default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
