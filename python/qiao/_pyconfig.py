"""Python config files, as gunicorn reads them (``gunicorn.conf.py``, ``qiao.conf.py``,
``python:module.name``): the file is executed, and its module-level names are read as
settings, by gunicorn's names or qiao's, and as server hooks.

The file runs in the master (its hooks are called there and in the workers it forks, as
in gunicorn); ``settings_from`` reads the names, in the process that resolves settings.
"""

from __future__ import annotations

import os
import sys

from qiao.config import SETTINGS, ConfigError, did_you_mean

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFAULT_FILES", "describe", "execute", "is_python", "settings_from", "shown_name"]

# The config files looked for in the working directory when no -c is given, in this order
# (see qiao._configfile; here because the master, which runs Python config files, must
# not import that module's TOML reading).
DEFAULT_FILES = ("qiao.toml", "qiao.conf.py", "pyproject.toml", "gunicorn.conf.py")

# A config file's name for each setting: qiao's own, and gunicorn's where it differs.
_NAMES: dict[str, str] = {}
for _setting in SETTINGS:
    _NAMES[_setting.name] = _setting.name
    if _setting.gunicorn is not None:
        _NAMES[_setting.gunicorn] = _setting.name
# Names gunicorn keeps for itself: the config file's own path, and the name it derives
# proc_name from.
_PASSED_OVER = ("config", "default_proc_name")


def shown_name(path: str) -> str:
    """How errors name a config file: a default one by its name in the working directory
    (``gunicorn.conf.py``), one given with ``-c`` as it was given."""
    directory, name = os.path.split(path)
    if name in DEFAULT_FILES and directory == os.getcwd():
        return name
    return path


def is_python(location: str) -> bool:
    """Whether ``-c LOCATION`` names a Python config file: all but ``.toml`` files are, as
    gunicorn runs any file it is given as Python."""
    return location.startswith(("python:", "file:")) or not location.endswith(".toml")


def execute(location: str) -> dict[str, Any]:
    """Run the config file (a path, ``file:PATH`` or ``python:MODULE``) and return its
    module-level names; any failure is a one-line ``ConfigError`` naming the file and line."""
    import importlib.machinery
    import importlib.util

    if location.startswith("python:"):
        name = location[len("python:"):]
        try:
            return dict(vars(importlib.import_module(name)))
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                raise ConfigError(f"-c {location}: no module named {e.name!r}") from None
            raise ConfigError(describe(e, location)) from None
        except Exception as e:  # noqa: BLE001 - the user's file: one line saying where
            raise ConfigError(describe(e, location)) from None
    path = location.removeprefix("file:")
    shown = shown_name(path)
    if not os.path.isfile(path):
        raise ConfigError(f"cannot read config file {path}: no such file")
    # As gunicorn does: a module named __config__, with __file__ set, in sys.modules while
    # it runs (a file may import itself by that name).
    spec = importlib.util.spec_from_file_location(
        "__config__", path, loader=importlib.machinery.SourceFileLoader("__config__", path)
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["__config__"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file: one line saying where
        raise ConfigError(describe(e, shown, path)) from None
    return dict(vars(module))


def describe(error: BaseException, where: str | None = None, path: str | None = None) -> str:
    """``FILE:LINE: Type: message`` for an error raised by a config file or a hook, the line
    being the deepest frame in a Python file of the user's (the config file, ``path``, is
    shown as ``where``)."""
    line = None
    if isinstance(error, SyntaxError) and error.filename:
        line = error.lineno
        if error.filename != path:
            where = shown_name(error.filename)
        text = f"SyntaxError: {error.msg}"
    else:
        tb = error.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename.endswith(".py") and not filename.startswith(_SKIPPED):
                where = where if filename == path else shown_name(filename)
                line = tb.tb_lineno
            tb = tb.tb_next
        text = f"{type(error).__name__}: {error}"
    if where is None:
        return text
    return f"{where}:{line}: {text}" if line else f"{where}: {text}"


_SKIPPED = (os.path.dirname(__file__), os.path.dirname(os.__file__), "<frozen ")


def settings_from(
    namespace: dict[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The settings of an executed config file (by qiao's names), the label of each in
    errors (the name the file used), and warnings to show. gunicorn settings qiao lacks
    are judged by ``qiao._gunicorn.verdict`` (an error raises ``ConfigError``); hooks are
    checked by ``qiao._hooks.check``; other names (imports, helpers) are the file's own."""
    from qiao import _gunicorn, _hooks

    settings: dict[str, Any] = {}
    labels: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in namespace.items():
        if key.startswith("_") or key in _PASSED_OVER:
            continue
        if key in _hooks.HOOKS:
            _hooks.check(key, value, where)
            if key in _hooks.NEVER_CALLED:
                warnings.append(f"{where}: {key} is never called: {_hooks.NEVER_CALLED[key]}")
            continue
        if key in _gunicorn.HOOK_ERRORS:
            raise ConfigError(f"{where}: {key}: {_gunicorn.HOOK_ERRORS[key]}")
        name = _NAMES.get(key)
        if name is not None:
            if name in settings:
                raise ConfigError(f"{where}: {labels[name]} and {key} are the same setting")
            settings[name] = value
            labels[name] = key
            continue
        judged = _gunicorn.verdict(key, value)
        if judged is not None:
            severity, message = judged
            if severity == "error":
                raise ConfigError(f"{where}: {message}")
            warnings.append(f"{where}: {message}")
            continue
        if key not in _gunicorn.ABSENT and _looks_like_a_setting(value):
            # A high bar: config files hold helper names of their own (use_loglevel,
            # workers_per_core) that must not be taken for typos.
            close = did_you_mean(key, [*_NAMES, *_hooks.HOOKS], cutoff=0.85)
            if close:
                warnings.append(f"{where}: {key!r} is not a setting{close} (ignored)")
    return settings, labels, warnings


def _looks_like_a_setting(value: object) -> bool:
    """A plain value or a function: what a misspelt setting or hook would hold (modules,
    classes and other objects a file imports are its own business)."""
    import types

    return isinstance(value, (str, int, float, list, tuple, dict, types.FunctionType))
