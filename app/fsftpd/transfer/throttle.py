"""Token-bucket throttles with an injected clock.

A :class:`TokenBucket` meters one level (server, connection, user, user-connection) in one
direction. It keeps a timeline (GCRA, the "virtual scheduling" form of a token bucket): the
clock time ``tat`` at which everything booked so far has drained at ``rate``. Booking ``n``
bytes pushes ``tat`` on by ``n / rate`` and returns how long the caller must wait so that it
is never more than ``burst`` seconds ahead of that timeline.

A transfer asks its :class:`Throttle` (the buckets that apply to it) how long to wait after
moving ``n`` bytes: each bucket books the bytes on its own timeline and the transfer waits
for the longest, so it is held to the tightest level.

Fairness: transfers sharing a bucket book it in turn, one chunk each per turn, so they share
its rate equally *if their chunks are equal*. :meth:`Throttle.chunk_size` therefore gives
every throttled transfer the same chunk (:data:`CHUNK`) unless its tightest rate is so low
that a chunk would take longer than :data:`CHUNK_SECONDS`. A transfer held back by a tighter
level of its own books the shared bucket less often, and the others take up the rest
(max-min fairness).

Rates are read at every booking (a bucket's rate may be a callable), so a limit changed on
a running server applies to running transfers from their next chunk on.

Invariants: ``book`` never sleeps and never reads the clock more than once; the only sleep
is :meth:`Throttle.wait`, through the injected ``sleep``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

Rate = float | int | None
RateSource = Rate | Callable[[], Rate]

#: how many seconds a transfer may run ahead of its bucket's timeline (the burst size)
BURST_SECONDS = 0.05
#: the chunk every throttled transfer books, so that transfers sharing a bucket share it equally
CHUNK = 32 * 1024
#: at low rates chunks shrink so that one chunk is never more than this many seconds of rate
CHUNK_SECONDS = 0.1
#: the smallest chunk, whatever the rate
MIN_CHUNK = 1024


def effective_rate(value: Rate) -> float | None:
    """``None``, ``0`` and negative values all mean "no limit"."""
    if value is None or value <= 0:
        return None
    return float(value)


class TokenBucket:
    """One rate limit, in bytes per second.

    ``rate`` may be a number, ``None`` (unlimited) or a zero-argument callable returning
    either; a callable is read on every booking. ``clock`` returns seconds (monotonic).
    """

    def __init__(self, rate: RateSource = None, *, clock: Callable[[], float] = time.monotonic,
                 burst: float = BURST_SECONDS) -> None:
        self._rate = rate
        self.clock = clock
        self.burst = burst
        self._tat: float | None = None  # clock time at which everything booked has drained

    @property
    def rate(self) -> float | None:
        """The current limit in bytes per second, or None for unlimited."""
        return effective_rate(self._rate() if callable(self._rate) else self._rate)

    @rate.setter
    def rate(self, value: RateSource) -> None:
        self._rate = value

    def book(self, size: int) -> float:
        """Book ``size`` bytes; return the seconds to wait before moving more."""
        rate = self.rate
        if rate is None:
            self._tat = None  # unlimited: no debt carries over to a later limit
            return 0.0
        now = self.clock()
        tat = self._tat
        if tat is None or tat < now:
            tat = now  # idle time is not saved up beyond the burst
        tat += size / rate
        self._tat = tat
        return max(0.0, tat - now - self.burst)

    @property
    def backlog(self) -> float:
        """Seconds of booked traffic not yet drained (0 when idle)."""
        if self._tat is None:
            return 0.0
        return max(0.0, self._tat - self.clock())


class Throttle:
    """The buckets that apply to one transfer, in one direction."""

    def __init__(self, buckets: Sequence[TokenBucket],
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep, *,
                 on_wait: Callable[[float], None] | None = None) -> None:
        self.buckets = tuple(buckets)
        self._sleep = sleep
        #: told the length of every sleep before it starts (metrics); None: nobody listens
        self.on_wait = on_wait

    @property
    def rate(self) -> float | None:
        """The tightest current rate, or None when no level limits this transfer."""
        rates = [r for r in (b.rate for b in self.buckets) if r is not None]
        return min(rates) if rates else None

    @property
    def active(self) -> bool:
        return self.rate is not None

    def chunk_size(self, default: int) -> int:
        """How many bytes to move between two bookings.

        ``default`` when unthrottled; otherwise :data:`CHUNK` (the same for every throttled
        transfer, for fairness), smaller at low rates so that a chunk stays within
        :data:`CHUNK_SECONDS`, and never more than ``default``.
        """
        rate = self.rate
        if rate is None:
            return default
        by_time = max(MIN_CHUNK, int(rate * CHUNK_SECONDS))
        return max(1, min(default, CHUNK, by_time))

    def delay(self, size: int) -> float:
        """Book ``size`` bytes on every level; the wait is that of the tightest."""
        return max((b.book(size) for b in self.buckets), default=0.0)

    async def wait(self, size: int) -> None:
        """Book ``size`` bytes just moved and sleep as long as the tightest level demands."""
        delay = self.delay(size)
        if delay > 0:
            if self.on_wait is not None:
                self.on_wait(delay)
            await self._sleep(delay)


class Cells(Protocol):
    """Where shared timelines live: floats by index (a ``memoryview`` cast to "d")."""

    def __getitem__(self, index: int, /) -> float: ...

    def __setitem__(self, index: int, value: float, /) -> None: ...


class SharedTokenBucket(TokenBucket):
    """A :class:`TokenBucket` whose timeline lives in memory shared by several processes
    (``cells[index]``, a float; 0 means idle), booked under ``lock``. The clock must be the
    same in every process: ``time.monotonic`` is (CLOCK_MONOTONIC, system-wide on Linux).

    Used by the multi-worker server for the server-wide and per-user levels; the
    per-connection levels stay plain :class:`TokenBucket` objects."""

    def __init__(self, rate: RateSource, *, lock: AbstractContextManager[object],
                 cells: Cells, index: int,
                 clock: Callable[[], float] = time.monotonic, burst: float = BURST_SECONDS) -> None:
        super().__init__(rate, clock=clock, burst=burst)
        self._lock = lock
        self._cells = cells
        self._index = index

    def book(self, size: int) -> float:
        rate = self.rate
        cells, index = self._cells, self._index
        if rate is None:
            if cells[index]:
                cells[index] = 0.0  # one aligned store: no lock needed to forget the debt
            return 0.0
        now = self.clock()
        with self._lock:
            tat = cells[index]
            if tat < now:
                tat = now
            tat += size / rate
            cells[index] = tat
        return max(0.0, tat - now - self.burst)

    @property
    def backlog(self) -> float:
        tat = self._cells[self._index]
        return max(0.0, tat - self.clock()) if tat else 0.0
