"""Signals to a qiao server with one worker: graceful stops (TERM, Ctrl-C) of requests in
flight and of idle keep-alive connections, and what a stop's end leaves an app thread
(embedded with make_server). Several workers, reloads and recycling: test_workers.py."""

import signal
import socket
import subprocess
import sys
import threading

import pytest
from conftest import TESTS_DIR, running_server
from httpclient import Conn, get


def test_sigterm_finishes_the_request_in_flight():
    """SIGTERM is a graceful stop (gunicorn's meaning): a request already in the app gets
    its whole response, then the process exits 0."""
    with running_server("behaviour:app") as server:
        with Conn(server.port, timeout=10) as c:
            c.send(get("/slow?s=1"))
            threading.Timer(0.3, server.proc.send_signal, (signal.SIGTERM,)).start()
            resp = c.read_response()
        assert resp.status == 200
        assert server.proc.wait(timeout=10) == 0
        assert "Shutting down" in server.wait_log("Shutting down")


def test_sigint_stops_cleanly():
    """Ctrl-C (SIGINT) stops the server with exit status 0 and no traceback."""
    with running_server("behaviour:app") as server:
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=10) == 0
        assert "Traceback" not in server.wait_log("Shutting down")


@pytest.mark.parametrize("threads", ["1", "4"])
def test_sigterm_ends_idle_keep_alive_connections(threads):
    """A graceful stop does not wait out the keep-alive timeout of idle connections: after
    a short grace for a request already on its way, they are closed (RFC 9112 §9.6) and the
    process exits 0, long before --keep-alive 60 would have ended them."""
    with running_server("behaviour:app", "--keep-alive", "60", "--threads", threads) as server:
        conns = [Conn(server.port, timeout=10) for _ in range(3)]
        try:
            for c in conns:
                assert c.request(get("/single")).status == 200
            server.proc.send_signal(signal.SIGTERM)
            assert all(c.closed_by_peer(timeout=10) for c in conns)
        finally:
            for c in conns:
                c.close()
        assert server.proc.wait(timeout=10) == 0


def test_request_arriving_as_the_stop_begins_is_served():
    """A request sent on an idle keep-alive connection just as a graceful stop begins is
    answered, not lost; then the connection closes (RFC 9112 §9.6)."""
    with running_server("behaviour:app", "--keep-alive", "60") as server:
        with Conn(server.port, timeout=10) as c:
            assert c.request(get("/single")).status == 200
            server.proc.send_signal(signal.SIGTERM)
            resp = c.request(get("/single"))
            assert resp.status == 200 and resp.body == b"one single block"
            assert c.closed_by_peer(timeout=10)
        assert server.proc.wait(timeout=10) == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_connections_queued_in_the_listen_backlog_at_a_stop_are_served(workers):
    """Connections the kernel has queued but no worker has accepted yet when a graceful
    stop comes carry requests their clients have already sent: they are accepted and
    answered (then closed, RFC 9112 §9.6), not reset with the listening socket. With one
    thread, a worker's loop waits on its app call, so what arrives meanwhile queues."""
    flags = ("--threads", "1") if workers == "1" else ("-w", workers, "--threads", "1")
    with running_server("behaviour:app", *flags) as server:
        # Every worker busy in the app, so nothing accepts the queued connections.
        busy = [Conn(server.port, timeout=15) for _ in range(int(workers))]
        queued = [Conn(server.port, timeout=15) for _ in range(3)]
        try:
            for c in busy:
                # One at a time: a worker in the app accepts nothing, so the next goes to
                # another worker.
                c.send(get("/slow?s=1.5"))
                threading.Event().wait(0.3)
            for c in queued:
                c.send(get("/single"))
            threading.Event().wait(0.2)
            server.proc.send_signal(signal.SIGTERM)
            assert all(c.read_response().status == 200 for c in busy)
            for c in queued:
                resp = c.read_response()
                assert resp.status == 200 and resp.body == b"one single block"
                assert c.closed_by_peer(timeout=10)
        finally:
            for c in busy + queued:
                c.close()
        assert server.proc.wait(timeout=15) == 0


def test_an_app_thread_past_the_grace_period_never_writes_to_a_reused_descriptor(tmp_path):
    """A stop whose grace period ends while an app thread is still producing closes the
    connection under it (serve_forever() then waits for the thread). That thread then opens
    sockets of its own (a database pool), which take the freed descriptor numbers. Only
    the connection writes its socket, so nothing of the late response may reach those
    sockets: the stand-in database receives only the app's own lines."""
    db = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve_db():
        db.settimeout(20)
        try:
            while True:
                conn, _ = db.accept()
                threading.Thread(target=lambda c=conn: received.append(_drain(c))).start()
        except OSError:
            pass

    threading.Thread(target=serve_db, daemon=True).start()
    port = db.getsockname()[1]
    script = tmp_path / "embedded.py"
    script.write_text(
        "import sys, threading\n"
        f"sys.path.insert(0, {str(TESTS_DIR / 'apps')!r})\n"
        "from behaviour import app\n"
        "from qiao import make_server\n"
        "server = make_server('127.0.0.1', 0, app, threads=2, graceful_timeout=1)\n"
        "print(server.server_address[1], flush=True)\n"
        "threading.Thread(target=lambda: (sys.stdin.readline(), server.shutdown())).start()\n"
        "server.serve_forever()\n"
        "print('returned', flush=True)\n"
        # The program goes on, as an embedding one does, while anything the stop left
        # running finishes.
        "import time; time.sleep(3)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        server_port = int(proc.stdout.readline())
        with Conn(server_port, timeout=10) as c:
            c.send(get(f"/late-writer?db={port}&sleep=2"))
            c.read_until(b"first block")
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            assert c.closed_by_peer(timeout=10)
        assert proc.stdout.readline().strip() == "returned"
        proc.wait(timeout=15)
    finally:
        proc.kill()
        db.close()
    data = b"".join(received)
    assert b"app's own line" in data, "the app never reached the stand-in database"
    assert b"late block" not in data, "the late response was written to the app's socket"


def _drain(conn: socket.socket) -> bytes:
    conn.settimeout(10)
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except OSError:
        pass
    conn.close()
    return b"".join(chunks)
