"""Load and fault tests: many connections, clients that vanish, stall or trickle, and the
worker's memory across many requests and a large upload (apps/load_faults.py).

Every loop is bounded in time and count and talks only to 127.0.0.1. Set
QIAO_SKIP_SLOW=1 to skip the whole module (about a minute on 2 cores). The figures
measured are printed (pytest -s shows them) for docs/security.md.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import is_gunicorn, running_server
from httpclient import Conn

pytestmark = [
    pytest.mark.skipif(os.environ.get("QIAO_SKIP_SLOW") == "1", reason="QIAO_SKIP_SLOW=1"),
    pytest.mark.skipif(is_gunicorn(), reason="measures qiao's worker process"),
]

APP = "load_faults:app"
OK = b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"
MIB = 1 << 20


def stats(server) -> dict:
    with Conn(server.port) as c:
        return json.loads(c.request(b"GET /stats HTTP/1.0\r\n\r\n").body)


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def served_promptly(server, limit: float = 1.0) -> float:
    """A fresh client's GET /ok answered 200; returns how long it took (asserted < limit)."""
    start = time.monotonic()
    with Conn(server.port, timeout=limit + 2) as c:
        assert c.request(OK).status == 200
    took = time.monotonic() - start
    assert took < limit, f"a normal client waited {took:.2f}s"
    return took


def raise_nofile(need: int) -> None:
    """Raise this process's open-file limit (the server inherits it); skip if impossible."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_2000_concurrent_connections_are_each_served():
    """2,000 connections opened and held at once, then each sends a request: every one
    gets its 200 on the connection it opened."""
    n = 2000
    raise_nofile(n + 512)
    with running_server(APP, "--backlog", "4096") as server:
        socks = []
        try:
            deadline = time.monotonic() + 30
            for _ in range(n):
                assert time.monotonic() < deadline, f"only {len(socks)} connected in 30 s"
                socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            time.sleep(0.5)
            # All still open: none has been closed by the server while idle.
            for s in socks:
                s.setblocking(False)
                try:
                    assert s.recv(1) != b"", "server closed an idle new connection"
                except BlockingIOError:
                    pass
                s.setblocking(True)
                s.settimeout(10)
            held = len(socks)
            start = time.monotonic()
            for s in socks:
                s.sendall(OK)
            answered = 0
            for s in socks:
                buf = b""
                while not buf.endswith(b"\r\n\r\nok"):
                    chunk = s.recv(4096)
                    assert chunk, f"closed before its response; got {buf!r}"
                    buf += chunk
                assert buf.startswith(b"HTTP/1.1 200 "), buf[:100]
                answered += 1
            took = time.monotonic() - start
            assert server.alive()
        finally:
            for s in socks:
                s.close()
    print(f"\n[load] connections held open: {held}; answered 200: {answered} in {took:.2f}s")
    assert answered == n


def test_500_clients_gone_mid_response_each_get_close_called():
    """PEP 3333: the iterable's close() is called on every path, including a client that
    disconnects mid-response; 500 such clients, half with a RST, half with a FIN."""
    n = 500
    with running_server(APP, "--threads", "4") as server:

        def client(i: int) -> None:
            with Conn(server.port, timeout=10) as c:
                if i % 2:
                    # SO_LINGER 0: close() sends a RST instead of a FIN.
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.send(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
                c.read_until(b"\r\n\r\n")
                got = len(c.buf)
                while got < 100_000:
                    got += len(c.sock.recv(65536))

        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(client, range(n)))
        deadline = time.monotonic() + 20
        while True:
            s = stats(server)
            if s["closed"] >= n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        took = time.monotonic() - start
        served_promptly(server)
    print(f"\n[faults] streams started {s['started']}, closed {s['closed']} in {took:.2f}s")
    assert s["started"] == n
    assert s["closed"] == n, f"close() called {s['closed']} times for {n} aborted streams"


def test_slowloris_connections_time_out_while_others_are_served():
    """--header-timeout bounds the whole head, not each byte: 200 connections trickling a
    header byte per second get 408 (or a close) after it, while normal clients are
    answered promptly throughout."""
    n, timeout = 200, 3.0
    raise_nofile(n + 512)
    with running_server(APP, "--header-timeout", str(timeout)) as server:
        sel = selectors.DefaultSelector()
        opened: dict[socket.socket, float] = {}
        received: dict[socket.socket, bytes] = {}
        closed_after: list[float] = []
        latencies: list[float] = []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                s.sendall(b"GET /ok HTTP/1.1\r\nHost: h\r\nX-Slow: ")
                s.setblocking(False)
                opened[s] = time.monotonic()
                received[s] = b""
                sel.register(s, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout + 8
            next_byte = time.monotonic() + 1
            while opened and time.monotonic() < deadline:
                for key, _ in sel.select(0.2):
                    s = key.fileobj
                    try:
                        data = s.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    if data:
                        received[s] += data
                        continue
                    closed_after.append(time.monotonic() - opened.pop(s))
                    sel.unregister(s)
                if time.monotonic() >= next_byte:
                    next_byte += 1
                    for s in list(opened):
                        try:
                            s.send(b"a")
                        except OSError:
                            pass  # closed; the selector reports it
                if opened:
                    latencies.append(served_promptly(server))
            still_open = len(opened)
        finally:
            sel.close()
            for s in received:
                s.close()
    print(
        f"\n[slowloris] {n} slow connections: closed after {min(closed_after):.2f}-"
        f"{max(closed_after):.2f}s (--header-timeout {timeout}); still open {still_open}; "
        f"normal client max latency {max(latencies) * 1000:.0f} ms over {len(latencies)}"
    )
    assert still_open == 0
    assert min(closed_after) >= timeout - 0.5
    assert max(closed_after) <= timeout + 4
    answers = [r for r in received.values() if r]
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in answers), answers[:1]


def test_client_that_never_reads_a_100mb_stream_keeps_memory_bounded():
    """Backpressure: a client that reads nothing of a 100 MB streamed response makes the
    app wait, not the worker buffer it; the worker's RSS stays within +64 MB, other
    clients are served, and close() is called once the client goes."""
    with running_server(APP, "--threads", "4") as server:
        pid = stats(server)["pid"]
        served_promptly(server)
        before = rss_kib(pid)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stalled.connect(("127.0.0.1", server.port))
        peak = before
        try:
            stalled.sendall(b"GET /stream?mb=100 HTTP/1.1\r\nHost: h\r\n\r\n")
            end = time.monotonic() + 4
            while time.monotonic() < end:
                peak = max(peak, rss_kib(pid))
                served_promptly(server)
                time.sleep(0.2)
            assert stats(server)["closed"] == 0, "the stream ended while the client read nothing"
        finally:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stalled.close()
        deadline = time.monotonic() + 10
        while stats(server)["closed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        closed = stats(server)["closed"]
        after = rss_kib(pid)
    print(
        f"\n[stall] worker RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
        f"(+{(peak - before) / 1024:.1f}), after {after / 1024:.1f} MiB"
    )
    assert peak - before < 64 * 1024
    assert closed == 1


def test_300_clients_that_never_read_a_stream_cost_bounded_memory():
    """Memory is bounded per worker, not per connection: 300 clients that ask for a 5 MiB
    stream of fresh 64 KiB blocks and read nothing cost the one-thread worker under
    128 MiB of RSS in all (each holds at most the block it is being sent: the generator
    waits for its client, PEP 3333's first way), and another client is answered
    meanwhile; every stream's close() is called once its client goes."""
    clients = 300
    raise_nofile(clients + 200)
    with running_server(APP) as server:
        pid = stats(server)["pid"]
        served_promptly(server)
        before = rss_kib(pid)
        stalled = []
        try:
            for _ in range(clients):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", server.port))
                s.sendall(b"GET /stream?mb=5&fresh=1 HTTP/1.1\r\nHost: h\r\n\r\n")
                stalled.append(s)
            deadline = time.monotonic() + 30
            while stats(server)["started"] < clients:
                assert time.monotonic() < deadline, "not every stream started"
                time.sleep(0.1)
            peak = before
            waited = 0.0
            for _ in range(10):
                peak = max(peak, rss_kib(pid))
                waited = max(waited, served_promptly(server))
                time.sleep(0.1)
            assert stats(server)["closed"] == 0, "a stream ended while its client read nothing"
        finally:
            for s in stalled:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        deadline = time.monotonic() + 10
        while stats(server)["closed"] < clients and time.monotonic() < deadline:
            time.sleep(0.05)
        closed = stats(server)["closed"]
    print(
        f"\n[slow readers] {clients} clients: worker RSS before {before / 1024:.1f} MiB, "
        f"peak {peak / 1024:.1f} MiB (+{(peak - before) / 1024:.1f}); another client's "
        f"request answered in {waited * 1000:.1f} ms at most"
    )
    assert peak - before < 128 * 1024
    assert closed == clients


def test_app_threads_waiting_on_slow_readers_are_not_a_stuck_app():
    """--timeout is for an app stuck in its own code: app threads held by clients that
    read nothing (backpressure) are waiting on the client, which --write-timeout bounds,
    and no worker is killed for it (-w 2 --threads 4 --timeout 2)."""
    raise_nofile(200)
    with running_server(APP, "-w", "2", "--threads", "4", "--timeout", "2") as server:
        stalled = []
        try:
            for _ in range(16):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", server.port))
                s.sendall(b"GET /stream?fresh=1 HTTP/1.1\r\nHost: h\r\n\r\n")
                stalled.append(s)
            mark = server.log_mark()
            time.sleep(5)
            log = server.log_since(mark)
            assert "WORKER TIMEOUT" not in log, log
            for s in stalled:
                s.setblocking(False)
                try:
                    assert s.recv(1), "a stalled stream's connection was closed"
                except BlockingIOError:
                    pass
        finally:
            for s in stalled:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()


def pipeline(sock: socket.socket, count: int, response_len: int) -> None:
    """Send `count` GET /ok back to back and read exactly their responses."""
    sock.sendall(OK * count)
    want = count * response_len
    got = bytearray()
    while len(got) < want:
        chunk = sock.recv(min(1 << 20, want - len(got)))
        assert chunk, "closed mid-pipeline"
        got += chunk
    assert got.count(b"HTTP/1.1 200 OK\r\n") == count


def test_worker_memory_is_flat_across_100000_requests():
    """100,000 small requests (4 keep-alive connections, pipelined 500 at a time) leave
    the worker's RSS where it was after a warm-up: nothing is kept per request."""
    total, batch, conns = 100_000, 500, 4
    with running_server(APP) as server:
        pid = stats(server)["pid"]
        socks = [
            socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(conns)
        ]
        try:
            with Conn(server.port) as c:
                c.send(OK)
                first = c.read_until(b"\r\n\r\nok")
            response_len = len(first)

            def run(requests: int) -> None:
                for _ in range(requests // (batch * conns)):
                    for s in socks:
                        pipeline(s, batch, response_len)

            run(10_000)  # warm-up: allocator pools, caches, buffers at their working size
            before = rss_kib(pid)
            calls = stats(server)["ok"]
            start = time.monotonic()
            run(total)
            took = time.monotonic() - start
            after = rss_kib(pid)
            assert stats(server)["ok"] - calls == total, "not every request reached the app"
        finally:
            for s in socks:
                s.close()
    print(
        f"\n[memory] {total} requests in {took:.1f}s ({total / took:.0f}/s): worker RSS "
        f"{before / 1024:.1f} -> {after / 1024:.1f} MiB ({(after - before):+d} KiB)"
    )
    assert after - before < 4 * 1024


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_worker_memory_is_flat_after_a_200mb_upload(framing):
    """A 200 MB body read by the app in 64 KiB pieces goes to a spool file as it arrives,
    not into memory: the worker's RSS during and after the upload stays within a few MB of
    where it started."""
    size = 200 * MIB
    piece = b"u" * MIB
    with running_server(APP) as server:
        pid = stats(server)["pid"]
        served_promptly(server)
        before = rss_kib(pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], rss_kib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        try:
            with Conn(server.port, timeout=30) as c:
                if framing == "chunked":
                    c.send(
                        b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
                    for _ in range(size // MIB):
                        c.send(frame)
                    c.send(b"0\r\n\r\n")
                else:
                    c.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
                    for _ in range(size // MIB):
                        c.send(piece)
                resp = c.read_response(timeout=30)
        finally:
            done.set()
            sampler.join(2)
        took = time.monotonic() - start
        after = rss_kib(pid)
    assert resp.status == 200
    assert json.loads(resp.body) == {"received": size}
    print(
        f"\n[upload/{framing}] 200 MiB in {took:.1f}s: worker RSS {before / 1024:.1f} MiB, "
        f"peak {peak[0] / 1024:.1f} (+{(peak[0] - before) / 1024:.1f}), after "
        f"{after / 1024:.1f} ({(after - before) / 1024:+.1f})"
    )
    assert peak[0] - before < 16 * 1024
    assert after - before < 4 * 1024


# --- slow uploads, connections that wait: --body-timeout, TCP_DEFER_ACCEPT, --worker-connections
# The flag names follow gunicorn's where it has one.



def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slow_post_body_times_out():
    """A client that stops sending its body mid-way is disconnected after the body read
    timeout (408 if nothing was sent yet), and does not hold the connection forever."""
    with running_server(APP, "--body-timeout", "2") as server:
        with Conn(server.port, timeout=8) as c:
            start = time.monotonic()
            c.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            assert c.closed_by_peer(8)
            elapsed = time.monotonic() - start
        assert 1.5 <= elapsed <= 5, elapsed
        assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 408 "), c.buf[:100]
        served_promptly(server)


def test_slow_large_upload_does_not_hold_the_app_thread():
    """A body over 1 MiB trickling in is spooled before the app runs, so with one app
    thread a normal client is still answered meanwhile."""
    with running_server(APP, "--threads", "1") as server, Conn(server.port, timeout=10) as slow:
        slow.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (4 * MIB))
        for _ in range(3):
            slow.send(b"s" * MIB)
            time.sleep(0.3)
        try:
            served_promptly(server)
        finally:
            slow.send(b"s" * MIB)
        assert json.loads(slow.read_response().body) == {"received": 4 * MIB}


def test_connections_reach_the_worker_with_their_request():
    """Clients that connect ahead of their request (browsers pre-connect) are handed to the
    worker once their first bytes arrive (TCP_DEFER_ACCEPT): 20 connections that have sent
    nothing hold no descriptor and no `--worker-connections` slot in the worker, and each
    is served as soon as it sends its request."""
    with running_server(APP, "--worker-connections", "5") as server:
        pid = stats(server)["pid"]
        base = fd_count(pid)
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(20)]
        try:
            time.sleep(0.2)
            held = fd_count(pid) - base
            served_promptly(server)
            for s in socks:
                s.sendall(OK)
            answers = [s.recv(4096)[:12] for s in socks]
        finally:
            for s in socks:
                s.close()
    assert held <= 0, f"{held} connections that sent nothing reached the worker"
    assert answers == [b"HTTP/1.1 200"] * 20


def test_connections_beyond_the_worker_limit_wait_their_turn():
    """--worker-connections bounds the connections a worker holds open: 200 clients
    against a limit of 50 add at most about 50 sockets to the worker, and every client is
    still answered (200) once others finish, or refused with 503."""
    n, limit = 200, 50
    raise_nofile(n + 512)
    with running_server(APP, "--worker-connections", str(limit)) as server:
        pid = stats(server)["pid"]
        base = fd_count(pid)
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(n)]
        try:
            time.sleep(0.5)
            held = fd_count(pid) - base
            for s in socks:
                s.sendall(OK)
            statuses = []
            for s in socks:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                statuses.append(buf[9:12])
        finally:
            for s in socks:
                s.close()
    print(f"\n[limit] {n} clients, limit {limit}: worker held {held} more fds")
    assert held <= limit + 5
    assert all(st in (b"200", b"503") for st in statuses)
