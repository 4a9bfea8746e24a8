"""Run the same command line under qiao and under gunicorn, for the tests that check a
gunicorn behaviour side by side: ``SERVERS`` parametrizes a test over both (gunicorn's
cases skip, saying so, where gunicorn is not installed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

try:
    import gunicorn  # noqa: F401 - only whether it is there

    HAVE_GUNICORN = True
except ImportError:
    HAVE_GUNICORN = False

SERVERS = [
    "qiao",
    pytest.param(
        "gunicorn",
        marks=pytest.mark.skipif(not HAVE_GUNICORN, reason="gunicorn is not installed"),
    ),
]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment less QIAO_*/GUNICORN_* variables, with this process's qiao
    importable and output unbuffered."""
    import qiao

    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("QIAO_", "GUNICORN_")) and k != "SCRIPT_NAME"
    }
    parent = str(Path(qiao.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def command(server: str, *args: str) -> list[str]:
    return [sys.executable, "-m", server, *args]


def run(server: str, *args: str, cwd: Path, env: dict[str, str] | None = None):
    """Run to completion (a check, an error): the CompletedProcess."""
    return subprocess.run(
        command(server, *args), cwd=cwd, env=environment(env), capture_output=True,
        text=True, timeout=60, check=False,
    )


class Running:
    """A server started with ``start``: its process, its first address, and its stderr."""

    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]) -> None:
        self.proc = proc
        self.url = url
        self.lines = lines  # stderr, line by line, as it comes

    def log(self) -> str:
        return "".join(self.lines)

    def wait_log(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.log()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def start(server: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Running:
    """Start a server and wait (bounded) for its 'Listening at:' line."""
    proc = subprocess.Popen(
        command(server, *args), cwd=cwd, env=environment(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = re.search(r"Listening at: (\S+)", line)
            if match and not url:
                url.append(match.group(1))
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    found.wait(30)
    if not url:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"{server} did not start: {''.join(lines)}")
    return Running(proc, url[0].rstrip("/"), lines)
