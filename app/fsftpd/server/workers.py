"""Several event-loop worker processes serving one control port (Linux only).

:func:`run_workers` is a small supervisor. It creates the shared state (``shared.py``), forks
``workers`` children and then only watches them. Each child runs its own event loop (uvloop
when importable) with its own :class:`~fsftpd.Server` listening with ``SO_REUSEPORT`` on the
same address, so the kernel spreads new control connections over the workers. A session
stays in the worker that accepted it, with its data connections.

Invariants:
- worker ``i`` offers only ``passive_ports[i::workers]`` (disjoint slices, so two workers
  never compete for a passive port); without ``passive_ports`` each picks random free
  ports of the dynamic range;
- connection, session and speed limits are checked in shared memory (exact across workers);
- a worker that dies unexpectedly has its counts released and is forked again, after a
  delay that doubles on each quick failure (:data:`RESTART_DELAYS`);
- SIGTERM or SIGINT to the supervisor is forwarded; each worker drains (``Server.close``:
  running transfers finish, up to ``shutdown_timeout``) and exits 0; the supervisor returns
  once every worker has exited (stragglers are killed ``shutdown_timeout + 5`` s later).
- SIGHUP to the supervisor is forwarded to every worker (a reload: see ``setup``); a
  worker that installed no SIGHUP handler ignores it;
- a worker's parent death signal is SIGTERM: workers never outlive a killed supervisor.

The supervisor uses process signal handlers, so call :func:`run_workers` from the main
thread, in a process that runs no event loop and no other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import inspect
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..auth.users import User
from ..storage.factory import open_home
from .config import ServerConfig
from .server import Server
from .shared import SharedState

log = logging.getLogger("fsftpd.workers")

#: seconds before restarting a worker that died, by number of quick failures in a row
RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
#: a worker that ran at least this long before dying is restarted after the first delay
STABLE_SECONDS = 30.0
#: how long the workers may take to start listening before run_workers gives up
STARTUP_TIMEOUT = 60.0
#: how much longer than ``shutdown_timeout`` the supervisor waits before killing workers
KILL_GRACE = 5.0

_PR_SET_PDEATHSIG = 1
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)

#: ``setup(server, worker_index)``: called in each worker before it listens (e.g. to
#: subscribe event observers); may be a coroutine function
Setup = Callable[[Server, int], Any]


def passive_slices(ports: Sequence[int] | None, workers: int) -> list[list[int] | None]:
    """Worker ``i`` gets ``ports[i::workers]``: every ``workers``-th port, starting at ``i``.
    Raises ValueError when there are fewer ports than workers."""
    if ports is None:
        return [None] * workers
    ports = list(ports)
    if len(ports) < workers:
        raise ValueError(f"passive_ports has {len(ports)} port(s) for {workers} workers: "
                         "each worker needs at least one")
    return [ports[i::workers] for i in range(workers)]


@dataclass
class _Worker:
    index: int
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class _Supervisor:
    def __init__(self, users: list[User], host: str | Sequence[str] | None, port: int, workers: int,
                 config: ServerConfig, path_io_factory: Any, options: dict[str, Any],
                 setup: Setup | None, event_loop: str) -> None:
        self.users = users
        self.event_loop = event_loop
        self.host = host
        self.port = port
        self.config = config
        self.path_io_factory = path_io_factory
        self.options = options
        self.setup = setup
        self.slices = passive_slices(config.passive_ports, workers)
        self.workers = [_Worker(i) for i in range(workers)]
        self.state = SharedState(workers, users, config)
        self.ready_r, self.ready_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.ready_r, self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.placeholder: socket.socket | None = None
        self.stopping = False
        self.stop_deadline = 0.0
        self.parent = os.getpid()
        self._signals: set[int] = set()

    # -- the parent ---------------------------------------------------------------------
    def run(self, ready: Callable[[], object] | None) -> None:
        old = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self.wake_w)
        try:
            self._reserve_port()
            for worker in self.workers:
                self._spawn(worker)
            self._wait_ready(ready)
            self._watch()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self._kill_all(signal.SIGKILL)
            self._reap(block=True)
            for fd in (self.ready_r, self.ready_w, self.wake_r, self.wake_w):
                os.close(fd)
            if self.placeholder is not None:
                self.placeholder.close()
            self.state.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.add(signum)

    def _reserve_port(self) -> None:
        """Port 0: bind a free port here (SO_REUSEPORT, not listening) for the workers to
        share; it stays bound while the supervisor runs so the port cannot change."""
        if self.port != 0:
            return
        first = self.host if self.host is None or isinstance(self.host, str) else self.host[0]
        family, _, _, _, addr = socket.getaddrinfo(first or "0.0.0.0", 0, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        self.placeholder = sock
        self.port = sock.getsockname()[1]

    def _wait_ready(self, ready: Callable[[], object] | None) -> None:
        waiting = {w.index for w in self.workers}
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"worker(s) {sorted(waiting)} not listening after {STARTUP_TIMEOUT:.0f} s")
            self._select(left)
            for index in self._read_ready():
                waiting.discard(index)
            signals, self._signals = self._signals, set()
            for worker, _pid, status in self._reap():
                raise RuntimeError(f"worker {worker.index} failed to start ({_describe(status)})")
            if signals & {signal.SIGTERM, signal.SIGINT}:
                raise KeyboardInterrupt
        log.info("%d workers serving on port %d", len(self.workers), self.port)
        if ready is not None:
            ready()

    def _watch(self) -> None:
        while True:
            signals, self._signals = self._signals, set()
            if signals & {signal.SIGTERM, signal.SIGINT} and not self.stopping:
                self.stopping = True
                self.stop_deadline = time.monotonic() + self.config.shutdown_timeout + KILL_GRACE
                log.info("stopping: draining %d workers", len(self._alive()))
                self._kill_all(signal.SIGTERM)
            if signal.SIGHUP in signals and not self.stopping:
                self._kill_all(signal.SIGHUP)
            self._read_ready()
            now = time.monotonic()
            for worker, pid, status in self._reap():
                self._on_exit(worker, pid, status, now)
            if self.stopping:
                if not self._alive():
                    return
                if now >= self.stop_deadline:
                    self._kill_all(signal.SIGKILL)
            else:
                for worker in self.workers:
                    if worker.restart_at is not None and now >= worker.restart_at:
                        self._spawn(worker)
            self._select(self._next_timeout(now))

    def _on_exit(self, worker: _Worker, pid: int, status: int, now: float) -> None:
        connections, sessions = self.state.release_worker(worker.index)
        if self.stopping:
            return
        lived = now - worker.started
        if lived >= STABLE_SECONDS:
            worker.failures = 0
        delay = RESTART_DELAYS[min(worker.failures, len(RESTART_DELAYS) - 1)]
        worker.failures += 1
        worker.restart_at = now + delay
        log.warning("worker %d (pid %d) died (%s) after %.1f s, holding %d connection(s) and "
                    "%d session(s); restarting in %.1f s", worker.index, pid,
                    _describe(status), lived, connections, sessions, delay)

    def _next_timeout(self, now: float) -> float:
        if self.stopping:
            return max(0.0, min(1.0, self.stop_deadline - now))
        pending = [w.restart_at for w in self.workers if w.restart_at is not None]
        return max(0.0, min(pending) - now) if pending else 60.0

    def _select(self, timeout: float | None) -> None:
        if self._signals:
            return
        with contextlib.suppress(InterruptedError):
            select.select([self.wake_r, self.ready_r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass

    def _read_ready(self) -> list[int]:
        try:
            return list(os.read(self.ready_r, 4096))
        except BlockingIOError:
            return []

    def _alive(self) -> list[_Worker]:
        return [w for w in self.workers if w.pid]

    def _kill_all(self, sig: int) -> None:
        for worker in self._alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, sig)

    def _reap(self, block: bool = False) -> list[tuple[_Worker, int, int]]:
        """Collect exited workers: [(worker, its pid, wait status)]."""
        done = []
        for worker in self._alive():
            try:
                pid, status = os.waitpid(worker.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 0
            if pid == worker.pid:
                worker.pid = 0
                done.append((worker, pid, status))
        return done

    def _spawn(self, worker: _Worker) -> None:
        worker.restart_at = None
        worker.started = time.monotonic()
        # Signals wait until the child has dropped the supervisor's handlers (see _child).
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
        finally:
            if os.getpid() == self.parent:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        if pid:
            worker.pid = pid
            return
        code = 1
        try:
            code = self._child(worker.index)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    # -- a worker -----------------------------------------------------------------------
    def _child(self, index: int) -> int:
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig == signal.SIGHUP else signal.SIG_DFL)
        # A SIGTERM that came before this point now ends the worker (it serves nobody yet).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        _die_with_parent(self.parent)
        for fd in (self.ready_r, self.wake_r, self.wake_w):
            os.close(fd)
        if self.placeholder is not None:
            self.placeholder.close()
        self.state.after_fork()
        _run_loop(lambda: self._serve(index), self.event_loop)
        return 0

    async def _serve(self, index: int) -> None:
        options = dict(self.options)
        options["passive_ports"] = self.slices[index]
        server = Server(self.users, path_io_factory=self.path_io_factory,
                        shared=self.state.slot(index), **options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.setup is not None:
            result = self.setup(server, index)
            if inspect.isawaitable(result):
                await result
        await server.start(self.host, self.port, reuse_port=True)
        os.write(self.ready_w, bytes([index % 256]))
        os.close(self.ready_w)
        await stop.wait()
        await server.close()


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM to this worker when the supervisor dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _run_loop(main: Callable[[], Any], kind: str) -> None:
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            uvloop.run(main())
            return
    asyncio.run(main())


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def run_workers(users: Iterable[User] | None, *, host: str | Sequence[str] | None = None,
                port: int = 2121, workers: int, ready: Callable[[], object] | None = None,
                path_io_factory: Any = open_home, setup: Setup | None = None,
                event_loop: str = "auto", **server_options: Any) -> None:
    """Serve with ``workers`` event-loop processes sharing ``host``:``port``; blocks until
    SIGTERM or SIGINT, then drains every worker and returns. Linux only.

    ``ready()`` is called (in this process) once every worker listens. ``server_options`` are
    those of :class:`~fsftpd.Server`; ``passive_ports`` is split between the workers (see
    :func:`passive_slices`). ``setup(server, index)`` runs in each worker before it listens.
    ``event_loop``: "uvloop", "asyncio", or "auto" (uvloop when it is installed).
    See docs/workers.md for what is shared between workers and what is not.
    """
    if not sys.platform.startswith("linux"):
        raise RuntimeError("run_workers needs Linux (SO_REUSEPORT balancing, memfd, flock)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, not {workers!r}")
    if event_loop not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"event_loop must be 'auto', 'uvloop' or 'asyncio', not {event_loop!r}")
    users = list(users or [])
    # Validate the options here, where a mistake can still be raised to the caller.
    config = Server(users, path_io_factory=path_io_factory, **server_options).config
    if workers > 1:
        _refuse_memory_homes(users, path_io_factory)
    supervisor = _Supervisor(users, host, port, workers, config, path_io_factory,
                             server_options, setup, event_loop)
    try:
        supervisor.run(ready)
    except KeyboardInterrupt:  # stopped before every worker was ready
        return
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return
        raise


def _refuse_memory_homes(users: list[User], path_io_factory: Any) -> None:
    from ..storage.fsspec_io import MemoryPathIO

    memory = isinstance(path_io_factory, type) and issubclass(path_io_factory, MemoryPathIO)
    if memory or (path_io_factory is open_home
                  and any(u.base_path.startswith("memory://") for u in users or [User()])):
        raise ValueError("memory:// homes live in one process: with several workers each "
                         "would see its own files; use local or S3 storage")
