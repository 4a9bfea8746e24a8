"""The config file: TOML with the settings table's names as keys (``qiao.toml``, or the
``[tool.qiao]`` table of ``pyproject.toml``)."""

from __future__ import annotations

import os
import sys

from qiao.config import SETTINGS, ConfigError, did_you_mean

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["read_config_file"]

_NAMES = [setting.name for setting in SETTINGS]


def read_config_file(explicit: str | None, cwd: str | None = None) -> tuple[dict[str, Any], str]:
    """The settings of the config file and a label naming a key of it in errors.

    ``explicit`` is ``-c FILE``; without it, ``./qiao.toml`` or else ``[tool.qiao]`` of
    ``./pyproject.toml`` is read when present. No file: no settings.
    """
    cwd = cwd or os.getcwd()
    if explicit is not None:
        path = explicit
    elif os.path.isfile(os.path.join(cwd, "qiao.toml")):
        path = os.path.join(cwd, "qiao.toml")
    elif os.path.isfile(os.path.join(cwd, "pyproject.toml")):
        path = os.path.join(cwd, "pyproject.toml")
    else:
        return {}, "{name}"
    # TOML is parsed only when there is a file to read: the parser is resident in every
    # worker once the master imported it.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on older Pythons only
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if explicit is None and os.path.basename(path) == "pyproject.toml" and b"qiao" not in raw:
            return {}, "{name}"  # a project without qiao settings: no need to parse it
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 ({e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    shown = os.path.relpath(path, cwd) if explicit is None else path
    if os.path.basename(path) == "pyproject.toml":
        table = data.get("tool", {}).get("qiao")
        if table is None:
            if explicit is None:
                return {}, "{name}"  # a project without qiao settings
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
    return settings, f"{where}: {{name}}"
