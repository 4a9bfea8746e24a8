"""Physical reference: a fixture app behind the barest server that still calls it.

Usage: python bare_server.py MODULE:ATTR PORT   (bench venv, from bench/apps)

Per request it does what floor.py does (a copy of a prepared environ, the app called, its
body iterated to the end and close() called) plus the two syscalls every server pays:
one recv() of the request and one send() of a response prepared once at start (the
fixture apps answer every GET with the same bytes). It parses nothing beyond counting
request heads, builds no environ, checks no header, and sends the answers to one
epoll turn after that turn's app calls, as qiao does. What it reaches, as a share of the
in-process floor, is what the app can reach behind any server on this machine: the
kernel's work for the request and its effect on the app's caches, and nothing else
(but for ~1 us of its own interpreted loop per request). It answers GET heads only, on
127.0.0.1 only, and stops on SIGTERM or SIGINT.
"""

import importlib
import select
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for floor.py
sys.path.insert(0, ".")
from floor import base_environ, caller

RECV = 65536


def prepared(app, environ: dict) -> bytes:
    """The app's whole response to one GET, as bytes on the wire."""
    got = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, headers

    body = app(dict(environ), start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    names = {k.lower() for k, _ in got["headers"]}
    lines = [f"HTTP/1.1 {got['status']}"] + [f"{k}: {v}" for k, v in got["headers"]]
    if "content-length" not in names:
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


def serve(app, module: str, port: int) -> None:
    response = prepared(app, base_environ(module))
    call = caller(app, module)  # the floor's call, for the same work per request

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    lfd = listener.fileno()
    ep = select.epoll()
    ep.register(lfd, select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    partial: dict[int, bytes] = {}  # an incomplete head's bytes, per connection

    def drop(fd: int) -> None:
        ep.unregister(fd)
        conns.pop(fd).close()
        partial.pop(fd, None)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        try:
            events = ep.poll(0.5)
        except InterruptedError:
            continue
        answers = []
        for fd, _ in events:
            if fd == lfd:
                while True:
                    try:
                        c, _ = listener.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            try:
                data = c.recv(RECV)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                drop(fd)
                continue
            if fd in partial:
                data = partial.pop(fd) + data
            heads = data.count(b"\r\n\r\n")
            if not data.endswith(b"\r\n\r\n"):
                partial[fd] = data[data.rfind(b"\r\n\r\n") + 4:] if heads else data
            for _ in range(heads):
                call()
            if heads:
                answers.append((fd, response * heads))
        for fd, out in answers:
            c = conns.get(fd)
            if c is None:
                continue
            try:
                try:
                    sent = c.send(out)
                except BlockingIOError:
                    sent = 0
                if sent < len(out):  # rare: a socket too full for the answers waits
                    c.setblocking(True)
                    c.sendall(out[sent:])
                    c.setblocking(False)
            except OSError:
                drop(fd)


def main() -> None:
    spec, port = sys.argv[1], int(sys.argv[2])
    module, _, attr = spec.partition(":")
    app = getattr(importlib.import_module(module), attr or "app")
    serve(app, module, port)


if __name__ == "__main__":
    main()
