"""Find the WSGI application named on the command line: ``module``, ``module:attr``,
``module:factory()`` or ``module:factory(literal, args)``."""

from __future__ import annotations

import importlib
import keyword
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ast
    from types import ModuleType
    from typing import Any, Callable

__all__ = [
    "AppLoadError", "error_files", "failing_app", "format_app_traceback", "load_app",
    "load_configured", "load_paste", "parse_app_spec", "print_app_traceback",
]

_DEFAULT_NAMES = ("application", "app")


class AppLoadError(Exception):
    """The application could not be found; ``str()`` is one line saying why."""


class _Spec:
    """A parsed APP string: the module, the attribute path, and the factory call if any."""

    def __init__(
        self,
        module: str,
        attrs: list[str] | None,
        call: tuple[list[Any], dict[str, Any]] | None,
    ) -> None:
        self.module = module  # dotted module name to import
        self.attrs = attrs  # attribute path inside the module; None: try the default names
        self.call = call  # (args, kwargs) when APP is written as a call


def parse_app_spec(spec: str) -> _Spec:
    """Split and check an APP string without importing anything."""
    module, colon, expr = spec.strip().partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise AppLoadError(
            f"invalid application {spec!r}: expected MODULE, MODULE:NAME or MODULE:FACTORY(ARGS)"
        )
    if not colon:
        return _Spec(module, None, None)
    names = expr.strip().split(".")
    if all(name.isidentifier() and not keyword.iskeyword(name) for name in names):
        return _Spec(module, names, None)  # the common case, without loading the parser
    import ast

    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise AppLoadError(
            f"invalid application {spec!r}: {expr!r} is not a name or a call"
        ) from None
    call = None
    if isinstance(node, ast.Call):
        if any(kw.arg is None for kw in node.keywords) or any(
            isinstance(arg, ast.Starred) for arg in node.args
        ):
            raise AppLoadError(f"invalid application {spec!r}: * and ** are not allowed")
        try:
            args = [ast.literal_eval(arg) for arg in node.args]
            kwargs = {str(kw.arg): ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise AppLoadError(
                f"invalid application {spec!r}: factory arguments must be Python literals"
            ) from None
        call = (args, kwargs)
        node = node.func
    attrs = _dotted(node)
    if attrs is None:
        raise AppLoadError(f"invalid application {spec!r}: {expr!r} is not a name or a call")
    return _Spec(module, attrs, call)


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ['a', 'b', 'c']; None for anything else."""
    import ast

    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else [*head, node.attr]
    return None


def load_app(spec: str, *, factory: bool = False, cwd: str | None = None) -> Callable[..., Any]:
    """Import and return the application named by ``spec``.

    ``cwd`` (default: the current directory) goes to the front of ``sys.path`` first.
    ``factory=True`` calls the named attribute with no arguments. A missing module,
    attribute or a non-callable result is an ``AppLoadError``; anything the application's
    own code raises while importing or in its factory propagates unchanged.
    """
    parsed = parse_app_spec(spec)
    directory = os.getcwd() if cwd is None else cwd
    if not sys.path or sys.path[0] != directory:
        sys.path.insert(0, directory)
    module = _import(parsed.module)

    if parsed.attrs is None:
        for name in _DEFAULT_NAMES:
            if hasattr(module, name):
                target, label = getattr(module, name), f"{parsed.module}:{name}"
                break
        else:
            raise AppLoadError(
                f"module {parsed.module!r} has no 'application' or 'app'; "
                f"name the application: {parsed.module}:NAME"
            )
    else:
        target = module
        for depth, attr in enumerate(parsed.attrs):
            if not hasattr(target, attr):
                owner = ".".join([parsed.module, *parsed.attrs[:depth]])
                kind = "module" if depth == 0 else "object"
                raise AppLoadError(f"{kind} {owner!r} has no attribute {attr!r}")
            target = getattr(target, attr)
        label = f"{parsed.module}:{'.'.join(parsed.attrs)}"

    call = parsed.call
    if call is None and factory:
        call = ([], {})
    if call is not None:
        if not callable(target):
            raise AppLoadError(f"factory {label} is not callable (it is {_kind(target)})")
        app = target(*call[0], **call[1])
        if not callable(app):
            raise AppLoadError(f"factory {label} returned {_kind(app)}, not a WSGI application")
        return app  # type: ignore[no-any-return]
    if not callable(target):
        raise AppLoadError(f"application {label} is not callable (it is {_kind(target)})")
    return target  # type: ignore[no-any-return]


def load_configured(spec: str | None, config: Any, cwd: str) -> Callable[..., Any]:
    """The application the settings name: from ``--paste``'s ini file, else ``spec``, else
    the demo page."""
    if config.paste:
        return load_paste(config.paste, config.paste_global, cwd)
    if spec is None:
        from qiao._demo import demo_app

        return demo_app
    return load_app(spec, factory=config.factory, cwd=cwd)


def load_paste(ini: str, global_conf: dict[str, str], cwd: str) -> Callable[..., Any]:
    """The application of a PasteDeploy ini file (``app.ini``, or ``app.ini#name`` for
    another than ``main``), as gunicorn's ``--paste`` and Pyramid's pserve load it: with
    ``global_conf`` for its ``%(name)s`` values, and its ``[loggers]`` sections applied to
    Python's logging first."""
    path, _, name = ini.partition("#")
    path = os.path.join(cwd, path)
    if not os.path.isfile(path):
        raise AppLoadError(f"--paste: no such file {path!r}")
    try:
        from paste.deploy import loadapp  # type: ignore[import-untyped]
    except ImportError:
        raise AppLoadError(
            "--paste needs the PasteDeploy package: pip install PasteDeploy"
        ) from None
    import configparser

    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise AppLoadError(f"--paste: {path}: {e.message}") from None
    if parser.has_section("loggers"):
        import logging.config

        defaults = {"here": os.path.dirname(os.path.abspath(path)), "__file__": path}
        logging.config.fileConfig(path, defaults, disable_existing_loggers=False)
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)
    try:
        app = loadapp(
            f"config:{os.path.abspath(path)}", name=name or None, global_conf=dict(global_conf)
        )
    except LookupError as e:  # no such app section: the ini's fault, one line
        raise AppLoadError(f"--paste: {e}") from None
    if not callable(app):
        raise AppLoadError(f"--paste {ini} made {_kind(app)}, not a WSGI application")
    return app  # type: ignore[no-any-return]


def _import(name: str) -> ModuleType:
    """Import a module; only 'this module (or its package) does not exist' is ours to report."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise AppLoadError(
                f"no module named {missing!r} (looked in {sys.path[0]!r} and sys.path)"
            ) from None
        raise


def _kind(value: object) -> str:
    if value is None:
        return "None"
    return f"an object of type {type(value).__name__}"


def print_app_traceback(error: BaseException) -> None:
    """Print an error raised by the application's code, without qiao's and importlib's
    frames above it."""
    print(format_app_traceback(error), end="", file=sys.stderr)


def format_app_traceback(error: BaseException) -> str:
    """The traceback of an error raised by the application's code, without qiao's and
    importlib's frames above it. A SyntaxError has none of the app's frames (the compiler
    raised it): it is shown as Python shows one, by the file, line and caret alone."""
    import traceback

    ours = (os.path.dirname(__file__), os.path.dirname(importlib.__file__ or ""), "<frozen ")
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(ours):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def failing_app(error: BaseException) -> Callable[..., Any]:
    """``--reload``'s stand-in for an app whose code does not import: every request gets a
    500 page with the traceback (printed once, by the caller), until a save fixes it."""
    text = (
        "The application failed to load; qiao (--reload, for development) shows why until "
        "its source is fixed and saved.\n\n" + format_app_traceback(error)
    )
    body = text.encode("utf-8", "replace")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("500 Internal Server Error", headers)
        return [body]

    return app


def error_files(error: BaseException) -> list[str]:
    """The files an error of the app's import came from (the SyntaxError's file, the
    traceback's files): a save to one of them may fix it, so --reload watches them."""
    files = []
    if isinstance(error, SyntaxError) and error.filename:
        files.append(error.filename)
    tb = error.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".py") and name not in files:
            files.append(name)
        tb = tb.tb_next
    return files
