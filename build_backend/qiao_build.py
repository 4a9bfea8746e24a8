"""qiao's build backend: maturin's, after a check that Rust's toolchain is there.

pip builds qiao from its sdist where no wheel fits the platform. Without ``cargo`` on
PATH, maturin would fetch a toolchain into a temporary directory and compile for minutes,
or fail deep in that attempt when offline; this says at once what is missing instead.
"""

from __future__ import annotations

import importlib
import shutil
import sys

MESSAGE = (
    "qiao: error: building qiao from source needs Rust's toolchain (cargo), which is not "
    "on PATH: install it from https://rustup.rs (or your system's cargo package) and run "
    "pip again. (pip installs a wheel, which needs no toolchain, where one fits: CPython "
    "on Linux and macOS.)"
)


def _maturin():
    """maturin's backend, once cargo is known to be there (imported late, so that the
    check needs nothing installed)."""
    if shutil.which("cargo") is None:
        # A line, not a traceback: pip shows what the hook printed.
        print(MESSAGE, file=sys.stderr)
        raise SystemExit(1)
    return importlib.import_module("maturin")


def get_requires_for_build_wheel(config_settings=None):
    return _maturin().get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    return _maturin().get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    return _maturin().get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _maturin().prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _maturin().build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _maturin().build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return _maturin().build_sdist(sdist_directory, config_settings)
