"""State shared by the worker processes of one multi-worker server (see ``workers.py``).

One anonymous shared-memory file (``memfd``) is created by the supervisor before it forks and
mapped by every worker. It holds:

- the server-wide limits (:class:`SharedLimits`), so ``server.set_limits`` in any worker
  applies to all of them;
- the timelines of the shared token buckets: server-wide read/write and each user's
  read/write (:class:`fsftpd.transfer.throttle.SharedTokenBucket`);
- connection counters, one *row per worker*: control connections, connections per client
  address (a hashed table, see :data:`IP_SLOTS`) and logged-in sessions per user. A total is
  the sum of the rows, so when a worker dies the supervisor zeroes its row and every count
  it held is released at once, whatever state it died in.

Invariants:
- every check-and-increment happens under :class:`ProcessLock`, so the limits hold exactly
  across workers (a connection is refused if admitting it would exceed a limit anywhere);
- the lock is an ``flock`` on an open file description private to each process, so the
  kernel releases it when a worker dies, even by SIGKILL inside the critical section;
- only a worker writes its own row (the supervisor zeroes the row of a dead worker).

Linux only (``memfd_create``, ``/proc/self/fd``).
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import threading
import zlib
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..auth.users import User
from ..transfer.throttle import SharedTokenBucket, TokenBucket
from .bans import FIELDS as BAN_FIELDS
from .bans import SLOTS as BAN_SLOTS
from .bans import BanPolicy, BanTable, Safelist

if TYPE_CHECKING:
    from .config import ServerConfig

#: size of each worker's per-address table. Addresses are hashed into it (CRC-32): two
#: addresses that share a slot (about 1 in 65,536 for a given pair) share one count, so
#: ``maximum_connections_per_ip`` can only err on the side of refusing.
IP_SLOTS = 65536

LIMIT_NAMES = (
    "maximum_connections", "maximum_connections_per_ip",
    "read_speed_limit", "write_speed_limit",
    "read_speed_limit_per_connection", "write_speed_limit_per_connection",
)
_INT_LIMITS = frozenset(LIMIT_NAMES[:2])
_NONE = -1.0  # how "no limit" is stored


def ip_slot(ip: str) -> int:
    return zlib.crc32(ip.encode()) % IP_SLOTS


class ProcessLock:
    """A lock held across processes (``flock``) and across threads of one process.

    ``reopen()`` must be called in each process after ``fork``: flock belongs to an open file
    description, which a forked child would otherwise share with its parent."""

    def __init__(self, fd: int) -> None:
        self._source = fd
        self._fd = -1
        self._threads = threading.Lock()
        self.reopen()

    def reopen(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(f"/proc/self/fd/{self._source}", os.O_RDWR | os.O_CLOEXEC)
        self._threads = threading.Lock()

    def __enter__(self) -> None:
        self._threads.acquire()
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SharedState:
    """The shared memory of ``workers`` workers serving ``users``; made before forking."""

    def __init__(self, workers: int, users: Sequence[User], config: ServerConfig) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        # Sessions are counted by user name, as UserManager does; duplicates share a slot.
        self.user_index: dict[str, int] = {}
        for user in users or [User()]:
            self.user_index.setdefault(user.name, len(self.user_index))
        n_users = len(self.user_index)
        # Layout: limits (doubles), bucket timelines (doubles), the ban table (doubles), then
        # per-worker rows (int32): [connections, sessions per user..., connections per
        # address slot...].
        self.ban_offset = len(LIMIT_NAMES) + 2 + 2 * n_users
        self._n_doubles = self.ban_offset + BAN_SLOTS * BAN_FIELDS
        self._row = 1 + n_users + IP_SLOTS
        size = 8 * self._n_doubles + 4 * self._row * workers
        self._fd = os.memfd_create("fsftpd-shared", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self.doubles = memoryview(self._map)[: 8 * self._n_doubles].cast("d")
        self.ints = memoryview(self._map)[8 * self._n_doubles:].cast("i")
        self.lock = ProcessLock(self._fd)
        for i, name in enumerate(LIMIT_NAMES):
            value = getattr(config, name)
            self.doubles[i] = _NONE if value is None else float(value)

    def after_fork(self) -> None:
        """In a newly forked process: a lock of its own (see :class:`ProcessLock`)."""
        self.lock.reopen()

    def slot(self, worker: int) -> WorkerSlot:
        return WorkerSlot(self, worker)

    # -- limits -------------------------------------------------------------------------
    def get_limit(self, index: int) -> float | None:
        value = self.doubles[index]
        return None if value < 0 else value

    def set_limit(self, index: int, value: float | None) -> None:
        self.doubles[index] = _NONE if value is None else float(value)

    # -- counters -----------------------------------------------------------------------
    def total(self, offset: int) -> int:
        """The sum over every worker's row of the int at ``offset`` in a row."""
        ints, row = self.ints, self._row
        return sum(ints[w * row + offset] for w in range(self.workers))

    def connections(self) -> int:
        return self.total(0)

    def ip_connections(self, ip: str) -> int:
        return self.total(1 + len(self.user_index) + ip_slot(ip))

    def user_sessions(self, name: str) -> int:
        index = self.user_index.get(name)
        return 0 if index is None else self.total(1 + index)

    def release_worker(self, worker: int) -> tuple[int, int]:
        """Zero a dead worker's row; returns (connections, sessions) it held."""
        start = worker * self._row
        with self.lock:
            connections = self.ints[start]
            sessions = sum(self.ints[start + 1: start + 1 + len(self.user_index)])
            self.ints[start: start + self._row] = memoryview(bytes(4 * self._row)).cast("i")
        return connections, sessions

    def close(self) -> None:
        self.lock.close()
        self.doubles.release()  # anything still holding them (buckets) now fails loudly
        self.ints.release()
        self._map.close()
        os.close(self._fd)


class WorkerSlot:
    """One worker's view of :class:`SharedState`: what a :class:`fsftpd.Server` calls."""

    def __init__(self, state: SharedState, worker: int) -> None:
        self.state = state
        self.worker = worker
        self._base = worker * state._row
        self._n_users = len(state.user_index)

    def make_limits(self, config: ServerConfig) -> SharedLimits:
        return SharedLimits(self)

    def ban_table(self, policy: BanPolicy, safelist: Safelist) -> BanTable:
        """The ban records, in the shared memory: a ban applies in every worker."""
        return BanTable(policy, safelist, cells=self.state.doubles, offset=self.state.ban_offset,
                        lock=self.state.lock)

    # -- control connections ------------------------------------------------------------
    def try_open(self, ip: str) -> tuple[str, str] | None:
        """Count a new control connection from ``ip``, or say why it is refused."""
        state, ints, row = self.state, self.state.ints, self.state._row
        ip_offset = 1 + self._n_users + ip_slot(ip)
        with state.lock:
            limit = state.get_limit(0)
            if limit is not None:
                total = sum(ints[w * row] for w in range(state.workers))
                if total >= limit:
                    limit = int(limit)
                    return "server-limit", f"Too many connections ({limit}), try again later"
            limit = state.get_limit(1)
            if limit is not None:
                total = sum(ints[w * row + ip_offset] for w in range(state.workers))
                if total >= limit:
                    limit = int(limit)
                    return ("ip-limit",
                            f"Too many connections from your address ({limit}), try again later")
            ints[self._base] += 1
            ints[self._base + ip_offset] += 1
        return None

    def close(self, ip: str) -> None:
        ints = self.state.ints
        with self.state.lock:
            ints[self._base] -= 1
            ints[self._base + 1 + self._n_users + ip_slot(ip)] -= 1

    # -- user sessions ------------------------------------------------------------------
    def try_acquire_user(self, user: User) -> bool:
        index = self.state.user_index.get(user.name)
        if index is None:
            return True  # not a configured user: nothing to count (UserManager never finds one)
        state, ints, row = self.state, self.state.ints, self.state._row
        with state.lock:
            limit = user.maximum_connections
            if limit is not None:
                total = sum(ints[w * row + 1 + index] for w in range(state.workers))
                if total >= limit:
                    return False
            ints[self._base + 1 + index] += 1
        return True

    def release_user(self, user: User) -> None:
        index = self.state.user_index.get(user.name)
        if index is None:
            return
        with self.state.lock:
            self.state.ints[self._base + 1 + index] -= 1

    # -- speed limits -------------------------------------------------------------------
    def bucket(self, cell: int, rate: Any) -> TokenBucket:
        return SharedTokenBucket(rate, lock=self.state.lock, cells=self.state.doubles,
                                 index=len(LIMIT_NAMES) + cell)

    def user_buckets(self, user: User) -> tuple[TokenBucket, TokenBucket]:
        index = self.state.user_index.get(user.name)
        if index is None:  # cannot happen for a configured user; stay correct anyway
            return (TokenBucket(lambda: user.read_speed_limit),
                    TokenBucket(lambda: user.write_speed_limit))
        return (self.bucket(2 + 2 * index, lambda: user.read_speed_limit),
                self.bucket(3 + 2 * index, lambda: user.write_speed_limit))


def _limit_property(index: int, name: str) -> property:
    def get(self: SharedLimits) -> float | None:
        value = self._state.get_limit(index)
        if value is not None and name in _INT_LIMITS:
            return int(value)
        return value

    def put(self: SharedLimits, value: float | None) -> None:
        self._state.set_limit(index, value)

    return property(get, put, doc=f"``{name}``, shared by every worker")


class SharedLimits:
    """:class:`fsftpd.server.server.Limits` with its values in shared memory: a change made
    by ``set_limits`` in one worker applies to every worker, from its next connection or
    booking on. The server-wide buckets are shared too."""

    NAMES = LIMIT_NAMES

    maximum_connections = _limit_property(0, LIMIT_NAMES[0])
    maximum_connections_per_ip = _limit_property(1, LIMIT_NAMES[1])
    read_speed_limit = _limit_property(2, LIMIT_NAMES[2])
    write_speed_limit = _limit_property(3, LIMIT_NAMES[3])
    read_speed_limit_per_connection = _limit_property(4, LIMIT_NAMES[4])
    write_speed_limit_per_connection = _limit_property(5, LIMIT_NAMES[5])

    def __init__(self, slot: WorkerSlot) -> None:
        self._state = slot.state
        self.read_bucket = slot.bucket(0, lambda: self.read_speed_limit)
        self.write_bucket = slot.bucket(1, lambda: self.write_speed_limit)

    def update(self, **changes: float | None) -> None:
        """Check then assign, as :meth:`Limits.update`."""
        unknown = set(changes) - set(self.NAMES)
        if unknown:
            raise TypeError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or value < 0 or math.isnan(value)):
                raise ValueError(f"{name} must be None or a number >= 0, not {value!r}")
        for name, value in changes.items():
            setattr(self, name, value)
