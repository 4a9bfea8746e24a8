"""--threads N: N requests run at once in one worker (PEP 3333 wsgi.multithread)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

from httpclient import Conn, get


def test_parallel_slow_requests(threaded_server):
    """--threads 4: four requests sleeping 0.5 s each overlap (total well under 4 x 0.5 s),
    and each reports wsgi.multithread True."""

    def one(_):
        with Conn(threaded_server.port, timeout=10) as c:
            resp = c.request(get("/slow?s=0.5"))
        assert resp.status == 200
        return json.loads(resp.body)

    with ThreadPoolExecutor(4) as pool:
        start = time.monotonic()
        results = list(pool.map(one, range(4)))
        elapsed = time.monotonic() - start
    assert elapsed < 1.9, f"4 x 0.5 s took {elapsed:.2f} s with --threads 4"
    assert all(r["multithread"] is True for r in results)
