"""Falcon under the server: a resource with GET and POST JSON."""

import pytest
from conftest import running_server

pytest.importorskip("falcon")


@pytest.fixture(scope="module")
def falcon_server():
    with running_server("falcon_app:app") as server:
        yield server


def test_post_then_get_json(falcon_server, http):
    """PEP 3333 via Falcon: POST JSON media, then GET it back (one process keeps state)."""
    r = http.post(f"{falcon_server.url}/items/a1", json={"x": [1, 2, 3]}, timeout=5)
    assert r.status_code == 201 and r.json() == {"id": "a1", "stored": {"x": [1, 2, 3]}}
    r = http.get(f"{falcon_server.url}/items/a1", timeout=5)
    assert r.status_code == 200 and r.json() == {"id": "a1", "value": {"x": [1, 2, 3]}}


def test_missing_item_404(falcon_server, http):
    """PEP 3333 via Falcon: an HTTPError becomes a JSON 404."""
    r = http.get(f"{falcon_server.url}/items/nope", timeout=5)
    assert r.status_code == 404
