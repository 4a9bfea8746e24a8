"""The wsgiref-compatible Python API, in-process: qiao.make_server and its server object.

Under QIAO_TEST_SERVER=gunicorn these run against wsgiref.simple_server, the API's model.
"""

import threading

import pytest
from conftest import is_gunicorn
from httpclient import Conn, get


def make_server(host, port, app):
    if is_gunicorn():
        from wsgiref.simple_server import WSGIRequestHandler
        from wsgiref.simple_server import make_server as ref

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        return ref(host, port, app, handler_class=Quiet)
    qiao = pytest.importorskip("qiao")
    return qiao.make_server(host, port, app)


def hello(environ, start_response):
    body = b"hello " + environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_make_server_binds_port_zero():
    """wsgiref.simple_server API: make_server(host, 0, app).server_address has the real port."""
    server = make_server("127.0.0.1", 0, hello)
    try:
        host, port = server.server_address[:2]
        assert port != 0
        assert host == "127.0.0.1"
    finally:
        server.server_close()


def test_serve_forever_and_shutdown():
    """wsgiref / socketserver API: serve_forever() in a thread serves; shutdown() from another
    thread returns and the serving thread ends; server_close() releases the socket."""
    server = make_server("127.0.0.1", 0, hello)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for path in ("/one", "/two"):
            with Conn(port) as c:
                resp = c.request(get(path, headers=b"Connection: close\r\n"))
                assert (resp.status, resp.body) == (200, b"hello " + path.encode())
    finally:
        done = threading.Event()
        threading.Thread(target=lambda: (server.shutdown(), done.set()), daemon=True).start()
        assert done.wait(5), "shutdown() did not return"
        thread.join(5)
        assert not thread.is_alive(), "serve_forever() still running after shutdown()"
        server.server_close()
    with pytest.raises(OSError), Conn(port, timeout=1) as c:
        c.request(get("/after-close"))


def test_context_manager():
    """socketserver API: the server is a context manager that closes on exit."""
    with make_server("127.0.0.1", 0, hello) as server:
        port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        with Conn(port) as c:
            assert c.request(get("/ctx", headers=b"Connection: close\r\n")).body == b"hello /ctx"
        server.shutdown()
        thread.join(5)
    with pytest.raises(OSError), Conn(port, timeout=1) as c:
        c.request(get("/after-exit"))


def test_handle_request_serves_exactly_one():
    """wsgiref API: handle_request() serves one request and returns."""
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return hello(environ, start_response)

    with make_server("127.0.0.1", 0, app) as server:
        port = server.server_address[1]
        result = {}
        thread = threading.Thread(
            target=lambda: result.setdefault("r", server.handle_request()), daemon=True
        )
        thread.start()
        with Conn(port) as c:
            resp = c.request(get("/only", headers=b"Connection: close\r\n"))
        assert resp.body == b"hello /only"
        thread.join(5)
        assert not thread.is_alive(), "handle_request() did not return after one request"
        assert calls == ["/only"]


def test_wsgiref_and_socketserver_attributes():
    """What code written for wsgiref.simple_server.WSGIServer / socketserver.BaseServer
    touches is there: application, base_environ, setup_environ, timeout, handle_timeout,
    service_actions, server_bind, server_activate, verify_request, handle_error,
    RequestHandlerClass, address_family, socket_type, allow_reuse_address,
    request_queue_size."""
    import socket

    server = make_server("127.0.0.1", 0, hello)
    try:
        assert server.application is hello and server.get_app() is hello
        server.setup_environ()
        environ = server.base_environ
        assert environ["SERVER_PORT"] == str(server.server_port)
        assert environ["GATEWAY_INTERFACE"] == "CGI/1.1"
        assert server.timeout is None
        assert server.address_family == socket.AF_INET
        assert server.socket_type == socket.SOCK_STREAM
        assert server.allow_reuse_address
        assert server.request_queue_size >= 1
        assert server.verify_request(None, ("127.0.0.1", 1))
        assert hasattr(server, "RequestHandlerClass")
        for name in ("handle_timeout", "service_actions", "server_bind", "server_activate",
                     "handle_error"):
            assert callable(getattr(server, name))
        server.application = hello
    finally:
        server.server_close()


def test_ctrl_c_on_serve_forever_stops_without_a_traceback(tmp_path):
    """README: Ctrl-C stops `make_server(...).serve_forever()` cleanly: it returns, the
    script goes on and exits 0, and nothing is printed (wsgiref prints a traceback)."""
    import os
    import signal
    import subprocess
    import sys

    if is_gunicorn():
        pytest.skip("wsgiref prints a KeyboardInterrupt traceback")
    script = tmp_path / "serve.py"
    # 'serving' is printed once a request was answered: serve_forever() is running.
    script.write_text(
        "import threading, urllib.request\n"
        "from qiao import make_server\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'']\n"
        "server = make_server('127.0.0.1', 0, app)\n"
        "def ready():\n"
        "    urllib.request.urlopen(f'http://127.0.0.1:{server.server_port}/', timeout=20)\n"
        "    print('serving', flush=True)\n"
        "threading.Thread(target=ready, daemon=True).start()\n"
        "server.serve_forever()\n"
        "print('returned', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.readline() == "serving\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == "returned\n"
    assert "Traceback" not in err
