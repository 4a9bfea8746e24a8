"""Signals to a single qiao process (the multi-process master is a later issue)."""

import signal
import threading

import pytest
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
