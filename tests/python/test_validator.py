"""PEP 3333 as wsgiref.validate checks it: the server passes validator() on several requests."""

from httpclient import Conn


def test_validator_app_runs_clean():
    """PEP 3333 (wsgiref.validate): GET, POST with a body, HEAD and a chunked upload run
    without AssertionError or WSGIWarning, and every iterable is closed."""
    from conftest import running_server

    with running_server("validated:app") as server:
        with Conn(server.port) as c:
            r = c.request(b"GET /g?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (r.status, r.body) == (200, b"method=GET path=/g body=")
            r = c.request(
                b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
            )
            assert (r.status, r.body) == (200, b"method=POST path=/p body=hello")
            r = c.request(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD")
            assert r.status == 200
            r = c.request(
                b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            assert (r.status, r.body) == (200, b"method=POST path=/c body=abcde")
        server.stop()
        log = server.log()
    for bad in (
        "AssertionError",
        "WSGIWarning",
        "Traceback",
        "garbage collected without being closed",
    ):
        assert bad not in log, log
