"""pytest harness: start a real server process on a fixture app and hand its address to tests.

QIAO_TEST_SERVER=qiao (default) runs `python -m qiao`; QIAO_TEST_SERVER=gunicorn runs
gunicorn with the same app and equivalent flags, to check the tests themselves.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

TESTS_DIR = Path(__file__).resolve().parent
SERVER_KIND = os.environ.get("QIAO_TEST_SERVER", "qiao")
# Server start-up includes importing Django or Flask on a loaded 2-core machine.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
LISTENING_RE = re.compile(r"Listening at: (.+)")

# QIAO_TEST_TLS=1: every server the harness starts serves HTTPS with a test authority's
# certificate, which the clients (requests, httpclient) trust: the same tests then run
# over TLS (the Makefile's test-tls runs the PEP 3333 and framework modules so).
# QIAO_TEST_H2=1 implies it and has the clients speak HTTP/2 (ALPN h2) to every server:
# httpclient's raw-socket HTTP/1.1 through h2bridge.py, the `http` fixture's httpx over h2;
# tests marked `http1_only` (what only HTTP/1.1 has) skip (the Makefile's test-h2).
H2 = os.environ.get("QIAO_TEST_H2") == "1"
TLS = os.environ.get("QIAO_TEST_TLS") == "1" or H2
TLS_FLAGS: list[str] = []
if TLS:
    from tls_certs import make_certs

    _certs = make_certs()
    TLS_FLAGS = _certs.server_flags()
    os.environ["REQUESTS_CA_BUNDLE"] = str(_certs.ca)
    os.environ["QIAO_TEST_TLS_CA"] = str(_certs.ca)

# qiao flags with no gunicorn equivalent: tests that need them skip under gunicorn.
GUNICORN_UNSUPPORTED = {"--max-request-body-size", "--header-timeout"}
# qiao flag -> gunicorn flag where the spelling differs.
GUNICORN_RENAMED = {"--limit-request-field-size": "--limit-request-field_size"}


def is_gunicorn() -> bool:
    return SERVER_KIND == "gunicorn"


def _check_installed() -> None:
    """QIAO_TEST_INSTALLED=1 (.ci/run): the suite tests the wheel installed in this
    environment, so qiao and its engine must come from its site-packages, never from the
    checkout's python/ (a test module falling back to it would test the sources)."""
    import sysconfig

    try:
        import qiao._qiao
    except ImportError as e:
        raise pytest.UsageError(f"QIAO_TEST_INSTALLED=1 but qiao is not installed: {e}") from e
    places = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    for module in (qiao, qiao._qiao):
        where = Path(module.__file__).resolve()
        if not any(where.is_relative_to(p) for p in places):
            raise pytest.UsageError(
                f"QIAO_TEST_INSTALLED=1 but {module.__name__} comes from {where}, not from "
                f"this environment's site-packages ({', '.join(map(str, sorted(places)))})"
            )


def pytest_configure(config) -> None:
    if os.environ.get("QIAO_TEST_INSTALLED") == "1" and not is_gunicorn():
        _check_installed()
    config.addinivalue_line(
        "markers",
        "http1_only(reason): checks what only HTTP/1.1 has (framing on the wire, Connection, "
        "HTTP/1.0, pipelining); skipped in QIAO_TEST_H2 mode, `reason` says why",
    )


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        mark = item.get_closest_marker("http1_only")
        if mark is None:
            continue
        if len(mark.args) != 1 or not mark.args[0]:
            raise pytest.UsageError(f"{item.nodeid}: http1_only needs its reason")
        if H2:
            item.add_marker(pytest.mark.skip(reason=f"HTTP/1.1 only: {mark.args[0]}"))


class Server:
    """A running server process; `addrs` lists what it listens on, in bind order."""

    def __init__(self, proc: subprocess.Popen, addrs: list[str]):
        self.proc = proc
        self.addrs = addrs
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        tcp = [a for a in addrs if a.startswith(("http://", "https://"))]
        if tcp:
            self.url = tcp[0].rstrip("/")
            hostport = self.url.split("://", 1)[1]
            self.host, _, port = hostport.rpartition(":")
            self.host = self.host.strip("[]")
            self.port = int(port)
        else:
            self.url, self.host, self.port = None, None, None

    def _append(self, line: str) -> None:
        with self._log_lock:
            self._log.append(line)

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        with self._log_lock:
            return "".join(self._log)

    def log_mark(self) -> int:
        """A position in the log; pass it to `log_since` to see only later lines."""
        with self._log_lock:
            return len(self._log)

    def log_since(self, mark: int) -> str:
        with self._log_lock:
            return "".join(self._log[mark:])

    def wait_log(self, text: str, mark: int = 0, timeout: float = 5.0) -> str:
        """Wait (bounded) until `text` appears in the log after `mark`; return that log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_since(mark)
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self._thread is not None:
            # Let the drain thread collect the last lines written before exit.
            self._thread.join(STOP_TIMEOUT)


def server_command(app: str, binds: Sequence[str], flags: Sequence[str]) -> tuple:
    """The argv and environment that start `app` ("module:attr" under apps/)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if not is_gunicorn():
        argv = [sys.executable, "-m", "qiao", f"apps.{app}"]
        for b in binds:
            argv += ["-b", b]
        argv += ["--chdir", str(TESTS_DIR), *flags]
        if TLS and "--certfile" not in flags:
            argv += TLS_FLAGS
        return argv, env
    argv = [sys.executable, "-m", "gunicorn", f"apps.{app}", "-k", "gthread"]
    for b in binds:
        argv += ["-b", b]
    argv += ["--chdir", str(TESTS_DIR)]
    it = iter(flags)
    for flag in it:
        if flag in GUNICORN_UNSUPPORTED:
            pytest.skip(f"gunicorn has no equivalent of {flag}")
        if flag == "--root-path":
            # gunicorn takes the mount point from the SCRIPT_NAME environment variable.
            env["SCRIPT_NAME"] = next(it)
            continue
        argv.append(GUNICORN_RENAMED.get(flag, flag))
    return argv, env


def _parse_listening(line: str) -> list[str]:
    m = LISTENING_RE.search(line)
    if not m:
        return []
    text = re.sub(r"\s*\(\d+\)\s*$", "", m.group(1).strip())
    return [part.strip() for part in text.split(",") if part.strip()]


def start_server(
    app: str,
    *flags: str,
    binds: Sequence[str] = ("127.0.0.1:0",),
    extra_env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Server:
    """Start a server on `app` and wait (bounded) for its `Listening at:` banner(s);
    `wrapper` is a command that runs the server's argv (given as its arguments)."""
    argv, env = server_command(app, binds, flags)
    argv = [*wrapper, *argv]
    if extra_env:
        env.update(extra_env)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(TESTS_DIR),
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    addrs: list[str] = []
    collected: list[str] = []
    ready = threading.Event()
    holder: dict[str, Server] = {}

    def drain() -> None:
        for line in proc.stderr:
            server = holder.get("server")
            if server is not None:
                server._append(line)
            else:
                collected.append(line)
                addrs.extend(_parse_listening(line))
                if len(addrs) >= len(binds):
                    # Hand over before anything else is read so no line is lost.
                    server = Server(proc, list(addrs))
                    server._log.extend(collected)
                    holder["server"] = server
                    ready.set()
        ready.set()

    thread = threading.Thread(target=drain, name=f"stderr-{app}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.wait(0.05):
        if time.monotonic() > deadline:
            break
    if "server" not in holder:
        if proc.poll() is None:
            proc.kill()
        proc.wait(STOP_TIMEOUT)
        thread.join(1)
        pytest.fail(
            f"server did not report 'Listening at:' for {len(binds)} bind(s) within "
            f"{START_TIMEOUT}s\nargv: {argv}\nstderr:\n{''.join(collected)}"
        )
    server = holder["server"]
    server._thread = thread
    return server


def short_sock_path(tmp_path, name: str) -> str:
    """A path for a Unix socket in tmp_path, or in a short temporary directory when
    tmp_path is too long (AF_UNIX paths are limited to ~107 bytes)."""
    path = tmp_path / name
    if len(str(path)) > 100:
        path = Path(tempfile.mkdtemp(prefix="qiao-")) / name
    return str(path)


@contextlib.contextmanager
def running_server(app: str, *flags: str, **kwargs) -> Iterator[Server]:
    """Context manager around start_server; stops the process on exit (TERM, then KILL)."""
    server = start_server(app, *flags, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """The frameworks' HTTP client: httpx, trusting the test authority in TLS mode, and
    speaking HTTP/2 in H2 mode, where every response must have come over HTTP/2."""

    def over_http2(response: httpx.Response) -> None:
        assert response.http_version == "HTTP/2", f"{response.url}: {response.http_version}"

    verify = ssl.create_default_context(cafile=os.environ["QIAO_TEST_TLS_CA"]) if TLS else True
    hooks = {"response": [over_http2]} if H2 else {}
    with httpx.Client(http2=H2, verify=verify, timeout=10, event_hooks=hooks) as client:
        yield client


@pytest.fixture(scope="session")
def echo_server() -> Iterator[Server]:
    """apps.echo_environ:app, one thread, shared by the whole session."""
    with running_server("echo_environ:app") as server:
        yield server


@pytest.fixture(scope="session")
def behaviour_server() -> Iterator[Server]:
    """apps.behaviour:app, one thread, shared by the whole session."""
    with running_server("behaviour:app") as server:
        yield server


@pytest.fixture(scope="session")
def threaded_server() -> Iterator[Server]:
    """apps.behaviour:app with --threads 4."""
    with running_server("behaviour:app", "--threads", "4") as server:
        yield server
