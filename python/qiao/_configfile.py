"""The config file: TOML with the settings table's names as keys (``qiao.toml``, or the
``[tool.qiao]`` table of ``pyproject.toml``), or a Python file as gunicorn reads one
(``gunicorn.conf.py``, ``qiao.conf.py``, ``python:MODULE``; see ``_pyconfig``)."""

from __future__ import annotations

import os
import sys

from qiao._pyconfig import DEFAULT_FILES, is_python, settings_from, shown_name
from qiao.config import SETTINGS, ConfigError, did_you_mean

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["locate", "read_config_file"]

_NAMES = [setting.name for setting in SETTINGS]

def locate(explicit: str | None, cwd: str | None = None) -> str | None:
    """The config file to read: ``explicit`` (``-c``), else the first of ``DEFAULT_FILES`` in
    ``cwd`` that exists (a ``pyproject.toml`` only when it has a ``[tool.qiao]`` table),
    as an absolute path (a reload reads it again after ``--chdir``)."""
    if explicit is not None:
        return explicit
    cwd = os.path.abspath(cwd or os.getcwd())
    for name in DEFAULT_FILES:
        path = os.path.join(cwd, name)
        if not os.path.isfile(path):
            continue
        if name == "pyproject.toml" and not _has_qiao_table(path):
            continue
        return path
    return None


def _has_qiao_table(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return False
    if b"qiao" not in raw:
        return False  # a project without qiao settings: no need to parse it
    try:
        return _toml(path, raw).get("tool", {}).get("qiao") is not None
    except ConfigError:
        return True  # let the read say what is wrong with it


def read_config_file(
    explicit: str | None,
    cwd: str | None = None,
    namespace: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings of the config file and, for each, how errors name it.

    ``explicit`` is ``-c FILE``; without it the defaults of ``locate`` are looked for. No
    file: no settings. A Python file is read from ``namespace`` when given (the master ran
    it, see ``qiao.__main__``), else run here; its warnings (gunicorn settings qiao does not
    have) are printed to stderr.
    """
    cwd = cwd or os.getcwd()
    path = locate(explicit, cwd)
    if path is None:
        return {}, {}
    shown = shown_name(path)
    if is_python(path):
        from qiao._pyconfig import execute

        if namespace is None:
            namespace = execute(path)
        settings, keys, warnings = settings_from(namespace, shown)
        for warning in warnings:
            print(f"qiao: warning: {warning}", file=sys.stderr)
        return settings, {name: f"{shown}: {key}" for name, key in keys.items()}
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    data = _toml(path, raw)
    if os.path.basename(path) == "pyproject.toml":
        table = data.get("tool", {}).get("qiao")
        if table is None:
            raise ConfigError(f"{path}: no [tool.qiao] table")
        data, where = table, f"{shown} [tool.qiao]"
    else:
        where = shown
    settings = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _NAMES:
            raise ConfigError(f"{where}: unknown setting {key!r}{did_you_mean(name, _NAMES)}")
        settings[name] = value
    return settings, {name: f"{where}: {name}" for name in settings}


def _toml(path: str, raw: bytes) -> dict[str, Any]:
    # TOML is parsed only when there is a file to read: the parser is resident in every
    # worker once the master imported it.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on older Pythons only
        import tomli as tomllib
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
