"""qiao as users install it: the wheel's contents and tags (PEP 427, PEP 600), the
installed `qiao` command, the sdist without Rust, and docs/deployment.md's Dockerfile.

.ci/run builds dist/ (.ci/build-dist: the sdist, and the wheel built from it), installs
the wheel in a fresh virtual environment, and runs the suite there with QIAO_TEST_INSTALLED=1
(conftest.py then refuses to run unless qiao is imported from that environment). Here,
tests that need dist/ skip without it (`make dist` builds it)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = Path(os.environ.get("QIAO_TEST_DIST", ROOT / "dist"))
INSTALLED = os.environ.get("QIAO_TEST_INSTALLED") == "1"

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


def cargo_version() -> str:
    """The one place the version is written."""
    return tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]


def the_wheel() -> Path:
    """dist/'s wheel for this Python (the release workflow puts one per Python there)."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = sorted(DIST.glob(f"qiao-*-{tag}-{tag}-*.whl"))
    if not wheels:
        pytest.skip(f"no {tag} wheel in {DIST} (`make dist` builds one)")
    return wheels[-1]


def the_sdist() -> Path:
    sdists = sorted(DIST.glob("qiao-*.tar.gz"))
    if not sdists:
        pytest.skip(f"no sdist in {DIST} (`make dist` builds one)")
    return sdists[-1]


def in_site_packages(path: str) -> bool:
    paths = sysconfig.get_paths()
    return any(Path(path).resolve().is_relative_to(Path(paths[k]).resolve())
               for k in ("purelib", "platlib"))


def test_the_wheel_holds_the_package_and_is_manylinux_tagged():
    """PEP 427: every module of python/qiao/, the engine, its stubs and py.typed
    (PEP 561), the console script and the version; no sources, tests or build files.
    PEP 600: a manylinux (or musllinux) platform tag, which maturin grants only after
    checking the glibc symbols the engine uses."""
    wheel = the_wheel()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist_info = f"qiao-{cargo_version()}.dist-info"
        metadata = z.read(f"{dist_info}/METADATA").decode()
        wheel_file = z.read(f"{dist_info}/WHEEL").decode()
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    # The checkout's package, less what a build leaves there (an editable install's engine).
    package = {f"qiao/{p.name}" for p in (ROOT / "python" / "qiao").iterdir()
               if p.is_file() and p.suffix not in (".so", ".pyc")}
    assert {"qiao/_qiao.pyi", "qiao/py.typed", "qiao/_demo.py", "qiao/__main__.py"} <= package
    assert package <= names, f"missing from the wheel: {sorted(package - names)}"
    engines = [n for n in names if re.fullmatch(r"qiao/_qiao\.cpython-\d+-[\w-]+\.so", n)]
    assert len(engines) == 1, sorted(names)
    tops = {n.split("/")[0] for n in names}
    assert tops == {"qiao", dist_info}, tops
    assert re.search(rf"^Version: {re.escape(cargo_version())}$", metadata, re.MULTILINE)
    assert re.search(r"^Requires-Python: >=3\.9$", metadata, re.MULTILINE)
    assert re.search(r"^qiao ?= ?qiao\.__main__:main$", entry_points, re.MULTILINE), entry_points
    tags = re.findall(r"^Tag: (.+)$", wheel_file, re.MULTILINE)
    assert tags, wheel_file
    for tag in tags:
        platform = tag.split("-")[2]
        assert re.fullmatch(r"(manylinux|musllinux)_\d+_\d+_\w+", platform), tag


@pytest.mark.skipif(not INSTALLED, reason="runs where .ci/run installed the wheel "
                    "(QIAO_TEST_INSTALLED=1); here qiao may be an editable build")
def test_the_installed_package_is_the_wheel():
    """The suite's qiao, and the servers' (`python -m qiao` from tests/python), are the
    installed package in site-packages, not the checkout's python/."""
    import qiao
    import qiao._qiao

    assert in_site_packages(qiao.__file__), qiao.__file__
    assert in_site_packages(qiao._qiao.__file__), qiao._qiao.__file__
    out = subprocess.run(
        [sys.executable, "-c", "import qiao._qiao as q; print(q.__file__)"],
        cwd=ROOT / "tests" / "python", capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    assert in_site_packages(out), out
    assert shutil.which("cargo") is None and shutil.which("rustc") is None, (
        "the installed wheel is tested without Rust's toolchain on PATH"
    )


def qiao_command() -> str:
    """The console script of the environment this Python runs in."""
    script = Path(sys.executable).parent / "qiao"
    if not script.exists():
        pytest.skip(f"no qiao console script beside {sys.executable}")
    return str(script)


def test_version_names_the_release_revision_and_python():
    """`qiao --version`: Cargo.toml's version, the git revision the build came from (a
    commit of this repository) and the Python it was built for."""
    result = subprocess.run([qiao_command(), "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    m = re.fullmatch(
        r"qiao (\S+) \(revision (\S+); built for (\S+ \d+\.\d+) on (\S+)\)\n", result.stdout)
    assert m, result.stdout
    version, revision, python, target = m.groups()
    assert version == cargo_version()
    assert python == f"CPython {sys.version_info.major}.{sys.version_info.minor}"
    assert target.startswith(os.uname().machine), target
    if revision != "unknown" and shutil.which("git") and (ROOT / ".git").exists():
        known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-t", revision],
                               capture_output=True, text=True, check=False)
        assert known.stdout.strip() == "commit", f"{revision} is no commit of {ROOT}"
    if INSTALLED:  # .ci/build-dist passes the checkout's revision to the build
        assert re.fullmatch(r"[0-9a-f]{10}", revision), revision


def test_the_console_script_serves_the_demo(tmp_path):
    """`qiao` with no application: the demo page, from the installed command."""
    proc = subprocess.Popen(
        [qiao_command(), "-b", "127.0.0.1:0"], cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        log = ""
        assert proc.stderr is not None
        for line in proc.stderr:
            log += line
            m = re.search(r"Listening at: (http://\S+)", line)
            if m:
                break
        else:
            pytest.fail(f"qiao did not say where it listens; log:\n{log}")
        with urllib.request.urlopen(m.group(1) + "/", timeout=10) as response:
            assert response.status == 200
            assert b"qiao is running" in response.read()
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=15)
    assert status == 0


def test_windows_is_refused_in_one_line():
    """On Windows (faked here: sys.platform), `import qiao` says the platform is not
    supported and what to do instead; the build refuses it too (build.rs)."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.platform = 'win32'; import qiao"],
        cwd=ROOT / "tests" / "python", capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "ImportError: qiao does not support Windows: it runs on Linux and macOS. "
        "On Windows, run it under WSL or in a Linux container."
    )


def without_rust(path: str) -> str:
    """PATH minus every directory that holds cargo or rustc."""
    return os.pathsep.join(
        d for d in path.split(os.pathsep)
        if d and not any(Path(d, tool).exists() for tool in ("cargo", "rustc"))
    )


def test_the_sdist_without_rust_names_the_toolchain(tmp_path):
    """pip building the sdist where cargo is not on PATH: it fails at once, and says
    that Rust's toolchain is what is missing and where to get it (build_backend/)."""
    sdist = the_sdist()
    env = {**os.environ, "PATH": without_rust(os.environ.get("PATH", ""))}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path), str(sdist)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "building qiao from source needs Rust's toolchain (cargo)" in output, output
    assert "https://rustup.rs" in output
    assert not list(tmp_path.iterdir())


def dockerfile() -> str:
    """docs/deployment.md's multi-stage Dockerfile, as written there."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```dockerfile\n(.*?)```", text, re.DOTALL)
    multi = [b for b in blocks if "AS build" in b]
    assert len(multi) == 1, "docs/deployment.md has one multi-stage Dockerfile"
    return multi[0]


def docker_usable() -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False,
                          timeout=60)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        pytest.skip(f"docker cannot build here: {lines[-1] if lines else 'docker info failed'}")


def test_the_deployment_dockerfile_builds_and_serves(tmp_path):
    """The Dockerfile of docs/deployment.md, as written, on a small app: the first stage
    builds qiao's wheel from this repository, the final image runs it with no compiler."""
    dockerfile()  # read (and checked) even where docker is missing
    docker_usable()
    app = tmp_path / "app"
    (app / "myproject").mkdir(parents=True)
    (app / "myproject" / "__init__.py").write_text("")
    (app / "myproject" / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'served from the image']\n"
    )
    (app / "requirements.txt").write_text("")
    (app / "Dockerfile").write_text(dockerfile())
    tag = f"qiao-test-deployment:{os.getpid()}"
    build = subprocess.run(
        ["docker", "build", "--build-context", f"qiao={ROOT}", "-t", tag, str(app)],
        capture_output=True, text=True, timeout=1800, check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    name = f"qiao-test-{os.getpid()}"
    try:
        toolchain = subprocess.run(
            ["docker", "run", "--rm", tag, "sh", "-c", "command -v cargo rustc gcc cc"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert toolchain.stdout.strip() == "", "the final image carries a toolchain"
        subprocess.run(["docker", "run", "-d", "--name", name, "-p", "127.0.0.1::8000", tag],
                       check=True, capture_output=True, timeout=120)
        port = subprocess.run(["docker", "port", name, "8000"], capture_output=True,
                              text=True, check=True, timeout=60).stdout.split(":")[-1].strip()
        body = b""
        for _ in range(60):  # the container's start, bounded
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(1)
        assert body == b"served from the image"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
