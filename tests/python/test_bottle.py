"""Bottle under the server: routes with parameters, a template, a static file."""

import pytest
from conftest import running_server

pytest.importorskip("bottle")


@pytest.fixture(scope="module")
def bottle_server():
    with running_server("bottle_app:app") as server:
        yield server


def test_route_params(bottle_server, http):
    """PEP 3333 via Bottle: path parameters with a filter and a query argument."""
    r = http.get(f"{bottle_server.url}/hello/ann/3?q=x", timeout=5)
    assert r.json() == {"name": "ann", "count": 3, "q": "x"}


def test_template(bottle_server, http):
    """PEP 3333 via Bottle: SimpleTemplate rendering."""
    r = http.get(f"{bottle_server.url}/template/bob", timeout=5)
    assert r.text == "<b>Hello bob</b> 42"


def test_static_file(bottle_server, http):
    """PEP 3333 wsgi.file_wrapper via Bottle: static_file."""
    r = http.get(f"{bottle_server.url}/static/static.txt", timeout=5)
    assert r.status_code == 200 and r.content == b"bottle static file\n" * 50
    assert r.headers["Content-Length"] == str(len(r.content))
