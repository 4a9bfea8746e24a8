"""gunicorn's command-line flags that qiao took for a switch without edits (gunicorn docs,
"Settings"): -e, --pythonpath, -n, --reuse-port, --no-sendfile, --capture-output,
--log-config-dict, --log-syslog, --paste, -D, --worker-tmp-dir, --reload-extra-file;
--help by topic and did-you-mean for a misspelt flag; --log-level debug; --reload with an
app that does not import. Each runs the `qiao` command in a temporary project, and under
gunicorn too where the behaviour is gunicorn's (gunicorn_side.SERVERS)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
from gunicorn_side import SERVERS, run, start

APP = """\
import logging, os, sys

log = logging.getLogger("myapp")

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/print":
        print("printed by the app")
        sys.stdout.flush()
    if path == "/log":
        log.warning("logged by the app")
    body = os.environ.get("SPAM", "-").encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(APP)
    return tmp_path


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("server", SERVERS)
def test_env_and_pythonpath(server, project):
    """-e KEY=VALUE is in the app's environment; --pythonpath DIR makes a module there
    importable as the app."""
    lib = project / "lib"
    lib.mkdir()
    (lib / "elsewhere.py").write_text(APP)
    running = start(server, "elsewhere:app", "-b", "127.0.0.1:0", "-e", "SPAM=eggs",
                    "--pythonpath", str(lib), cwd=project)
    try:
        assert requests.get(running.url + "/", timeout=10).text == "eggs"
    finally:
        assert running.stop() == 0


def test_name_is_the_process_name(project):
    """-n NAME names the processes (the kernel's 15-byte comm: 'qiao: master')
    and the full title when setproctitle is installed; the banner names the app."""
    running = start("qiao", "hello:app", "-b", "127.0.0.1:0", "-n", "shop", cwd=project)
    try:
        comm = Path(f"/proc/{running.proc.pid}/comm").read_text().strip()
        assert comm == "qiao: master"
        try:
            import setproctitle  # noqa: F401
        except ImportError:
            return
        cmdline = Path(f"/proc/{running.proc.pid}/cmdline").read_bytes()
        assert b"qiao: master [shop]" in cmdline
    finally:
        running.stop()


def test_reuse_port_lets_two_servers_share_a_port(project):
    """--reuse-port: a second server binds the same port (SO_REUSEPORT), as a new deploy
    beside the old one; without it the second is refused in one line."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    first = start("qiao", "hello:app", "-b", f"127.0.0.1:{port}", "--reuse-port", cwd=project)
    try:
        refused = run("qiao", "hello:app", "-b", f"127.0.0.1:{port}", cwd=project)
        assert refused.returncode == 2
        assert "address already in use" in refused.stderr
        second = start("qiao", "hello:app", "-b", f"127.0.0.1:{port}", "--reuse-port",
                       cwd=project)
        try:
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        finally:
            second.stop()
    finally:
        first.stop()


FILE_APP = """\
import io

reads = 0

class Counted(io.FileIO):
    def read(self, size=-1):
        global reads
        reads += 1
        return super().read(size)

def app(environ, start_response):
    if environ["PATH_INFO"] == "/reads":
        body = str(reads).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    f = Counted(__file__.replace("files.py", "data.bin"))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, 65536)
"""


@pytest.mark.parametrize("flags", [(), ("--no-sendfile",)])
def test_no_sendfile_reads_the_file_in_python(project, flags):
    """--no-sendfile (gunicorn's): a wsgi.file_wrapper response is read through the file
    object, block by block, instead of handed to sendfile(2); the bytes are the same."""
    (project / "files.py").write_text(FILE_APP)
    data = os.urandom(300_000)
    (project / "data.bin").write_bytes(data)
    running = start("qiao", "files:app", "-b", "127.0.0.1:0", *flags, cwd=project)
    try:
        assert requests.get(running.url + "/file", timeout=10).content == data
        reads = int(requests.get(running.url + "/reads", timeout=10).text)
    finally:
        running.stop()
    if flags:
        assert reads >= 5  # 300 kB in 64 KiB blocks
    else:
        assert reads == 0  # the engine sent the file itself


def start_logging_to_file(server: str, project: Path, *flags: str):
    """Start with the error log in a file (the 'Listening at' line read from it)."""
    import subprocess

    from gunicorn_side import Running, command, environment

    errors = project / "error.log"
    proc = subprocess.Popen(
        command(server, "hello:app", "-b", "127.0.0.1:0", "--error-logfile", str(errors),
                *flags),
        cwd=project, env=environment(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    assert wait_until(lambda: errors.exists() and "Listening at:" in errors.read_text())
    url = errors.read_text().split("Listening at: ")[1].split()[0]
    return Running(proc, url, [])


@pytest.mark.parametrize("server", SERVERS)
def test_capture_output_sends_print_to_the_error_log(server, project):
    """--capture-output: what the app prints goes to --error-logfile."""
    errors = project / "error.log"
    running = start_logging_to_file(server, project, "--capture-output")
    try:
        requests.get(running.url + "/print", timeout=10)
        assert wait_until(lambda: "printed by the app" in errors.read_text())
    finally:
        running.stop()


def app_logs_to(server: str, project: Path, target: Path, line: str, *flags: str) -> bool:
    """Whether the app's logger, asked to log (GET /log), writes `line` to `target`."""
    running = start(server, "hello:app", "-b", "127.0.0.1:0", *flags, cwd=project)
    try:
        requests.get(running.url + "/log", timeout=10)
        return wait_until(lambda: target.exists() and line in target.read_text())
    finally:
        running.stop()


@pytest.mark.parametrize("server", SERVERS)
def test_log_config_dict_configures_the_apps_logging(server, project):
    """--log-config-dict / logconfig_dict: Python's logging configured by dictConfig before
    the app loads: the app's logger writes where the dict says."""

    target = project / "app.log"
    conf = {
        "version": 1,
        "formatters": {"plain": {"format": "APP %(levelname)s %(message)s"}},
        # gunicorn's own loggers name these two handlers: a real logconfig_dict has them.
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target),
                              "formatter": "plain"},
                     "console": {"class": "logging.StreamHandler"},
                     "error_console": {"class": "logging.StreamHandler"}},
        "loggers": {"myapp": {"handlers": ["file"], "level": "INFO"}},
    }
    (project / "gunicorn.conf.py").write_text(f"logconfig_dict = {conf!r}\n")
    assert app_logs_to(server, project, target, "APP WARNING logged by the app")


def test_log_config_dict_flag_and_a_bad_one(project):
    """--log-config-dict takes JSON; a dict that dictConfig refuses is one line, exit 2."""
    result = run("qiao", "hello:app", "--check-config", "--log-config-dict", "{nope",
                 cwd=project)
    assert result.returncode == 2
    assert result.stderr.startswith("qiao: error: --log-config-dict: expected a JSON object")


def test_log_syslog_sends_the_error_and_access_logs(project):
    """--log-syslog --log-syslog-to udp://...: each error-log line (and access line) also
    goes to syslog as gunicorn sends it: <PRI>qiao.<prefix>.error: [pid] [LEVEL] message."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    running = start(
        "qiao", "hello:app", "-b", "127.0.0.1:0", "--log-syslog",
        "--log-syslog-to", f"udp://127.0.0.1:{port}", "--log-syslog-prefix", "shop",
        "--log-syslog-facility", "local0", "--access-logfile", "-", cwd=project,
    )
    try:
        requests.get(running.url + "/x", timeout=10)
        got = []
        # The master writes its banner to stderr (which `start` waits for) before it
        # sends it to syslog: the access line, sent by the worker, may arrive first.
        while not (any(b"qiao.shop.access" in g for g in got)
                   and any(b"Listening at:" in g for g in got)):
            got.append(receiver.recv(4096))
    finally:
        running.stop()
        receiver.close()
    assert any(g.startswith(b"<134>qiao.shop.error: [") and b"[INFO] Listening at:" in g
               for g in got), got  # local0 (16) * 8 + info (6)
    assert any(g.startswith(b"<134>qiao.shop.access: 127.0.0.1 - - [") for g in got), got


PYRAMID_APP = """\
from pyramid.config import Configurator
from pyramid.response import Response


def hello(request):
    settings = request.registry.settings
    return Response(f"{settings['greeting']} from {request.path}; {settings['site_name']}")


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.add_route("any", "/*rest")
        config.add_view(hello, route_name="any")
        return config.make_wsgi_app()
"""

PYRAMID_INI = """\
[app:main]
use = call:pyramid_app:main
greeting = hello
site_name = %(site)s

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)s [%(name)s] %(message)s
"""


@pytest.mark.parametrize("server", SERVERS)
def test_paste_loads_a_pyramid_app_from_its_ini(server, project):
    """--paste production.ini (a PasteDeploy ini as Pyramid apps ship, with --paste-global
    for a %(name)s value): the app the [app:main] section makes is served."""
    pytest.importorskip("pyramid")
    pytest.importorskip("paste.deploy")
    (project / "pyramid_app.py").write_text(PYRAMID_APP)
    (project / "production.ini").write_text(PYRAMID_INI)
    running = start(server, "--paste", "production.ini", "--paste-global", "site=shop",
                    "-b", "127.0.0.1:0", cwd=project, env={"PYTHONPATH": str(project)})
    try:
        reply = requests.get(running.url + "/a/b", timeout=10)
    finally:
        running.stop()
    assert reply.text == "hello from /a/b; shop"


def test_paste_errors_are_one_line(project):
    """A missing ini, or one without the app section: one line, exit 2."""
    result = run("qiao", "--paste", "nope.ini", "--check-config", cwd=project)
    assert result.returncode == 2
    assert result.stderr == f"qiao: error: --paste: no such file '{project / 'nope.ini'}'\n"
    (project / "empty.ini").write_text("[app:other]\nuse = call:hello:app\n")
    result = run("qiao", "--paste", "empty.ini", "--check-config", cwd=project)
    assert result.returncode == 2
    assert result.stderr.startswith("qiao: error: --paste: ")


def test_daemon_detaches_and_writes_its_pid(project):
    """-D: the command returns at once (status 0) and the server goes on in the
    background, its pid in --pid; TERM stops it."""
    pid_file = project / "qiao.pid"
    errors = project / "error.log"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    result = run("qiao", "hello:app", "-b", f"127.0.0.1:{port}", "-D", "--pid",
                 str(pid_file), "--error-logfile", str(errors), cwd=project)
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())
    try:
        assert wait_until(lambda: "Listening at:" in errors.read_text())
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        assert os.getsid(pid) != os.getsid(0)  # a session of its own: no terminal
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not pid_file.exists())


def test_worker_tmp_dir_must_exist(project):
    """--worker-tmp-dir is accepted (qiao's heartbeats are in shared memory) but a
    directory that is not there is a one-line error, as a typo should be."""
    assert run("qiao", "hello:app", "--check-config", "--worker-tmp-dir", str(project),
               cwd=project).returncode == 0
    result = run("qiao", "hello:app", "--check-config", "--worker-tmp-dir", "/no/such",
                 cwd=project)
    assert result.stderr == (
        "qiao: error: --worker-tmp-dir: expected an existing directory, got '/no/such'\n"
    )


def test_misspelt_flag_gets_a_did_you_mean(project):
    """An unknown flag is argparse's usage error (exit 2) naming the flag meant."""
    result = run("qiao", "hello:app", "--acess-logfile", "-", cwd=project)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "qiao: error: unrecognized arguments: --acess-logfile -; --acess-logfile: did you "
        "mean --access-logfile?"
    )


def test_help_is_grouped_by_topic_with_defaults_as_written(project):
    """--help groups the flags by topic (gunicorn's sections) and shows defaults as users
    write them: a mask in octal, whole seconds without '.0'."""
    result = run("qiao", "--help", cwd=project, env={"COLUMNS": "200"})
    assert result.returncode == 0
    text = result.stdout
    for title in ("server socket:", "worker processes:", "logging:", "TLS (HTTPS):",
                  "behind a proxy:", "the application:", "development and checks:"):
        assert f"\n{title}\n" in text
    assert "[default: 0o022]" in text and "[default: 18]" not in text
    assert "--graceful-timeout SECONDS" in text and "[default: 30.0]" not in text
    assert text.index("\nlogging:") < text.index("--access-logfile") < text.index("\nprocess:")


def test_every_setting_is_in_one_help_topic():
    """The topics of --help cover the settings table, each setting once."""
    from qiao.config import SETTINGS, TOPICS

    listed = [name for _, names in TOPICS for name in names]
    assert sorted(listed) == sorted(s.name for s in SETTINGS)


def test_debug_level_prints_the_configuration_and_each_request(project):
    """--log-level debug: the settings in effect ("Current configuration:", as gunicorn
    logs them) and one line per request."""
    running = start("qiao", "hello:app", "-b", "127.0.0.1:0", "--log-level", "debug",
                    "--umask", "027", cwd=project)
    try:
        requests.get(running.url + "/debugged?x=1", timeout=10)
        log = running.wait_log('"GET /debugged?x=1 HTTP/1.1" 200 1 bytes in')
    finally:
        running.stop()
    assert "[DEBUG] Current configuration:\n" in log
    assert "\n  umask: 0o027\n" in log and "\n  timeout: 30\n" in log
    assert '[DEBUG] "GET /debugged?x=1 HTTP/1.1" 200 1 bytes in' in log


def test_reload_serves_the_traceback_of_an_app_that_does_not_import(project):
    """--reload (development): an app whose module raises at import is served as a 500
    page with its traceback, printed once in the log; saving a fix serves the new code at
    once (no back-off)."""
    module = project / "live.py"
    module.write_text("import nothing_here_xyz\n")
    running = start("qiao", "live:app", "-b", "127.0.0.1:0", "--reload", cwd=project)
    try:
        page = requests.get(running.url + "/", timeout=10)
        assert page.status_code == 500
        assert "ModuleNotFoundError: No module named 'nothing_here_xyz'" in page.text
        assert 'File "' in page.text and "live.py" in page.text
        requests.get(running.url + "/", timeout=10)
        module.write_text(APP.replace('os.environ.get("SPAM", "-")', '"fixed"'))

        def fixed() -> bool:
            try:
                return requests.get(running.url + "/", timeout=10).text == "fixed"
            except requests.ConnectionError:
                return False

        assert wait_until(fixed)
    finally:
        running.stop()
    assert running.log().count("No module named 'nothing_here_xyz'") == 1


def test_reload_extra_file_restarts_the_worker(project):
    """--reload-extra-file FILE: a change to a file that is not Python (a template)
    restarts the worker, as a change to the app's source does."""
    template = project / "page.txt"
    template.write_text("one")
    (project / "tpl.py").write_text(
        "def app(environ, start_response):\n"
        "    body = open('page.txt', 'rb').read()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
        "import time\nSTARTED = time.time()\n"
    )
    running = start("qiao", "tpl:app", "-b", "127.0.0.1:0", "--reload",
                    "--reload-extra-file", str(template), cwd=project)
    try:
        requests.get(running.url + "/", timeout=10)
        template.write_text("two")
        assert wait_until(lambda: "page.txt changed: reloading the worker" in running.log())
    finally:
        running.stop()


def test_syntax_error_in_the_app_shows_the_apps_lines_only(project):
    """A SyntaxError in the app: Python's report of it (file, line, caret), exit 1, no
    frames of qiao's or importlib's."""
    (project / "broken.py").write_text("def app(environ, start_response:\n    pass\n")
    result = run("qiao", "broken:app", "-b", "127.0.0.1:0", cwd=project)
    assert result.returncode == 1
    assert "broken.py\", line 1" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("SyntaxError:")
    assert "qiao" not in result.stderr.replace("broken", "")
    assert "importlib" not in result.stderr


LOGGING_INI = """\
[loggers]
keys = root, myapp

[handlers]
keys = file

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers =

[logger_myapp]
level = INFO
handlers = file
qualname = myapp

[handler_file]
class = FileHandler
args = ('{path}',)
formatter = plain

[formatter_plain]
format = INI %(levelname)s %(message)s
"""


@pytest.mark.parametrize("kind", ["ini", "json"])
def test_log_config_files_configure_the_apps_logging(project, kind):
    """--log-config (fileConfig's ini) and --log-config-json (dictConfig's JSON): the app's
    logger writes where the file says."""
    import json

    target = project / "app.log"
    if kind == "ini":
        (project / "logging.ini").write_text(LOGGING_INI.format(path=target))
        flags = ("--log-config", "logging.ini")
    else:
        (project / "logging.json").write_text(json.dumps({
            "version": 1,
            "formatters": {"plain": {"format": "INI %(levelname)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(target),
                                  "formatter": "plain"}},
            "loggers": {"myapp": {"handlers": ["file"], "level": "INFO"}},
        }))
        flags = ("--log-config-json", "logging.json")
    assert app_logs_to("qiao", project, target, "INI WARNING logged by the app", *flags)
    result = run("qiao", "hello:app", "--log-config", "missing.ini", cwd=project)
    assert result.returncode == 2
    assert result.stderr == "qiao: error: --log-config: no such file 'missing.ini'\n"
