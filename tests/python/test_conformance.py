"""Replay gunicorn's HTTP/1.x request corpus (../shared/conformance/gunicorn-requests/).

Valid cases: the app (apps/echo_environ) must see the same method, PATH_INFO, QUERY_STRING,
SERVER_PROTOCOL, headers and body as cases.json lists. Invalid cases: a 4xx/5xx answer, a
closed connection, and no app call. Skips when the corpus is not beside the checkout.
"""

import base64
import json
import re
import socket
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from conftest import running_server
from httpclient import Conn, app_calls

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT.parent / "shared" / "conformance" / "gunicorn-requests"
CASES_FILE = CORPUS / "cases.json"

# Where qiao deliberately answers otherwise than gunicorn: {case: (status, reason)}. These
# cases are still replayed, and qiao must give that status (and, for an error, close the
# connection without calling the app). docs/behaviour.md explains each choice.
_FRAGMENT = "RFC 9112 §3.2: a request-target has no fragment; qiao refuses '#' with 400"
_CODING = (
    "RFC 9112 §6.1: a transfer coding other than chunked is not implemented: 501, so no "
    "body is framed by a coding qiao would not decode"
)
_SPACE_BEFORE_COLON = (
    "RFC 9112 §5.1: whitespace before the colon is refused (gunicorn accepts it only with "
    "its non-default strip_header_spaces)"
)
_UNDERSCORE = (
    "header names with '_' are dropped (gunicorn's default), not refused (its "
    "header_map=refuse)"
)
_PROXY = "PROXY protocol lines are not enabled (no such setting yet): a plain 400"
_USERINFO = (
    "RFC 9110 §4.2.4: a recipient SHOULD treat userinfo in an http(s) URI as an error; "
    "qiao refuses it with 400, because an absolute-form target's authority replaces Host "
    "(RFC 9112 §3.2.2), and gunicorn accepts it"
)
EXPECTED_DIFFERENCES = {
    "valid/005": (400, _FRAGMENT),
    "valid/009": (400, _FRAGMENT),
    "valid/025": (501, _CODING),
    "valid/025_line": (501, _CODING),
    "valid/029": (501, _CODING),
    "valid/030": (501, _CODING),
    "valid/rfc9112_smuggle_gzip_chunked_01": (501, _CODING),
    "valid/rfc9112_smuggle_te_identity_chunked_01": (501, _CODING),
    "valid/028": (400, _SPACE_BEFORE_COLON),
    "valid/compat_obs_fold": (400, "RFC 9112 §5.2: obsolete line folding is refused"),
    "valid/compat_obs_fold_huge": (400, "RFC 9112 §5.2: obsolete line folding is refused"),
    "valid/pp_01": (400, _PROXY),
    "valid/pp_02": (400, _PROXY),
    "valid/pp_04": (400, _PROXY),
    "valid/pp_05": (400, _PROXY),
    "valid/rfc9112_target_absolute_userinfo_01": (400, _USERINFO),
    "invalid/040": (200, _UNDERSCORE),
}

# The method is passed on as sent (RFC 9110 §9.1: methods are case-sensitive); gunicorn's
# non-default casefold_http_method upper-cases it.
CASEFOLDED = {"valid/031compat"}

# RFC 9112 §3.2.3: the target of CONNECT is the authority, and qiao gives all of it as
# PATH_INFO; gunicorn's "443" is what urlsplit makes of "example.com:443".
PATH_OVERRIDES = {"valid/rfc9112_target_authority_connect_01": "example.com:443"}

# Cases that cannot be replayed as they are: {case: reason}.
SKIPPED = {
    "valid/099": "the corpus file holds fewer body bytes than its Content-Length",
}

# HTTP/1.1 requests must carry Host (RFC 9112 §3.2): qiao answers 400 without one. Corpus
# requests that lack it are replayed once as they are (expecting that 400) and once with
# this Host added, to check everything else.
ADDED_HOST = "conformance.test"

# gunicorn parser settings that map onto qiao flags; other settings have no qiao
# equivalent and such cases run with qiao's defaults.
SETTING_FLAGS = {
    "limit_request_line": "--limit-request-line",
    "limit_request_fields": "--limit-request-fields",
    "limit_request_field_size": "--limit-request-field-size",
}

# Truncated requests: there is nothing to answer, so closing without a response is fine.
TRUNCATED_ERRORS = {"NoMoreData", "ChunkMissingTerminator"}


def load_cases():
    if not CASES_FILE.is_file():
        return []
    return json.loads(CASES_FILE.read_text())


CASES = load_cases()
pytestmark = pytest.mark.skipif(not CASES, reason=f"conformance corpus not found at {CORPUS}")


def flags_for(case):
    flags = []
    for name, value in sorted((case.get("gunicorn_settings") or {}).items()):
        # gunicorn reads 0 as "use the default maximum".
        if name in SETTING_FLAGS and value:
            flags += [SETTING_FLAGS[name], str(value)]
    return tuple(flags)


@pytest.fixture(scope="module")
def servers():
    """Echo servers keyed by their extra flags, started on first use, stopped at module end."""
    started = {}
    stack = []

    def get_server(flags):
        if flags not in started:
            cm = running_server("echo_environ:app", *flags)
            started[flags] = cm.__enter__()
            stack.append(cm)
        return started[flags]

    yield get_server
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def needs_host(want):
    return want["version"] == "HTTP/1.1" and not any(n == "HOST" for n, _ in want["headers"])


def add_host(data, requests):
    """Inserts a Host line after the request line of each request that lacks one."""
    starts = [m.end() for m in re.finditer(rb"(?:^|\n)[!-~]+ [^ \r\n]+ HTTP/\d\.\d\r\n", data)]
    out, last = [], 0
    for end, want in zip(starts, requests):
        if needs_host(want):
            out += [data[last:end], b"Host: " + ADDED_HOST.encode() + b"\r\n"]
            last = end
    return b"".join(out) + data[last:]


def expect_refusal(server, data, status):
    """The bytes get `status`, the connection closes, and the app is not called."""
    before = app_calls(server.port)
    with Conn(server.port) as c:
        c.send(data)
        c.sock.shutdown(socket.SHUT_WR)
        resp = c.read_response()
        assert resp.status == status, f"{resp.status} {resp.reason} {resp.body[:300]!r}"
        assert c.closed_by_peer(), "connection kept open after an invalid request"
    assert app_calls(server.port) == before + 1, "the app was called for an invalid request"


def expected_environ_headers(headers):
    """cases.json header pairs as the CGI keys PEP 3333 maps them to (repeats joined by ',')."""
    out = {}
    for name, value in headers:
        if "_" in name:
            continue  # dropped by design: could pose as a '-' name
        if name == "CONTENT-TYPE":
            key = "CONTENT_TYPE"
        elif name == "CONTENT-LENGTH":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.replace("-", "_")
        out[key] = out[key] + "," + value if key in out else value
    return out


VALID = [c for c in CASES if "requests" in c]
INVALID = [c for c in CASES if "requests" not in c]


@pytest.mark.parametrize("case", VALID, ids=[c["case"] for c in VALID])
def test_valid_request(servers, case):
    """RFC 9112 §2-§7 / PEP 3333 environ: a valid request reaches the app as the corpus says."""
    name = case["case"]
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    server = servers(flags_for(case))
    data = (CORPUS / case["file"]).read_bytes()
    if any(needs_host(want) for want in case["requests"]):
        if needs_host(case["requests"][0]):
            expect_refusal(server, data, 400)
        data = add_host(data, case["requests"])
    if name in EXPECTED_DIFFERENCES:
        expect_refusal(server, data, EXPECTED_DIFFERENCES[name][0])
        return
    with Conn(server.port) as c:
        c.send(data)
        for i, want in enumerate(case["requests"]):
            resp = c.read_response()
            assert resp.status == 200, (
                f"request {i}: {resp.status} {resp.reason} {resp.body[:300]!r}"
            )
            report = json.loads(resp.body)
            env = report["environ"]
            got = {
                "method": env["REQUEST_METHOD"],
                "path": env["SCRIPT_NAME"] + env["PATH_INFO"],
                "query": env.get("QUERY_STRING", ""),
                "version": env["SERVER_PROTOCOL"],
                "headers": {
                    k: v
                    for k, v in env.items()
                    if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")
                },
                "body": report["body"].encode("latin-1"),
            }
            headers = list(want["headers"])
            if needs_host(want):
                headers.append(["HOST", ADDED_HOST])
            expected = {
                "method": want["method"].lower() if name in CASEFOLDED else want["method"],
                "path": PATH_OVERRIDES.get(name)
                or unquote_to_bytes(want["path"].encode("latin-1")).decode("latin-1"),
                "query": want["query"],
                "version": want["version"],
                "headers": expected_environ_headers(headers),
                "body": base64.b64decode(want["body_base64"]),
            }
            assert got == expected, f"request {i} of {case['case']}"


@pytest.mark.parametrize("case", INVALID, ids=[c["case"] for c in INVALID])
def test_invalid_request(servers, case):
    """RFC 9112 (message parsing) / RFC 9110 §15.5: invalid bytes get a 4xx (501/505 where
    meant) and a close, and never reach the app."""
    server = servers(flags_for(case))
    data = (CORPUS / case["file"]).read_bytes()
    if case["case"] in EXPECTED_DIFFERENCES:
        status, _ = EXPECTED_DIFFERENCES[case["case"]]
        with Conn(server.port) as c:
            assert c.request(data).status == status
        return
    before = app_calls(server.port)
    with Conn(server.port) as c:
        c.send(data)
        c.sock.shutdown(socket.SHUT_WR)
        try:
            resp = c.read_response()
        except EOFError:
            resp = None
        if resp is None:
            assert case["gunicorn_error"] in TRUNCATED_ERRORS, "closed without an error response"
        else:
            assert 400 <= resp.status < 600, f"{resp.status} {resp.reason} {resp.body[:300]!r}"
            assert c.closed_by_peer(), "connection kept open after an invalid request"
    assert app_calls(server.port) == before + 1, "the app was called for an invalid request"
