"""Flask under the server: JSON, Jinja, forms, multipart, chunked upload, streaming, send_file."""

import pytest
from conftest import running_server
from httpclient import Conn

pytest.importorskip("flask")


@pytest.fixture(scope="module")
def flask_server():
    with running_server("flask_app:app") as server:
        yield server


def test_json_route(flask_server, http):
    """PEP 3333 via Flask: a JSON route with query arguments."""
    r = http.get(f"{flask_server.url}/json?a=1&b=two", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {"hello": "world", "args": {"a": "1", "b": "two"}}


def test_jinja_template(flask_server, http):
    """PEP 3333 via Flask: render_template_string, non-ASCII path segment."""
    r = http.get(f"{flask_server.url}/template/caf%C3%A9", timeout=5)
    assert r.status_code == 200
    assert r.text == "<p>Hello café! 012</p>"


def test_form_post(flask_server, http):
    """PEP 3333 wsgi.input via Flask: an urlencoded form POST."""
    r = http.post(f"{flask_server.url}/form", data={"a": "1", "b": "x y"}, timeout=5)
    assert r.json() == {"form": {"a": "1", "b": "x y"}}


def test_multipart_upload(flask_server, http):
    """PEP 3333 wsgi.input via Flask: multipart/form-data with a file."""
    content = b"file content \x00\xff" * 1000
    r = http.post(
        f"{flask_server.url}/upload",
        files={"file": ("data.bin", content)},
        data={"field": "value"},
        timeout=5,
    )
    assert r.status_code == 200
    got = r.json()
    assert got["filename"] == "data.bin" and got["size"] == len(content)
    assert got["content"].encode("latin-1") == content and got["field"] == "value"


def test_chunked_upload_get_data(flask_server, http):
    """PEP 3333 wsgi.input_terminated via Flask: a chunked upload read by request.get_data()."""

    def gen():
        for i in range(10):
            yield b"part%d;" % i

    r = http.post(f"{flask_server.url}/data", content=gen(), timeout=5)
    expected = "".join(f"part{i};" for i in range(10))
    assert r.json() == {"size": len(expected), "body": expected}


def test_streaming_response(flask_server):
    """PEP 3333 streaming via Flask: stream_with_context generator, chunked on HTTP/1.1."""
    with Conn(flask_server.port) as c:
        resp = c.request(b"GET /stream?prefix=r HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 200 and resp.framing == "chunked"
    assert resp.body == b"".join(b"r-%d\n" % i for i in range(5))


def test_send_file(flask_server, http):
    """PEP 3333 wsgi.file_wrapper via Flask: send_file of a temp file."""
    r = http.get(f"{flask_server.url}/send-file", timeout=5)
    assert r.status_code == 200
    assert r.content == b"flask send_file content\n" * 100
    assert r.headers["Content-Length"] == str(len(r.content))
