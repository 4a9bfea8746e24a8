"""Signals to a single qiao process (the multi-process master is a later issue)."""

import signal
import threading

from conftest import running_server
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
