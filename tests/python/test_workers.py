"""The process model: a master and its workers, signals, recycling, timeouts, under load.

Every test runs real processes and real signals, bounded in time; loads go to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid

import pytest
from apps.parked import gate_path
from conftest import TESTS_DIR, is_gunicorn, running_server
from httpclient import Conn, get
from loadgen import Load, children, wait_for


def worker_pids(server, count: int, timeout: float = 15.0) -> list[int]:
    """The master's worker pids, once there are `count` of them and all serve."""
    return wait_for(lambda: len(children(server.proc.pid)) == count and children(server.proc.pid),
                    timeout) or []


def serving_pid(port: int) -> int:
    """The pid of the worker that answers a fresh connection."""
    with Conn(port) as c:
        return int(json.loads(c.request(get("/pid")).body)["pid"])


def test_workers_serve_and_report_multiprocess():
    """-w 2: two worker processes under one master; wsgi.multiprocess is true (PEP 3333)."""
    with running_server("behaviour:app", "-w", "2") as server:
        pids = worker_pids(server, 2)
        assert len(pids) == 2
        with Conn(server.port) as c:
            env = json.loads(c.request(get("/flags")).body)
        assert env["wsgi.multiprocess"] is True
        assert "Using 2 workers" in server.wait_log("Using 2 workers")


def test_killed_worker_is_replaced_while_others_serve():
    """A worker killed with SIGKILL is replaced; requests keep succeeding meanwhile."""
    with running_server("behaviour:app", "-w", "2") as server:
        before = worker_pids(server, 2)
        os.kill(before[0], signal.SIGKILL)
        with Load(server.port, "/pid", clients=4, seconds=10) as load:
            after = wait_for(
                lambda: (k := children(server.proc.pid)) and len(k) == 2 and before[0] not in k
                and k,
            )
            time.sleep(0.5)
        tally = load.tally
        assert after and before[1] in after, after
        assert tally.ok > 0 and tally.failed == 0, tally.errors
        assert "died (signal SIGKILL)" in server.wait_log("died (signal SIGKILL)")


def test_hup_reload_under_load_loses_nothing():
    """SIGHUP: new workers start, the old ones drain; a steady load sees no failed request."""
    with running_server("behaviour:app", "-w", "2") as server:
        before = set(worker_pids(server, 2))
        with Load(server.port, "/pid", clients=8, seconds=20) as load:
            time.sleep(1.0)
            server.proc.send_signal(signal.SIGHUP)
            replaced = wait_for(
                lambda: (k := set(children(server.proc.pid))) and len(k) == 2
                and not (k & before), timeout=15,
            )
            time.sleep(1.0)
        tally = load.tally
        assert replaced, "the old workers were not replaced"
        assert tally.failed == 0 and tally.refused == 0, tally.errors
        assert tally.ok > 100


def test_ttin_ttou_change_the_worker_count_under_load():
    """SIGTTIN adds a worker, SIGTTOU retires one (gracefully): no failed request."""
    with running_server("behaviour:app", "-w", "1") as server:
        worker_pids(server, 1)
        with Load(server.port, "/pid", clients=4, seconds=20) as load:
            server.proc.send_signal(signal.SIGTTIN)
            assert len(worker_pids(server, 2)) == 2
            server.proc.send_signal(signal.SIGTTOU)
            assert len(worker_pids(server, 1)) == 1
            time.sleep(0.5)
        assert load.tally.failed == 0 and load.tally.ok > 0, load.tally.errors


def test_term_under_load_finishes_requests_in_flight():
    """SIGTERM: requests already in the app finish with their full response; the master
    exits 0 after its workers. Two workers of two threads: the four requests are all in
    the app when the signal comes (with one thread, a worker's event loop waits on its
    app call, and a request behind it may still be in the kernel's listen backlog, which
    a stop does not drain)."""
    with running_server("behaviour:app", "-w", "2", "--threads", "2") as server:
        worker_pids(server, 2)
        conns = [Conn(server.port, timeout=15) for _ in range(4)]
        for c in conns:
            c.send(get("/slow?s=1"))
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        statuses = [c.read_response().status for c in conns]
        for c in conns:
            c.close()
        assert statuses == [200] * 4
        assert server.proc.wait(timeout=15) == 0
        assert "Received SIGTERM: graceful stop" in server.wait_log("graceful stop")


def test_master_names_signals_as_the_signal_module_does():
    """The master names signals from `_signal` (it does not import `signal`, see
    test_master_forks_workers_without_heavy_modules): every number gets the name
    `signal.Signals` gives it, aliases included (SIGABRT, not SIGIOT), and a number without
    a name is logged as the number."""
    from qiao.arbiter import _signal_name

    for number in range(1, signal.NSIG + 2):
        try:
            expected = signal.Signals(number).name
        except ValueError:
            expected = str(number)
        assert _signal_name(number) == expected


def test_max_requests_recycles_workers():
    """--max-requests 5: a worker leaves after 5 requests and a new one takes over; every
    request is answered."""
    with running_server("behaviour:app", "-w", "1", "--max-requests", "5") as server:
        pids = [serving_pid(server.port) for _ in range(12)]
        assert len(set(pids)) >= 3, pids
        assert "Served max_requests (5)" in server.wait_log("Served max_requests (5)")


def test_stuck_request_dumps_stacks_and_replaces_the_worker():
    """--timeout: a request running past it gets every thread's Python stack in the error
    log, then its worker is replaced. The log line counts the threads in the app apart
    from those waiting on a client."""
    with running_server("behaviour:app", "--timeout", "1") as server:
        first = worker_pids(server, 1)
        with Conn(server.port, timeout=15) as c:
            c.send(get("/slow?s=8"))
            log = server.wait_log("in slow", timeout=10)
        assert "WORKER TIMEOUT" in log
        assert "1 thread(s) in the app, 0 waiting on a client" in log
        assert "thread 0x" in log.lower() and "in slow" in log, log[-2000:]
        replaced = wait_for(lambda: (k := children(server.proc.pid)) and k != first and k)
        assert replaced
        assert serving_pid(server.port) in replaced


def test_a_workers_first_request_stuck_at_once_is_timed_out():
    """--timeout watches a worker from its first request: one already queued when the
    worker starts, and stuck in the app at once (one app thread, so the loop's thread is
    held before it could tell the master it runs), is still answered 500 and its worker
    replaced, not left to run."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiao", "apps.behaviour:app", "--chdir", str(TESTS_DIR),
         "-b", f"127.0.0.1:{port}", "--timeout", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Connected as soon as the master listens, before its worker has booted: the
        # request waits in the listen queue and is the worker's first.
        conn = wait_for(lambda: _connect(port), timeout=15)
        assert conn, "the server never listened"
        with conn:
            conn.sendall(get("/slow?s=8"))
            conn.settimeout(20)
            reply = conn.recv(65536)
        assert reply.startswith(b"HTTP/1.1 500"), reply[:200]
    finally:
        proc.terminate()
        proc.wait(20)


def _connect(port: int):
    import socket

    try:
        return socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return None


def test_orphaned_workers_stop():
    """A worker whose master died (SIGKILL) stops by itself."""
    with running_server("behaviour:app", "-w", "2") as server:
        pids = worker_pids(server, 2)
        server.proc.kill()
        server.proc.wait(5)
        gone = wait_for(lambda: not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids))
        assert gone, "workers outlived their master"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_usr1_reopens_the_log_file(tmp_path):
    """SIGUSR1: after log rotation moved the file away, new lines go to a new file."""
    log = tmp_path / "access.log"
    with running_server("behaviour:app", "--access-logfile", str(log)) as server:
        worker_pids(server, 1)
        with Conn(server.port) as c:
            c.request(get("/pid?first"))
        wait_for(log.exists)
        log.rename(tmp_path / "access.log.1")
        server.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "reopening" in server.log())
        time.sleep(0.3)
        with Conn(server.port) as c:
            c.request(get("/pid?second"))
        text = wait_for(lambda: log.exists() and log.read_text())
        assert text and "second" in text and "first" not in text


def test_pid_file_written_and_removed(tmp_path):
    """--pid: the master's pid is written at start and the file removed at exit."""
    pidfile = tmp_path / "qiao.pid"
    with running_server("behaviour:app", "--pid", str(pidfile)) as server:
        assert int(pidfile.read_text()) == server.proc.pid
    assert not pidfile.exists()


def qiao_run(*args, cwd, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "qiao", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def test_app_that_cannot_import_stops_the_master_once(tmp_path):
    """With several workers, an app whose import raises: its traceback once, exit 1, no
    respawn loop."""
    (tmp_path / "broken.py").write_text("raise RuntimeError('cannot start')\n")
    result = qiao_run("broken:app", "-w", "3", "-b", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("RuntimeError: cannot start") == 1, result.stderr


def test_config_file_and_precedence(tmp_path):
    """qiao.toml is read from the working directory; QIAO_* beats it and a flag beats both."""
    (tmp_path / "qiao.toml").write_text('threads = 3\nworkers = 2\nkeep-alive = 7\n')
    env = {**os.environ, "QIAO_WORKERS": "1", "PYTHONPATH": str(TESTS_DIR)}
    env.pop("QIAO_THREADS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiao", "apps.behaviour:app", "-b", "127.0.0.1:0",
         "--keep-alive", "1"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "Using" in line:
                break
        text = "".join(lines)
        assert "Using 1 worker with 3 threads each" in text, text
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_config_file_value_is_one_line(tmp_path):
    """A bad value in the config file: one line naming the file and the key, exit 2."""
    (tmp_path / "qiao.toml").write_text("threads = 0\n")
    result = qiao_run("-b", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "qiao: error: qiao.toml: threads: expected a positive integer, got 0\n"


def test_unknown_config_key_names_key_and_file(tmp_path):
    """An unknown key: one line naming it, the file, and the close match."""
    (tmp_path / "conf.toml").write_text("worker = 2\n")
    result = qiao_run("-c", str(tmp_path / "conf.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"qiao: error: {tmp_path / 'conf.toml'}: unknown setting")
    assert "'worker'" in result.stderr and "'workers'" in result.stderr


@pytest.mark.parametrize("table", ["[tool.qiao]\nthreads = 2\n", "[tool.other]\nx = 1\n"])
def test_pyproject_table(tmp_path, table):
    """[tool.qiao] in pyproject.toml is read when there is no qiao.toml; a pyproject.toml
    without it is not an error."""
    from qiao._configfile import read_config_file

    (tmp_path / "pyproject.toml").write_text(table)
    settings, _ = read_config_file(None, cwd=str(tmp_path))
    assert settings == ({"threads": 2} if "qiao" in table else {})


def _status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip().split("\t")[0]
    return ""


def test_process_names():
    """ps shows the master and its workers by role (the kernel's process name)."""
    with running_server("behaviour:app", "-w", "2") as server:
        workers = worker_pids(server, 2)
        assert _status_field(server.proc.pid, "Name") == "qiao: master"
        assert {_status_field(pid, "Name") for pid in workers} == {"qiao: worker"}


def _world_can_reach(path: str) -> bool:
    """Whether every directory above `path` lets other users through (o+x)."""
    parts = os.path.abspath(path).split(os.sep)
    return all(
        os.stat(os.sep.join(parts[:i]) or os.sep).st_mode & 0o001 for i in range(1, len(parts))
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.skipif(
    not (_world_can_reach(sys.base_prefix) and _world_can_reach(str(TESTS_DIR))),
    reason="this Python or the tests are not readable by other users",
)
def test_user_and_group_are_dropped_after_binding():
    """--user/--group: the sockets are bound first, then master and workers run as the
    unprivileged user."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    with running_server("behaviour:app", "--user", "nobody", "--group", str(nobody.pw_gid)) as server:
        pid = serving_pid(server.port)
        assert int(_status_field(pid, "Uid")) == nobody.pw_uid
        assert int(_status_field(pid, "Gid")) == nobody.pw_gid
        assert int(_status_field(server.proc.pid, "Uid")) == nobody.pw_uid


def test_max_worker_lifetime_recycles_gracefully():
    """--max-worker-lifetime: an old worker is replaced (a new one first) with no failed
    request."""
    with running_server("behaviour:app", "--max-worker-lifetime", "1.5") as server:
        first = worker_pids(server, 1)
        with Load(server.port, "/pid", clients=4, seconds=15) as load:
            replaced = wait_for(
                lambda: (k := children(server.proc.pid)) and not set(k) & set(first) and k,
                timeout=10,
            )
        assert replaced, "the worker was not replaced"
        assert load.tally.failed == 0 and load.tally.ok > 0, load.tally.errors
        assert "older than --max-worker-lifetime" in server.log()


def test_reload_restarts_the_worker_when_a_source_file_changes(tmp_path):
    """--reload: editing the app's module restarts its worker, which serves the new code."""
    module = tmp_path / "live_app.py"
    module.write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'version 1']\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiao", "live_app:app", "-b", "127.0.0.1:0", "--reload"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 15
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "Listening at: http://" in line:
                port = int(line.split("Listening at: http://")[1].split()[0].rsplit(":", 1)[1])
        assert port, "no banner"

        def body() -> bytes:
            try:
                with Conn(port) as c:
                    return c.request(get("/")).body
            except OSError:
                return b""

        assert body() == b"version 1"
        time.sleep(1.1)  # let the mtime move on (second resolution on some filesystems)
        module.write_text(module.read_text().replace("version 1", "version 2"))
        assert wait_for(lambda: body() == b"version 2", timeout=15)
    finally:
        proc.terminate()
        proc.wait(10)


# How a process hands qiao a listening socket it opened: systemd's LISTEN_FDS protocol
# (the socket as fd 3), or `-b fd://N` naming the inherited descriptor.
_INHERIT = {
    "systemd": (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); "
        "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid()); "
        "sys.argv = ['qiao', 'apps.behaviour:app', '--chdir', sys.argv[2]]; "
        "from qiao.__main__ import main; sys.exit(main())"
    ),
    "fd": (
        "import sys; "
        "sys.argv = ['qiao', 'apps.behaviour:app', '-b', 'fd://' + sys.argv[1], "
        "'--chdir', sys.argv[2]]; "
        "from qiao.__main__ import main; sys.exit(main())"
    ),
}


@pytest.mark.parametrize("how", sorted(_INHERIT))
def test_serves_an_inherited_socket(how):
    """qiao serves on a listening socket it inherits instead of binding one: systemd
    socket activation (LISTEN_FDS/LISTEN_PID, fd 3) or -b fd://N (gunicorn's)."""
    import socket as socketmod

    listener = socketmod.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    code = _INHERIT[how]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(listener.fileno()), str(TESTS_DIR)],
        pass_fds=(listener.fileno(),), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True,
    )
    listener.close()
    try:
        deadline = time.monotonic() + 15
        text = ""
        while "Listening at" not in text and time.monotonic() < deadline:
            text += proc.stderr.readline()
        assert f"127.0.0.1:{port}" in text, text
        with Conn(port) as c:
            assert c.request(get("/pid")).status == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_max_worker_memory_recycles_a_growing_worker():
    """--max-worker-memory: a worker whose resident memory passes the bound is replaced
    gracefully; the request that grew it was answered."""
    with running_server("behaviour:app", "--max-worker-memory", "60") as server:
        first = worker_pids(server, 1)
        with Conn(server.port, timeout=15) as c:
            assert c.request(get("/grow?mb=80")).status == 200
        replaced = wait_for(
            lambda: (k := children(server.proc.pid)) and not set(k) & set(first) and k,
            timeout=10,
        )
        assert replaced, "the worker was not replaced"
        assert "resident memory above --max-worker-memory 60 MiB" in server.log()
        assert serving_pid(server.port) in replaced


def test_quit_is_a_fast_stop():
    """SIGQUIT: the master and its workers exit at once, without waiting for a request in
    flight (the graceful stop is TERM)."""
    with running_server("behaviour:app") as server:
        worker_pids(server, 1)
        with Conn(server.port, timeout=15) as c:
            c.send(get("/slow?s=8"))
            time.sleep(0.3)
            server.proc.send_signal(signal.SIGQUIT)
            # The request in flight is cut, not finished: no response, just the close.
            with pytest.raises(EOFError):
                c.read_response()
        assert server.proc.wait(timeout=10) == 0


# Modules that are large and that a worker serving an app never needs: whatever the master
# imports before forking is resident in every worker, so the master keeps itself small
# (docs/deployment.md, on the master and its workers).
_NOT_BEFORE_FORK = (
    "argparse", "ast", "difflib", "encodings.idna", "enum", "gettext", "grp", "locale",
    "math", "pwd", "qiao._cli", "qiao._configfile", "random", "shutil", "signal",
    "threading", "tomllib", "traceback", "typing", "unicodedata",
)


def test_master_forks_workers_without_heavy_modules():
    """The worker starts with only what serving needs: the master imports no argument
    parser (the command line is resolved in a throwaway child), TOML parser, traceback
    printer, typing, shutil, IDNA codec, signal's enums (it uses `_signal`), grp or pwd when
    none is called for. The baseline is the same interpreter with nothing else, so that
    modules a site-packages hook loads at start-up are not counted against qiao."""
    probe = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    baseline = set(json.loads(subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True,
    ).stdout))
    with running_server("modules:app") as server, Conn(server.port) as c:
        c.send(get("/"))
        resp = c.read_response()
    assert resp.status == 200
    added = set(json.loads(resp.body)) - baseline
    assert "qiao._qiao" in added  # the probe sees the worker's modules
    assert sorted(added & set(_NOT_BEFORE_FORK)) == []


def test_hup_rereads_the_config_file_and_a_bad_one_keeps_the_old_settings(tmp_path):
    """HUP re-reads the config file (gunicorn's reload): a new worker count takes effect;
    a file that no longer parses is logged in one line and the reload goes on with the
    settings in force (two workers here), serving throughout."""
    conf = tmp_path / "reload.toml"
    conf.write_text("workers = 1\n")
    with running_server("behaviour:app", "-c", str(conf)) as server:
        master = server.proc.pid
        (first,) = worker_pids(server, 1)
        conf.write_text("workers = 2\n")
        server.proc.send_signal(signal.SIGHUP)
        second = wait_for(
            lambda: (pids := children(master)) and len(pids) == 2 and first not in pids and pids,
            15,
        )
        assert second, "the reload did not end with two new workers"

        conf.write_text("workers = [\n")
        mark = server.log_mark()
        server.proc.send_signal(signal.SIGHUP)
        log = server.wait_log("keeping the old settings", mark, timeout=10)
        line = next((x for x in log.splitlines() if "keeping the old settings" in x), "")
        assert "invalid TOML" in line and str(conf) in line, log
        third = wait_for(
            lambda: (pids := children(master)) and len(pids) == 2
            and not set(pids) & set(second) and pids,
            15,
        )
        assert third, "the reload with the old settings did not end with two new workers"
        with Conn(server.port) as c:
            assert c.request(get("/single")).status == 200


def test_hup_raising_threads_keeps_a_timeout_cell_per_thread(tmp_path):
    """--timeout after a reload that raised `threads` (2 -> 8 in the config file): every
    app thread of the new worker has its own scoreboard cell, so a request stuck on
    thread 7 while threads 0-6 start and finish requests is still caught: its stack is
    dumped and the worker replaced. (On a board mapped for two threads, threads 1-7
    shared one cell, the first of them to finish cleared it, and the stuck request ran
    on unseen.)"""
    conf = tmp_path / "threads.toml"
    conf.write_text("threads = 2\n")
    keys = [uuid.uuid4().hex for _ in range(8)]
    try:
        with running_server("parked:app", "-c", str(conf), "--timeout", "2") as server:
            master = server.proc.pid
            (first,) = worker_pids(server, 1)
            conf.write_text("threads = 8\n")
            server.proc.send_signal(signal.SIGHUP)
            second = wait_for(
                lambda: (pids := children(master)) and first not in pids and pids, 15
            )
            assert second and len(second) == 1, "the reload did not end with one new worker"

            # Eight requests at once, one per app thread, each parked in the app.
            conns = [Conn(server.port, timeout=15) for _ in keys]
            on_thread = {}
            for conn, key in zip(conns, keys):
                conn.send(get(f"/?key={key}"))
            for conn, key in zip(conns, keys):
                found = re.search(rb"thread=([\w-]+);", conn.read_until(b";\r\n", timeout=10))
                assert found, conn.buf
                on_thread[found.group(1).decode()] = (conn, key)
            assert sorted(on_thread) == [f"qiao-app-{i}" for i in range(8)]

            # Thread 7 stays stuck; the others finish, clearing their own cells.
            stuck, _ = on_thread.pop("qiao-app-7")
            for conn, key in on_thread.values():
                open(gate_path(key), "x").close()
                assert conn.read_response().body.endswith(b";end")
                conn.close()

            log = server.wait_log("in parked_in_app", timeout=8)
            assert "WORKER TIMEOUT" in log, log[-2000:]
            assert "in parked_in_app" in log, log[-2000:]
            assert stuck.closed_by_peer(timeout=5)
            assert b"end" not in stuck.buf
            stuck.close()
            replaced = wait_for(
                lambda: (pids := children(master)) and not set(pids) & set(second) and pids
            )
            assert replaced, "the timed-out worker was not replaced"
    finally:
        for key in keys:
            if os.path.exists(gate_path(key)):
                os.unlink(gate_path(key))


class _QuietLog:
    def log(self, level: str, message: str) -> None:
        pass


def test_reload_maps_a_board_per_thread_count_and_a_worker_refuses_a_smaller_one():
    """The master's side of the test above, in this process: a reload that changes
    `threads` maps a new scoreboard with a column per thread (the same count keeps the
    board), and a worker handed a board with fewer columns than its threads refuses to
    start rather than share cells."""
    from qiao import Config
    from qiao.arbiter import Arbiter

    settings = iter([{"threads": 8}, {"threads": 8, "workers": 2}])
    arbiter = Arbiter(
        Config({"threads": 2}, env={}), None, [], _QuietLog(),
        reload_config=lambda: (Config(next(settings), env={}), {}),
    )
    try:
        first = arbiter.board
        assert first.threads == 2
        arbiter._reload()
        assert arbiter.board is not first and arbiter.board.threads == 8
        second = arbiter.board
        arbiter._reload()
        assert arbiter.board is second
        with pytest.raises(RuntimeError, match="2 thread columns for --threads 8"):
            arbiter._worker_main(first, 0, 0)
    finally:
        os.close(arbiter.wakeup_r)
        os.close(arbiter.wakeup_w)


def test_max_requests_jitter_varies_each_workers_limit():
    """--max-requests 4 --max-requests-jitter 4 (gunicorn's meaning): each worker leaves
    after 4 + randint(0, 4) requests, so every worker that left served 4 to 8."""
    with running_server(
        "behaviour:app", "-w", "1", "--max-requests", "4", "--max-requests-jitter", "4"
    ) as server:
        pids = [serving_pid(server.port) for _ in range(60)]
    runs = []
    for pid in pids:
        if runs and runs[-1][0] == pid:
            runs[-1][1] += 1
        else:
            runs.append([pid, 1])
    finished = [count for _, count in runs[:-1]]  # the last worker may not be done
    assert len(finished) >= 6, runs  # 60 requests, at most 8 each
    assert all(4 <= count <= 8 for count in finished), runs
    # Not one fixed limit: with working jitter, 6 or more workers all draw the same of 5
    # values with probability 5 * (1/5)**6 (0.03 %) at most.
    assert len(set(finished)) > 1, runs


def open_files_limit(pid: int) -> tuple[int, int]:
    """`pid`'s soft and hard RLIMIT_NOFILE, as /proc shows them."""
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return tuple(resource.RLIM_INFINITY if v == "unlimited" else int(v) for v in (soft, hard))


def lowered_soft_limit(soft: int) -> list[str]:
    """A command that runs its arguments with the soft RLIMIT_NOFILE lowered to `soft`."""
    code = ("import os, resource, sys; r = resource.RLIMIT_NOFILE; "
            f"resource.setrlimit(r, ({soft}, resource.getrlimit(r)[1])); "
            "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", code]


@pytest.mark.skipif(is_gunicorn(), reason="qiao's --rlimit-nofile")
def test_rlimit_nofile_raises_or_sets_the_workers_open_files_limit():
    """--rlimit-nofile: by default (auto) the soft limit qiao was started with is raised to
    the hard limit in the master and its workers; a number sets it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-files limit ({hard}) leaves nothing to raise")
    with running_server("behaviour:app", wrapper=lowered_soft_limit(256)) as s:
        (worker,) = worker_pids(s, 1)
        expected = hard
        if hard == resource.RLIM_INFINITY:
            with open("/proc/sys/fs/nr_open") as f:
                expected = int(f.read())
        assert open_files_limit(s.proc.pid) == (expected, hard)
        assert open_files_limit(worker) == (expected, hard)
    with running_server("behaviour:app", "--rlimit-nofile", "200",
                        wrapper=lowered_soft_limit(256)) as s:
        (worker,) = worker_pids(s, 1)
        assert open_files_limit(worker) == (200, hard)


@pytest.mark.skipif(is_gunicorn(), reason="qiao's --rlimit-nofile")
def test_rlimit_nofile_that_cannot_be_set_is_one_line():
    """A limit past what the process may set (past the kernel's fs.nr_open even for root):
    a one-line error naming the setting, exit status 2, at a start and at --check-config
    alike; a malformed value too."""
    with open("/proc/sys/fs/nr_open") as f:
        too_many = int(f.read()) + 1
    for value, why, check in ((str(too_many), "cannot set the open-files limit", []),
                              (str(too_many), "cannot set the open-files limit",
                               ["--check-config"]),
                              ("lots", "expected 'auto' or an integer >= 64", [])):
        p = subprocess.run(
            [sys.executable, "-m", "qiao", "apps.behaviour:app", "-b", "127.0.0.1:0",
             "--chdir", str(TESTS_DIR), "--rlimit-nofile", value, *check],
            check=False, capture_output=True, text=True, timeout=60,
        )
        assert p.returncode == 2, p.stderr
        assert "--rlimit-nofile" in p.stderr and why in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
