"""The master process: binds once, forks the workers, keeps their number, and turns signals
into graceful stops, reloads and recycling.

Signals (as gunicorn documents them): TERM/INT graceful stop, QUIT fast stop, HUP graceful
reload (new workers first, then the old ones drained), TTIN/TTOU one worker more/fewer,
USR1 reopen the log files. Handlers only queue the signal; the loop acts on it.

No thread and no async runtime exists in the master, so forking is safe: each worker builds
its own engine (and its runtime) after the fork.
"""

from __future__ import annotations

# `_signal` is the C module under `signal`: the same functions and constants, without the
# Signals and Handlers enums. Importing `signal` loads enum, functools and collections into
# the master, and so into every worker it forks (math, grp and pwd would too: they are
# imported where they are used). Measured: bench/README.md, the targets' "Idle RSS".
import _signal as signal
import errno
import faulthandler
import os
import select
import sys
import time

from qiao import _process
from qiao._child import run_child
from qiao._dumps import Dumps
from qiao._hooks import ServerLog
from qiao._loader import (
    AppLoadError,
    error_files,
    failing_app,
    format_app_traceback,
    load_configured,
)
from qiao.config import Config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Callable

    from qiao._qiao import Metrics, Scoreboard

__all__ = ["WORKER_APP_ERROR", "WORKER_BOOT_ERROR", "Arbiter"]

# Worker exit statuses the master reads as "this app cannot start": stop, do not respawn.
WORKER_BOOT_ERROR = 3  # the app's own import or factory raised (its traceback was printed)
WORKER_APP_ERROR = 4  # the app could not be found (one line was printed)

# A worker that dies sooner than this after its start counts as failing at boot.
_BOOT_WINDOW = 2.0
_MAX_BACKOFF = 10.0
_TICK = 0.5  # the loop's pace when nothing happens (timeouts are checked this often)
_KILL_AFTER_DUMP = 1.0  # time for a timed-out worker to write its stacks before SIGKILL
_ABORT_AFTER_DUMP = 0.2  # ... and, with a worker_abort hook, before its SIGABRT
# What a timed-out worker gets first: faulthandler writes every thread's Python stack from
# the signal handler itself (so even a thread stuck holding the GIL is shown), without
# ending the process or calling it a fatal error, as SIGABRT would.
_DUMP_SIGNAL = signal.SIGUSR2
_SLOTS = 1024  # scoreboard rows: the most workers alive at once on one board

_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD,
)


class Worker:
    """A worker process as the master tracks it, and as server hooks see it (``worker`` in
    gunicorn's hooks: ``pid``, ``ppid``, ``age``, ``log``, ``cfg``, ``nr``...)."""

    __slots__ = (
        "abort_at", "age", "alive", "board", "booted", "cfg", "dump", "engine", "exit_reason",
        "generation", "kill_at", "log", "max_requests", "mslot", "pid", "ppid", "retiring",
        "slot", "sockets", "started", "threads", "timeout", "wsgi",
    )

    def __init__(
        self, arbiter: Arbiter, board: Scoreboard, slot: int, max_requests: int
    ) -> None:
        # None until forked (gunicorn's pre_fork sees a worker without one yet).
        self.pid: int | None = None
        self.ppid = arbiter.master_pid
        self.age = arbiter.spawned  # this worker's number: 1 for the first one spawned
        self.log = arbiter.log
        self.cfg = arbiter.cfg
        self.sockets = arbiter.sockets
        self.timeout = arbiter.config.timeout
        self.max_requests = max_requests or sys.maxsize  # gunicorn's: sys.maxsize for none
        self.alive = True
        self.booted = False  # set in the worker once its app is loaded
        self.wsgi: Callable | None = None  # the application, in the worker
        self.engine = None  # the engine serving, in the worker
        # The scoreboard it was forked with (one column per app thread of its settings),
        # and its row there. A reload that changes --threads maps a new board for the new
        # workers; this one stays until the last worker using it is gone.
        self.board = board
        self.slot = slot
        self.threads = max(arbiter.config.threads, 1)
        # Its row in the metrics table (one table for all boards), when metrics are kept.
        self.mslot = arbiter.free_metrics_row()
        self.exit_reason: str | None = None  # set when the master retires or kills it
        self.generation = arbiter.generation  # bumped by each reload; older ones drained
        self.started = time.monotonic()
        self.retiring = False  # sent TERM: drains, then exits; a replacement is started
        self.kill_at: float | None = None  # after a timeout: SIGKILL at this time
        self.abort_at: float | None = None  # after a timeout: SIGABRT (worker_abort) then
        # The write end of its stack-dump pipe (see qiao._dumps), in the worker.
        self.dump: int | None = None

    @property
    def nr(self) -> int:
        """Requests served (in the worker; 0 in the master, as gunicorn's)."""
        return 0 if self.engine is None else self.engine.requests_served


_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL


def _wait(readers: list[int], writers: list[int], timeout: float) -> tuple[list[int], list[int]]:
    """The descriptors of `readers` ready to read and of `writers` ready to write, within
    `timeout` seconds. With poll(), not select(): select refuses a descriptor numbered 1024
    or more, which a master reaches with enough workers (a dump pipe each), listeners and
    exporter clients. A hang-up or an error counts as ready, as select reports it, so that
    the owner reads or writes and finds out."""
    masks: dict[int, int] = {}
    for fd in readers:
        masks[fd] = masks.get(fd, 0) | select.POLLIN
    for fd in writers:
        masks[fd] = masks.get(fd, 0) | select.POLLOUT
    poller = select.poll()
    for fd, mask in masks.items():
        poller.register(fd, mask)
    events = dict(poller.poll(max(0, int(timeout * 1000 + 0.999))))
    ready = [fd for fd in readers if events.get(fd, 0) & _READABLE]
    writable = [fd for fd in writers if events.get(fd, 0) & _WRITABLE]
    return ready, writable


class Arbiter:
    def __init__(
        self,
        config: Config,
        app_spec: str | None,
        sockets: list,
        logger,
        *,
        app: Callable | None = None,
        reload_config: Callable[[], tuple[Config, dict]] | None = None,
        app_name: str | None = None,
        hooks: dict[str, Callable] | None = None,
        metrics_socket: object = None,
    ) -> None:
        from qiao._hooks import CfgView, Hooks

        self.config = config
        self.cfg = CfgView(config)  # gunicorn's server.cfg, for hooks
        self.app_spec = app_spec  # imported by each worker unless `app` was preloaded
        self.app = app
        self.app_name = app_name or app_spec or "the demo page"  # for the banner
        self.proc_name = config.proc_name or self.app_name  # for ps (gunicorn's proc_name)
        self.sockets = sockets
        self.log = ServerLog(logger)  # gunicorn's logger methods, for hooks as for us
        self.dumps = Dumps(logger)  # the workers' stack dumps, read from a pipe each
        self.hooks = Hooks(hooks or {}, self.log)  # the config file's server hooks
        # Re-reads the config file on HUP: the new settings and hooks.
        self.reload_config = reload_config
        self.spawned = 0  # workers forked so far (gunicorn's worker.age)
        self.board = _map_board(config)  # for the workers started from now on
        self.workers: dict[int, Worker] = {}
        self.target = config.workers  # see num_workers
        self.generation = 0
        self.pending: list[int] = []
        self.stopping: str | None = None  # "graceful" or "fast" once asked to stop
        # What the workers get for a graceful stop: INT when the master got INT (Ctrl-C),
        # so that each runs worker_int as under gunicorn, whose Ctrl-C reaches them so.
        self.stop_signal = signal.SIGTERM
        self.exit_status = 0
        self.failures = 0  # consecutive workers that died at boot
        self.next_spawn = 0.0  # back-off: no spawn before this time
        self.booted = False  # some worker has served: the app did load once
        self.master_pid = os.getpid()
        self.wakeup_r, self.wakeup_w = os.pipe()
        for fd in (self.wakeup_r, self.wakeup_w):
            os.set_blocking(fd, False)
        # --metrics-bind: the workers' counters (mapped before any fork) and the exporter
        # serving them from this loop. None: the engine counts nothing.
        self.metrics: Metrics | None = None
        self.exporter = None
        self.exits: dict[str, int] = {}  # workers ended, by reason
        self.statsd = None  # --statsd-host: sends the counts' increments each second
        if metrics_socket is not None or config.statsd_host:
            from qiao._qiao import Metrics

            self.metrics = Metrics(_SLOTS, max(config.threads, 1))
        if metrics_socket is not None:
            from qiao._metrics import Exporter

            self.exporter = Exporter(self, metrics_socket)
        if config.statsd_host:
            from qiao._statsd import Statsd

            self.statsd = Statsd(
                self, config.statsd_host, config.statsd_prefix, config.dogstatsd_tags
            )

    # -- gunicorn's names, for hooks (``server`` is the arbiter, as in gunicorn)

    @property
    def pid(self) -> int:
        return self.master_pid

    @property
    def WORKERS(self) -> dict[int, Worker]:
        return self.workers

    @property
    def LISTENERS(self) -> list:
        return self.sockets

    @property
    def num_workers(self) -> int:
        return self.target

    def _set_target(self, value: int) -> None:
        """Sets the number of workers wanted, telling the nworkers_changed hook (as gunicorn
        does at each setting: at the start, with an old value of None, TTIN, TTOU, HUP)."""
        old, self.target = self.target, value
        self.hooks.call("nworkers_changed", self, value, old)

    # -- signals: the handler only queues, the loop acts.

    def _on_signal(self, signum: int, frame: object) -> None:
        self.pending.append(signum)
        try:
            os.write(self.wakeup_w, b"\0")
        except OSError:
            pass

    def _install_signals(self) -> None:
        for sig in _SIGNALS:
            signal.signal(sig, self._on_signal)

    # -- the loop

    def run(self) -> int:
        if self.config.log_level == "debug":
            # As gunicorn does at debug: the settings in effect, one per line.
            from qiao.config import value_text

            lines = [f"  {name}: {value_text(name, value)}"
                     for name, value in sorted(self.config.as_dict().items())]
            self.log.log("debug", "Current configuration:\n" + "\n".join(lines))
        _set_title(f"qiao: master [{self.proc_name}]")
        self._install_signals()
        self._write_pid()
        try:
            # gunicorn's start: nworkers_changed(workers, None), on_starting, then (its
            # sockets listening) when_ready; a hook that raises here stops the start.
            self.hooks.call("nworkers_changed", self, self.target, None)
            for name in ("on_starting", "when_ready"):
                try:
                    self.hooks.strict(name, self)
                except Exception as e:  # noqa: BLE001 - the config file's code: say where
                    from qiao._pyconfig import describe

                    self._report(f"qiao: error: {name} hook: {describe(e)}")
                    return 2
            _release_startup_memory()
            return self._loop()
        finally:
            self._remove_pid()
            self.hooks.call("on_exit", self)

    def _loop(self) -> int:
        while True:
            self._handle_signals()
            self._reap()
            if self.stopping:
                break
            self._check_workers()
            self._spawn_missing()
            if self.statsd is not None:
                self.statsd.tick()
            self._sleep()
        self._stop_all()
        return self.exit_status

    def _sleep(self, timeout: float = _TICK) -> None:
        """Waits for a signal or the timeout, serving the exporter's clients meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            readers, writers = [self.wakeup_r, *self.dumps.readers()], []
            if self.exporter is not None:
                readers += self.exporter.readers()
                writers = self.exporter.writers()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            dump = self.dumps.wait()
            try:
                ready, writable = _wait(readers, writers, left if dump is None else min(left, dump))
            except InterruptedError:
                return
            self.dumps.read(ready)
            if self.exporter is not None and (ready or writable):
                try:
                    self.exporter.serve(ready, writable)
                except Exception as e:  # noqa: BLE001 - a scrape must never stop the master
                    self.log.log("error", f"--metrics-bind: {type(e).__name__}: {e}")
            if self.wakeup_r in ready:
                try:
                    while os.read(self.wakeup_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                return

    def not_ready(self) -> str | None:
        """Why the server cannot take requests now (``/readyz``), or None when it can."""
        if self.stopping:
            return "stopping"
        if not any(w.board.ready(w.slot) for w in self._active()):
            return "no worker serving"
        return None

    def free_metrics_row(self) -> int:
        """The metrics row for a new worker: one no live worker uses (rows are shared by
        every board; a board's slots are not)."""
        used = {w.mslot for w in self.workers.values()}
        return next(i for i in range(_SLOTS) if i not in used)

    def _handle_signals(self) -> None:
        while self.pending:
            sig = self.pending.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.log.log("info", f"Received {_signal_name(sig)}: graceful stop")
                self.stopping = "graceful"
                self.stop_signal = sig
            elif sig == signal.SIGQUIT:
                self.log.log("info", "Received SIGQUIT: fast stop")
                self.stopping = "fast"
            elif sig == signal.SIGHUP:
                self._reload()
            elif sig == signal.SIGTTIN:
                self._set_target(self.target + 1)
                self.log.log("info", f"Received SIGTTIN: {self.target} workers")
            elif sig == signal.SIGTTOU:
                if self.target > 1:
                    self._set_target(self.target - 1)
                    self.log.log("info", f"Received SIGTTOU: {self.target} workers")
                    self._retire_extra()
            elif sig == signal.SIGUSR1:
                self.log.log("info", "Received SIGUSR1: reopening log files")
                self.log.reopen()
                self._signal_all(signal.SIGUSR1)
            # SIGCHLD only wakes the loop; _reap does the work.

    # -- workers

    def _active(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.retiring]

    def _free_slot(self) -> int:
        used = {w.slot for w in self.workers.values() if w.board is self.board}
        return next(i for i in range(_SLOTS) if i not in used)

    def _spawn_missing(self) -> None:
        current = [w for w in self._active() if w.generation == self.generation]
        missing = self.target - len(current)
        if not self.booted and self.workers:
            # Until one worker has loaded the app, start no more: an app that cannot load
            # then prints its error once, not once per worker.
            missing = 0
        now = time.monotonic()
        while missing > 0 and now >= self.next_spawn:
            self._spawn()
            missing -= 1
            if not self.booted:
                break
        # A new generation (after HUP) replaces the old one once it is serving.
        if not missing and all(w.board.ready(w.slot) for w in current):
            for worker in self._active():
                if worker.generation != self.generation:
                    self._retire(worker, "replaced by reload", "reload")

    def _count_exit(self, worker: Worker, code: int, ready: bool) -> None:
        """Keeps a gone worker's counts in the totals, and counts its exit by reason."""
        if self.metrics is None:
            return
        self.metrics.fold(worker.mslot)
        if worker.exit_reason is not None:
            reason = worker.exit_reason
        elif self.stopping:
            reason = "stop"
        elif code in (WORKER_BOOT_ERROR, WORKER_APP_ERROR) and not ready:
            reason = "boot_error"
        elif code == 0:
            reason = "max_requests" if self.config.max_requests else "exit"
        else:
            reason = "crash"
        self.exits[reason] = self.exits.get(reason, 0) + 1

    def _retire_extra(self) -> None:
        current = sorted(self._active(), key=lambda w: w.started)
        for worker in current[: max(0, len(current) - self.target)]:
            self._retire(worker, "fewer workers wanted", "scale_down")

    def _retire(self, worker: Worker, why: str, reason: str) -> None:
        """Graceful replacement: TERM drains the worker; the loop starts a new one.
        `reason`: its label in ``qiao_worker_exits_total``."""
        if worker.retiring:
            return
        self.log.log("info", f"Retiring worker {worker.pid}: {why}")
        worker.retiring = True
        worker.exit_reason = reason
        self._kill(worker.pid, signal.SIGTERM)

    def _spawn(self) -> None:
        board, slot = self.board, self._free_slot()
        board.reset(slot)
        max_requests = self.config.max_requests
        if max_requests and self.config.max_requests_jitter:
            # os.urandom rather than the random module: what the master imports, every
            # worker carries.
            jitter = int.from_bytes(os.urandom(4), "little")
            max_requests += jitter % (self.config.max_requests_jitter + 1)
        self.spawned += 1
        worker = Worker(self, board, slot, max_requests)
        if self.metrics is not None:
            self.metrics.reset(worker.mslot)
        self.hooks.call("pre_fork", self, worker)
        dump_r, dump_w = self.dumps.pipe()
        # A stop or other signal sent to the new worker before it has its own handlers would
        # run the master's (copied by the fork) and be lost, the worker then serving on: the
        # signals stay blocked, and so pending, until the worker has its handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            os.close(dump_r)
            os.close(dump_w)
            raise
        if pid == 0:
            worker.pid = os.getpid()
            self.dumps.in_child(dump_r)
            worker.dump = dump_w
            run_child(lambda: self._worker_main(board, slot, max_requests, worker),
                      report=self._report)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        self.dumps.attach(dump_r, dump_w, pid)
        worker.pid = pid
        self.workers[pid] = worker

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.dumps.finish(pid)  # its last stacks (a fatal error's), before its exit
            self.hooks.call("child_exit", self, worker)
            code = os.waitstatus_to_exitcode(status)
            lived = time.monotonic() - worker.started
            ready = worker.board.ready(worker.slot)
            self._count_exit(worker, code, ready)
            if code in (WORKER_BOOT_ERROR, WORKER_APP_ERROR) and not ready:
                self._boot_failed(worker, code)
                continue
            if worker.retiring or self.stopping:
                continue
            if code == 0:
                self.log.log("info", f"Worker {pid} exited; starting a new one")
                self.failures = 0
                continue
            how = f"signal {_signal_name(-code)}" if code < 0 else f"status {code}"
            self.log.log("error", f"Worker {pid} died ({how}) after {lived:.1f}s; replacing it")
            if lived < _BOOT_WINDOW:
                self.failures += 1
                delay = min(_MAX_BACKOFF, 0.1 * 2 ** self.failures)
                self.next_spawn = time.monotonic() + delay
                self.log.log("warning", f"Workers are dying at boot: next start in {delay:.1f}s")
            else:
                self.failures = 0

    def _boot_failed(self, worker: Worker, code: int) -> None:
        """A worker could not load the app. With nothing serving, the app is broken: stop
        (not an endless respawn loop). Within a reload, keep the old workers. Otherwise
        (a respawn, or --reload after an edit) retry with a back-off."""
        serving = [w for w in self._active() if w.board.ready(w.slot)]
        older = [w.generation for w in serving if w.generation < worker.generation]
        if older:
            self.log.log("error", "Reload failed: the app does not load; keeping the old workers")
            self.generation = max(older)
        elif serving or (self.config.reload and self.booted):
            self.failures += 1
            delay = min(_MAX_BACKOFF, 0.1 * 2 ** self.failures)
            self.next_spawn = time.monotonic() + delay
            self.log.log("error", f"A worker could not load the app; next try in {delay:.1f}s")
        else:
            # The worker printed why; the terminal shows that alone.
            self.log.log("debug", "The app failed to load in a worker: stopping")
            self.exit_status = 1 if code == WORKER_BOOT_ERROR else 2
            self.stopping = "fast"

    def _check_workers(self) -> None:
        now = time.monotonic()
        timeout = self.config.timeout
        lifetime = self.config.max_worker_lifetime
        memory = self.config.max_worker_memory
        for worker in list(self.workers.values()):
            if worker.kill_at is not None:
                if worker.abort_at is not None and now >= worker.abort_at:
                    worker.abort_at = None
                    self._kill(worker.pid, signal.SIGABRT)  # its worker_abort hook
                if now >= worker.kill_at:
                    self._kill(worker.pid, signal.SIGKILL)
                continue
            ready = worker.board.ready(worker.slot)
            if ready and not self.booted:
                self.booted = True
                self._announce()
            if timeout and ready:
                busy = worker.board.busiest(worker.slot)
                silent = worker.board.silence(worker.slot)
                if busy > timeout or silent > timeout:
                    self._timed_out(worker, max(busy, silent))
                    continue
            if worker.retiring:
                continue
            if lifetime and now - worker.started > lifetime:
                self._retire(
                    worker, f"older than --max-worker-lifetime {lifetime:g}s",
                    "max_worker_lifetime",
                )
            elif memory and _rss_mib(worker.pid) > memory:
                self._retire(
                    worker, f"resident memory above --max-worker-memory {memory} MiB",
                    "max_worker_memory",
                )

    def _announce(self) -> None:
        """The banner, once the first worker serves (so that an app which cannot load
        leaves only its own error on the terminal)."""
        from qiao import __version__
        from qiao._bind import display

        self.log.log("info", f"Starting qiao {__version__} (master pid {os.getpid()})")
        scheme = "http" if self.config.certfile is None else "https"
        for sock in self.sockets:
            self.log.log("info", f"Listening at: {display(sock, scheme)} ({os.getpid()})")
        if self.exporter is not None:
            where = display(self.exporter.sock)
            self.log.log("info", f"Metrics and health checks at: {where} (/metrics, /healthz, "
                                 f"/readyz)")
        workers = f"{self.target} worker{'s' if self.target != 1 else ''}"
        threads = f"{self.config.threads} thread{'s' if self.config.threads != 1 else ''}"
        self.log.log(
            "info", f"Using {workers} with {threads} each; app: {self.app_name}"
        )

    def _timed_out(self, worker: Worker, seconds: float) -> None:
        """Log, have the worker write every thread's Python stack (faulthandler on SIGABRT),
        then kill it; the loop starts a replacement."""
        busy, waiting = worker.board.threads_state(worker.slot)
        self.log.log(
            "critical",
            f"WORKER TIMEOUT (pid:{worker.pid}): a request has run {seconds:.1f}s "
            f"(--timeout {self.config.timeout:g}; {busy} thread(s) in the app, {waiting} "
            f"waiting on a client); its threads' stacks follow",
        )
        self._kill(worker.pid, _DUMP_SIGNAL)
        now = time.monotonic()
        # After the dump, as gunicorn does: SIGABRT, whose handler calls worker_abort and
        # ends the stuck requests with a 500; SIGKILL if the worker is still there.
        worker.abort_at = now + _ABORT_AFTER_DUMP
        worker.kill_at = now + _KILL_AFTER_DUMP
        worker.retiring = True
        worker.exit_reason = "timeout"

    def _reload(self) -> None:
        from qiao._hooks import CfgView, Hooks

        self.log.log("info", "Received SIGHUP: reloading (new workers first, then the old drained)")
        if self.reload_config is not None:
            try:
                config, hooks = self.reload_config()
            except Exception as e:  # noqa: BLE001 - a bad file must not kill the master
                self.log.log("error", f"Reload: keeping the old settings: {e}")
            else:
                self.config = config
                self.hooks = Hooks(hooks, self.log)
                self.cfg = CfgView(config)
                self._set_target(config.workers)
                if self.board.threads != max(config.threads, 1):
                    # The new workers need a column per app thread: sharing one, a thread
                    # that finishes would clear the cell of another stuck in the app,
                    # hiding it from --timeout. The old workers keep the board they have.
                    self.board = _map_board(config)
        self.hooks.call("on_reload", self)
        self.generation += 1

    # -- stopping

    def _stop_all(self) -> None:
        # The exporter keeps answering while the workers drain: /readyz says "stopping".
        fast = self.stopping == "fast"
        self._signal_all(signal.SIGQUIT if fast else self.stop_signal)
        deadline = time.monotonic() + (1.0 if fast else self.config.graceful_timeout + 1.0)
        while self.workers and time.monotonic() < deadline:
            self._reap()
            if self.workers:
                self._sleep_briefly()
        for worker in self.workers.values():
            self.log.log("warning", f"Worker {worker.pid} did not stop in time: killing it")
            self._kill(worker.pid, signal.SIGKILL)
        while self.workers:
            self._reap()
            self._sleep_briefly()
        self.dumps.close()
        if self.statsd is not None:
            self.statsd.tick(force=True)  # the last requests' counts
            self.statsd.close()
        self.log.log("info" if self.booted else "debug", "Shutting down: master exits")

    def _sleep_briefly(self) -> None:
        self._sleep(0.05)

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.workers):
            self._kill(pid, sig)

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise

    def _report(self, text: str) -> None:
        """Why the server or a worker cannot start (a hook's or the app's error, with its
        traceback): on stderr as Python prints it, or with --log-format json one error-log
        record, so that every line there stays a JSON object."""
        text = text.rstrip("\n")
        if self.config.log_format == "json":
            self.log.log("error", text)
        else:
            print(text, file=sys.stderr)

    def _write_pid(self) -> None:
        if self.config.pid:
            with open(self.config.pid, "w") as f:
                f.write(f"{os.getpid()}\n")

    def _remove_pid(self) -> None:
        if self.config.pid:
            try:
                os.unlink(self.config.pid)
            except OSError:
                pass

    # -- in the worker process

    def _worker_main(
        self, board: Scoreboard, slot: int, max_requests: int, worker: Worker | None = None
    ) -> int:
        if board.threads < self.config.threads:
            # The master maps a board for each --threads it starts workers with; reaching
            # this is a bug, and sharing cells would let stuck requests escape --timeout.
            raise RuntimeError(
                f"the scoreboard has {board.threads} thread columns for "
                f"--threads {self.config.threads}: refusing to start the worker"
            )
        if worker is None:
            worker = Worker(self, board, slot, max_requests)
            worker.pid = os.getpid()

        os.close(self.wakeup_r)
        os.close(self.wakeup_w)
        if self.exporter is not None:
            self.exporter.close(owner=False)  # the master's; the worker serves none of it
        if self.statsd is not None:
            self.statsd.close()  # the master's socket, if it had opened it
        # The master's signals, not the worker's business (and, while it boots, USR1's log
        # reopening, which the engine's own files will see): ignored rather than left to
        # their defaults, which end or stop the process.
        ignored = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
        _set_title(f"qiao: worker [{self.proc_name}]")
        # The master's dump signal after --timeout (and a crash): every thread's Python
        # stack, even one stuck holding the GIL (faulthandler writes from the signal handler
        # itself), to the pipe the master logs them from as one record.
        dump = sys.stderr.fileno() if worker.dump is None else worker.dump
        faulthandler.enable(file=dump, all_threads=True)
        faulthandler.register(_DUMP_SIGNAL, file=dump, all_threads=True)

        # A stop asked for while the worker boots (hooks, the app's import) is kept for
        # when it can be honoured, so that the worker ends through worker_exit.
        def stop_at_boot(signum: int, frame: object) -> None:
            worker.alive = False

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop_at_boot)
        signal.signal(signal.SIGQUIT, lambda signum, frame: self._quit_now(worker))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # blocked by the master's fork
        try:
            return self._worker_serve(worker, max_requests)
        finally:
            self.hooks.call("worker_exit", self, worker)

    def _worker_serve(self, worker: Worker, max_requests: int) -> int:
        from qiao import _qiao

        board, slot = worker.board, worker.slot
        app = self.app
        watch = list(self.config.reload_extra_files)
        try:
            # gunicorn's boot: post_fork, the app, post_worker_init; any of them raising
            # fails the boot (the master stops if no worker serves yet).
            self.hooks.strict("post_fork", self, worker)
            if app is None:
                try:
                    app = self._load_app()
                except AppLoadError:
                    raise
                except Exception as e:
                    if not self.config.reload:
                        raise
                    # Development: the traceback once, a 500 page showing it, and the
                    # next save of the files it names brings a fresh worker at once.
                    self._report(format_app_traceback(e))
                    app = failing_app(e)
                    watch += error_files(e)
            worker.wsgi = app
            self.hooks.strict("post_worker_init", worker)
        except AppLoadError as e:
            self._report(f"qiao: error: {e}")
            return WORKER_APP_ERROR
        except Exception as e:  # noqa: BLE001 - the app's own import failed: show why
            self._report(format_app_traceback(e))
            return WORKER_BOOT_ERROR
        settings = self.config.engine_settings()
        settings["max_requests"] = max_requests
        settings["parent_pid"] = self.master_pid  # not getppid(): the master may be gone
        settings.update(self.config.syslog_settings(self.proc_name))
        engine = _qiao.Engine(
            app, settings, [s.fileno() for s in self.sockets], board, slot,
            self.hooks.request_hooks(worker),
            None if self.metrics is None else (self.metrics, worker.mslot),
            **_process.routed_loggers(),
        )
        worker.engine = engine
        worker.log = ServerLog(engine)
        for s in self.sockets:
            s.close()

        def graceful(signum: int, frame: object) -> None:
            # Ctrl-C in a terminal reaches a worker twice: from the terminal and from the
            # master; worker_int runs once.
            if signum == signal.SIGINT and worker.alive:
                self.hooks.call("worker_int", worker)
            worker.alive = False
            engine.shutdown(wait=False)

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, graceful)
        signal.signal(signal.SIGUSR1, lambda signum, frame: engine.reopen_logs())
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master's business
        def abort(signum: int, frame: FrameType | None) -> None:
            # --timeout (the master's SIGABRT, after the stacks were dumped): gunicorn's
            # worker_abort, then the requests stuck in the app are ended by an exception
            # raised in their threads, so that each gets a 500 and Connection: close where
            # its response has not begun; the worker stops, SIGKILL being the backstop.
            worker.alive = False
            self.hooks.call("worker_abort", worker)
            engine.shutdown(wait=False)
            _interrupt_app_threads()
            if frame is not None and not frame.f_code.co_filename.startswith(_QIAO_DIR):
                raise RequestTimeout(self.config.timeout)

        signal.signal(signal.SIGABRT, abort)
        if self.config.reload:
            from qiao._reloader import watch_sources

            watch_sources(engine, watch)
        worker.booted = True
        try:
            if worker.alive:  # else told to stop while it booted
                engine.serve_forever()
        except (KeyboardInterrupt, RequestTimeout):
            pass
        engine.close()
        return 0

    def _quit_now(self, worker: Worker) -> None:
        """QUIT (a fast stop): worker_int and worker_exit, then out at once (gunicorn's)."""
        worker.alive = False
        self.hooks.call("worker_int", worker)
        self.hooks.call("worker_exit", self, worker)
        os._exit(0)

    def _load_app(self) -> Callable:
        return load_configured(self.app_spec, self.config, os.getcwd())


class RequestTimeout(Exception):
    """Raised in an app thread whose request ran past ``--timeout``: the engine answers the
    request 500 (its traceback shows where the app was)."""

    def __init__(self, timeout: float | None = None) -> None:
        limit = "--timeout" if timeout is None else f"--timeout {timeout:g}s"
        super().__init__(f"the request ran past {limit}; the worker stops")


_QIAO_DIR = os.path.dirname(__file__)


def _interrupt_app_threads() -> None:
    """Raises ``RequestTimeout`` in the other threads running the app's Python code now
    (a thread waiting in the engine runs none, and is left alone), at its next bytecode."""
    import ctypes
    import threading

    main = threading.main_thread().ident
    for ident, frame in sys._current_frames().items():
        if ident in (main, threading.get_ident()):
            continue
        if frame.f_code.co_filename.startswith(_QIAO_DIR):
            continue  # qiao's own threads (the reloader)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(ident), ctypes.py_object(RequestTimeout)
        )


def _map_board(config: Config) -> Scoreboard:
    """A new scoreboard with a column per app thread of `config` (mapped shared, before the
    forks that use it: no thread is started)."""
    from qiao._qiao import Scoreboard

    return Scoreboard(_SLOTS, max(config.threads, 1))


def _signal_name(number: int) -> str:
    """A signal's name as `signal.Signals` gives it (of aliases such as SIGIOT and SIGABRT,
    the first in alphabetical order), or its number when it has none."""
    names = [
        name for name, value in vars(signal).items()
        if name.startswith("SIG") and not name.startswith("SIG_") and value == number
    ]
    return min(names) if names else str(number)


def _rss_mib(pid: int) -> float:
    """A process's resident memory in MiB (0 if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _release_startup_memory() -> None:
    """Frees what start-up left behind (argparse's parser is a cycle; the settings check
    freed C heap) before the first fork: each worker begins as a copy of the master, so
    every resident page here is resident in each of them."""
    import gc

    from qiao import _qiao

    gc.collect()
    _qiao.trim_memory()


def _set_title(title: str) -> None:
    """Names the process for ps and top: the kernel's short name always (``qiao: master``,
    ``qiao: worker``), the whole title too when the ``setproctitle`` package is installed."""
    from qiao import _qiao

    _qiao.set_process_name(title.split(" [")[0])
    try:
        import setproctitle  # type: ignore[import-not-found]
    except ImportError:
        return
    setproctitle.setproctitle(title)
