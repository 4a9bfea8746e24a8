"""A large upload read whole by the app, against the time the same bytes take to cross
loopback: how reading `wsgi.input` scales with the body (Django's `request.body` reads
it whole with `read()`).

    python bench/upload.py                        # 64 MiB, read() and read(n) in 64 KiB
    python bench/upload.py --mib 16 --pythonpath bench/.data/baseline/<rev>-<python>

For each strategy it prints the seconds from the first byte sent to the response, and the
same transfer into a plain socket that only discards the bytes (the loopback reference).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time

APP = """
def app(environ, start_response):
    stream = environ["wsgi.input"]
    if environ["PATH_INFO"] == "/whole":
        n = len(stream.read())
    else:
        n = 0
        while True:
            piece = stream.read(65536)
            if not piece:
                break
            n += len(piece)
    body = str(n).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def send(port: int, path: str, size: int) -> float:
    """Seconds from the first byte of a `size`-byte POST to the end of its response."""
    block = b"u" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Length: {size}\r\n\r\n".encode())
        left = size
        while left:
            n = min(left, len(block))
            s.sendall(block[:n])
            left -= n
        reply = b""
        while not re.search(rb"\r\n\r\n\d+$", reply):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        took = time.perf_counter() - start
    assert reply.endswith(str(size).encode()), reply[-200:]
    return took


def loopback(size: int) -> float:
    """The same bytes into a socket whose reader only discards them."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def drain() -> None:
        conn, _ = server.accept()
        left = size
        while left:
            left -= len(conn.recv(1 << 20))
        conn.sendall(b"done")
        conn.close()

    t = threading.Thread(target=drain)
    t.start()
    block = b"u" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        for _ in range(size >> 20):
            s.sendall(block)
        s.recv(4)
        took = time.perf_counter() - start
    t.join()
    server.close()
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--pythonpath", help="put this first on PYTHONPATH (a baseline build)")
    args = parser.parse_args()
    size = args.mib << 20
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = (
        APP
        + f"\nfrom qiao import make_server\nwith make_server('127.0.0.1', {port}, app)"
        + " as s:\n    print('ready', flush=True)\n    s.serve_forever()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        reference = min(loopback(size) for _ in range(3))
        print(f"loopback: {reference:.3f} s for {args.mib} MiB")
        for path, what in (("/whole", "read()"), ("/pieces", "read(65536) in a loop")):
            took = min(send(port, path, size) for _ in range(3))
            print(f"{what}: {took:.3f} s ({took / reference:.1f} x loopback)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
