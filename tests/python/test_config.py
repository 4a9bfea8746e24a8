"""The settings table and Config (qiao.config), bind strings and listening sockets
(qiao._bind), application loading (qiao._loader) and the engine-free parts of
make_server(). None of these needs the Rust engine."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
try:
    import qiao  # noqa: F401
except ImportError:  # not installed yet: use the source tree
    sys.path.insert(0, str(ROOT / "python"))

from qiao import Config, ConfigError, WSGIServer, _qiao, make_server
from qiao._bind import Address, BindError, bind_all, display, parse_bind
from qiao._demo import demo_app
from qiao._loader import AppLoadError, load_app
from qiao.config import SETTINGS

_BY_NAME = {setting.name: setting for setting in SETTINGS}

NO_ENV: dict[str, str] = {}


# -- the table and its defaults


def test_defaults_are_gunicorns_where_the_names_match():
    """Defaults: gunicorn's values for bind, workers, threads, backlog, keep-alive, limits."""
    config = Config(env=NO_ENV)
    assert config.bind == ["127.0.0.1:8000"]
    assert config.workers == 1
    assert config.threads == 1
    assert config.backlog == 2048
    assert config.root_path == ""
    assert config.access_logfile is None
    assert config.access_logformat == '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    assert config.error_logfile == "-"
    assert config.log_level == "info"
    assert config.chdir is None
    assert config.factory is False
    assert config.keep_alive == 2.0
    assert config.header_timeout == 10.0
    assert config.limit_request_line == 4094
    assert config.limit_request_fields == 100
    assert config.limit_request_field_size == 8190
    assert config.max_request_body_size == 1 << 30


def test_engine_settings_has_exactly_the_engines_keys():
    """Config.engine_settings() holds every key the engine reads (its own list, made from
    its settings' names) and no other, and the engine accepts it; the defaults are the
    table's."""
    settings = Config(env=NO_ENV).engine_settings()
    assert set(settings) == set(_qiao.ENGINE_SETTINGS)
    for name in ("keep_alive", "threads", "output_budget", "write_timeout"):
        assert settings[name] == _BY_NAME[name].default
    assert isinstance(settings["keep_alive"], float)
    _qiao.Engine(demo_app, settings, [])


def test_the_engine_refuses_a_settings_dict_it_does_not_match():
    """One list of engine settings: a missing key and an unknown one are each an error
    naming the key."""
    settings = Config(env=NO_ENV).engine_settings()
    missing = dict(settings)
    del missing["keep_alive"]
    with pytest.raises(ValueError, match="missing setting keep_alive"):
        _qiao.Engine(demo_app, missing, [])
    with pytest.raises(ValueError, match="setting nope: not an engine setting"):
        _qiao.Engine(demo_app, dict(settings, nope=1), [])


def test_engine_settings_turn_zero_limits_into_concrete_bounds():
    """A limit of 0 reaches the engine as its cap (8190, 32768) or sys.maxsize (no limit)."""
    config = Config(
        {
            "limit_request_line": 0,
            "limit_request_fields": 0,
            "limit_request_field_size": 0,
            "max_request_body_size": 0,
        },
        env=NO_ENV,
    )
    settings = config.engine_settings()
    assert settings["limit_request_line"] == 8190
    assert settings["limit_request_fields"] == 32768
    assert settings["limit_request_field_size"] == sys.maxsize
    assert settings["max_request_body_size"] == sys.maxsize


def test_engine_settings_cap_line_and_field_count_like_gunicorn():
    """Values over gunicorn's caps are accepted and capped: 8190 bytes, 32768 fields."""
    config = Config({"limit_request_line": 8200, "limit_request_fields": 40000}, env=NO_ENV)
    assert config.limit_request_line == 8200
    settings = config.engine_settings()
    assert settings["limit_request_line"] == 8190
    assert settings["limit_request_fields"] == 32768


def test_every_setting_has_doc_flag_and_env_name():
    """The table yields a CLI flag and a QIAO_<NAME> variable for every setting (but
    wsgi_app, which APP on the command line is)."""
    for setting in SETTINGS:
        assert setting.doc
        assert setting.flag.startswith("--")
        assert setting.flags or setting.name == "wsgi_app"
        assert setting.env == "QIAO_" + setting.name.upper()


def test_docs_list_every_setting():
    """docs/configuration.md names every setting, its flag and its env var."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert f"`{setting.name}`" in text
        assert f"`{setting.env}`" in text
        if setting.flags:
            assert f"`{setting.flag}" in text
        else:  # a config-file setting (gunicorn's wsgi_app): the docs say it has no flag
            assert f"| `{setting.name}` | none" in text


# -- precedence


def test_env_overrides_kwargs():
    """Precedence: QIAO_<NAME> beats a keyword argument."""
    config = Config({"threads": 3}, env={"QIAO_THREADS": "5"})
    assert config.threads == 5
    assert config.source("threads") == "QIAO_THREADS"


def test_cli_overrides_env():
    """Precedence: a command-line flag beats QIAO_<NAME>."""
    config = Config(env={"QIAO_THREADS": "5"}, cli={"threads": "7"})
    assert config.threads == 7
    assert config.source("threads") == "--threads"


def test_kwargs_override_defaults():
    """Precedence: a keyword argument beats the default; untouched settings keep theirs."""
    config = Config({"keep_alive": 5}, env=NO_ENV)
    assert config.keep_alive == 5.0
    assert config.source("keep_alive") == "keep_alive"
    assert config.source("threads") == "default"


def test_script_name_sets_root_path_and_qiao_root_path_wins():
    """SCRIPT_NAME in the environment sets root_path (as gunicorn); QIAO_ROOT_PATH beats it."""
    assert Config(env={"SCRIPT_NAME": "/app/"}).root_path == "/app"
    both = {"SCRIPT_NAME": "/a", "QIAO_ROOT_PATH": "/b"}
    assert Config(env=both).root_path == "/b"


def test_env_bind_is_split_on_spaces_and_commas():
    """QIAO_BIND holds several addresses separated by spaces or commas."""
    config = Config(env={"QIAO_BIND": "127.0.0.1:1, unix:/tmp/q.sock  [::1]:2"})
    assert config.bind == ["127.0.0.1:1", "unix:/tmp/q.sock", "[::1]:2"]


def test_env_factory_is_a_boolean():
    """QIAO_FACTORY accepts true/false words."""
    assert Config(env={"QIAO_FACTORY": "yes"}).factory is True
    assert Config(env={"QIAO_FACTORY": "0"}).factory is False


# -- unknown names and bad values


def test_unknown_kwarg_names_it_and_suggests():
    """An unknown setting is a ConfigError (a ValueError) naming it, with close matches."""
    with pytest.raises(ConfigError) as info:
        Config({"thread": 4}, env=NO_ENV)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("unknown setting 'thread'; did you mean 'threads'")


def test_unknown_kwarg_without_close_match():
    """No suggestion when nothing is close."""
    with pytest.raises(ConfigError, match=r"^unknown setting 'zzz'$"):
        Config({"zzz": 1}, env=NO_ENV)


@pytest.mark.parametrize(
    ("kwargs", "env", "cli", "message"),
    [
        ({}, {}, {"threads": "abc"}, "--threads: expected a positive integer, got 'abc'"),
        ({}, {"QIAO_THREADS": "0"}, {}, "QIAO_THREADS: expected a positive integer, got '0'"),
        ({"threads": True}, {}, {}, "threads: expected a positive integer, got True"),
        ({"threads": 2.5}, {}, {}, "threads: expected a positive integer, got 2.5"),
        ({}, {}, {"keep_alive": "-1"}, "--keep-alive: expected a number of seconds >= 0, got '-1'"),
        ({"header_timeout": 0}, {}, {}, "header_timeout: expected a number of seconds > 0, got 0"),
        ({}, {}, {"log_level": "loud"},
         "--log-level: expected one of debug, info, warning, error, critical, got 'loud'"),
        ({}, {}, {"limit_request_line": "-1"},
         "--limit-request-line: expected an integer >= 0, got '-1'"),
        ({}, {}, {"limit_request_fields": "many"},
         "--limit-request-fields: expected an integer >= 0, got 'many'"),
        ({}, {}, {"max_request_body_size": "10X"},
         ("--max-request-body-size: expected a size in bytes >= 0, such as 1048576 or 1M, "
         "got '10X'")),
        ({}, {}, {"root_path": "app"},
         "--root-path: expected a path that starts with '/', or '', got 'app'"),
        ({}, {}, {"bind": ["127.0.0.1:80", "localhost:http"]},
         "--bind: expected a port from 0 to 65535, got 'localhost:http'"),
        ({}, {}, {"bind": ["::1"]},
         "--bind: an IPv6 address needs brackets, as in [::1]:8000, got '::1'"),
        ({"bind": 8000}, {}, {},
         "bind: expected an address string or a list of them, got 8000"),
    ],
)
def test_bad_value_is_one_line_naming_the_setting(kwargs, env, cli, message):
    """A bad value: ConfigError 'SOURCE: expected ..., got VALUE' naming flag, var or key."""
    with pytest.raises(ConfigError) as info:
        Config(kwargs, env=env, cli=cli)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_forwarded_allow_ips_defaults_and_forms():
    """gunicorn's default (127.0.0.1,::1) and its FORWARDED_ALLOW_IPS variable, weaker
    than QIAO_FORWARDED_ALLOW_IPS; CIDR networks normalised; '*' alone; '' trusts none."""
    assert Config(env=NO_ENV).forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert Config(env={"FORWARDED_ALLOW_IPS": "10.0.0.1"}).forwarded_allow_ips == ["10.0.0.1"]
    both = {"FORWARDED_ALLOW_IPS": "10.0.0.1", "QIAO_FORWARDED_ALLOW_IPS": "10.0.0.2"}
    assert Config(env=both).forwarded_allow_ips == ["10.0.0.2"]
    config = Config({"forwarded_allow_ips": "10.1.2.3/16, fd00::1/8 192.0.2.1"}, env=NO_ENV)
    assert config.forwarded_allow_ips == ["10.1.0.0/16", "fd00::/8", "192.0.2.1"]
    assert Config({"forwarded_allow_ips": ["*", "10.0.0.1"]}, env=NO_ENV).forwarded_allow_ips == [
        "*"
    ]
    assert Config({"forwarded_allow_ips": ""}, env=NO_ENV).forwarded_allow_ips == []
    with pytest.raises(ConfigError, match="got 'localhost'"):
        Config({"forwarded_allow_ips": "127.0.0.1,localhost"}, env=NO_ENV)


def test_secure_scheme_headers_forms():
    """gunicorn's secure_scheme_headers: a dict (config file, kwargs) or NAME=VALUE pairs;
    the engine gets (name, value) pairs."""
    config = Config(env=NO_ENV)
    assert config.secure_scheme_headers == {
        "X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on",
    }
    config = Config({"secure_scheme_headers": {"X-Scheme": "secure"}}, env=NO_ENV)
    assert config.engine_settings()["secure_scheme_headers"] == [("X-SCHEME", "secure")]
    config = Config(cli={"secure_scheme_headers": "X-A=on, X-B=https"}, env=NO_ENV)
    assert config.secure_scheme_headers == {"X-A": "on", "X-B": "https"}
    assert Config(cli={"secure_scheme_headers": ""}, env=NO_ENV).secure_scheme_headers == {}
    with pytest.raises(ConfigError, match="got 'X-A'"):
        Config(cli={"secure_scheme_headers": "X-A"}, env=NO_ENV)


def test_forwarded_headers_counts():
    """Werkzeug ProxyFix's counts: host means host=1; the engine gets one count per field
    (0: not read)."""
    assert Config(env=NO_ENV).engine_settings()["forwarded_host"] == 0
    config = Config(cli={"forwarded_headers": "host, X-Forwarded-Prefix=2"}, env=NO_ENV)
    assert config.forwarded_headers == {"host": 1, "prefix": 2}
    settings = config.engine_settings()
    assert (settings["forwarded_host"], settings["forwarded_port"],
            settings["forwarded_prefix"]) == (1, 0, 2)
    assert Config({"forwarded_headers": ["port"]}, env=NO_ENV).forwarded_headers == {"port": 1}
    for bad in ("scheme", "host=0", "host=x"):
        with pytest.raises(ConfigError, match="expected some of host, port, prefix"):
            Config(cli={"forwarded_headers": bad}, env=NO_ENV)


def test_workers_count_or_auto():
    """--workers takes a positive count or 'auto' (one per CPU this process may use)."""
    assert Config(env=NO_ENV, cli={"workers": "4"}).workers == 4
    assert Config(env=NO_ENV, cli={"workers": "auto"}).workers == len(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match=r"^--workers: expected a positive integer or 'auto'"):
        Config(env=NO_ENV, cli={"workers": "0"})


def test_max_worker_memory_is_refused_where_proc_is_missing(monkeypatch):
    """--max-worker-memory reads a worker's RSS from /proc: elsewhere (macOS) a bound is
    refused in one line, rather than never enforced; 0 (off) is fine everywhere."""
    assert Config(env=NO_ENV, cli={"max_worker_memory": "300"}).max_worker_memory == 300
    monkeypatch.setattr(sys, "platform", "darwin")
    assert Config(env=NO_ENV, cli={"max_worker_memory": "0"}).max_worker_memory == 0
    with pytest.raises(ConfigError, match=r"^--max-worker-memory: this works on Linux only "
                       r"\(it reads /proc\); this is darwin"):
        Config(env=NO_ENV, cli={"max_worker_memory": "300"})


def test_sizes_take_binary_suffixes():
    """max_request_body_size accepts K/M/G suffixes (powers of 1024)."""
    assert Config({"max_request_body_size": "1M"}, env=NO_ENV).max_request_body_size == 1 << 20
    assert Config({"max_request_body_size": "2GiB"}, env=NO_ENV).max_request_body_size == 2 << 30


def test_log_level_is_case_insensitive():
    """--log-level DEBUG is accepted as debug."""
    assert Config(env=NO_ENV, cli={"log_level": "DEBUG"}).log_level == "debug"


# -- bind strings


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8080", Address("tcp", host="127.0.0.1", port=8080)),
        ("localhost", Address("tcp", host="localhost", port=8000)),
        (":9000", Address("tcp", host="", port=9000)),
        ("[::1]:8080", Address("tcp", host="::1", port=8080)),
        ("[::]", Address("tcp", host="::", port=8000)),
        ("tcp://0.0.0.0:0", Address("tcp", host="0.0.0.0", port=0)),
        ("unix:/run/qiao.sock", Address("unix", path="/run/qiao.sock")),
        ("fd://3", Address("fd", fd=3)),
    ],
)
def test_bind_forms(text, address):
    """Bind strings: HOST:PORT, HOST (port 8000), :PORT, [V6]:PORT, unix:PATH, fd://N."""
    assert parse_bind(text) == address


@pytest.mark.parametrize(
    "text", ["", "host:", "host:65536", "[::1", "[::1]8000", "::1", "unix:", "fd://x", "a/b:1"]
)
def test_bad_bind_strings(text):
    """Malformed bind strings are ValueErrors."""
    with pytest.raises(ValueError):
        parse_bind(text)


def test_address_str_shows_all_interfaces_and_brackets():
    """str(Address) is a bind string: '' shows as 0.0.0.0, IPv6 gets brackets."""
    assert str(parse_bind(":80")) == "0.0.0.0:80"
    assert str(parse_bind("[::1]:80")) == "[::1]:80"


# -- listening sockets


def test_bind_tcp_port_zero_listens_on_an_ephemeral_port():
    """Port 0 asks the kernel for a port; the socket is listening with SO_REUSEADDR."""
    (sock,) = bind_all([parse_bind("127.0.0.1:0")], backlog=16)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert display(sock) == f"http://127.0.0.1:{port}"
        socket.create_connection((host, port), timeout=2).close()
    finally:
        sock.close()


def test_bind_ipv6_is_v6_only():
    """An IPv6 listener has IPV6_V6ONLY set."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        (sock,) = bind_all([parse_bind("[::1]:0")], backlog=16)
    except BindError:
        pytest.skip("::1 not available")
    try:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert display(sock).startswith("http://[::1]:")
    finally:
        sock.close()


def test_address_in_use_is_one_line_naming_the_address():
    """A busy port: BindError 'cannot bind HOST:PORT: address already in use'."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        with pytest.raises(BindError) as info:
            bind_all([parse_bind(f"127.0.0.1:{port}")], backlog=16)
        assert str(info.value) == f"cannot bind 127.0.0.1:{port}: address already in use"
    finally:
        busy.close()


def test_failed_bind_closes_sockets_already_opened(tmp_path):
    """When the second address fails, the first socket is closed and its file removed."""
    path = tmp_path / "a.sock"
    with pytest.raises(BindError):
        bind_all([parse_bind(f"unix:{path}"), parse_bind("fd://987")], backlog=16)
    assert not path.exists()


def test_unix_socket_replaces_a_stale_socket_file(tmp_path):
    """unix:PATH removes a leftover socket file before binding, and only a socket file."""
    path = tmp_path / "q.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    (sock,) = bind_all([parse_bind(f"unix:{path}")], backlog=16)
    try:
        assert display(sock) == f"unix:{path}"
    finally:
        sock.close()


def test_unix_socket_refuses_to_remove_a_regular_file(tmp_path):
    """unix:PATH never deletes a file that is not a socket."""
    path = tmp_path / "data.txt"
    path.write_text("keep me")
    with pytest.raises(BindError, match="exists and is not a socket"):
        bind_all([parse_bind(f"unix:{path}")], backlog=16)
    assert path.read_text() == "keep me"


def test_fd_adopts_an_inherited_listening_socket():
    """fd://N wraps an open listening socket without rebinding it."""
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen()
    fd = os.dup(inherited.fileno())
    inherited.close()
    (sock,) = bind_all([parse_bind(f"fd://{fd}")], backlog=16)
    try:
        assert sock.fileno() == fd
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_fd_that_is_not_open_is_an_error():
    """fd://N with a closed descriptor: one line naming it."""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(BindError, match=rf"^cannot bind fd://{r}: not an open file descriptor$"):
        bind_all([parse_bind(f"fd://{r}")], backlog=16)


# -- application loading


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    """A directory of throwaway modules, importable and forgotten after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(directory: Path, name: str, source: str) -> None:
    (directory / name).write_text(source)


APP_SOURCE = """
def application(environ, start_response):
    start_response("200 OK", [])
    return [b"application"]

def app(environ, start_response):
    start_response("200 OK", [])
    return [b"app"]

def create_app(name="default", *, debug=False):
    def made(environ, start_response):
        return [name.encode()]
    made.args = (name, debug)
    return made

not_callable = 42

def bad_factory():
    return 42
"""


def test_load_module_attr(app_dir):
    """MODULE:NAME returns the module's attribute."""
    write(app_dir, "site_a.py", APP_SOURCE)
    assert load_app("site_a:app", cwd=str(app_dir)).__name__ == "app"


def test_load_bare_module_prefers_application(app_dir):
    """A bare MODULE uses 'application', then 'app'."""
    write(app_dir, "site_b.py", APP_SOURCE)
    write(app_dir, "site_c.py", "def app(e, s): pass\n")
    assert load_app("site_b", cwd=str(app_dir)).__name__ == "application"
    assert load_app("site_c", cwd=str(app_dir)).__name__ == "app"


def test_load_factory_call_with_literal_args(app_dir):
    """MODULE:FACTORY(ARGS) calls the factory with literal positional and keyword args."""
    write(app_dir, "site_d.py", APP_SOURCE)
    app = load_app("site_d:create_app('x', debug=True)", cwd=str(app_dir))
    assert app.args == ("x", True)
    assert load_app("site_d:create_app()", cwd=str(app_dir)).args == ("default", False)


def test_load_factory_flag_calls_with_no_args(app_dir):
    """--factory calls the named attribute with no arguments."""
    write(app_dir, "site_e.py", APP_SOURCE)
    assert load_app("site_e:create_app", factory=True, cwd=str(app_dir)).args == (
        "default",
        False,
    )


def test_load_puts_cwd_first_on_sys_path(app_dir):
    """The working directory goes to sys.path[0] before the import."""
    write(app_dir, "site_f.py", APP_SOURCE)
    load_app("site_f:app", cwd=str(app_dir))
    assert sys.path[0] == str(app_dir)


def test_factory_args_are_never_evaluated(app_dir):
    """Factory arguments must be literals: names and calls are refused, not evaluated."""
    write(app_dir, "site_g.py", APP_SOURCE)
    with pytest.raises(AppLoadError, match="must be Python literals"):
        load_app("site_g:create_app(__import__('os'))", cwd=str(app_dir))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_mod:app", "no module named 'no_such_mod'"),
        ("no_such_pkg.sub:app", "no module named 'no_such_pkg'"),
        ("site_h:missing", "module 'site_h' has no attribute 'missing'"),
        ("site_h:not_callable", "application site_h:not_callable is not callable"),
        ("site_h:not_callable()", "factory site_h:not_callable is not callable"),
        ("site_h:bad_factory()", "factory site_h:bad_factory returned an object of type int"),
        ("site_h:app(", "invalid application 'site_h:app('"),
        ("site-h:app", "invalid application 'site-h:app'"),
        ("site_h:1 + 2", "invalid application 'site_h:1 + 2'"),
    ],
)
def test_loader_errors_are_one_line(app_dir, spec, message):
    """Missing module or attribute, non-callables and malformed APPs are AppLoadError."""
    write(app_dir, "site_h.py", APP_SOURCE)
    with pytest.raises(AppLoadError) as info:
        load_app(spec, cwd=str(app_dir))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_missing_module_inside_the_app_propagates(app_dir):
    """An ImportError from the app's own imports is not 'module not found': it propagates."""
    write(app_dir, "site_i.py", "import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError) as info:
        load_app("site_i:app", cwd=str(app_dir))
    assert info.value.name == "no_such_dependency_xyz"


def test_app_import_error_propagates(app_dir):
    """Any other exception raised while importing the app propagates unchanged."""
    write(app_dir, "site_j.py", "raise RuntimeError('broken app')\n")
    with pytest.raises(RuntimeError, match="broken app"):
        load_app("site_j", cwd=str(app_dir))


# -- the demo app


def test_demo_app_is_pep3333_correct():
    """PEP 3333: native-string status and headers (latin-1), bytes body, Content-Length."""
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/<script>", "wsgi.version": (1, 0)}
    body = b"".join(demo_app(environ, start_response))
    assert seen["status"] == "200 OK"
    for name, value in seen["headers"]:
        assert type(name) is str and type(value) is str
        name.encode("latin-1"), value.encode("latin-1")
    assert dict(seen["headers"])["Content-Length"] == str(len(body))
    assert b"qiao is running" in body
    assert b"&lt;script&gt;" in body and b"<script>" not in body


# -- make_server without the engine


def app_stub(environ, start_response):
    start_response("204 No Content", [])
    return []


def test_make_server_binds_at_once():
    """make_server('', 0, app): all IPv4 interfaces, an ephemeral port, wsgiref attributes."""
    server = make_server("", 0, app_stub)
    try:
        assert isinstance(server, WSGIServer)
        host, port = server.server_address
        assert host == "0.0.0.0" and port > 0 and server.server_port == port
        assert server.get_app() is app_stub
    finally:
        server.server_close()


def test_make_server_rejects_server_and_handler_classes():
    """wsgiref's server_class/handler_class: only None is accepted."""
    with pytest.raises(TypeError, match="server_class and handler_class"):
        make_server("127.0.0.1", 0, app_stub, object)
    with pytest.raises(TypeError):
        make_server("127.0.0.1", 0, app_stub, handler_class=object)


def test_make_server_rejects_unknown_settings():
    """Settings are keyword arguments; a misspelt one is a ConfigError."""
    with pytest.raises(ConfigError, match="did you mean 'threads'"):
        make_server("127.0.0.1", 0, app_stub, thread=4)


def test_server_close_is_idempotent_and_shutdown_safe_when_idle():
    """server_close() twice is fine; shutdown() on a server that is not serving returns."""
    server = make_server("127.0.0.1", 0, app_stub)
    server.shutdown()
    with server:
        pass
    server.server_close()
    assert server.sockets[0].fileno() == -1


def test_server_close_removes_its_unix_socket_file(tmp_path):
    """A Unix socket qiao bound is unlinked by server_close()."""
    path = tmp_path / "s.sock"
    config = Config({"bind": f"unix:{path}"}, env=NO_ENV)
    server = WSGIServer(app_stub, config, bind_all(config.addresses, config.backlog))
    assert server.server_address == str(path)
    server.server_close()
    assert not path.exists()


def test_static_mounts_forms(tmp_path):
    """--static URL_PREFIX=DIRECTORY: the flag repeated, a config file's list or table, an
    environment variable's commas; each reaches the engine as a (prefix, directory) pair."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    want = [("/static", str(a)), ("/media/", str(b))]
    for config in (
        Config(cli={"static": [f"/static={a}", f"/media/={b}"]}, env=NO_ENV),
        Config({"static": {"/static": a, "/media/": str(b)}}, env=NO_ENV),
        Config(env={"QIAO_STATIC": f"/static={a}, /media/={b}"}),
    ):
        assert config.engine_settings()["static_mounts"] == want
    assert Config(env=NO_ENV).engine_settings()["static_mounts"] == []
    for bad, why in (
        ([f"static={a}"], "the prefix starting with /"),
        (["/static="], "the prefix starting with /"),
        ([f"/s?x={a}"], "a plain path"),
        ([f"/s={a}", f"/s/={b}"], "given twice"),
        ([f"/s={tmp_path / 'none'}"], "not a directory"),
    ):
        with pytest.raises(ConfigError, match=why):
            Config(cli={"static": bad}, env=NO_ENV)
