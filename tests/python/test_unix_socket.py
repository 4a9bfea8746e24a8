"""Binding: -b unix:PATH serves over AF_UNIX; several -b at once all serve."""

import json

from conftest import running_server
from httpclient import Conn, get


def _short_sock_path(tmp_path, name):
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be long.
    path = tmp_path / name
    if len(str(path)) > 100:
        import tempfile

        path = __import__("pathlib").Path(tempfile.mkdtemp(prefix="qiao-")) / name
    return str(path)


def test_unix_socket_serves(tmp_path):
    """-b unix:PATH: requests over the unix socket are served (REMOTE_ADDR may be empty)."""
    path = _short_sock_path(tmp_path, "s.sock")
    with running_server("echo_environ:app", binds=[f"unix:{path}"]) as server, Conn(path) as c:
        resp = c.request(get("/over-unix"))
    assert resp.status == 200
    assert json.loads(resp.body)["environ"]["PATH_INFO"] == "/over-unix"
    assert any(a.startswith("unix:") for a in server.addrs)


def test_tcp_and_unix_together(tmp_path):
    """Several -b flags: the TCP and the unix listener both serve."""
    path = _short_sock_path(tmp_path, "both.sock")
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
        path = _short_sock_path(tmp_path, f"m{umask}.sock")
        flags = ("--umask", umask) if umask else ()
        with running_server("echo_environ:app", *flags, binds=[f"unix:{path}"]):
            assert stat.S_IMODE(os.stat(path).st_mode) == mode, (umask, oct(os.stat(path).st_mode))
