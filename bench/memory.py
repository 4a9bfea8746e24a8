"""Where a qiao server's resident memory goes: RSS of its master and worker split by what
each mapping holds (the engine's code and data, the interpreter, other libraries, the C
heap, mimalloc's segments, thread stacks, glibc's thread arenas, shared memory, the rest),
from /proc/PID/smaps, idle and after a short `hello` load, for one or more builds started
side by side.

    bench/.venv/bin/python bench/memory.py                # run.py's build, idle and loaded
    bench/.venv/bin/python bench/memory.py --pythonpath bench/.data/baseline/<rev>-<python>
    python bench/memory.py --pythonpath A --pythonpath B  # two builds' directories
    python bench/memory.py --pid 1234                     # a running server's tree, now
    python bench/memory.py --mappings                     # and every mapping of 64 KiB or more
    python bench/memory.py -- --threads 4                 # more qiao flags after --

Each build is a directory `pip install --target` made (`--pythonpath`, the way run.py's
`--baseline` builds are kept), or, without `--pythonpath` (or with `--self` beside them),
the qiao the running interpreter imports. Run it with an interpreter whose site-packages
load nothing at start (bench/.venv, which run.py creates): `.pth` files of a system
site-packages would import modules into every process and their memory with them.

Every server is started first (one worker, `--threads 1`, pinned to core 0 as in run.py),
idle for `--idle` seconds, then each in turn serves `wrk -t1 -c64` for `--seconds` seconds
(pinned to core 1) and is read a second later; all that `--runs` times, and the tables give
each row's mean. RSS counts every page a process maps; USS (Private_Clean + Private_Dirty)
only its own. A file's pages appear in the RSS of every process that touched them since it
started: a worker maps no page of the engine's code until it runs it, whatever its master
ran before the fork. A fault on the engine's code maps the 64 KiB around it that are in the
page cache (the kernel's fault-around), so that row counts windows of code touched, not
pages, and depends on what of the file is cached and how: each build's engine is dropped
from the page cache and read whole before the runs, so that all are cached alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
LOGS = BENCH / ".data" / "logs"
SERVER_CORE, CLIENT_CORE = "0", "1"

# The rows, in the order they are printed.
CATEGORIES = [
    "engine code (.text)",
    "engine read-only (.rodata, relocations, .data.rel.ro)",
    "engine data (.data, .bss)",
    "interpreter (python, libpython)",
    "other files (libraries, locale)",
    "C heap (brk)",
    "mimalloc segments (the engine's heap)",
    "glibc thread arenas",
    "main thread stack",
    "other thread stacks",
    "shared memory",
    "other anonymous (Python's arenas, large mallocs)",
    "kernel ([vdso], [vvar])",
]

# The engine's .bss (~32 KiB) is an anonymous mapping right after its .data; a larger one
# there is the engine's .bss merged with the mappings after it, counted with the rest.
BSS_AT_MOST = 64 << 10
GLIBC_HEAP = 64 << 20  # the reservation of one glibc thread arena (HEAP_MAX_SIZE)
# mimalloc asks the kernel for its arenas at hinted addresses from 2 TiB up; the
# interpreter, the libraries and glibc's mappings are far above or, for brk, far below.
MIMALLOC_HINTS = (2 << 40, 64 << 40)


@dataclass
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def rss(self) -> int:
        return self.fields.get("Rss", 0)

    @property
    def private(self) -> int:
        return self.fields.get("Private_Clean", 0) + self.fields.get("Private_Dirty", 0)


def read_smaps(pid: int) -> list[Mapping]:
    maps: list[Mapping] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.partition(" ")[0]
            if "-" in head and ":" not in head:
                parts = line.split(None, 5)
                start, end = (int(x, 16) for x in parts[0].split("-"))
                path = parts[5].strip() if len(parts) > 5 else ""
                maps.append(Mapping(start, end, parts[1], path))
            elif line.rstrip().endswith(" kB"):
                name, value = line.split(":", 1)
                maps[-1].fields[name] = int(value.split()[0])
    return maps


def stack_pointers(pid: int) -> dict[int, int]:
    """Thread id -> its stack pointer, from /proc/PID/task/TID/syscall ("nr args... sp pc",
    or "-1 sp pc" outside a system call; "running" gives none)."""
    sps = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            words = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
        except OSError:
            continue
        if len(words) >= 3 and words[0] != "running":
            sps[int(tid)] = int(words[-2], 16)
    return sps


def classify(pid: int, maps: list[Mapping]) -> list[str]:
    """One category per mapping."""
    sps = {tid: sp for tid, sp in stack_pointers(pid).items() if tid != pid}
    interpreter = os.path.realpath(f"/proc/{pid}/exe")
    out = []
    for i, m in enumerate(maps):
        prev = maps[i - 1] if i else None
        follows = prev is not None and prev.end == m.start and not m.path
        if "_qiao" in m.path:
            cat = {"r-xp": CATEGORIES[0], "rw-p": CATEGORIES[2]}.get(m.perms, CATEGORIES[1])
        elif follows and "_qiao" in prev.path and prev.perms == "rw-p" and \
                m.end - m.start <= BSS_AT_MOST:
            cat = CATEGORIES[2]  # the engine's .bss, right after its .data
        elif m.path == interpreter or "libpython" in m.path or (
                follows and out[-1] == CATEGORIES[3]):
            cat = CATEGORIES[3]
        elif m.path == "[heap]":
            cat = CATEGORIES[5]
        elif m.path == "[stack]":
            cat = CATEGORIES[8]
        elif m.path in ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"):
            cat = CATEGORIES[12]
        elif m.perms[3] == "s" or m.path.startswith(("/dev/zero", "/memfd:", "/dev/shm/")) or \
                m.path == "[anon_shmem]":
            cat = CATEGORIES[10]
        elif m.path.startswith("/"):
            cat = CATEGORIES[4]
        elif any(m.start <= sp < m.end for sp in sps.values()):
            cat = CATEGORIES[9]
        elif (m.start % GLIBC_HEAP == 0 and i + 1 < len(maps) and maps[i + 1].start == m.end
              and maps[i + 1].perms == "---p" and maps[i + 1].end - m.start == GLIBC_HEAP):
            cat = CATEGORIES[7]
        elif MIMALLOC_HINTS[0] <= m.start < MIMALLOC_HINTS[1]:
            cat = CATEGORIES[6]
        else:
            cat = CATEGORIES[11]
        out.append(cat)
    return out


@dataclass
class Reading:
    pid: int
    threads: int
    rss: dict[str, int]
    uss: dict[str, int]
    maps: list[tuple[Mapping, str]]


def mean(readings: list[Reading]) -> Reading:
    """Each category's mean over the runs (the last run's pid, threads and mappings)."""
    n = len(readings)
    last = readings[-1]
    return Reading(last.pid, last.threads,
                   {c: sum(r.rss[c] for r in readings) // n for c in CATEGORIES},
                   {c: sum(r.uss[c] for r in readings) // n for c in CATEGORIES}, last.maps)


def read_process(pid: int) -> Reading:
    maps = read_smaps(pid)
    cats = classify(pid, maps)
    rss = dict.fromkeys(CATEGORIES, 0)
    uss = dict.fromkeys(CATEGORIES, 0)
    for m, c in zip(maps, cats):
        rss[c] += m.rss
        uss[c] += m.private
    return Reading(pid, len(os.listdir(f"/proc/{pid}/task")), rss, uss, list(zip(maps, cats)))


def children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return kids


def tree(root: int) -> tuple[int, list[int]]:
    """The master and its workers (the root's children; the root itself when it has none)."""
    kids = children(root)
    return root, kids


# --------------------------------------------------------------------------- servers


TAKEN: set[int] = set()


def free_port() -> int:
    """A port no other server of this run was given (the kernel may hand out a port again
    once its socket is closed)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in TAKEN:
            TAKEN.add(port)
            return port


def cache_whole(path: Path) -> None:
    """Drops the file's pages from the page cache and reads it whole, so that every build's
    engine is cached alike: how a file got into the cache (written by pip, read ahead,
    faulted in) decides the size of its cached pieces, and the kernel maps a faulting
    page's cached neighbours with it (fault-around), so that shapes the engine's RSS."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)


def build_name(pythonpath: str | None) -> tuple[str, str]:
    """The build's name (its directory's, else its revision) and revision (`qiao --version`,
    which the builds before 4e289e8 do not tell); its engine is cached afresh."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-m", "qiao", "--version"], capture_output=True,
                         text=True, env=env, timeout=30, check=False).stdout.strip()
    where = subprocess.run([sys.executable, "-c", "import qiao._qiao as q; print(q.__file__)"],
                           capture_output=True, text=True, env=env, timeout=30,
                           check=False).stdout.strip()
    if not where or (pythonpath and not where.startswith(os.path.realpath(pythonpath))):
        raise SystemExit(f"memory.py: error: {pythonpath or sys.executable} does not import "
                         f"qiao's engine from there ({where or 'no qiao'})")
    cache_whole(Path(where))
    revision = out.split("(revision ")[1].split(";")[0] if "(revision " in out else "?"
    return Path(pythonpath).name if pythonpath else revision, revision


class Server:
    def __init__(self, pythonpath: str | None, flags: list[str]):
        self.port = free_port()
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        cmd = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "qiao", "hello:app",
               "-b", f"127.0.0.1:{self.port}", "-w", "1", "--threads", "1", *flags]
        LOGS.mkdir(parents=True, exist_ok=True)
        self.logfile = LOGS / f"memory-{self.port}.log"
        with open(self.logfile, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=APPS, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"memory.py: error: the server exited "
                                 f"({self.proc.returncode}): see {self.logfile}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if children(self.proc.pid):
                return
            time.sleep(0.05)
        raise SystemExit("memory.py: error: the server did not accept in 30 s")

    def load(self, seconds: int) -> None:
        subprocess.run(["taskset", "-c", CLIENT_CORE, "wrk", "-t1", "-c64", f"-d{seconds}s",
                        f"http://127.0.0.1:{self.port}/"], stdout=subprocess.DEVNULL,
                       timeout=seconds + 30, check=True)

    def read(self) -> tuple[Reading, Reading]:
        """(master, worker)."""
        return read_process(self.proc.pid), read_process(children(self.proc.pid)[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


# --------------------------------------------------------------------------- report


def mib(kib: int) -> str:
    return f"{kib / 1024:.2f}"


def table(title: str, names: list[str], readings: list[Reading]) -> None:
    print(f"\n{title}\n")
    head = "| KiB | " + " | ".join(f"{n} RSS | {n} USS" for n in names)
    if len(names) > 1:
        head += " | RSS Δ " + " | RSS Δ ".join(names[1:])
    print(head + " |")
    print("|---" + "|---:" * (2 * len(names) + len(names) - 1) + "|")
    rows = [(c, [r.rss[c] for r in readings], [r.uss[c] for r in readings]) for c in CATEGORIES]
    rows.append(("total", [sum(r.rss.values()) for r in readings],
                 [sum(r.uss.values()) for r in readings]))
    for name, rss, uss in rows:
        if not any(rss):
            continue
        cells = [f"{a:,} | {b:,}" for a, b in zip(rss, uss)]
        deltas = [f"{x - rss[0]:+,}" for x in rss[1:]]
        label = f"**{name}**" if name == "total" else name
        print(f"| {label} | " + " | ".join(cells + deltas) + " |")
    print("| threads | " + " | ".join(f"{r.threads} | " for r in readings)
          + " | " * (len(names) - 1) + " |")


def mappings(name: str, reading: Reading) -> None:
    print(f"\n{name}, pid {reading.pid}: mappings of 64 KiB RSS or more\n")
    print("| address | perms | size KiB | RSS KiB | USS KiB | category | path |")
    print("|---|---|---:|---:|---:|---|---|")
    for m, c in reading.maps:
        if m.rss >= 64:
            print(f"| {m.start:x} | {m.perms} | {(m.end - m.start) // 1024:,} | {m.rss:,} | "
                  f"{m.private:,} | {c} | {m.path} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythonpath", action="append", default=[],
                        help="a build's directory (pip install --target); repeatable")
    parser.add_argument("--self", action="store_true", dest="this",
                        help="also the qiao this interpreter imports (the default alone)")
    parser.add_argument("--pid", type=int, help="read a running server's tree and stop")
    parser.add_argument("--seconds", type=int, default=3, help="wrk's load per server (3)")
    parser.add_argument("--idle", type=float, default=2.0, help="idle seconds before (2)")
    parser.add_argument("--runs", type=int, default=5,
                        help="servers started anew this many times (5): where the engine "
                             "lands (ASLR) moves which 64 KiB windows its code faults in")
    parser.add_argument("--mappings", action="store_true", help="list the large mappings")
    parser.add_argument("flags", nargs="*", help="more qiao flags, after --")
    args = parser.parse_args()

    if args.pid:
        master, workers = tree(args.pid)
        for pid in [master, *workers]:
            r = read_process(pid)
            role = "master" if pid == master and workers else "worker"
            table(f"{role}, pid {pid}", [role], [r])
            if args.mappings:
                mappings(role, r)
        return 0

    if not shutil.which("wrk"):
        print("memory.py: error: wrk is not on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 2
    builds: list[str | None] = [os.path.abspath(p) for p in args.pythonpath]
    if not builds or args.this:
        builds.insert(0, None)
    names, revisions = zip(*(build_name(b) for b in builds))
    names = list(names)
    # Per build: (master, worker) idle and after the load, one pair per run.
    idle: list[list[tuple[Reading, Reading]]] = [[] for _ in builds]
    loaded: list[list[tuple[Reading, Reading]]] = [[] for _ in builds]
    for _ in range(args.runs):
        servers = []
        try:
            for b in builds:
                servers.append(Server(b, args.flags))
            for s in servers:
                s.wait_ready()
            time.sleep(args.idle)
            for i, s in enumerate(servers):
                idle[i].append(s.read())
            for i, s in enumerate(servers):
                s.load(args.seconds)
                time.sleep(1)
                loaded[i].append(s.read())
        finally:
            for s in servers:
                s.stop()

    print(f"`qiao hello:app -w 1 --threads 1 {' '.join(args.flags)}`, {args.runs} run(s), "
          "the mean of the runs in KiB; builds: "
          + ", ".join(f"{n} (revision {r}, {b or 'this interpreter'})"
                      for n, r, b in zip(names, revisions, builds)))
    table("Worker, idle", names, [mean([r[1] for r in runs]) for runs in idle])
    table(f"Worker, after {args.seconds} s of wrk -c64", names,
          [mean([r[1] for r in runs]) for runs in loaded])
    table("Master, after the worker's load", names,
          [mean([r[0] for r in runs]) for runs in loaded])
    print("\nRSS of master + worker after the load, MiB, mean (min–max): " + ", ".join(
        f"{n} {mib(sum(totals) // len(totals))} ({mib(min(totals))}–{mib(max(totals))})"
        for n, runs in zip(names, loaded)
        for totals in [[sum(m.rss.values()) + sum(w.rss.values()) for m, w in runs]]))
    if args.mappings:
        for n, runs in zip(names, loaded):
            mappings(f"{n} worker, after the load (last run)", runs[-1][1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
