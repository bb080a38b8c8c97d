"""Liveness and readiness of one fsftpd server process (``/healthz`` and ``/readyz``).

- Liveness is a heartbeat: a timer on the server's event loop records the time once a
  second (:class:`Heartbeat`). The sidecar answers from its own thread, so it can still
  say 503 while the loop is blocked. With several workers each one also writes its beat
  into a small file of the shared metrics directory, so any worker answers for all.
- Readiness: the FTP listener accepts (not starting, not draining) and every configured
  storage backend answers a cheap probe (:class:`StorageProbes`): one probe per distinct
  backend, run on the server's loop, its result cached for :data:`PROBE_TTL` seconds, and
  never more than one in flight per backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsftpd

#: the event loop counts as blocked when its heartbeat is older than this (seconds)
BLOCKED_AFTER = 5.0
#: how often the loop beats (and the metrics are flushed and gauges sampled), seconds
BEAT_INTERVAL = 0.5
#: how long a storage probe's result is reused, seconds
PROBE_TTL = 5.0
#: how long a storage probe may take before the backend counts as unreachable, seconds
PROBE_TIMEOUT = 5.0
#: a name no home holds (a missing name is a cheap, real request on every backend)
PROBE_PATH = "/.fsftpd-readiness-probe"

_BEAT = struct.Struct("d")


class Heartbeat:
    """A timer on ``loop`` that records ``time.monotonic()`` every :data:`BEAT_INTERVAL`
    seconds and calls ``on_tick`` (gauge sampling). ``directory``: also write the beat to
    ``heartbeat_<pid>.beat`` there (multi-worker; CLOCK_MONOTONIC is system-wide)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, on_tick: Callable[[], None] | None = None,
                 directory: str | None = None) -> None:
        self.loop = loop
        self.on_tick = on_tick
        self.last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._fd: int | None = None
        if directory is not None:
            path = os.path.join(directory, f"heartbeat_{os.getpid()}.beat")
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def start(self) -> None:
        self._beat()

    def _beat(self) -> None:
        self.last = now = time.monotonic()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, _BEAT.pack(now), 0)
        if self.on_tick is not None:
            with contextlib.suppress(Exception):
                self.on_tick()
        self._handle = self.loop.call_later(BEAT_INTERVAL, self._beat)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def age(self) -> float:
        return time.monotonic() - self.last


def worker_alive(pid: int) -> bool:
    """``pid`` is this process or a live sibling (a worker of the same supervisor); a
    recycled pid that belongs to some other process does not count."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != b"Z" and int(fields[1]) == os.getppid()


def worker_beats(directory: str) -> dict[int, float]:
    """Seconds since each live worker's last beat; files of dead workers are removed."""
    now = time.monotonic()
    ages: dict[int, float] = {}
    for path in glob.glob(os.path.join(directory, "heartbeat_*.beat")):
        try:
            pid = int(os.path.basename(path)[len("heartbeat_"):-len(".beat")])
        except ValueError:
            continue
        if not worker_alive(pid):
            with contextlib.suppress(OSError):
                os.remove(path)
            continue
        try:
            with open(path, "rb") as f:
                data = f.read(_BEAT.size)
        except OSError:
            continue
        if len(data) == _BEAT.size:
            ages[pid] = now - _BEAT.unpack(data)[0]
    return ages


@dataclass
class _Probe:
    description: str
    user: fsftpd.User


@dataclass
class _Result:
    at: float
    problem: str | None


def backend_of(user: fsftpd.User, server_options: dict[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """(key, description) of the storage behind ``user``'s home; homes with equal keys
    share one probe. None for memory homes (nothing that can go away)."""
    base = user.base_path
    scheme, sep, rest = base.partition("://")
    scheme = scheme.lower() if sep else "file"
    if scheme == "memory":
        return None
    if scheme in ("file", "local"):
        return ("file", base), base
    netloc = rest.split("/", 1)[0]
    if scheme in ("s3", "s3a"):
        options = {**server_options, **user.storage_options}
        endpoint = str(options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                       or os.environ.get("AWS_ENDPOINT_URL") or "AWS")
        return ("s3", endpoint, netloc), f"s3://{netloc} at {endpoint}"
    return (scheme, netloc), f"{scheme}://{netloc}"


class StorageProbes:
    """One cheap probe per distinct storage backend of ``server``'s users (runs on the
    server's loop): the home's root is stat'ed and a missing name looked up (on S3 a
    HEAD and a one-key listing). Results are cached :data:`PROBE_TTL` seconds; a probe
    already in flight is joined, never started twice."""

    def __init__(self, server: fsftpd.Server, *, ttl: float = PROBE_TTL,
                 timeout: float = PROBE_TIMEOUT) -> None:
        self.server = server
        self.ttl = ttl
        self.timeout = timeout
        self._results: dict[tuple[str, ...], _Result] = {}
        self._running: dict[tuple[str, ...], asyncio.Task[str | None]] = {}
        self.started = 0  # probes started (tests check the caching)

    def targets(self) -> dict[tuple[str, ...], _Probe]:
        found: dict[tuple[str, ...], _Probe] = {}
        options = dict(self.server.config.storage_options)
        for user in self.server.users.users:
            backend = backend_of(user, options)
            if backend is not None and backend[0] not in found:
                found[backend[0]] = _Probe(backend[1], user)
        return found

    async def problems(self) -> list[str]:
        """One line per unreachable backend (empty: all answer)."""
        checks = [self._check(key, probe) for key, probe in self.targets().items()]
        results = await asyncio.gather(*checks)
        return [r for r in results if r is not None]

    async def _check(self, key: tuple[str, ...], probe: _Probe) -> str | None:
        result = self._results.get(key)
        if result is not None and time.monotonic() - result.at < self.ttl:
            return result.problem
        task = self._running.get(key)
        if task is None:
            self.started += 1
            task = self._running[key] = asyncio.get_running_loop().create_task(self._probe(key, probe))
        return await asyncio.shield(task)

    async def _probe(self, key: tuple[str, ...], probe: _Probe) -> str | None:
        problem: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                io = await self.server.path_io_for(probe.user)
                await io.stat("/")
                await io.exists(PROBE_PATH)
        except TimeoutError:
            problem = f"storage {probe.description}: no answer within {self.timeout:g} s"
        except Exception as exc:
            problem = f"storage {probe.description}: {type(exc).__name__}: {exc}"
        finally:
            self._running.pop(key, None)
        self._results[key] = _Result(time.monotonic(), problem)
        return problem


class Health:
    """What ``/healthz`` and ``/readyz`` answer. ``lifecycle`` (optional) returns the
    process state of the runner ("starting", "ready", "draining"); without it the
    server's own listening/draining state decides. ``directory``: the multi-worker
    metrics directory, whose heartbeat files cover every worker."""

    def __init__(self, server: fsftpd.Server, loop: asyncio.AbstractEventLoop, heartbeat: Heartbeat,
                 probes: StorageProbes, *, lifecycle: Callable[[], str] | None = None,
                 directory: str | None = None, blocked_after: float = BLOCKED_AFTER) -> None:
        self.server = server
        self.loop = loop
        self.heartbeat = heartbeat
        self.probes = probes
        self.lifecycle = lifecycle
        self.directory = directory
        self.blocked_after = blocked_after

    def live(self) -> tuple[bool, str]:
        """(alive, text); any thread may call it."""
        ages = {os.getpid(): self.heartbeat.age()}
        if self.directory is not None:
            ages.update(worker_beats(self.directory))
            ages[os.getpid()] = self.heartbeat.age()
        blocked = {pid: age for pid, age in ages.items() if age > self.blocked_after}
        if blocked:
            return False, "".join(f"event loop of pid {pid} blocked for {age:.1f} s\n"
                                  for pid, age in sorted(blocked.items()))
        return True, "ok\n"

    def _state_problem(self) -> str | None:
        state = self.lifecycle() if self.lifecycle is not None else None
        if state == "draining" or self.server.closing:
            return "draining: the server is shutting down"
        if state == "starting" or not self.server.listening:
            return "starting: the FTP listener is not accepting yet"
        return None

    async def ready(self) -> tuple[bool, str]:
        """(ready, text), one line per failed check; awaited on the sidecar's loop."""
        problems: list[str] = []
        state = self._state_problem()
        if state is not None:
            problems.append(state)
        alive, text = self.live()
        if not alive:
            problems.append(text.strip())
        else:
            future = asyncio.run_coroutine_threadsafe(self.probes.problems(), self.loop)
            try:
                waiting = asyncio.wrap_future(future)
                found: list[str] = await asyncio.wait_for(waiting, self.probes.timeout + 1)
                problems += found
            except TimeoutError:
                future.cancel()
                problems.append("storage probes did not finish in time")
        if problems:
            return False, "".join(f"{line}\n" for line in problems)
        return True, "ok\n"
