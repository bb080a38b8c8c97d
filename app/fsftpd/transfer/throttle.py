"""Token-bucket throttles with an injected clock.

A :class:`TokenBucket` meters one level (server, connection, user, user-connection) in one
direction. A transfer asks a :class:`Throttle` (the buckets that apply to it) how long to
wait before moving ``n`` bytes: each bucket books the bytes on its own timeline and the
transfer waits for the slowest, so it is held to the tightest level. Transfers sharing a
bucket book it in turn, small chunk by small chunk, which shares its rate fairly.

Rates are read at every booking, so a limit changed on a running server applies to running
transfers from their next chunk on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

Rate = float | int | None
RateSource = Rate | Callable[[], Rate]

#: how many seconds of unused rate a bucket may save up (the burst size)
BURST_SECONDS = 0.05


class TokenBucket:
    """One rate limit, in bytes per second. ``rate`` may be a number, None (unlimited) or
    a zero-argument callable returning either, read on every booking."""

    def __init__(self, rate: RateSource = None, *, clock: Callable[[], float] = time.monotonic,
                 burst: float = BURST_SECONDS) -> None:
        self._rate = rate
        self.clock = clock
        self.burst = burst
        self._free_at = 0.0  # clock time at which everything booked so far has drained

    @property
    def rate(self) -> float | None:
        value = self._rate() if callable(self._rate) else self._rate
        if value is None or value <= 0:
            return None
        return float(value)

    @rate.setter
    def rate(self, value: RateSource) -> None:
        self._rate = value

    def book(self, size: int, now: float | None = None) -> float:
        """Reserve ``size`` bytes; return the seconds to wait before sending them."""
        rate = self.rate
        if rate is None:
            return 0.0
        now = self.clock() if now is None else now
        start = max(self._free_at, now - self.burst)
        self._free_at = start + size / rate
        return max(0.0, self._free_at - now - self.burst)


class Throttle:
    """The buckets that apply to one transfer."""

    def __init__(self, buckets: Sequence[TokenBucket],
                 sleep: Callable[[float], object] = asyncio.sleep) -> None:
        self.buckets = tuple(buckets)
        self._sleep = sleep

    @property
    def active(self) -> bool:
        return any(b.rate is not None for b in self.buckets)

    def chunk_size(self, default: int) -> int:
        """A block size that keeps each wait around a tenth of a second or less."""
        rates = [r for r in (b.rate for b in self.buckets) if r is not None]
        if not rates:
            return default
        return int(max(4096, min(default, min(rates) / 10)))

    def delay(self, size: int) -> float:
        return max((b.book(size) for b in self.buckets), default=0.0)

    async def wait(self, size: int) -> None:
        delay = self.delay(size)
        if delay > 0:
            await self._sleep(delay)  # type: ignore[misc]
