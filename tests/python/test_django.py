"""Django under the server: get_wsgi_application() with plain, JSON and form views."""

import pytest
from conftest import running_server

pytest.importorskip("django")


@pytest.fixture(scope="module")
def django_server():
    with running_server("django_app:application") as server:
        yield server


def test_plain_view(django_server, http):
    """PEP 3333 via Django: a plain view reading the query string."""
    r = http.get(f"{django_server.url}/hello/?name=qiao", timeout=5)
    assert r.status_code == 200 and r.text == "Hello from Django, qiao"


def test_json_view(django_server, http):
    """PEP 3333 via Django: a JSON view with a path converter."""
    r = http.get(f"{django_server.url}/api/42/", timeout=5)
    assert r.json() == {"id": 42, "method": "GET", "path": "/api/42/"}


def test_form_post(django_server, http):
    """PEP 3333 wsgi.input via Django: a form POST (CSRF exempt)."""
    r = http.post(f"{django_server.url}/form/", data={"a": "1", "b": "é"}, timeout=5)
    assert r.status_code == 200
    assert r.json() == {"form": {"a": "1", "b": "é"}, "method": "POST"}


def test_not_found_and_redirect(django_server, http):
    """PEP 3333 via Django: CommonMiddleware's APPEND_SLASH redirect and a 404."""
    r = http.get(f"{django_server.url}/hello", follow_redirects=False, timeout=5)
    assert r.status_code == 301 and r.headers["Location"].endswith("/hello/")
    assert http.get(f"{django_server.url}/missing/", timeout=5).status_code == 404
