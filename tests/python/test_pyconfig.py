"""Python config files as gunicorn reads them (gunicorn docs, "Configuration File" and
"Settings"): gunicorn.conf.py by gunicorn's setting names, QIAO_CMD_ARGS (gunicorn's
GUNICORN_CMD_ARGS), worker_class, gunicorn's settings qiao does not have, --check-config
and --print-config. Run as the `qiao` command in a temporary project; where a behaviour
is gunicorn's, under gunicorn too (gunicorn_side.SERVERS)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from gunicorn_side import SERVERS, run, start

APP = """\
import os

def app(environ, start_response):
    body = os.environ.get("SPAM", "-").encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""

# The settings of gunicorn's own example configuration (examples/example_config.py), its
# values kept (but the address: a free port), and its hooks.
EXAMPLE = """\
bind = '127.0.0.1:0'
backlog = 2048

workers = 1
worker_class = 'sync'
worker_connections = 1000
timeout = 30
keepalive = 2

spew = False

daemon = False
raw_env = [
    'DJANGO_SECRET_KEY=something',
    'SPAM=eggs',
]
pidfile = None
umask = 0
user = None
group = None
tmp_upload_dir = None

errorlog = '-'
loglevel = 'info'
accesslog = '-'
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

proc_name = None

def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)

def pre_fork(server, worker):
    pass

def pre_exec(server):
    server.log.info("Forked child, re-executing.")

def when_ready(server):
    server.log.info("Server is ready. Spawning workers")

def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")

def worker_abort(worker):
    worker.log.info("worker received SIGABRT signal")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(APP)
    return tmp_path


@pytest.mark.parametrize("server", SERVERS)
def test_gunicorns_example_config_serves_unchanged(server, project):
    """gunicorn's example configuration file runs as it is: raw_env reaches the app, the
    hooks log, the request is served."""
    (project / "example_config.py").write_text(EXAMPLE)
    running = start(server, "-c", "example_config.py", "hello:app", cwd=project)
    try:
        assert requests.get(running.url + "/", timeout=10).text == "eggs"
        log = running.wait_log("Worker spawned (pid:")
    finally:
        assert running.stop() == 0
    assert "Server is ready. Spawning workers" in log
    if server == "qiao":
        assert ("qiao: warning: example_config.py: pre_exec is never called: qiao has no "
                "re-exec of the master") in log


def print_config(project: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    result = run("qiao", "--print-config", "hello:app", *args, cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    lines = {}
    for line in result.stdout.splitlines():
        name, _, rest = line.partition(" = ")
        lines[name.strip()] = rest
    return lines


def test_precedence_cli_cmd_args_env_file(project):
    """gunicorn's order, with qiao's variables: a flag beats QIAO_CMD_ARGS, which beats
    QIAO_<NAME>, which beats the config file (gunicorn.conf.py in the working directory)."""
    (project / "gunicorn.conf.py").write_text("threads = 2\nkeepalive = 7\n")
    assert print_config(project)["threads"] == "2  # gunicorn.conf.py: threads"
    env = {"QIAO_THREADS": "3"}
    assert print_config(project, env=env)["threads"] == "3  # QIAO_THREADS"
    env["QIAO_CMD_ARGS"] = "--threads 4 --keep-alive '5'"
    got = print_config(project, env=env)
    assert got["threads"] == "4  # QIAO_CMD_ARGS --threads"
    assert got["keep_alive"] == "5.0  # QIAO_CMD_ARGS --keep-alive"
    assert print_config(project, "--threads", "5", env=env)["threads"] == "5  # --threads"


def test_print_config_writes_values_as_users_do(project):
    """--print-config: a mask in octal (0o027, not 23), the source of each value, hooks."""
    (project / "gunicorn.conf.py").write_text(
        "umask = 0o027\ndef post_fork(server, worker):\n    pass\n"
    )
    got = print_config(project)
    assert got["umask"] == "0o027  # gunicorn.conf.py: umask"
    assert got["post_fork"] == "<post_fork()>"


@pytest.mark.parametrize("server", SERVERS)
def test_check_config_loads_the_app(server, project):
    """--check-config (gunicorn: "Check the configuration and exit"): 0 when the app loads,
    non-zero with the app's error when it does not."""
    (project / "broken.py").write_text("raise RuntimeError('broken at import')\n")
    assert run(server, "--check-config", "hello:app", cwd=project).returncode == 0
    failed = run(server, "--check-config", "broken:app", cwd=project)
    assert failed.returncode != 0
    assert "RuntimeError: broken at import" in failed.stderr + failed.stdout


def test_python_module_config_and_wsgi_app(project):
    """-c python:MODULE reads an importable module's names; wsgi_app names the app."""
    (project / "settings_mod.py").write_text("wsgi_app = 'hello:app'\nworkers = 3\n")
    result = run("qiao", "-c", "python:settings_mod", "--print-config", cwd=project,
                 env={"PYTHONPATH": str(project)})
    assert result.returncode == 0, result.stderr
    assert "workers                      = 3  # python:settings_mod: workers" in result.stdout


UNCLOSED = "workers = (\n"


def syntax_error(source: str) -> str:
    """This Python's own words for the syntax error in `source` (they differ by version:
    "'(' was never closed" from 3.10 on, "unexpected EOF while parsing" before)."""
    try:
        compile(source, "gunicorn.conf.py", "exec")
    except SyntaxError as e:
        return str(e.msg)
    raise AssertionError(f"{source!r} compiles")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("workers = 2\nx = 1 / 0\n", "gunicorn.conf.py:2: ZeroDivisionError: division by zero"),
        (UNCLOSED, f"gunicorn.conf.py:1: SyntaxError: {syntax_error(UNCLOSED)}"),
        ("import no_such_module_xyz\n",
         "gunicorn.conf.py:1: ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        ("timeout = 'soon'\n",
         "gunicorn.conf.py: timeout: expected a number of seconds >= 0, got 'soon'"),
        ("keepalive = -1\n",
         "gunicorn.conf.py: keepalive: expected a number of seconds >= 0, got -1"),
        ("worker_class = 'gevent'\n",
         ("gunicorn.conf.py: worker_class: expected sync or gthread: qiao's workers are sync "
         "(one thread) or gthread (--threads N); its engine already serves idle and slow "
         "connections without holding a thread, which is what the gevent, eventlet and "
         "tornado workers are for, got 'gevent'")),
        ("worker_class = 'uvicorn.workers.UvicornWorker'\n",
         ("gunicorn.conf.py: worker_class: expected sync or gthread: it runs ASGI (asyncio) "
         "applications and qiao serves WSGI ones, got 'uvicorn.workers.UvicornWorker'")),
        ("strip_header_spaces = True\n",
         ("gunicorn.conf.py: gunicorn's strip_header_spaces is not a qiao setting: qiao "
         "refuses such requests, as RFC 9112 asks (request smuggling), and has no switch to "
         "accept them")),
        ("keepalive = 3\nkeep_alive = 4\n",
         "gunicorn.conf.py: keepalive and keep_alive are the same setting"),
    ],
)
def test_bad_config_files_are_one_line(project, source, message):
    """A config file that raises, has a bad value (named as the file names it), asks for
    another worker class, or sets a gunicorn setting whose absence would change which
    requests are accepted: one line, exit 2 (gunicorn prints a traceback)."""
    (project / "gunicorn.conf.py").write_text(source)
    result = run("qiao", "--check-config", "hello:app", cwd=project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == f"qiao: error: {message}"
    assert "Traceback" not in result.stderr


def test_gunicorn_settings_qiao_lacks_warn_by_the_rule(project):
    """The documented rule: at gunicorn's default, nothing said; otherwise a warning when
    only what is measured or logged changes; a near-miss of a setting name is pointed out;
    other names of the file's own are its business."""
    (project / "gunicorn.conf.py").write_text(
        "enable_backlog_metric = True\nspew = False\nworker = 4\nuse_loglevel = 'x'\n"
        "import multiprocessing\ncores = multiprocessing.cpu_count()\n"
    )
    result = run("qiao", "--check-config", "hello:app", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        ("qiao: warning: gunicorn.conf.py: gunicorn's enable_backlog_metric is not a qiao "
        "setting (qiao's listen queue is the Prometheus gauge qiao_listen_queue_length "
        "(--metrics-bind)): ignored"),
        ("qiao: warning: gunicorn.conf.py: 'worker' is not a setting; did you mean 'workers'? "
        "(ignored)"),
    ]


@pytest.mark.parametrize(
    ("args", "status", "line"),
    [
        (["--spew"], 0,
         ("qiao: warning: gunicorn's spew is not a qiao setting (qiao has no line tracer; run "
         "the app under a debugger instead): ignored")),
        (["--casefold-http-method"], 2,
         ("qiao: error: gunicorn's casefold_http_method is not a qiao setting: qiao refuses "
         "such requests, as RFC 9112 asks (request smuggling), and has no switch to accept "
         "them")),
        (["-k", "eventlet"], 2, None),
        (["-k", "gthread", "--threads", "2"], 0, None),
    ],
)
def test_gunicorns_flags_are_accepted_and_judged(project, args, status, line):
    """gunicorn's command-line flags for settings qiao lacks are not 'unrecognized': they
    get the config file's verdict."""
    result = run("qiao", "--check-config", "hello:app", *args, cwd=project)
    assert result.returncode == status, result.stderr
    if line is not None:
        assert result.stderr.splitlines()[-1] == line


def test_cmd_args_errors_name_the_variable(project):
    """QIAO_CMD_ARGS that do not parse: one line naming the variable."""
    result = run("qiao", "--check-config", "hello:app", cwd=project,
                 env={"QIAO_CMD_ARGS": "--threads x"})
    assert result.stderr == "qiao: error: QIAO_CMD_ARGS --threads: expected a positive " \
        "integer, got 'x'\n"
    result = run("qiao", "--check-config", "hello:app", cwd=project,
                 env={"QIAO_CMD_ARGS": "--thread 2"})
    assert result.returncode == 2
    assert result.stderr.startswith("qiao: error: QIAO_CMD_ARGS: unrecognized arguments")


def test_hup_runs_the_python_config_again(project):
    """gunicorn reads its config file again on HUP; so does qiao (a new worker count)."""
    import signal
    import time

    conf = project / "gunicorn.conf.py"
    conf.write_text("bind = '127.0.0.1:0'\nworkers = 1\n")
    running = start("qiao", "hello:app", cwd=project)
    try:
        conf.write_text("bind = '127.0.0.1:0'\nworkers = 2\n")
        running.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if running.log().count("Booting worker") >= 3:
                break
            time.sleep(0.05)
        assert running.log().count("Booting worker") >= 3, running.log()
    finally:
        running.stop()


# gunicorn.conf.py files shaped as open-source Django projects ship them (their settings
# and hooks, read from their repositories; the address and app changed to this suite's):
# a gthread one naming its app with wsgi_app, with worker_tmp_dir and "accesslog = errorlog
# = '-'"; a sync one that logs through the 'gunicorn.error' logger in worker_abort, reads
# its worker count from the environment as a string, preloads the app and closes Django's
# database connections in post_fork.
DJANGO_GTHREAD = """\
bind = "127.0.0.1:0"
workers = 2
wsgi_app = "apps.django_app:application"
worker_class = "gthread"
threads = 4  # valid for gthread

max_requests = 1000
max_requests_jitter = 2
timeout = 30

worker_tmp_dir = "/dev/shm"

accesslog = errorlog = "-"
"""

DJANGO_SYNC = """\
import logging
from os import getenv

bind = "127.0.0.1:0"
workers = getenv("WSGI_NUM_WORKERS", 2)
worker_class = 'sync'
worker_connections = 1000
timeout = 120
keepalive = 2
max_requests = getenv("WSGI_MAX_REQUESTS", 1000)
max_requests_jitter = 100
graceful_timeout = int(getenv("WSGI_GRACEFUL_TIMEOUT", 10))
forwarded_allow_ips = "*"
access_log_format = '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
accesslog = "-"
loglevel = getenv("LOGLEVEL", "info")

logger = logging.getLogger('gunicorn.error')


preload_app = True


def post_fork(server, worker):
    # The app was imported before the fork: connections it opened are not to be shared.
    from django.db import connections

    connections.close_all()


def worker_abort(worker):
    logger.critical('Worker %s aborted: timeout', worker.pid)
"""


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("source", [DJANGO_GTHREAD, DJANGO_SYNC], ids=["gthread", "sync"])
def test_django_projects_configs_serve(server, source, tmp_path):
    """Each config runs unchanged under both servers and serves the Django app; the access
    log line of the second shows the X-Forwarded-For atom its format asks for."""
    from conftest import TESTS_DIR

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(source)
    access = tmp_path / "access.log"
    # The command line's --access-logfile wins over the file's accesslog = "-".
    running = start(server, "-c", str(conf), "--chdir", str(TESTS_DIR), "apps.django_app",
                    "--access-logfile", str(access), cwd=tmp_path)
    try:
        reply = requests.get(running.url + "/hello/?name=conf", timeout=10,
                             headers={"X-Forwarded-For": "203.0.113.9"})
        assert reply.status_code == 200
        assert reply.text == "Hello from Django, conf"
    finally:
        assert running.stop() == 0
    if source is DJANGO_SYNC:
        assert access.read_text().startswith("203.0.113.9 - - [")


def test_every_gunicorn_setting_is_known_and_documented():
    """Each setting of the installed gunicorn is a qiao setting (by its name or gunicorn's),
    a hook, or one qiao judges by the documented rule; and docs/configuration.md's
    "Switching from gunicorn" table names it."""
    gunicorn_config = pytest.importorskip("gunicorn.config")
    from qiao._gunicorn import ABSENT, HOOK_ERRORS
    from qiao._hooks import HOOKS
    from qiao._pyconfig import _NAMES, _PASSED_OVER

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = text[text.index("## Switching from gunicorn"):text.index("### Server hooks")]
    for setting in gunicorn_config.KNOWN_SETTINGS:
        name = setting.name
        assert name in {**_NAMES, **ABSENT, **HOOKS, **HOOK_ERRORS} or name in _PASSED_OVER
        assert f"| `{name}` |" in section, name


def test_a_python_config_leaves_the_workers_lean(tmp_path):
    """The master runs a Python config file itself (its hooks live there) but still parses
    the command line and the settings in a throwaway child: the workers it forks carry no
    argument parser, TOML reader or settings-file module."""
    import json

    from conftest import TESTS_DIR

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('bind = "127.0.0.1:0"\nworkers = 1\ndef post_fork(server, worker):\n'
                    '    pass\n')
    running = start("qiao", "-c", str(conf), "--chdir", str(TESTS_DIR), "apps.modules:app",
                    cwd=tmp_path)
    try:
        modules = set(json.loads(requests.get(running.url + "/", timeout=10).text))
    finally:
        running.stop()
    assert "qiao._qiao" in modules and "__config__" in modules
    assert sorted(modules & {"argparse", "qiao._cli", "qiao._configfile", "tomllib",
                             "difflib", "inspect", "shlex"}) == []


# The settings and hooks of two gunicorn.conf.py files from public repositories, as they
# are there but for the address, the paths and the user: Atomicbeast101/hawk-backup's
# gunicorn.conf.py (gunicorn's loggers configured by logconfig_dict, and a JSON access
# format with two names that are not atoms) and meanother/project_promise's
# config/gunicorn_config.py (five workers, raw_env as one string, names gunicorn does not
# know, and the hooks of gunicorn's example file with a stack dump in worker_int).
HAWK_BACKUP = """\
import logging

logconfig_dict = {
    'version': 1,
    'disable_existing_loggers': False,
    'formatters': {
        'default': {
            'format': '%(asctime)s [%(process)d] [%(levelname)s] %(message)s',
            'datefmt': '%Y-%m-%d %H:%M:%S'
        }
    },
    'handlers': {
        'console': {
            'class': 'logging.StreamHandler',
            'formatter': 'default'
        }
    },
    'loggers': {
        'gunicorn.error': {'handlers': ['console'], 'level': 'INFO', 'propagate': False},
        'gunicorn.access': {'handlers': ['console'], 'level': 'INFO', 'propagate': False}
    }
}
access_log_format = '{"time":"%(asctime)s","type":"gunicorn.access","remote_address":"%(h)s","remote_address":"%()s"}'
bind = "127.0.0.1:0"
"""

PROJECT_PROMISE = """\
command = '/home/ubpc/project_promise/venv/bin/gunicorn'
pythonpath = '{lib}'
bind = '127.0.0.1:0'
workers = 5
limit_request_field = 3200
limit_request_field_size = 0
errorlog = '{errors}'
loglevel = 'info'
accesslog = '{access}'
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
raw_env = 'DJANGO_SETTINGS_MODULE=config.settings'
redirect_stderr=True
autorestart=True


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)

def pre_fork(server, worker):
    pass

def pre_exec(server):
    server.log.info("Forked child, re-executing.")

def when_ready(server):
    server.log.info("Server is ready. Spawning workers")

def worker_int(worker):
    worker.log.info("worker received INT or QUIT signal")

    ## get traceback info
    import threading, sys, traceback
    id2name = {{th.ident: th.name for th in threading.enumerate()}}
    code = []
    for threadId, stack in sys._current_frames().items():
        code.append("\\n# Thread: %s(%d)" % (id2name.get(threadId,""),
            threadId))
        for filename, lineno, name, line in traceback.extract_stack(stack):
            code.append('File: "%s", line %d, in %s' % (filename,
                lineno, name))
            if line:
                code.append("  %s" % (line.strip()))
    worker.log.debug("\\n".join(code))

def worker_abort(worker):
    worker.log.info("worker received SIGABRT signal")
"""


@pytest.mark.parametrize("server", SERVERS)
def test_hawk_backups_config_logs_json_access_lines(server, project):
    """gunicorn's loggers, configured by the file, carry both servers' error lines and
    access lines in its format; the access format's two names that are not atoms print
    '-' (qiao warns once that they are not atoms)."""
    (project / "gunicorn.conf.py").write_text(HAWK_BACKUP)
    running = start(server, "hello:app", cwd=project)
    try:
        assert requests.get(running.url + "/", timeout=10).status_code == 200
        line = running.wait_log('"type":"gunicorn.access"')
    finally:
        assert running.stop() == 0
    access = next(x for x in line.splitlines() if '"type":"gunicorn.access"' in x)
    assert access.endswith('[INFO] {"time":"-","type":"gunicorn.access",'
                           '"remote_address":"127.0.0.1","remote_address":"-"}')
    if server == "qiao":
        assert "%(asctime)s is not an access-log atom: it prints '-'" in running.log()


@pytest.mark.parametrize("server", SERVERS)
def test_project_promises_config_serves_and_runs_its_hooks(server, project):
    """Five workers, the environment from raw_env's one string, pythonpath, the error and
    access log files; names gunicorn does not know pass (qiao names the misspelt one);
    when_ready and post_fork log through server.log, and Ctrl-C runs worker_int in each
    worker."""
    lib = project / "lib"
    lib.mkdir()
    (lib / "promise.py").write_text(
        "import os\n\ndef app(environ, start_response):\n"
        "    body = os.environ['DJANGO_SETTINGS_MODULE'].encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    errors, access = project / "error.log", project / "access.log"
    (project / "gunicorn.conf.py").write_text(
        PROJECT_PROMISE.format(lib=lib, errors=errors, access=access))
    # The harness reads the address from stderr: the command line sends the error log
    # there (it outranks the file's errorlog), the file's own path is checked after.
    running = start(server, "promise:app", "--error-logfile", "-", cwd=project)
    try:
        assert requests.get(running.url + "/", timeout=10).text == "config.settings"
        assert running.wait_log("Worker spawned (pid: ").count("Worker spawned") >= 1
        for _ in range(50):
            if running.log().count("Worker spawned (pid: ") == 5:
                break
            time.sleep(0.1)
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()
    log = running.log()
    assert "Server is ready. Spawning workers" in log
    assert log.count("Worker spawned (pid: ") == 5
    assert log.count("worker received INT or QUIT signal") == 5
    assert '"GET / HTTP/1.1" 200 15 "-" "python-requests/' in access.read_text()
    assert not errors.exists()
