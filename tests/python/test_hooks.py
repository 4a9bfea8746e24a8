"""Server hooks (gunicorn's "Server Hooks" settings), defined in a gunicorn.conf.py as users
write them: each hook writes a line to a file, which the test reads. Each test runs under
qiao and, where it is installed, under gunicorn, with the same file and the same
expectations."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from gunicorn_side import SERVERS, run, start

APP = """\
def app(environ, start_response):
    body = environ["PATH_INFO"].encode()
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the app failed")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

# The hooks of gunicorn's own example configuration file (examples/example_config.py),
# and the others, each noting its call and what its objects carried.
HOOKED = """\
import os

bind = "127.0.0.1:0"
workers = 2
worker_class = "sync"
keepalive = 2
errorlog = "-"
loglevel = "info"
proc_name = "hooked"
wsgi_app = "hello:app"

NOTES = os.environ["HOOK_NOTES"]


def note(*words):
    with open(NOTES, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")


def on_starting(server):
    note("on_starting", server.pid == os.getpid())


def when_ready(server):
    server.log.info("Server is ready. Spawning workers")
    note("when_ready", server.cfg.workers, int(server.cfg.keepalive))


def nworkers_changed(server, new_value, old_value):
    note("nworkers_changed", new_value, old_value)


def pre_fork(server, worker):
    note("pre_fork", worker.age >= 1)


def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)
    note("post_fork", worker.pid == os.getpid(), worker.ppid == server.pid)


def post_worker_init(worker):
    note("post_worker_init", worker.pid == os.getpid(), callable(worker.wsgi))


def pre_request(worker, req):
    req.noted_at = 1
    worker.log.debug("%s %s", req.method, req.path)
    note("pre_request", req.method, req.path, req.query, dict(req.headers).get("X-HOOK"))


def post_request(worker, req, environ, resp):
    note("post_request", req.method, req.path, req.noted_at, environ["PATH_INFO"],
         resp.status, worker.pid == os.getpid())


def on_reload(server):
    note("on_reload")


def child_exit(server, worker):
    note("child_exit", worker.pid != os.getpid())


def worker_exit(server, worker):
    note("worker_exit", worker.pid == os.getpid())


def on_exit(server):
    note("on_exit")
"""


# The head of the smaller config files below: their hooks write with note().
NOTE = """\
import os
bind = "127.0.0.1:0"


def note(*words):
    with open(os.environ["HOOK_NOTES"], "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")
"""


def serve_with(server: str, project: Path, hooks: str, app: str = "hello:app", *flags: str):
    """Start `server` on `app` with a config file of NOTE and `hooks`; the server and the
    file its hooks write to."""
    conf = project / "hooks.conf.py"
    conf.write_text(NOTE + hooks)
    notes = project / "notes"
    running = start(server, "-c", str(conf), app, *flags, cwd=project,
                    env={"HOOK_NOTES": str(notes)})
    return running, notes


def notes_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(path: Path, line: str, count: int = 1, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notes = notes_of(path)
        if notes.count(line) >= count:
            return notes
        time.sleep(0.05)
    return notes_of(path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text(HOOKED)
    return tmp_path


@pytest.mark.parametrize("server", SERVERS)
def test_every_hook_is_called_with_gunicorns_objects(server, project):
    """gunicorn docs, Server Hooks: on_starting, when_ready, nworkers_changed, pre_fork,
    post_fork, post_worker_init, pre_request, post_request, on_reload (HUP), child_exit,
    worker_exit and on_exit, each where gunicorn calls it (master or worker) with the
    attributes real hooks read (server.pid, server.cfg, server.log, worker.pid/ppid/age/
    wsgi/log, req.method/path/query/headers, resp.status), from a gunicorn.conf.py found
    in the working directory."""
    notes = project / "notes"
    running = start(server, cwd=project, env={"HOOK_NOTES": str(notes)})
    try:
        wait_for(notes, "post_worker_init True True", count=2)
        reply = requests.get(running.url + "/where?x=1", headers={"X-Hook": "yes"}, timeout=10)
        assert reply.status_code == 200 and reply.text == "/where"
        wait_for(notes, "post_request GET /where 1 /where 200 OK True")
        running.proc.send_signal(signal.SIGHUP)
        wait_for(notes, "on_reload")
        wait_for(notes, "post_worker_init True True", count=4)
    finally:
        status = running.stop()
    assert status == 0, running.log()
    log = running.log()
    assert "Server is ready. Spawning workers" in log
    assert "Worker spawned (pid: " in log
    got = notes_of(notes)
    assert got[:2] == ["nworkers_changed 2 None", "on_starting True"], got
    assert got.count("when_ready 2 2") == 1
    assert got.count("pre_fork True") >= 4 and got.count("post_fork True True") >= 4
    assert "pre_request GET /where x=1 yes" in got
    assert got.count("post_request GET /where 1 /where 200 OK True") == 1
    assert got.count("on_reload") == 1
    assert got.count("child_exit True") >= 4
    assert got.count("worker_exit True") >= 4, got
    assert got[-1] == "on_exit"


@pytest.mark.parametrize("server", SERVERS)
def test_a_raising_pre_request_hook_is_the_requests_500(server, project):
    """gunicorn runs pre_request inside the request's handling: what it raises is that
    request's 500 and a logged traceback; the worker serves on."""
    running, _ = serve_with(server, project, (
        "def pre_request(worker, req):\n"
        "    if req.path == '/bad':\n"
        "        raise ValueError('pre_request refused ' + req.path)\n"
    ))
    try:
        assert requests.get(running.url + "/bad", timeout=10).status_code == 500
        assert requests.get(running.url + "/good", timeout=10).text == "/good"
        log = running.wait_log("pre_request refused /bad")
    finally:
        running.stop()
    assert "ValueError: pre_request refused /bad" in log


@pytest.mark.parametrize("server", SERVERS)
def test_post_request_sees_an_app_error_and_a_raising_hook_is_logged(server, project):
    """post_request runs for a request whose app raised (gunicorn calls it in a finally),
    and an exception from post_request is logged ("Exception in post_request hook")
    without touching the response."""
    running, notes = serve_with(server, project, (
        "def post_request(worker, req, environ, resp):\n"
        "    note(req.path)\n"
        "    raise KeyError('post hook bug')\n"
    ))
    try:
        assert requests.get(running.url + "/boom", timeout=10).status_code == 500
        assert requests.get(running.url + "/fine", timeout=10).text == "/fine"
        wait_for(notes, "/fine")
        log = running.wait_log("Exception in post_request hook")
    finally:
        running.stop()
    assert notes_of(notes) == ["/boom", "/fine"]
    assert "Exception in post_request hook" in log and "KeyError: 'post hook bug'" in log


def test_post_request_in_gunicorns_older_forms(project):
    """gunicorn accepts post_request(worker, req) and (worker, req, environ) too."""
    running, notes = serve_with("qiao", project, (
        "def post_request(worker, req):\n"
        "    note(req.method, req.path)\n"
    ))
    try:
        requests.get(running.url + "/old", timeout=10)
        assert wait_for(notes, "GET /old") == ["GET /old"]
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def post_fork(server):\n    pass\n",
         "gunicorn.conf.py: post_fork: expected a function taking (server, worker)"),
        ("post_fork = 3\n",
         "gunicorn.conf.py: post_fork: expected a function (server, worker), got 3"),
        ("def ssl_context(config, factory):\n    pass\n",
         ("gunicorn.conf.py: ssl_context: qiao's TLS is rustls, not Python's ssl module: set "
         "--certfile, --keyfile, --ciphers and --tls-min-version instead")),
    ],
)
def test_a_hook_of_the_wrong_shape_is_one_line(project, source, message):
    """A hook that is not a function of gunicorn's arguments (gunicorn: "Value must have
    an arity of"), or one qiao cannot call: one line, exit 2, before anything starts."""
    (project / "gunicorn.conf.py").write_text(source)
    result = run("qiao", "hello:app", "--check-config", cwd=project)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"qiao: error: {message}\n"


def test_on_starting_that_raises_stops_the_start_in_one_line(project):
    """on_starting runs before anything serves; gunicorn stops when it raises, and so does
    qiao, with one line naming the hook, the file and line, and the error (exit 2)."""
    (project / "gunicorn.conf.py").write_text(
        'bind = "127.0.0.1:0"\n'
        "def on_starting(server):\n"
        "    raise RuntimeError('no database')\n"
    )
    result = run("qiao", "hello:app", cwd=project)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "qiao: error: on_starting hook: gunicorn.conf.py:3: RuntimeError: no database"
    )


@pytest.mark.parametrize("server", SERVERS)
def test_post_fork_that_raises_fails_the_workers_boot(server, project):
    """gunicorn: an exception in post_fork fails the worker's boot ("Worker failed to
    boot"), and with no worker serving the server stops with an error status."""
    (project / "gunicorn.conf.py").write_text(
        'bind = "127.0.0.1:0"\n'
        "def post_fork(server, worker):\n"
        "    raise RuntimeError('cannot connect')\n"
    )
    result = run(server, "hello:app", cwd=project)
    assert result.returncode != 0
    assert "RuntimeError: cannot connect" in result.stderr


SLOW_APP = """\
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        while True:
            time.sleep(0.05)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


@pytest.mark.parametrize("server", SERVERS)
def test_worker_abort_runs_in_the_worker_killed_by_timeout(server, project):
    """gunicorn's worker_abort: called in a worker that --timeout stops (SIGABRT), whose
    stuck request gets a 500 with Connection: close; then a new worker serves. qiao writes
    the stuck threads' stacks first, without "Fatal Python error"."""
    (project / "slow.py").write_text(SLOW_APP)
    running, notes = serve_with(server, project, (
        "timeout = 1\n"
        "def worker_abort(worker):\n"
        "    worker.log.info('worker received SIGABRT signal')\n"
        "    note('worker_abort', worker.pid == os.getpid())\n"
    ), "slow:app")
    try:
        # gunicorn: the SIGABRT handler's exception ends the app's call, and the request
        # gets a 500 that closes the connection.
        stuck = requests.get(running.url + "/stuck", timeout=30)
        assert stuck.status_code == 500
        assert stuck.headers["Connection"] == "close"
        assert wait_for(notes, "worker_abort True") == ["worker_abort True"]
        assert requests.get(running.url + "/", timeout=20).text == "ok"
        log = running.wait_log("worker received SIGABRT signal")
    finally:
        running.stop()
    assert "worker received SIGABRT signal" in log
    if server == "qiao":
        assert "WORKER TIMEOUT" in log and "in app" in log  # the stuck frame, from the dump
        assert "Fatal Python error" not in log


@pytest.mark.parametrize("server", SERVERS)
def test_ctrl_c_on_the_master_runs_worker_int_in_each_worker(server, project):
    """gunicorn's worker_int: "called just after a worker exited on SIGINT or SIGQUIT";
    SIGINT to the master (Ctrl-C) reaches every worker so, and real configs dump the
    threads' stacks there. Each worker runs it once, and the server exits 0."""
    running, notes = serve_with(server, project, (
        "workers = 2\n"
        "def post_worker_init(worker):\n"
        "    note('ready')\n"
        "def worker_int(worker):\n"
        "    worker.log.info('worker received INT or QUIT signal')\n"
        "    note('worker_int', worker.pid == os.getpid(), worker.pid)\n"
    ))
    try:
        assert wait_for(notes, "ready", count=2).count("ready") == 2
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(timeout=30) == 0
    finally:
        running.stop()
    ints = [line.split() for line in notes_of(notes) if line.startswith("worker_int")]
    assert len(ints) == 2 and len({pid for _, _, pid in ints}) == 2, ints
    assert all(own == "True" for _, own, _ in ints), ints


@pytest.mark.parametrize("threads", ["1", "4"])
def test_timeout_answers_the_stuck_request_500_without_hooks(tmp_path, threads):
    """--timeout with no hooks at all, one app thread or several: the stuck request is
    answered 500 with Connection: close (not an empty reply), its traceback in the log
    names the app's frame, and a new worker serves."""
    (tmp_path / "slow.py").write_text(SLOW_APP)
    running = start("qiao", "slow:app", "-b", "127.0.0.1:0", "--timeout", "1",
                    "--threads", threads, cwd=tmp_path)
    try:
        stuck = requests.get(running.url + "/stuck", timeout=30)
        assert stuck.status_code == 500 and stuck.headers["Connection"] == "close"
        assert requests.get(running.url + "/", timeout=20).text == "ok"
        log = running.wait_log("RequestTimeout")
    finally:
        running.stop()
    assert "RequestTimeout: the request ran past --timeout" in log
    assert 'slow.py", line 6, in app' in log  # the traceback of the 500
    assert "Fatal Python error" not in log
