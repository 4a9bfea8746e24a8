"""The `qiao` command (qiao.__main__): every user error is one line `qiao: error: ...` and
exit status 2; an app's own import error shows its traceback and exits 1; Ctrl-C exits 0.
Each runs `python -m qiao` in a subprocess; the tests that serve need the built engine."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
try:
    import qiao
except ImportError:  # not installed yet: use the source tree
    sys.path.insert(0, str(ROOT / "python"))
    import qiao

# The subprocesses import the same qiao as this process.
QIAO_PARENT = str(Path(qiao.__file__).resolve().parents[1])

try:
    import qiao._qiao

    HAVE_ENGINE = True
except ImportError:
    HAVE_ENGINE = False

needs_engine = pytest.mark.skipif(not HAVE_ENGINE, reason="the engine qiao._qiao is not built")


def clean_env() -> dict[str, str]:
    """The environment minus QIAO_* and SCRIPT_NAME, with this process's qiao importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIAO_") and k != "SCRIPT_NAME"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (QIAO_PARENT, env.get("PYTHONPATH")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def qiao(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = clean_env()
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qiao", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60, check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"qiao: error: {message}\n"
    assert "Traceback" not in result.stderr


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'hi']\n"
        "number = 7\n"
        "def make():\n"
        "    return None\n"
    )
    (tmp_path / "noapp.py").write_text("handler = None\n")
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "crashes.py").write_text("raise RuntimeError('the app is broken')\n")
    return tmp_path


IPS = "expected IP addresses or networks (CIDR) separated by commas, or '*'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "abc"], "--threads: expected a positive integer, got 'abc'"),
        (["--keep-alive", "soon"], "--keep-alive: expected a number of seconds >= 0, got 'soon'"),
        (["-b", "localhost:http"], "--bind: expected a port from 0 to 65535, got 'localhost:http'"),
        (["-w", "many"], "--workers: expected a positive integer or 'auto', got 'many'"),
        (["no_such_module:app"],
         "no module named 'no_such_module' (looked in '{cwd}' and sys.path)"),
        (["hello:missing"], "module 'hello' has no attribute 'missing'"),
        (["noapp"], "module 'noapp' has no 'application' or 'app'; name the application: noapp:NAME"),
        (["hello:number"], "application hello:number is not callable (it is an object of type int)"),
        (["hello:make()"], "factory hello:make returned None, not a WSGI application"),
        (["--factory", "hello:make"], "factory hello:make returned None, not a WSGI application"),
        (["--factory"], "--factory needs an APP to call"),
        (["--chdir", "/no/such/dir"], ("--chdir: cannot change to '/no/such/dir': "
                                      "no such file or directory")),
        (["-b", "fd://987"], "cannot bind fd://987: not an open file descriptor"),
        (["--forwarded-allow-ips", "127.0.0.1,10.0.0.300"],
         (f"--forwarded-allow-ips: {IPS}, got '10.0.0.300'")),
        (["--forwarded-allow-ips", "10.0.0.0/33"],
         (f"--forwarded-allow-ips: {IPS}, got '10.0.0.0/33'")),
        (["--forwarded-headers", "host,scheme"],
         ("--forwarded-headers: expected some of host, port, prefix separated by commas, each "
          "optionally =N (the number of proxies that set it), got 'scheme'")),
        (["--secure-scheme-headers", "X_PROTO=https"],
         ("--secure-scheme-headers: expected header field names (letters, digits, '-'; no "
          "'_'), got 'X_PROTO'")),
    ],
)
def test_user_errors_are_one_line_and_exit_2(app_dir, args, message):
    """A bad flag value, missing module or attribute, non-callable or bad --chdir: one line."""
    result = qiao(*args, cwd=app_dir)
    assert_one_line_error(result, message.format(cwd=app_dir))


def test_env_errors_name_the_variable(app_dir):
    """A bad QIAO_<NAME> value names the variable."""
    result = qiao(cwd=app_dir, env={"QIAO_THREADS": "0"})
    assert_one_line_error(result, "QIAO_THREADS: expected a positive integer, got '0'")


def test_gunicorns_forwarded_allow_ips_variable_is_read(app_dir):
    """gunicorn reads FORWARDED_ALLOW_IPS from the environment; so does qiao (named in the
    error), QIAO_FORWARDED_ALLOW_IPS winning over it."""
    result = qiao(cwd=app_dir, env={"FORWARDED_ALLOW_IPS": "nope"})
    assert_one_line_error(
        result,
        "FORWARDED_ALLOW_IPS: expected IP addresses or networks (CIDR) separated by commas, "
        "or '*', got 'nope'",
    )


def test_address_in_use_is_one_line(app_dir):
    """A busy port: 'cannot bind HOST:PORT: address already in use', exit 2."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        result = qiao("hello:app", "-b", f"127.0.0.1:{port}", cwd=app_dir)
    finally:
        busy.close()
    assert_one_line_error(result, f"cannot bind 127.0.0.1:{port}: address already in use")


def test_unix_path_that_is_not_a_socket_is_refused(app_dir):
    """-b unix:PATH on a regular file: one line, and the file is left alone."""
    (app_dir / "data").write_text("keep")
    result = qiao("hello:app", "-b", f"unix:{app_dir / 'data'}", cwd=app_dir)
    assert_one_line_error(
        result, f"cannot bind unix:{app_dir / 'data'}: the path exists and is not a socket"
    )
    assert (app_dir / "data").read_text() == "keep"


def test_unknown_flag_is_an_argparse_usage_error(app_dir):
    """An unknown or abbreviated flag is argparse's usage error, exit 2 (no abbreviations)."""
    result = qiao("--thread", "3", cwd=app_dir)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: qiao")
    assert "unrecognized arguments: --thread" in result.stderr


def test_app_import_error_shows_the_apps_traceback(app_dir):
    """An exception from the app's own import: its traceback (without qiao's frames), exit 1."""
    result = qiao("crashes:app", cwd=app_dir)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "crashes.py" in result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: the app is broken")
    assert "_loader.py" not in result.stderr and "qiao: error" not in result.stderr


def test_missing_dependency_of_the_app_is_not_module_not_found(app_dir):
    """ModuleNotFoundError for a module the app imports is the app's error: traceback, exit 1."""
    result = qiao("needs_dep:app", cwd=app_dir)
    assert result.returncode == 1
    assert "needs_dep.py" in result.stderr
    assert "No module named 'no_such_dependency_xyz'" in result.stderr


def test_help_works_without_the_engine(app_dir):
    """--help lists the settings' flags and exits 0."""
    result = qiao("--help", cwd=app_dir)
    assert result.returncode == 0
    for flag in ("--bind", "--workers", "--threads", "--max-request-body-size", "--factory"):
        assert flag in result.stdout


def test_main_returns_2_in_process(capsys):
    """main(argv) returns the status instead of exiting, for an error found in the settings."""
    from qiao.__main__ import main

    assert main(["--threads", "x"]) == 2
    assert capsys.readouterr().err == "qiao: error: --threads: expected a positive integer, got 'x'\n"


def start(args: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """Start `qiao ARGS`; return the process and the address from its banner line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiao", *args],
        cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    log = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        log += line
        match = re.search(r"Listening at: (\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    proc.wait()
    pytest.fail(f"qiao did not report 'Listening at:'; log:\n{log}")


@needs_engine
def test_no_app_serves_the_demo_page_and_ctrl_c_exits_0(app_dir):
    """Without APP: the demo page; SIGINT (Ctrl-C) stops cleanly with status 0."""
    proc, url = start(["-b", "127.0.0.1:0"], app_dir)
    try:
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            body = response.read()
        assert b"qiao is running" in body
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=15)
    assert status == 0


@needs_engine
def test_serves_module_attr_from_chdir(app_dir, tmp_path_factory):
    """--chdir DIR then MODULE:NAME: the app is imported from DIR and served."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    proc, url = start(["hello:app", "--chdir", str(app_dir), "-b", "127.0.0.1:0"], elsewhere)
    try:
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            assert response.read() == b"hi"
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=15)
    assert status == 0
