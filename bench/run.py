"""Side-by-side load benchmark of qiao and its peers (see bench/README.md).

One command sets up bench/.venv (the peers from PyPI, qiao built from this
repository as a release wheel), compiles the C reference server, then runs
every (workload, server) cell under the same conditions: one worker process,
server pinned to core 0, `wrk -t1` pinned to core 1, 127.0.0.1 only, a
discarded warm-up, then --runs measured runs. It writes results/results.json
(every run), results/results.md (the table), results/results.png (the plot)
and the "Latest results" section of bench/README.md.

    python bench/run.py                       # everything, defaults below
    python bench/run.py --quick               # 3 s x 1 run, short warm-up
    python bench/run.py --servers qiao,granian --workloads hello,flask_json
    python bench/run.py --smoke               # qiao, hello, 2 s, 1 run; asserts 0 errors
    python bench/run.py --baseline main       # also qiao as built at `main`, as one more server

--baseline REV (a hash, a tag, HEAD~3, main...) builds qiao as of that git revision
the same way (a release wheel, from `git archive` of it in a temporary directory) into
bench/.data/baseline/<revision>-<python>/ (reused while that directory is there), and
runs it, PYTHONPATH pointing there, as the server `qiao@<short hash>` in every selected
workload, taking turns with the others. It is never a peer: the report sets qiao beside
it (qiao ÷ baseline for req/s, CPU per request and p99, per workload) and results.json
keeps its cells apart, under "baseline_cells".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS = BENCH / "apps"
LUA = BENCH / "lua"
VENV = BENCH / ".venv"
DATA = BENCH / ".data"
# The static cells' files, served under /static/ by each server.
STATIC = DATA / "static"
STATIC_FILES = {"1k.bin": 1024, "1m.bin": 1 << 20}
RESULTS = BENCH / "results"
README = BENCH / "README.md"
QIAO_BUILD = VENV / "qiao-build.txt"  # the revision the venv's qiao wheel was built from

SERVER_CORE = "0"
CLIENT_CORE = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# Peers installed into bench/.venv: distribution name -> why we need it.
PEER_PACKAGES = {
    "flask": "fixture apps",
    "matplotlib": "results.png",
    "gunicorn": "peer",
    "granian": "peer",
    "pyuwsgi": "peer (uWSGI as a wheel)",
    "waitress": "peer",
    "bjoern": "peer (needs libev-dev)",
    "fastwsgi": "peer",
    "pyruvate": "peer",
    "h2": "gunicorn's HTTP/2",
    "whitenoise": "peer (static files under gunicorn)",
}
SERVER_PACKAGE = {
    "qiao": "qiao",
    "gunicorn-sync": "gunicorn",
    "gunicorn-gthread": "gunicorn",
    "granian": "granian",
    "uwsgi": "pyuwsgi",
    "waitress": "waitress",
    "bjoern": "bjoern",
    "fastwsgi": "fastwsgi",
    "pyruvate": "pyruvate",
    "epoll-c": None,
    "bare-py": None,
    # The static cells' own servers: nginx (Debian's nginx-light, one worker process), the
    # reference; WhiteNoise wrapping the hello app under gunicorn's sync worker.
    "nginx": None,
    "whitenoise": "whitenoise",
}
ALL_SERVERS = list(SERVER_PACKAGE)
# qiao run with a feature on, as one more server beside qiao (so that their runs take turns
# in each workload, as the peers' do): asked for by name in --servers, never by default.
# `qiao-metrics`: the workers count every request for the master's exporter (nothing
# scrapes it during the run).
QIAO_VARIANTS = {"qiao-metrics": ("--metrics-bind", "127.0.0.1:0")}
SERVER_PACKAGE.update({variant: "qiao" for variant in QIAO_VARIANTS})
# The physical references: measured beside the peers, never counted as one.
REFERENCES = ("epoll-c", "bare-py")
# --baseline REV: qiao built at another revision, run as one more server named
# "qiao@<short hash>". Never a peer either; its cells are kept apart in results.json.
BASELINE_PREFIX = "qiao@"
BASELINE_HOME = DATA / "baseline"  # <revision>-<python>/ per build, and their cargo target dir
# This run's baseline server -> the directory its wheel is installed in (pip --target).
BASELINE_SITES: dict[str, Path] = {}


def is_baseline(server: str) -> bool:
    return server.startswith(BASELINE_PREFIX)


@dataclass(frozen=True)
class Workload:
    name: str
    app: str  # module in bench/apps; its attribute `app`
    title: str
    script: str = "plain.lua"  # in bench/lua; report.lua is appended
    headers: tuple[str, ...] = ()
    connections: int = 64
    threads: int = 1  # application threads per worker where the server has the knob
    idle: bool = False  # no load: RSS 2 s after start
    # Measured runs last at least this long: a workload with few requests per second has
    # few samples in a short run, and its p99 then moves from run to run (README,
    # Conditions, sleep10's runs).
    min_duration: float = 0.0
    # The target compares qiao with the app's in-process floor: measure the floor beside
    # each of qiao's runs (just before and just after it), not once at the start, because
    # the floor moves with the machine from one minute to the next (README, Workloads,
    # the in-process floor).
    paired_floor: bool = False
    # Over TLS (a certificate made once in .data), with wrk; `h2`: HTTP/2 by ALPN, with
    # h2load, `streams` requests in flight on each of `connections`.
    tls: bool = False
    h2: bool = False
    streams: int = 1
    # Only these servers have the cell (None: every server), and qiao runs with these
    # flags: for cells that measure one of qiao's features against its own plain twin.
    servers: frozenset[str] | None = None
    qiao_flags: tuple[str, ...] = ()
    # A proxy the load goes through ("haproxy", "haproxy-send-proxy"; see Front).
    front: str | None = None
    # The path wrk asks for.
    path: str = "/"

    def duration(self, requested: float) -> float:
        return max(requested, self.min_duration)


STATIC_SERVERS = frozenset({"qiao", "nginx", "granian", "whitenoise"})
PROXY_SERVERS = frozenset({"qiao", "gunicorn-sync", "gunicorn-gthread"})  # with --proxy-protocol
FORWARDED_HEADERS = ("X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")

WORKLOADS = [
    Workload("hello", "hello", "hello, keep-alive"),
    Workload("hello_close", "hello", "hello, Connection: close", headers=("Connection: close",)),
    Workload("pipeline16", "hello", "hello, pipelined 16 deep", script="pipeline16.lua"),
    Workload("flask_json", "flask_json", "Flask JSON route (20 fields)", paired_floor=True),
    Workload("flask_jinja", "flask_jinja", "Flask Jinja template", paired_floor=True),
    Workload("big_bytes", "big_bytes", "1 MiB body, one bytes object"),
    Workload("big_stream", "big_stream", "1 MiB as 64 x 16 KiB generator chunks"),
    Workload("post64k", "post_read", "64 KiB POST read from wsgi.input", script="post64k.lua"),
    Workload("file_wrapper", "file_wrapper", "wsgi.file_wrapper over a 1 MiB file"),
    Workload("sleep10", "sleep10", "app sleeps 10 ms, 256 conns, 32 threads", connections=256, threads=32,
             min_duration=10.0),
    Workload("idle_rss", "hello", "RSS of one idle worker, 2 s after start", idle=True),
    # Behind a proxy: what nginx adds (docs/deployment.md), from 127.0.0.1, which qiao and
    # gunicorn trust by default; the `_untrusted` twin is the same request with nothing
    # trusted, so the two differ only by the forwarding's handling.
    Workload("hello_forwarded", "hello", "hello with X-Forwarded-For/-Proto from a trusted proxy",
             headers=FORWARDED_HEADERS),
    Workload("hello_forwarded_untrusted", "hello", "the same, no peer trusted (qiao's plain twin)",
             headers=FORWARDED_HEADERS, servers=frozenset({"qiao"}), qiao_flags=("--forwarded-allow-ips", "")),
    # Through HAProxy in TCP mode (on the client's core), with and without the PROXY v1 line
    # HAProxy's `send-proxy` writes first on each connection to the server: kept alive, and
    # with a new connection for each request (the most a PROXY header can cost).
    Workload("hello_haproxy", "hello", "hello, keep-alive, through HAProxy (TCP mode)",
             servers=PROXY_SERVERS, front="haproxy"),
    Workload("hello_proxy", "hello", "the same, HAProxy sending a PROXY v1 line (send-proxy)",
             servers=PROXY_SERVERS, front="haproxy-send-proxy", qiao_flags=("--proxy-protocol",)),
    Workload("hello_close_haproxy", "hello", "hello, Connection: close, through HAProxy (TCP mode)",
             headers=("Connection: close",), servers=PROXY_SERVERS, front="haproxy"),
    Workload("hello_close_proxy", "hello", "the same, HAProxy sending a PROXY v1 line (send-proxy)",
             headers=("Connection: close",), servers=PROXY_SERVERS, front="haproxy-send-proxy",
             qiao_flags=("--proxy-protocol",)),
    Workload("https_hello", "hello", "hello over TLS 1.3, keep-alive", tls=True),
    Workload("https_new_conn", "hello", "hello over TLS 1.3, a new connection (handshake) each",
             headers=("Connection: close",), tls=True),
    Workload("h2_hello", "hello", "hello over HTTP/2 (TLS), 4 connections x 100 streams",
             connections=4, tls=True, h2=True, streams=100),
    Workload("h2_flask_json", "flask_json", "Flask JSON over HTTP/2 (TLS), 4 x 100 streams",
             connections=4, tls=True, h2=True, streams=100),
    # Static files: the server itself answers GET /static/<file> (qiao --static, nginx,
    # granian --static-path-route, WhiteNoise in the app under gunicorn); the app is hello.
    Workload("static_1k", "hello", "a 1 KiB static file, keep-alive", path="/static/1k.bin",
             servers=STATIC_SERVERS),
    Workload("static_1m", "hello", "a 1 MiB static file, keep-alive", path="/static/1m.bin",
             servers=STATIC_SERVERS),
]
# The servers with TLS (and, for `h2` workloads, HTTP/2) that the cells run.
TLS_SERVERS = {"qiao", "granian", "gunicorn-sync", "gunicorn-gthread"}
H2_SERVERS = {"qiao", "granian", "gunicorn-gthread"}
WORKLOAD_BY_NAME = {w.name: w for w in WORKLOADS}
# Servers that have only the static cells.
STATIC_ONLY = {"nginx", "whitenoise"}
# The C reference answers only GET heads with a canned hello.
EPOLL_WORKLOADS = {"hello", "hello_close", "pipeline16", "idle_rss"}


def serves(server: str, wl: Workload) -> bool:
    """Whether `server` has a cell in `wl`: the C reference answers only its canned hello,
    and the bare Python server (`ref/bare_server.py`) is measured where the target is a
    share of the app's floor."""
    if server in QIAO_VARIANTS:
        server = "qiao"
    if wl.servers is not None:
        return server in wl.servers
    if server in STATIC_ONLY:
        return False
    if wl.tls:
        return server in (H2_SERVERS if wl.h2 else TLS_SERVERS)
    if server == "epoll-c":
        return wl.name in EPOLL_WORKLOADS
    if server == "bare-py":
        return wl.paired_floor
    return True


# --------------------------------------------------------------------------- setup


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def run_quiet(cmd: list[str], logfile: Path, timeout: float, env: dict | None = None) -> int:
    with open(logfile, "w") as out:
        try:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env, check=False).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[timed out after {timeout:.0f} s]\n")
            return 124


def setup_venv(servers: list[str], reinstall_qiao: bool) -> dict[str, str]:
    """Creates bench/.venv and installs what `servers` need; returns {package: reason it is missing}."""
    logs = DATA / "install-logs"
    logs.mkdir(parents=True, exist_ok=True)
    missing: dict[str, str] = {}
    if not venv_python().exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        run_quiet([str(venv_python()), "-m", "pip", "install", "-q", "--upgrade", "pip"], logs / "pip.log", 600)
    if "bjoern" in servers and not Path("/usr/include/ev.h").exists():
        log("installing libev-dev for bjoern (apt-get)")
        if shutil.which("apt-get"):
            run_quiet(["apt-get", "install", "-y", "libev-dev"], logs / "apt-libev.log", 600)
    wanted = ["flask", "matplotlib"] + sorted({SERVER_PACKAGE[s] for s in servers if SERVER_PACKAGE[s] not in (None, "qiao")})
    if "whitenoise" in servers:
        wanted.append("gunicorn")  # WhiteNoise's cells run under gunicorn
    if "gunicorn-gthread" in servers:
        wanted.append("h2")  # gunicorn's HTTP/2 (the h2_* cells)
    have = installed_versions(wanted)
    for pkg in wanted:
        if have.get(pkg):
            continue
        log(f"pip install {pkg}")
        rc = run_quiet([str(venv_python()), "-m", "pip", "install", pkg], logs / f"{pkg}.log", 900)
        if rc != 0:
            missing[pkg] = last_error_line(logs / f"{pkg}.log")
            log(f"  {pkg} did not install: {missing[pkg]}")
    if any(SERVER_PACKAGE[s] == "qiao" for s in servers) and (reinstall_qiao or not installed_versions(["qiao"]).get("qiao")):
        # A release wheel built from the working tree (the editable install of the
        # project env may be a debug build). Its own cargo target dir so that it
        # never waits on, or invalidates, the developers' builds.
        log(f"pip install {REPO} (qiao, release build)")
        env = dict(os.environ, CARGO_TARGET_DIR=str(VENV / "cargo-target"))
        rc = run_quiet(
            [str(venv_python()), "-m", "pip", "install", "--force-reinstall", "--no-deps", str(REPO)],
            logs / "qiao.log", 1800, env=env,
        )
        if rc != 0:
            missing["qiao"] = last_error_line(logs / "qiao.log")
            log(f"  qiao did not build: {missing['qiao']}")
        else:  # what the wheel was built from, for the report (HEAD may move on meanwhile)
            stamp = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
            QIAO_BUILD.write_text(f"{qiao_revision()}, built {stamp}\n")
    return missing


def last_error_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln[:200]
    return lines[-1][:200] if lines else "no output"


def installed_versions(packages: list[str], python: Path | None = None) -> dict[str, str | None]:
    code = (
        "import json,sys,importlib.metadata as m\n"
        "out={}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p]=m.version(p)\n"
        "    except Exception: out[p]=None\n"
        "print(json.dumps(out))"
    )
    py = python or venv_python()
    r = subprocess.run([str(py), "-c", code, *packages], capture_output=True, text=True, timeout=60, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {p: None for p in packages}


def git(*args: str) -> str | None:
    """The output of a git command in the repository, stripped; None if it failed."""
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def resolve_revision(rev: str) -> dict | None:
    """The commit `rev` names (as given, full and short hash, subject, commit date); None if
    it names none. A branch name moves: the hash is what gets built and reported."""
    full = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if not full:
        return None
    short, date, subject = (git("log", "-1", "--format=%h%n%cI%n%s", full) or "\n\n").split("\n", 2)
    return {"ref": rev, "revision": full, "short": short, "date": date, "subject": subject,
            "server": BASELINE_PREFIX + short}


def build_baseline(base: dict, python: Path) -> tuple[Path | None, str]:
    """Installs qiao as of base["revision"] into a directory of its own, for `python`, and
    returns (the directory, a line saying when it was built); (None, why) if it failed.

    Built like setup_venv builds the working tree: pip builds a release wheel, from `git
    archive` of the revision unpacked in a temporary directory, with its own cargo target
    dir (shared by every baseline, apart from the current build's). `pip install --target`
    puts the package and its `bin/qiao` script in the directory, so nothing in the venv
    changes; the server runs with PYTHONPATH set to it. A revision's source never changes,
    so a directory already built for it and this Python (its stamp written last) is reused;
    delete it to build again."""
    tag = subprocess.run([str(python), "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, timeout=60, check=False).stdout.strip() or "python"
    home = BASELINE_HOME / f"{base['revision'][:12]}-{tag}"
    stamp = home / "built.txt"
    if stamp.exists():
        log(f"baseline {base['server']}: reusing {home}")
        return home, stamp.read_text().strip()
    logs = DATA / "install-logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"{base['server']}.log"
    log(f"building the baseline {base['server']} ({base['ref']}: {base['revision'][:12]}, release build)")
    shutil.rmtree(home, ignore_errors=True)  # a build that did not finish
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qiao-baseline-") as tmp:
        src, archive = Path(tmp) / "src", Path(tmp) / "src.tar"
        src.mkdir()
        if git("archive", "--format=tar", "-o", str(archive), base["revision"]) is None:
            return None, "git archive failed"
        if subprocess.run(["tar", "-xf", str(archive), "-C", str(src)], timeout=300, check=False).returncode:
            return None, f"could not unpack git archive of {base['revision'][:12]}"
        env = dict(os.environ, CARGO_TARGET_DIR=str(BASELINE_HOME / "cargo-target"))
        rc = run_quiet([str(python), "-m", "pip", "install", "--no-deps", "--target", str(home), str(src)],
                       logfile, 1800, env=env)
        if rc != 0:
            return None, last_error_line(logfile)
        # The directory must win over the venv's own qiao: check which one it imports.
        r = subprocess.run([str(python), "-c", "import qiao._qiao as m; print(m.__file__)"], cwd=tmp,
                           env=dict(os.environ, PYTHONPATH=str(home)), capture_output=True, text=True,
                           timeout=60, check=False)
    if not r.stdout.strip().startswith(str(home)) or not (home / "bin" / "qiao").exists():
        return None, f"built, but {home} does not provide qiao: {(r.stdout + r.stderr).strip()[-200:]}"
    built = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    stamp.write_text(f"built {built}\n")
    return home, stamp.read_text().strip()


def build_ref(name: str) -> Path:
    """Compiles bench/ref/NAME.c into .data/NAME (again only when the source is newer)."""
    out = DATA / name
    src = BENCH / "ref" / f"{name}.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(out), str(src)], check=True, timeout=120)
    return out


# The lowest placement probe reading so far in this benchmark: near is below MOVED_FACTOR x it.
LOWEST_RTT = [float("inf")]


def core_rtt_ns() -> float | None:
    """The round trip of a cache line between SERVER_CORE and CLIENT_CORE (ref/core_rtt.c),
    in ns; None if the probe is not built or fails. It tells the placement of the two
    vCPUs, which moves every server's kernel cost per request (see README, Conditions)."""
    probe = DATA / "core_rtt"
    if not probe.exists():
        return None
    try:
        r = subprocess.run([str(probe), SERVER_CORE, CLIENT_CORE], capture_output=True, text=True,
                           timeout=10, check=False)
        rtt = float(r.stdout) if r.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    if rtt is not None:
        LOWEST_RTT[0] = min(LOWEST_RTT[0], rtt)
    return rtt


def is_near(rtt: float) -> bool:
    """Whether a probe reading is at the near level (below MOVED_FACTOR x the lowest so far)."""
    return rtt < MOVED_FACTOR * LOWEST_RTT[0]


def wait_until_near(max_wait: float) -> float:
    """Waits (probing every second, max_wait s at most) until the two cores are near;
    returns the seconds waited. Every server's runs then meet the same placement, as far
    as the machine allows in that time."""
    t0 = time.monotonic()
    while (rtt := core_rtt_ns()) is not None and not is_near(rtt):
        if time.monotonic() - t0 >= max_wait:
            break
        time.sleep(1)
    return time.monotonic() - t0


def prepare_data() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    if not CERT.exists() or not KEY.exists():
        # ECDSA P-256: what most sites present; the key in PKCS#8 (granian reads no other).
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(KEY), "-out", str(CERT), "-days", "3650",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    f = DATA / "1mib.bin"
    if not f.exists() or f.stat().st_size != 1 << 20:
        f.write_bytes(os.urandom(1 << 20))
    STATIC.mkdir(exist_ok=True)
    for name, size in STATIC_FILES.items():
        f = STATIC / name
        if not f.exists() or f.stat().st_size != size:
            f.write_bytes(os.urandom(size))
    lua = DATA / "lua"
    lua.mkdir(exist_ok=True)
    report = (LUA / "report.lua").read_text()
    for script in LUA.glob("*.lua"):
        if script.name != "report.lua":
            (lua / script.name).write_text(script.read_text() + "\n" + report)


# --------------------------------------------------------------------------- /proc


def process_tree(root: int) -> list[int]:
    """root and all its descendants (from the ppid field of every /proc/<pid>/stat)."""
    return process_tree_children(root)[0]


def process_tree_children(root: int) -> tuple[list[int], dict[int, list[int]]]:
    """process_tree(root), and every process's children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree, children


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of every live process in the tree (all its threads included)."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine, all cores (the first line of /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLK_TCK  # user..steal; guest time is already in user


def children_usage() -> tuple[float, int]:
    """CPU seconds and voluntary context switches (sleeps) of our waited-for children:
    between two reads around one wrk run, that wrk's (all its threads)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw


def tree_rss_kib(root: int) -> tuple[int, int, int]:
    """(sum of RSS over the tree, RSS of its largest process, RSS of its largest leaf) in
    KiB, from /proc/<pid>/statm. A leaf (a process without children) is a worker where the
    server has a master, else the one process: "RSS of one worker"."""
    total = largest = worker = 0
    tree, children = process_tree_children(root)
    for pid in tree:
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        except OSError:
            continue
        total += rss
        largest = max(largest, rss)
        if not children.get(pid):
            worker = max(worker, rss)
    return total, largest, worker


def worker_private_kib(root: int) -> tuple[int, int] | None:
    """(USS, PSS) in KiB of the tree's largest leaf process (see tree_rss_kib), from
    /proc/<pid>/smaps_rollup: USS = Private_Clean + Private_Dirty, the memory one more
    such worker would add; PSS shares each page among the processes mapping it."""
    tree, children = process_tree_children(root)
    best = None
    for pid in tree:
        if children.get(pid):
            continue
        try:
            fields = {}
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                name, value = line.split(":", 1)
                fields[name] = int(value.split()[0])
        except (OSError, ValueError):
            continue
        uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        pss = fields.get("Pss", 0)
        if best is None or fields.get("Rss", 0) > best[2]:
            best = (uss, pss, fields.get("Rss", 0))
    return None if best is None else best[:2]


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CERT, KEY = DATA / "tls-cert.pem", DATA / "tls-key.pem"


def tls_flags(server: str, wl: Workload) -> list[str]:
    """The flags that make `server` serve `wl` over TLS (HTTP/2 offered by ALPN for `h2`)."""
    if not wl.tls:
        return []
    if server == "qiao":
        return ["--certfile", str(CERT), "--keyfile", str(KEY)]
    if server == "granian":
        return ["--ssl-certificate", str(CERT), "--ssl-keyfile", str(KEY), "--http", "2" if wl.h2 else "1"]
    if server.startswith("gunicorn"):
        return ["--certfile", str(CERT), "--keyfile", str(KEY)] + (["--http-protocols", "h2,h1"] if wl.h2 else [])
    raise ValueError(f"{server} has no TLS cell")


def server_command(server: str, wl: Workload, port: int, python: Path) -> list[str]:
    return plain_command(server, wl, port, python) + tls_flags(server, wl) + feature_flags(server, wl)


def static_flags(server: str, wl: Workload) -> list[str]:
    """How each server of a static cell serves STATIC under /static/."""
    if not wl.name.startswith("static_"):
        return []
    if server == "qiao" or is_baseline(server):
        return ["--static", f"/static={STATIC}"]
    if server == "granian":
        return ["--static-path-route", "/static", "--static-path-mount", str(STATIC)]
    return []


def feature_flags(server: str, wl: Workload) -> list[str]:
    """The flags of the feature a cell measures (gunicorn's PROXY protocol under the same
    name as qiao's)."""
    if server == "qiao":
        return list(wl.qiao_flags) + static_flags(server, wl)
    if server in QIAO_VARIANTS:
        return list(wl.qiao_flags) + static_flags("qiao", wl) + list(QIAO_VARIANTS[server])
    if server == "granian":
        return static_flags(server, wl)
    if server.startswith("gunicorn") and "--proxy-protocol" in wl.qiao_flags:
        return ["--proxy-protocol"]
    return []


def plain_command(server: str, wl: Workload, port: int, python: Path) -> list[str]:
    bindir = python.parent
    spec = f"{wl.app}:app"
    t = wl.threads
    if server == "qiao" or server in QIAO_VARIANTS:
        return [str(bindir / "qiao"), spec, "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", str(t)]
    if is_baseline(server):  # its own `qiao` script, run by the same interpreter (what its #! says)
        script = BASELINE_SITES[server] / "bin" / "qiao"
        return [str(python), str(script), spec, "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", str(t)]
    if server == "gunicorn-sync":
        return [str(bindir / "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}", spec]
    if server == "gunicorn-gthread":
        return [str(bindir / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", str(t), "-b", f"127.0.0.1:{port}", spec]
    if server == "granian":
        return [str(bindir / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--blocking-threads", str(t), "--log-level", "warning", spec]
    if server == "uwsgi":
        cmd = [str(bindir / "pyuwsgi"), "--http11-socket", f"127.0.0.1:{port}", "--module", spec,
               "--master", "--processes", "1", "--die-on-term", "--need-app", "--disable-logging",
               "--listen", "1024", "--buffer-size", "32768"]
        return cmd + (["--threads", str(t)] if t > 1 else [])
    if server == "waitress":
        return [str(bindir / "waitress-serve"), "--host", "127.0.0.1", "--port", str(port), f"--threads={t}", spec]
    if server in ("bjoern", "fastwsgi", "pyruvate"):
        return [str(python), str(BENCH / "launch.py"), server, spec, str(port), str(t)]
    if server == "epoll-c":
        return [str(DATA / "epoll_server"), str(port)]
    if server == "nginx":
        return nginx_command(port)
    if server == "whitenoise":
        return [str(bindir / "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}",
                "static_whitenoise:app"]
    if server == "bare-py":
        return [str(python), str(BENCH / "ref" / "bare_server.py"), spec, str(port)]
    raise ValueError(server)


def nginx_command(port: int) -> list[str]:
    """nginx serving STATIC under /static/ with one worker process, as a site would
    (sendfile, tcp_nopush, no access log), its prefix under DATA."""
    home = DATA / f"nginx-{port}"
    (home / "logs").mkdir(parents=True, exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ application/octet-stream bin; }}
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {STATIC}/; }}
    }}
}}
""")
    return [nginx_binary() or "nginx", "-p", str(home), "-c", str(conf)]


def nginx_binary() -> str | None:
    """The system's nginx (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


class Server:
    """One server process, pinned to SERVER_CORE, in its own session (process group)."""

    def __init__(self, server: str, wl: Workload, python: Path, logfile: Path):
        self.port = free_port()
        cmd = ["taskset", "-c", SERVER_CORE] + server_command(server, wl, self.port, python)
        env = dict(os.environ, BENCH_FILE=str(DATA / "1mib.bin"), BENCH_STATIC=str(STATIC),
                   PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        if is_baseline(server):  # its qiao before the venv's
            env["PYTHONPATH"] = str(BASELINE_SITES[server])
        self.log = open(logfile, "w")  # noqa: SIM115 -- closed by stop()
        self.log.write(" ".join(cmd) + "\n")
        self.log.flush()
        self.proc = subprocess.Popen(cmd, cwd=APPS, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.front = Front(wl.front, self.port, self.log) if wl.front else None
        # Where the load generator connects.
        self.load_port = self.front.port if self.front else self.port

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.front is None or self.front.wait_ready(deadline)
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 5 s."""
        if self.front:
            self.front.stop()
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
        # Then whatever is left of the group (workers that outlived their master).
        self._signal_group(signal.SIGKILL)
        self.log.close()

    def _signal_group(self, sig: int) -> None:
        """Signals the server's process group and waits (bounded) for the leader."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


class Front:
    """HAProxy in TCP mode in front of a server, pinned to the client's core (its CPU is
    not the server's): each client connection becomes one connection to the server,
    which `send-proxy` begins with a PROXY v1 line."""

    def __init__(self, kind: str, backend: int, log):
        self.port = free_port()
        send_proxy = {"haproxy": "", "haproxy-send-proxy": " send-proxy"}[kind]
        self.config = DATA / f"haproxy-{self.port}.cfg"
        self.config.write_text(
            "global\n  maxconn 8192\n  nbthread 1\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
            "  timeout server 30s\n"
            f"listen bench\n  bind 127.0.0.1:{self.port}\n"
            f"  server app 127.0.0.1:{backend}{send_proxy}\n"
        )
        cmd = ["taskset", "-c", CLIENT_CORE, "haproxy", "-db", "-f", str(self.config)]
        log.write(" ".join(cmd) + "\n")
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, deadline: float) -> bool:
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.config.unlink(missing_ok=True)


# --------------------------------------------------------------------------- wrk

RESULT_RE = re.compile(r"BENCH_RESULT (.*)")


def run_load(wl: Workload, port: int, duration: float) -> dict:
    """The load generator's result for one run: wrk's, or h2load's for HTTP/2 workloads."""
    return run_h2load(wl, port, duration) if wl.h2 else run_wrk(wl, port, duration)


def run_h2load(wl: Workload, port: int, duration: float) -> dict:
    """h2load for `duration` s, its per-request log read for the latency percentiles; the
    same keys as wrk's report.lua gives."""
    seconds = max(1, round(duration))
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log", dir=DATA) as log_file:
        cmd = ["taskset", "-c", CLIENT_CORE, "h2load", "-t1", f"-c{wl.connections}", f"-m{wl.streams}",
               f"-D{seconds}", "--log-file", log_file.name, f"https://127.0.0.1:{port}/"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False).stdout
        durations = []
        bad_status = 0
        for line in Path(log_file.name).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                status, us = int(parts[1]), int(parts[2])
                durations.append(us)
                bad_status += not 200 <= status < 300
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    t = re.search(r"finished in ([\d.]+)(m?s)", out)
    if not m or not t or not durations:
        raise RuntimeError(f"h2load gave no result: {out[-500:]}")
    done, errored, timeouts = (int(m.group(i)) for i in (3, 6, 7))
    elapsed_us = float(t.group(1)) * (1000 if t.group(2) == "ms" else 1_000_000)
    durations.sort()

    def pct(q: float) -> int:
        return durations[min(len(durations) - 1, int(q * len(durations)))]

    return {"requests": done, "duration_us": int(elapsed_us), "p50_us": pct(0.50), "p99_us": pct(0.99),
            "err_connect": 0, "err_read": errored, "err_write": 0, "err_timeout": timeouts,
            "err_status": bad_status}


def run_wrk(wl: Workload, port: int, duration: float) -> dict:
    seconds = max(1, round(duration))  # wrk takes whole seconds only
    cmd = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{wl.connections}", f"-d{seconds}s",
           "--timeout", "5s", "--latency", "-s", str(DATA / "lua" / wl.script)]
    for h in wl.headers:
        cmd += ["-H", h]
    cmd.append(f"{'https' if wl.tls else 'http'}://127.0.0.1:{port}{wl.path}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise RuntimeError("wrk did not finish in time")
    m = RESULT_RE.search(out)
    if not m:
        raise RuntimeError(f"wrk gave no result: {out[-500:]}")
    r = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    return r


@dataclass
class Run:
    rps: float
    p50_ms: float | None  # None: wrk reported 0 (see lua/report.lua)
    p99_ms: float | None
    errors: int
    non2xx: int
    socket_errors: int
    requests: int
    rss_kib: int
    rss_max_proc_kib: int
    cpu_us_per_req: float | None
    server_cpu_pct: float
    client_cpu_pct: float  # wrk's own CPU use: near 100 means the client, not the server, is the limit
    other_cpu_pct: float  # CPU used by everything else on the machine during the run (noise)
    # How often wrk waited for data, per request: each wait is a wake-up the server's
    # sends pay for (see bench/README, the stream's bimodal runs). None in older results.
    client_sleeps_per_req: float | None = None
    # Placement probe (core_rtt_ns) just before and just after the measured run.
    # None in older results.
    core_rtt_ns: tuple[float | None, float | None] | None = None
    placement_wait_s: float | None = None  # waited before the run for the cores to be near
    # The app's in-process floor (calls/s) just before and just after the run: the runs of
    # qiao, its baseline and the bare server in a `paired_floor` workload only. None
    # elsewhere and in older results.
    floor_calls_per_s: tuple[float | None, float | None] | None = None


@dataclass
class Cell:
    workload: str
    server: str
    status: str = "ok"  # ok | failed: why
    runs: list[Run] = field(default_factory=list)
    idle_rss_kib: int | None = None
    idle_rss_max_proc_kib: int | None = None
    idle_rss_worker_kib: int | None = None
    idle_uss_worker_kib: int | None = None
    idle_pss_worker_kib: int | None = None
    # Runs measured again because the placement of the two cores changed during them.
    moved_runs: int = 0


def start_server(cell: Cell, wl: Workload, python: Path) -> Server | None:
    """Starts the cell's server and waits until it accepts; None (the cell marked failed
    and the server stopped) if it never does."""
    srv = Server(cell.server, wl, python, DATA / "server-logs" / f"{cell.server}-{wl.name}.log")
    if srv.wait_ready():
        return srv
    cell.status = "failed: did not accept connections (see .data/server-logs)"
    srv.stop()
    return None


def measure_idle(server: str, wl: Workload, python: Path) -> Cell:
    """The resident memory of a server 2 s after it started, with no load."""
    cell = Cell(wl.name, server)
    srv = start_server(cell, wl, python)
    if srv is None:
        return cell
    try:
        time.sleep(2.0)
        (cell.idle_rss_kib, cell.idle_rss_max_proc_kib,
         cell.idle_rss_worker_kib) = tree_rss_kib(srv.proc.pid)
        private = worker_private_kib(srv.proc.pid)
        if private:
            cell.idle_uss_worker_kib, cell.idle_pss_worker_kib = private
        return cell
    finally:
        srv.stop()


def measure_floor(python: Path, apps: list[str], seconds: float) -> dict | None:
    """floor.py's result for `apps` ({app: {"calls_per_s", "us_per_call", "calls"}}), run
    on SERVER_CORE; None (and a log line) if it failed."""
    r = subprocess.run(["taskset", "-c", SERVER_CORE, str(python), str(BENCH / "floor.py"), str(seconds), *apps],
                       cwd=APPS, capture_output=True, text=True, timeout=60 + 10 * seconds * len(apps),
                       env=dict(os.environ, BENCH_FILE=str(DATA / "1mib.bin")), check=False)
    if r.returncode != 0:
        log(f"floor failed: {r.stderr[-300:]}")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def floor_of(python: Path, app: str, seconds: float) -> float | None:
    """One app's in-process floor in calls/s, measured now."""
    result = measure_floor(python, [app], seconds)
    return result[app]["calls_per_s"] if result else None


def paired_floors(runs: list[dict]) -> tuple[list[float], list[float]]:
    """The floors measured beside runs (each the mean of the two just before and after a
    run, or the one that did not fail) and each such run's req/s as a share of its floor."""
    floors, shares = [], []
    for r in runs:
        f = [x for x in (r.get("floor_calls_per_s") or ()) if x]
        if f and r.get("rps"):
            floors.append(sum(f) / len(f))
            shares.append(r["rps"] / floors[-1])
    return floors, shares


def measure_run(srv: Server, wl: Workload, args) -> Run:
    """One warm-up (discarded), then one measured run against a running server; first, up
    to --placement-wait s for the two cores to be near, and again (with a new warm-up, three
    times at most) if they moved apart during the warm-up."""
    waited = 0.0
    for _ in range(3):
        if args.placement_wait > 0:
            waited += wait_until_near(args.placement_wait - waited)
        if args.warmup > 0:
            run_load(wl, srv.load_port, args.warmup)
        rtt0 = core_rtt_ns()
        if args.placement_wait <= 0 or waited >= args.placement_wait or rtt0 is None or is_near(rtt0):
            break
    cpu0 = tree_cpu_seconds(srv.proc.pid)
    client0, sleeps0 = children_usage()
    busy0 = machine_busy_seconds()
    t0 = time.monotonic()
    r = run_load(wl, srv.load_port, wl.duration(args.duration))
    elapsed = time.monotonic() - t0
    rtt1 = core_rtt_ns()
    cpu1 = tree_cpu_seconds(srv.proc.pid)
    client1, sleeps1 = children_usage()
    busy1 = machine_busy_seconds()
    rss, rss_max, _ = tree_rss_kib(srv.proc.pid)
    reqs = r["requests"]
    sock = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    return Run(
        rps=reqs / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000 if r["p50_us"] else None,
        p99_ms=r["p99_us"] / 1000 if r["p99_us"] else None,
        errors=sock + r["err_status"],
        non2xx=r["err_status"],
        socket_errors=sock,
        requests=reqs,
        rss_kib=rss,
        rss_max_proc_kib=rss_max,
        cpu_us_per_req=(cpu1 - cpu0) * 1e6 / reqs if reqs else None,
        server_cpu_pct=100 * (cpu1 - cpu0) / elapsed,
        client_cpu_pct=100 * (client1 - client0) / elapsed,
        other_cpu_pct=max(0.0, 100 * ((busy1 - busy0) - (cpu1 - cpu0) - (client1 - client0)) / elapsed),
        client_sleeps_per_req=(sleeps1 - sleeps0) / reqs if reqs else None,
        core_rtt_ns=(rtt0, rtt1),
        placement_wait_s=waited,
    )


# A run whose placement probe differs this much before and after it saw the two cores
# move (the two levels seen lie much further apart, see README, Conditions); it is
# measured again, up to MOVED_RETRIES times.
MOVED_FACTOR = 2.0
MOVED_RETRIES = 2


def moved(run: Run) -> bool:
    a, b = run.core_rtt_ns or (None, None)
    return a is not None and b is not None and max(a, b) > MOVED_FACTOR * min(a, b)


def settle(srv: Server, timeout: float = 10.0) -> None:
    """Waits until the server is idle after its run (under 2 % of a core over 0.25 s), so
    that work it still does (responses to connections wrk has closed) does not fall on the
    next server's run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and srv.proc.poll() is None:
        before = tree_cpu_seconds(srv.proc.pid)
        time.sleep(0.25)
        if tree_cpu_seconds(srv.proc.pid) - before < 0.005:
            return


def measure_workload(wl: Workload, servers: list[str], python: Path, args) -> list[Cell]:
    """Every server's cell of one workload. The servers run side by side (all pinned to
    SERVER_CORE, idle but for the one under load) and take turns: run 1 of each, then run 2
    of each, and so on, each run after its own warm-up. A slow spell of the machine (a
    shared VM's throughput drifts over minutes, see README, Conditions) then falls on
    every server's runs alike instead of on one server's cell."""
    if wl.idle:
        return [measure_idle(server, wl, python) for server in servers]
    cells = [Cell(wl.name, server) for server in servers]
    live: list[tuple[Cell, Server]] = []
    try:
        for cell in cells:
            srv = start_server(cell, wl, python)
            if srv is not None:
                live.append((cell, srv))
        for _ in range(args.runs):
            for cell, srv in live:
                if not cell.status.startswith("ok"):
                    continue
                if srv.proc.poll() is not None:
                    cell.status = "failed: server exited during the run"
                    continue
                try:
                    paired = (wl.paired_floor and args.floor_seconds > 0
                              and (cell.server in ("qiao", "bare-py") or is_baseline(cell.server)))
                    before = floor_of(python, wl.app, args.floor_seconds) if paired else None
                    run = measure_run(srv, wl, args)
                    for _ in range(MOVED_RETRIES):
                        if not moved(run):
                            break
                        cell.moved_runs += 1
                        settle(srv)
                        run = measure_run(srv, wl, args)
                    if paired:
                        settle(srv)
                        run.floor_calls_per_s = (before, floor_of(python, wl.app, args.floor_seconds))
                    cell.runs.append(run)
                except Exception as e:  # noqa: BLE001 -- a broken cell must not stop the benchmark
                    cell.status = f"failed: {e}"[:300]
                settle(srv)
                if srv.proc.poll() is not None:
                    cell.status = "failed: server exited during the run"
    finally:
        for _, srv in live:
            srv.stop()
    return cells


# --------------------------------------------------------------------------- report


def median(xs):
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict]) -> dict:
    """Medians (and min-max of req/s) of runs, each a Run as a dict (asdict or results.json)."""
    if not runs:
        return {}

    def present(key):
        return [r[key] for r in runs if r.get(key) is not None]

    return {
        "rps": median(present("rps")),
        "rps_min": min(present("rps")),
        "rps_max": max(present("rps")),
        "p50": median(present("p50_ms")),
        "p99": median(present("p99_ms")),
        "errors": sum(present("errors")),
        "non2xx": sum(present("non2xx")),
        "socket_errors": sum(present("socket_errors")),
        "rss_mib": median(present("rss_kib")) / 1024,
        "cpu_us": median(present("cpu_us_per_req")),
        "cpu_pct": median(present("server_cpu_pct")),
        "client_cpu_pct": median(present("client_cpu_pct")),
        "other_cpu_pct": max(present("other_cpu_pct")),
        "client_sleeps": median(present("client_sleeps_per_req")),
    }


def probe_readings(doc: dict) -> list[float]:
    """Every placement probe reading of the run's cells (before and after each run)."""
    return [x for c in doc["cells"] for r in c.get("runs", []) for x in (r.get("core_rtt_ns") or ()) if x]


def near_limit(doc: dict) -> float | None:
    """The placement probe's dividing line: MOVED_FACTOR x its lowest reading in the run."""
    rtts = probe_readings(doc)
    return MOVED_FACTOR * min(rtts) if rtts else None


def placement(run: dict, limit: float | None) -> str | None:
    """near or far: the two cores' placement during the run, from the probe before and after
    it ("moved" if they differ: it changed during the run); None without probe readings."""
    rtts = [x for x in (run.get("core_rtt_ns") or ()) if x]
    if not rtts or limit is None:
        return None
    if max(rtts) < limit:
        return "near"
    return "far" if min(rtts) >= limit else "moved"


def fmt_rps(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    return f"{x / 1000:.1f}k" if x >= 10000 else f"{x:,.0f}"


def fmt_sleeps(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def fmt_ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "wrk": " ".join(wrk_version.split()[:2]),
    }


def qiao_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "python", "Cargo.toml"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"Run {doc['date']} on {m['nproc']} x {m['cpu']}, Linux {m['kernel']}, Python {doc['python']}, {m['wrk']}.",
        (
            f"{doc['runs']} run(s) x {doc['duration']:g} s per cell after a {doc['warmup']:g} s warm-up; "
            f"server on core {SERVER_CORE}, `wrk -t1` on core {CLIENT_CORE}, one worker process."
        ),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".",
        "",
    ]
    limit = near_limit(doc)
    if limit is not None:
        rtts = probe_readings(doc)
        moved_runs = sum(c.get("moved_runs", 0) for c in doc["cells"])
        lines.append(
            f"Placement of cores {SERVER_CORE} and {CLIENT_CORE} (a cache line's round trip between them, "
            f"before and after each run): {min(rtts):.0f}–{max(rtts):.0f} ns; a run is *near* below "
            f"{limit:.0f} ns, *far* above. {moved_runs} run(s) during which it changed were measured again.")
        if doc.get("placement_wait"):
            waited = [r.get("placement_wait_s") or 0 for c in doc["cells"] for r in c.get("runs", [])]
            lines[-1] += (f" Before each run the benchmark waited up to {doc['placement_wait']:g} s for the "
                          f"cores to be near: {sum(waited):.0f} s in all, {max(waited):.0f} s at most.")
        lines.append("")
    if doc["not_installed"]:
        lines.append("Not installed: " + "; ".join(f"{k}: {v}" for k, v in doc["not_installed"].items()) + ".")
        lines.append("")
    base = doc.get("baseline")
    if base:
        lines += [render_baseline(doc), ""]
    floor = doc.get("floor", {})
    for wname in doc["workloads"]:
        wl = WORKLOAD_BY_NAME[wname]
        cells = [c for c in doc["cells"] + doc.get("baseline_cells", []) if c["workload"] == wname]
        if not cells:
            continue
        lines.append(f"### {wl.title} (`{wname}`)")
        lines.append("")
        if wl.idle:
            lines.append("| server | RSS of one worker | USS of one worker | PSS of one worker "
                         "| RSS, process tree | RSS, largest process |")
            lines.append("|---|---:|---:|---:|---:|---:|")

            def mib(kib):
                return f"{kib / 1024:.1f} MiB" if kib else "–"

            def worker(c):
                return c.get("idle_rss_worker_kib") or c.get("idle_rss_max_proc_kib") or 1 << 60

            for c in sorted(cells, key=worker):
                if c["status"] != "ok":
                    lines.append(f"| {label(c['server'])} | {c['status']} | | | | |")
                else:
                    lines.append(f"| {label(c['server'])} | {mib(c.get('idle_rss_worker_kib'))} | "
                                 f"{mib(c.get('idle_uss_worker_kib'))} | "
                                 f"{mib(c.get('idle_pss_worker_kib'))} | "
                                 f"{mib(c['idle_rss_kib'])} | {mib(c['idle_rss_max_proc_kib'])} |")
            lines.append("")
            lines.append("A worker is a process of the tree without children (the one process "
                         "where the server has no master). RSS counts every page it maps, "
                         "shared or not; USS (Private_Clean + Private_Dirty of "
                         "`/proc/PID/smaps_rollup`) only its own pages, what one more worker "
                         "costs; PSS divides each shared page among its sharers.")
            lines.append("")
            continue
        qiao = next((c["summary"] for c in cells if c["server"] == "qiao" and c.get("summary")), None)
        lines.append("| server | req/s median (min–max) | ÷ qiao | p50 ms | p99 ms | errors | RSS MiB | CPU µs/req "
                     "| server CPU % | wrk CPU % | wrk sleeps/req | other CPU % | runs near/far |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in sorted(cells, key=lambda c: -(c.get("summary") or {}).get("rps", -1)):
            s = c.get("summary")
            if not s:
                lines.append(f"| {label(c['server'])} | {c['status']} | | | | | | | | | | | |")
                continue
            places = [placement(r, limit) for r in c["runs"]]
            where = (f"{places.count('near')}/{places.count('far')}"
                     + (f" ({places.count('moved')} moved)" if "moved" in places else "")) if limit else "–"
            ratio = f"{s['rps'] / qiao['rps']:.2f}" if qiao and qiao["rps"] else "–"
            err = f"{s['errors']}" + (f" ({s['non2xx']} non-2xx)" if s["non2xx"] else "")
            note = "" if c["status"] == "ok" else f" ⚠ {c['status']}"
            lines.append(
                f"| {label(c['server'])}{note} | {fmt_rps(s['rps'])} ({fmt_rps(s['rps_min'])}–{fmt_rps(s['rps_max'])}) | {ratio} "
                f"| {fmt_ms(s['p50'])} | {fmt_ms(s['p99'])} | {err} | {s['rss_mib']:.1f} | {s['cpu_us']:.1f} "
                f"| {s['cpu_pct']:.0f} | {s['client_cpu_pct']:.0f} | {fmt_sleeps(s.get('client_sleeps'))} "
                f"| {s.get('other_cpu_pct', 0):.0f} | {where} |"
            )
        f = floor.get(wl.app)
        floors, shares = paired_floors(next((c["runs"] for c in cells if c["server"] == "qiao"), []))
        if wl.name == "sleep10":
            lines.append("")
            lines.append("Ideal: 256 connections, 32 threads, 10 ms each: 3,200 req/s.")
            if wl.duration(doc["duration"]) > doc["duration"]:
                lines.append(f"Runs of {wl.duration(doc['duration']):g} s here, for enough requests behind the p99.")
        elif (f or floors) and not wl.idle:
            note = (f"In-process floor of `{wl.app}` (the app called directly, no server): "
                    + (f"{fmt_rps(f['calls_per_s'])} calls/s ({f['us_per_call']:.2f} µs/call)." if f
                       else "not measured at the start."))
            if floors:
                note += (f" Measured beside each of qiao's {len(floors)} runs (just before and just after it): "
                         f"{fmt_rps(median(floors))} calls/s ({fmt_rps(min(floors))}–{fmt_rps(max(floors))}); "
                         f"qiao's req/s as a share of the floor beside its run: {100 * median(shares):.0f} % "
                         f"({100 * min(shares):.0f}–{100 * max(shares):.0f} %).")
            _, bare = paired_floors(next((c["runs"] for c in cells if c["server"] == "bare-py"), []))
            if bare:
                note += (f" The bare server's (`ref/bare_server.py`: the syscalls and the app call, nothing "
                         f"else), each run against the floor beside it: {100 * median(bare):.0f} % "
                         f"({100 * min(bare):.0f}–{100 * max(bare):.0f} %).")
            _, based = paired_floors(next((c["runs"] for c in cells if base and c["server"] == base["server"]), []))
            if based:
                note += (f" The baseline's ({base['server']}), the same way: {100 * median(based):.0f} % "
                         f"({100 * min(based):.0f}–{100 * max(based):.0f} %).")
            lines += ["", note]
        for variant in (c for c in cells if c["server"] in QIAO_VARIANTS):
            paired = versus_by_round(next((c for c in cells if c["server"] == "qiao"), None), variant)
            if paired:
                lines += ["", paired]
        versus = versus_baseline(doc, wname)
        if versus and versus.get("rps"):
            lines += ["", (f"qiao ÷ its baseline {base['server']}: req/s {versus['rps']:.2f} ×, CPU/req "
                           f"{fmt_ratio(versus['cpu'])} ×, p99 {fmt_ratio(versus['p99'])} × ({versus['runs']}).")]
        lines.append("")
    return "\n".join(lines)


def label(server: str) -> str:
    """A server's name in the tables: the baseline says what it is."""
    return f"{server} (baseline)" if is_baseline(server) else server


def fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def versus_by_round(qiao: dict | None, variant: dict) -> str | None:
    """A qiao variant against plain qiao, two ways that the machine's changes of speed
    (which come and go between one run and the next, and only ever slow a run: see
    README, Conditions) disturb less than the ratio of the medians does:
    - round by round: the servers take turns, so run k of each came within seconds of the
      other; the median of the ratios of the two, with their quartiles;
    - the fastest quarter of each side's runs (the least disturbed): the ratio of their
      means, req/s, and CPU µs/req of the same runs."""
    if not qiao:
        return None
    pairs = list(zip(qiao["runs"], variant["runs"]))
    rps = sorted(v["rps"] / q["rps"] for q, v in pairs if q.get("rps") and v.get("rps"))
    cpu = sorted(v["cpu_us_per_req"] / q["cpu_us_per_req"] for q, v in pairs
                 if q.get("cpu_us_per_req") and v.get("cpu_us_per_req"))
    if len(rps) < 4:
        return None

    def spread(xs: list[float]) -> str:
        q1, _, q3 = statistics.quantiles(xs, n=4)
        return f"{median(xs):.3f} (quartiles {q1:.3f}–{q3:.3f})"

    def fastest(runs: list[dict]) -> tuple[float, float | None]:
        best = sorted((r for r in runs if r.get("rps")), key=lambda r: -r["rps"])
        best = best[:max(1, len(best) // 4)]
        cpus = [r["cpu_us_per_req"] for r in best if r.get("cpu_us_per_req")]
        return (statistics.fmean(r["rps"] for r in best),
                statistics.fmean(cpus) if len(cpus) == len(best) else None)

    text = (f"{variant['server']} ÷ qiao, round by round ({len(rps)} rounds): "
            f"req/s {spread(rps)}")
    if len(cpu) >= 4:
        text += f", CPU µs/req {spread(cpu)}"
    (q_rps, q_cpu), (v_rps, v_cpu) = fastest(qiao["runs"]), fastest(variant["runs"])
    text += (f"; the fastest quarter of each side's runs: req/s {v_rps / q_rps:.3f}"
             + (f", CPU µs/req {v_cpu / q_cpu:.3f}" if q_cpu and v_cpu else ""))
    return text + "."


def versus_baseline(doc: dict, wname: str) -> dict | None:
    """qiao ÷ its baseline in one workload: the ratios of their medians (req/s, CPU per
    request, p99; for idle_rss the RSS and USS of one worker), both summaries, and whether
    the req/s of their runs overlap. None without a baseline, or if either has no cell."""
    base = doc.get("baseline")
    if not base:
        return None
    q = next((c for c in doc["cells"] if c["workload"] == wname and c["server"] == "qiao"), None)
    b = next((c for c in doc.get("baseline_cells", []) if c["workload"] == wname), None)
    if not q or not b:
        return None

    def ratio(x, y):
        return x / y if x is not None and y else None

    if WORKLOAD_BY_NAME[wname].idle:
        return {"rss": ratio(q.get("idle_rss_worker_kib"), b.get("idle_rss_worker_kib")),
                "uss": ratio(q.get("idle_uss_worker_kib"), b.get("idle_uss_worker_kib")), "q": q, "b": b}
    qs, bs = q.get("summary") or {}, b.get("summary") or {}
    if not qs or not bs:
        return {"q": qs, "b": bs}
    if min(len(q["runs"]), len(b["runs"])) < 2:
        runs = "one run: no spread"
    elif qs["rps_min"] > bs["rps_max"]:
        runs = "qiao faster in every run"
    elif qs["rps_max"] < bs["rps_min"]:
        runs = "**qiao slower in every run**"
    else:
        runs = "req/s runs overlap"
    busy = max(qs.get("other_cpu_pct") or 0, bs.get("other_cpu_pct") or 0)
    if busy >= 10:  # other people's work on the machine: see the "other CPU %" column
        runs += f"; the machine was busy: other CPU up to {busy:.0f} %"
    return {"rps": ratio(qs["rps"], bs["rps"]), "cpu": ratio(qs.get("cpu_us"), bs.get("cpu_us")),
            "p99": ratio(qs.get("p99"), bs.get("p99")), "runs": runs, "q": qs, "b": bs}


def render_baseline(doc: dict) -> str:
    """qiao beside its baseline (--baseline), one row per workload."""
    base = doc["baseline"]
    current = doc["versions"].get("qiao", "?")
    lines = [
        f"### qiao against its baseline `{base['server']}`",
        "",
        (f"The baseline is qiao built at {base['revision'][:12]} (`--baseline {base['ref']}`: "
         f"\"{base['subject']}\", committed {base['date']}; {base.get('built', 'built ?')}), run as one "
         f"more server in every workload, taking turns with the others; the current build is qiao "
         f"{current}. The baseline is not a peer: no best-peer comparison or target counts it. "
         "Each ratio is qiao's median ÷ the baseline's: above 1 is more req/s, below 1 is less "
         "CPU per request and a lower p99. The last column compares the req/s of the two builds' "
         "runs (min–max)."),
        "",
        ("| workload | req/s qiao | req/s baseline | ÷ | CPU µs/req qiao | baseline | ÷ | p99 ms qiao "
         "| baseline | ÷ | runs |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    idle = []
    for wname in doc["workloads"]:
        v = versus_baseline(doc, wname)
        if v is None:
            continue
        if WORKLOAD_BY_NAME[wname].idle:
            q, b = v["q"], v["b"]
            if v["rss"]:
                idle.append(f"Idle worker (`{wname}`): RSS {q['idle_rss_worker_kib'] / 1024:.1f} MiB against "
                            f"{b['idle_rss_worker_kib'] / 1024:.1f} ({v['rss']:.2f} ×)"
                            + (f", USS {q['idle_uss_worker_kib'] / 1024:.1f} against "
                               f"{b['idle_uss_worker_kib'] / 1024:.1f} MiB ({v['uss']:.2f} ×)." if v["uss"] else "."))
            continue
        q, b = v["q"], v["b"]
        if not v.get("rps"):
            lines.append(f"| `{wname}` | {'measured' if q else 'failed'} | {'measured' if b else 'failed'} "
                         "| | | | | | | | |")
            continue

        def us(x):
            return "–" if x is None else f"{x:.1f}"

        lines.append(
            f"| `{wname}` | {fmt_rps(q['rps'])} ({fmt_rps(q['rps_min'])}–{fmt_rps(q['rps_max'])}) "
            f"| {fmt_rps(b['rps'])} ({fmt_rps(b['rps_min'])}–{fmt_rps(b['rps_max'])}) | {v['rps']:.2f} "
            f"| {us(q.get('cpu_us'))} | {us(b.get('cpu_us'))} | {fmt_ratio(v['cpu'])} "
            f"| {fmt_ms(q.get('p99'))} | {fmt_ms(b.get('p99'))} | {fmt_ratio(v['p99'])} | {v['runs']} |")
    if len(lines) == 6:  # no row
        lines[-2:] = ["qiao was not among the servers measured: nothing to set beside the baseline."]
    if idle:
        lines += [""] + idle
    return "\n".join(lines)


# Servers whose p99 is not comparable: they leave connections waiting in the listen
# backlog, outside wrk's clock (see README, caveats).
P99_NOT_COMPARABLE = {"uwsgi", "waitress"}


def render_targets(doc: dict) -> str:
    """The targets (bench/README.md, "The targets, in the latest run"), evaluated on this
    run's medians. "Best peer": the peer with the highest median req/s (the C and bare
    servers are references, not peers)."""
    summaries = {(c["workload"], c["server"]): c for c in doc["cells"]}
    limit = near_limit(doc)

    def summary(wname, server, where=None):
        """The cell's medians; with where, over its runs in that placement only."""
        c = summaries.get((wname, server))
        if not c:
            return None
        if where is None:
            return c.get("summary") or None
        return summarize([r for r in c["runs"] if placement(r, limit) == where]) or None

    def best_peer(wname, where=None):
        peers = [(s["rps"], c["server"], s) for c in doc["cells"]
                 if c["workload"] == wname and c["server"] not in ("qiao", *REFERENCES)
                 and (s := summary(wname, c["server"], where))]
        return max(peers, key=lambda p: p[0])[1:] if peers else (None, None)

    rows = []

    def row(target, text, holds):
        rows.append(f"| {target} | {text} | {'yes' if holds else '**no**'} |")

    def ratio_row(target, wname, factor, where=None):
        q, (peer, p) = summary(wname, "qiao", where), best_peer(wname, where)
        if q and p:
            r = q["rps"] / p["rps"]
            row(target, f"{fmt_rps(q['rps'])} vs {peer} {fmt_rps(p['rps'])} ({r:.2f} ×)", r >= factor)

    # hello is where the placement shows most (the kernel is most of its cost): when its runs
    # fell in both, the targets are also compared within each.
    hello_places = {placement(r, limit) for c in doc["cells"] if c["workload"] == "hello" for r in c["runs"]}
    for where in [None] + (["near", "far"] if {"near", "far"} <= hello_places else []):
        tag = f", {where} runs only" if where else ""
        ratio_row(f"hello: req/s ≥ best peer{tag}", "hello", 1.0, where)
        q, c = summary("hello", "qiao", where), summary("hello", "epoll-c", where)
        if q and c:
            r = q["cpu_us"] / c["cpu_us"]
            row(f"hello: CPU/req ≤ 1.15 × the C server{tag}",
                f"{q['cpu_us']:.1f} vs {c['cpu_us']:.1f} µs ({r:.2f} ×)", r <= 1.15)
    ratio_row("pipelined: ≥ 1.5 × best peer", "pipeline16", 1.5)
    q, (peer, p) = summary("hello_close", "qiao"), best_peer("hello_close")
    if q and p:
        r = q["rps"] / p["rps"]
        row("`Connection: close`: ≥ best peer, with less CPU/req",
            f"{fmt_rps(q['rps'])} vs {peer} {fmt_rps(p['rps'])} ({r:.2f} ×); "
            f"{q['cpu_us']:.1f} vs {p['cpu_us']:.1f} µs", r >= 1.0 and q["cpu_us"] < p["cpu_us"])
    floor = doc.get("floor", {})
    kernel = summary("hello", "epoll-c")
    for wname in ("flask_json", "flask_jinja"):
        q, cell = summary(wname, "qiao"), summaries.get((wname, "qiao"))
        floors, shares = paired_floors(cell["runs"]) if cell else ([], [])
        if floors:  # each run against the floor measured beside it, then the median
            share, floor_cps = median(shares), median(floors)
            text = (f"{100 * share:.0f} % (median of {len(floors)} runs, each ÷ the floor beside it; "
                    f"{fmt_rps(q['rps'])} req/s, floor {fmt_rps(floor_cps)} calls/s)")
        elif q and (f := floor.get(WORKLOAD_BY_NAME[wname].app)):  # older results: the start's floor
            share, floor_cps = q["rps"] / f["calls_per_s"], f["calls_per_s"]
            text = f"{fmt_rps(q['rps'])} of {fmt_rps(floor_cps)} ({100 * share:.0f} %)"
        else:
            continue
        if kernel:
            # The best any server on this core could do: the app's own time plus the
            # C server's whole cost per request (the kernel's work, nearly all of it).
            app_us = 1e6 / floor_cps
            ceiling = app_us / (app_us + kernel["cpu_us"])
            text += f"; ceiling with the C server's {kernel['cpu_us']:.1f} µs/req: {100 * ceiling:.0f} %"
        bare = summaries.get((wname, "bare-py"))
        _, bare_shares = paired_floors(bare["runs"]) if bare else ([], [])
        if bare_shares:
            # Measured, not computed: the app behind a server that does nothing but the
            # two syscalls (the kernel's time and its effect on the app's caches).
            text += f"; the bare server: {100 * median(bare_shares):.0f} %"
        row(f"{wname}: ≥ 95 % of the in-process floor", text, share >= 0.95)
    ratio_row("1 MiB bytes: ≥ best peer", "big_bytes", 1.0)
    q, (peer, p), b = summary("big_stream", "qiao"), best_peer("big_stream"), summary("big_bytes", "qiao")
    if q and p:
        r = q["rps"] / p["rps"]
        text = f"{fmt_rps(q['rps'])} vs {peer} {fmt_rps(p['rps'])} ({r:.2f} ×)"
        if b:
            # The same MiB as one bytes object, one send: the most a stream of it could reach.
            text += f"; 2 × is {fmt_rps(2 * p['rps'])}, qiao's 1 MiB in one send {fmt_rps(b['rps'])}"
        row("1 MiB streamed: ≥ 2 × best peer", text, r >= 2.0)
    q, b = summary("file_wrapper", "qiao"), summary("big_bytes", "qiao")
    if q and b:
        r = q["rps"] / b["rps"]
        row("file_wrapper: ≥ qiao's 1 MiB bytes", f"{fmt_rps(q['rps'])} vs {fmt_rps(b['rps'])} ({r:.2f} ×)", r >= 1.0)
    ratio_row("64 KiB POST: ≥ 1.2 × best peer", "post64k", 1.2)
    q = summary("sleep10", "qiao")
    if q:
        share = q["rps"] / 3200
        row("sleeping app: ≥ 90 % of 3,200 req/s", f"{fmt_rps(q['rps'])} ({100 * share:.0f} %)", share >= 0.9)
    idle = [c for c in doc["cells"] if c["workload"] == "idle_rss" and c["status"] == "ok"
            and c.get("idle_rss_worker_kib") and c["server"] not in REFERENCES]
    q = next((c for c in idle if c["server"] == "qiao"), None)
    peers = [c for c in idle if c["server"] != "qiao"]
    if q and peers:
        light = min(peers, key=lambda c: c["idle_rss_worker_kib"])
        row("idle RSS of one worker: ≤ lightest peer",
            f"{q['idle_rss_worker_kib'] / 1024:.1f} vs {light['server']} {light['idle_rss_worker_kib'] / 1024:.1f} MiB",
            q["idle_rss_worker_kib"] <= light["idle_rss_worker_kib"])
    better, worse = [], []
    for wname in doc["workloads"]:
        q = summary(wname, "qiao")
        peers = [(s["p99"], c["server"]) for c in doc["cells"] if c["workload"] == wname
                 and c["server"] not in ("qiao", *REFERENCES, *P99_NOT_COMPARABLE)
                 and (s := c.get("summary")) and s.get("p99") is not None]
        if not q or q.get("p99") is None or not peers:
            continue
        p99, peer = min(peers)
        (better if q["p99"] <= p99 else worse).append(f"{wname} {fmt_ms(q['p99'])} vs {peer} {fmt_ms(p99)}")
    if better or worse:
        row("p99 ≤ best peer's on every workload",
            "not on: " + "; ".join(worse) if worse else "on all: " + "; ".join(better), not worse)
    if not rows:
        return ""
    return "\n".join([
        "### Targets in this run",
        "",
        ("Medians of this run. Best peer: the peer with the highest median req/s (the C and bare "
         "servers are references, not peers); p99 leaves out uWSGI and waitress (see the caveats). "
         "*near/far runs only*: the medians of the runs made in one placement of the two cores."),
        "",
        "| target | in this run | holds? |",
        "|---|---|---|",
        *rows,
        "",
    ])


def update_readme(table: str) -> None:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if not README.exists():
        return
    text = README.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        README.write_text(f"{head}{start}\n{table}\n{end}{tail}")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default=",".join(ALL_SERVERS),
                   help="comma-separated, from: " + ",".join([*ALL_SERVERS, *QIAO_VARIANTS]))
    p.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS),
                   help="comma-separated, from: " + ",".join(w.name for w in WORKLOADS))
    p.add_argument("--runs", type=int, help="measured runs per cell (default 3)")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 8)")
    p.add_argument("--warmup", type=float, help="seconds of discarded warm-up per cell (default 3)")
    p.add_argument("--placement-wait", type=float,
                   help="before each run, wait up to this many seconds for cores 0 and 1 to be near "
                        "(see README, Conditions; default 90, 0: do not wait)")
    p.add_argument("--floor-seconds", type=float, help="seconds per in-process floor measurement (default 2)")
    p.add_argument("--quick", action="store_true", help="3 s x 1 run, 1 s warm-up, 0.5 s floors")
    p.add_argument("--smoke", action="store_true",
                   help="qiao, hello, 2 s, 1 run, with the current interpreter (no venv); exit 1 unless 0 errors")
    p.add_argument("--python", help="interpreter whose qiao/peers to run (default: bench/.venv's; --smoke: this one)")
    p.add_argument("--no-setup", action="store_true", help="do not create/update bench/.venv")
    p.add_argument("--reuse-qiao", action="store_true", help="do not rebuild qiao into the venv if it is there")
    p.add_argument("--baseline", metavar="REV",
                   help="also run qiao as built at git revision REV (a hash, tag, HEAD~3, main...), as the "
                        "server qiao@<short hash> beside the others, and report qiao ÷ it per workload; "
                        "the build is kept in bench/.data/baseline/ and reused for the same revision")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the 'Latest results' section of README.md")
    p.add_argument("--out", default=str(RESULTS), help="results directory (default bench/results)")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: redraw results.md/.png and README from OUT/results.json")
    args = p.parse_args(argv)
    # Explicit flags win over the presets of --smoke and --quick.
    preset = {"runs": 3, "duration": 8.0, "warmup": 3.0, "floor_seconds": 2.0, "placement_wait": 90.0}
    if args.quick:
        preset = {"runs": 1, "duration": 3.0, "warmup": 1.0, "floor_seconds": 0.5, "placement_wait": 0.0}
    if args.smoke:
        preset = {"runs": 1, "duration": 2.0, "warmup": 0.0, "floor_seconds": 0.5, "placement_wait": 0.0}
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke:
        args.servers, args.workloads = "qiao", "hello"
        args.no_setup = True
        args.no_readme = True
        args.python = args.python or sys.executable
        if args.out == str(RESULTS):
            args.out = str(DATA / "smoke")
    return args


def write_report(doc: dict, out: Path, python: Path, plot: bool, readme: bool) -> None:
    targets = render_targets(doc)
    table = render_markdown(doc) + ("\n" + targets if targets else "")
    (out / "results.md").write_text("## Latest results\n\n" + table + "\n")
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    if plot:
        r = subprocess.run([str(python), str(BENCH / "plot.py"), str(out / "results.json"), str(out / "results.png")],
                           capture_output=True, text=True, timeout=300, check=False)
        if r.returncode != 0:
            log(f"plot failed: {r.stderr[-300:]}")
    if readme:
        update_readme(table)
    log(f"wrote {out / 'results.md'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the running cell's `finally` stops its server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.report_only:
        out = Path(args.out)
        doc = json.loads((out / "results.json").read_text())
        write_report(doc, out, Path(args.python) if args.python else venv_python(), True, not args.no_readme)
        return 0
    servers = [s for s in args.servers.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    for s in servers:
        if s not in SERVER_PACKAGE:
            sys.exit(f"unknown server {s!r}; choose from {', '.join(ALL_SERVERS)}")
    for w in workloads:
        if w not in WORKLOAD_BY_NAME:
            sys.exit(f"unknown workload {w!r}; choose from {', '.join(WORKLOAD_BY_NAME)}")
    base = None
    if args.baseline:
        base = resolve_revision(args.baseline)
        if base is None:
            sys.exit(f"--baseline {args.baseline!r}: not a revision of {REPO}")
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")
    if not shutil.which("taskset"):
        sys.exit("taskset not found: apt-get install -y util-linux")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs at least 2 cores (server on core 0, wrk on core 1)")

    prepare_data()
    not_installed: dict[str, str] = {}
    if not args.no_setup:
        not_installed = setup_venv(servers, reinstall_qiao=not args.reuse_qiao)
    python = Path(args.python) if args.python else venv_python()
    if "epoll-c" in servers:
        build_ref("epoll_server")
    try:
        build_ref("core_rtt")
    except (OSError, subprocess.SubprocessError) as e:
        log(f"placement probe not built, runs will not record it: {e}")

    pkgs = sorted({SERVER_PACKAGE[s] for s in servers if SERVER_PACKAGE[s]} | {"flask"})
    versions = {k: v for k, v in installed_versions(pkgs, python).items()}
    for pkg, v in versions.items():
        if v is None and pkg not in not_installed:
            not_installed[pkg] = "not installed in " + str(python)
    if versions.get("qiao"):
        built = QIAO_BUILD.read_text().strip() if python == venv_python() and QIAO_BUILD.exists() else None
        versions["qiao"] += f" ({built or qiao_revision()})"
    runnable = [s for s in servers if SERVER_PACKAGE[s] is None or versions.get(SERVER_PACKAGE[s])]
    if "nginx" in runnable and nginx_binary() is None:
        runnable.remove("nginx")
        not_installed["nginx"] = "nginx is not installed (Debian: apt-get install nginx-light)"
    measured = list(runnable)
    if base:
        site, built = build_baseline(base, python)
        if site is None:
            sys.exit(f"--baseline {args.baseline}: qiao at {base['short']} did not build: {built} "
                     f"(log: {DATA / 'install-logs' / (base['server'] + '.log')})")
        base["built"], base["install"] = built, str(site)
        BASELINE_SITES[base["server"]] = site
        # Right after qiao, so that the two builds' runs are neighbours in every round.
        measured.insert(measured.index("qiao") + 1 if "qiao" in measured else len(measured), base["server"])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "python": subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=False).stdout.strip(),
        "versions": {k: v for k, v in versions.items() if v},
        "not_installed": not_installed,
        "runs": args.runs, "duration": args.duration, "warmup": args.warmup,
        "placement_wait": args.placement_wait,
        "servers": runnable, "workloads": workloads, "cells": [], "floor": {},
    }
    if base:  # its cells go apart from the peers' and the references'
        doc["baseline"], doc["baseline_cells"] = base, []

    apps = sorted({WORKLOAD_BY_NAME[w].app for w in workloads if not WORKLOAD_BY_NAME[w].idle})
    if apps and not args.smoke:
        log(f"in-process floor: {', '.join(apps)}")
        doc["floor"] = measure_floor(python, apps, args.floor_seconds) or {}

    total = sum(1 for w in workloads for s in measured if serves(s, WORKLOAD_BY_NAME[w]))
    n = 0
    (DATA / "server-logs").mkdir(parents=True, exist_ok=True)
    for wname in workloads:
        wl = WORKLOAD_BY_NAME[wname]
        servers = [s for s in measured if serves(s, wl)]
        for cell in measure_workload(wl, servers, python, args):
            server = cell.server
            n += 1
            d = asdict(cell)
            d["summary"] = summarize(d["runs"])
            doc["baseline_cells" if is_baseline(server) else "cells"].append(d)
            s = d["summary"]
            if wl.idle:
                detail = f"idle RSS {cell.idle_rss_kib / 1024:.1f} MiB" if cell.idle_rss_kib else ""
            elif s:
                detail = (f"{s['rps']:,.0f} req/s, p99 {fmt_ms(s['p99'])} ms, {s['errors']} errors, "
                          f"{s['cpu_us']:.1f} µs CPU/req, {s['rss_mib']:.1f} MiB")
            else:
                detail = ""
            log(f"[{n}/{total}] {wname:12} {server:16} {cell.status} {detail}")
            (out / "results.json").write_text(json.dumps(doc, indent=1))

    write_report(doc, out, python, plot=not args.smoke, readme=not args.no_readme)

    if args.smoke:
        ok = True
        for cell in doc["cells"] + doc.get("baseline_cells", []):
            s = cell["summary"]
            good = cell["status"] == "ok" and s and s["errors"] == 0 and s["rps"] > 0
            print(f"smoke: {cell['server']}: {'ok' if good else 'FAILED'}: {cell['status']}, {s}")
            ok = ok and bool(good)
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
