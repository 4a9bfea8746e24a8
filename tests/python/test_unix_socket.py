"""Binding: -b unix:PATH serves over AF_UNIX; several -b at once all serve."""

import json

from conftest import running_server, short_sock_path
from httpclient import Conn, get


def test_unix_socket_serves(tmp_path):
    """-b unix:PATH: requests over the unix socket are served (REMOTE_ADDR may be empty)."""
    path = short_sock_path(tmp_path, "s.sock")
    with running_server("echo_environ:app", binds=[f"unix:{path}"]) as server, Conn(path) as c:
        resp = c.request(get("/over-unix"))
    assert resp.status == 200
    assert json.loads(resp.body)["environ"]["PATH_INFO"] == "/over-unix"
    assert any(a.startswith("unix:") for a in server.addrs)


def test_tcp_and_unix_together(tmp_path):
    """Several -b flags: the TCP and the unix listener both serve."""
    path = short_sock_path(tmp_path, "both.sock")
    with running_server("echo_environ:app", binds=["127.0.0.1:0", f"unix:{path}"]) as server:
        assert server.port
        with Conn(server.port) as c:
            assert c.request(get("/tcp")).status == 200
        with Conn(path) as c:
            assert c.request(get("/unix")).status == 200


def test_umask_applies_to_the_socket_file(tmp_path):
    """--umask 077 (gunicorn's -m): files the server creates, the Unix socket first, are
    the owner's only (0o777 & ~0o077 = 0o700); the default, 0o022, gives 0o755."""
    import os
    import stat

    for umask, mode in (("077", 0o700), (None, 0o755)):
        path = short_sock_path(tmp_path, f"m{umask}.sock")
        flags = ("--umask", umask) if umask else ()
        with running_server("echo_environ:app", *flags, binds=[f"unix:{path}"]):
            assert stat.S_IMODE(os.stat(path).st_mode) == mode, (umask, oct(os.stat(path).st_mode))


def test_socket_file_removed_at_stop(tmp_path):
    """The Unix socket file qiao created is removed when the server stops (SIGTERM), so
    the next run binds without a stale file in the way."""
    import os

    path = short_sock_path(tmp_path, "gone.sock")
    with running_server("echo_environ:app", binds=[f"unix:{path}"]):
        assert os.path.exists(path)
    assert not os.path.exists(path)


def test_close_removes_only_the_file_qiao_bound(tmp_path):
    """close_listener() removes the socket file qiao created, but not a socket another
    process has since put at the same path (a newer server's: removing it would cut that
    server off from its clients)."""
    import os
    import socket

    from qiao._bind import bind_all, close_listener, parse_bind

    path = short_sock_path(tmp_path, "own.sock")
    (sock,) = bind_all([parse_bind(f"unix:{path}")], 16)
    close_listener(sock)
    assert not os.path.exists(path)

    (sock,) = bind_all([parse_bind(f"unix:{path}")], 16)
    os.unlink(path)
    newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    newer.bind(path)
    try:
        close_listener(sock)
        assert os.path.exists(path), "the newer server's socket file was removed"
    finally:
        newer.close()
        os.unlink(path)


def test_binding_does_not_import_socket():
    """The CLI binds with the C module `_socket`: the `socket` wrapper would add selectors
    and its enums to every idle worker's resident memory. The Python API still hands out
    `socket.socket` objects (wsgiref's `server.socket`)."""
    import subprocess
    import sys

    code = (
        "import sys, qiao.__main__, qiao._bind, qiao._cli, qiao.config, qiao.arbiter, qiao._child,"
        " qiao._loader;"
        "print('socket' in sys.modules, 'selectors' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_python_api_sockets_are_socket_objects():
    """make_server(): `server.socket` is a `socket.socket`, as with wsgiref."""
    import socket

    import qiao

    server = qiao.make_server("127.0.0.1", 0, lambda e, s: [])
    try:
        assert isinstance(server.socket, socket.socket)
        assert server.socket.getsockname()[0] == "127.0.0.1"
    finally:
        server.server_close()
