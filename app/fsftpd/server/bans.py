"""Address bans after repeated failed logins (brute force), shared by every session and,
with :func:`fsftpd.run_workers`, by every worker process.

The rule: an address that fails ``ban_threshold`` logins within ``ban_window`` seconds is
banned for ``ban_time`` seconds; each further ban of the same address (while the table
remembers it) lasts twice the one before, up to ``ban_time_max``. Addresses of
``ban_safelist`` (addresses and CIDR networks) are never banned.

The table is a fixed array of doubles (so it can live in shared memory): :data:`SLOTS`
records of :data:`FIELDS` cells, found by a 52-bit hash of the address with a short linear
probe. A full probe window evicts its least recently seen record that is not banned now
(or, if every one is, the one whose ban ends first): an attacker with many addresses can
make the table forget old offenders, never ban an innocent address.

Invariants: every read-modify-write runs under ``lock``; the clock is injected (tests use a
fake one); timestamps are ``time.monotonic()``, which Linux shares across processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
import time
from array import array
from collections.abc import Callable, Iterable, MutableSequence
from dataclasses import dataclass
from typing import Any

#: records in the table, and cells per record: key, window start, failures in the window,
#: banned until, bans so far, last seen
SLOTS = 4096
FIELDS = 6
PROBE = 8
KEY, START, COUNT, UNTIL, OFFENSES, SEEN = range(FIELDS)
#: an offender is forgotten (its next ban is short again) after this long without failures,
#: at least: max(ban_time_max, this)
MEMORY = 24 * 3600.0


def address_key(ip: str) -> float:
    """A non-zero 52-bit number for ``ip`` (exact in a double); IPv4-mapped IPv6 and IPv4 are
    the same address."""
    text = ip.split("%")[0]
    with contextlib.suppress(ValueError):
        addr = ipaddress.ip_address(text)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        text = str(addr)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return float((int.from_bytes(digest, "big") >> 12) | 1)


@dataclass(frozen=True)
class BanPolicy:
    threshold: int | None
    window: float
    time: float
    time_max: float

    def __post_init__(self) -> None:
        if self.threshold is not None and (isinstance(self.threshold, bool) or self.threshold < 1):
            raise ValueError("ban_threshold must be None (no bans) or a count >= 1")
        for name in ("window", "time", "time_max"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"ban_{name} must be a number of seconds > 0")


class Safelist:
    """Addresses and networks that are never banned."""

    def __init__(self, items: Iterable[str]) -> None:
        self.networks = []
        for item in items:
            try:
                self.networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"ban_safelist: {item!r} is not an address or a CIDR network") from None

    def __contains__(self, ip: str) -> bool:
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == net.version and addr in net for net in self.networks)


class BanTable:
    """The ban records; ``cells`` holds ``SLOTS * FIELDS`` doubles from ``offset`` on."""

    def __init__(self, policy: BanPolicy, safelist: Safelist, *,
                 cells: Any = None, offset: int = 0,
                 lock: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.safelist = safelist
        # a memoryview of shared memory (workers), or an array of this process's own
        self.cells: MutableSequence[float] = (
            cells if cells is not None else array("d", bytes(8 * SLOTS * FIELDS)))
        self.offset = offset
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return self.policy.threshold is not None

    def _find(self, key: float, now: float, create: bool) -> int | None:
        """The base index of ``key``'s record (made if ``create``), or None."""
        cells, start = self.cells, self.offset
        home = int(key) % SLOTS
        victim, victim_rank = -1, (math.inf, math.inf)
        for i in range(PROBE):
            base = start + ((home + i) % SLOTS) * FIELDS
            if cells[base + KEY] == key:
                return base
            if not create:
                continue
            until = cells[base + UNTIL]
            # Prefer empty, then not banned and least recently seen, then the soonest unban.
            rank = ((0.0, 0.0) if cells[base + KEY] == 0 else
                    (1.0, cells[base + SEEN]) if until <= now else (2.0, until))
            if rank < victim_rank:
                victim, victim_rank = base, rank
        if not create:
            return None
        for field in range(FIELDS):
            cells[victim + field] = 0.0
        cells[victim + KEY] = key
        return victim

    def banned(self, ip: str) -> float | None:
        """Seconds left of ``ip``'s ban, or None when it is not banned."""
        if not self.enabled or ip in self.safelist:
            return None
        key = address_key(ip)
        with self.lock:
            now = self.clock()
            base = self._find(key, now, create=False)
            if base is None:
                return None
            left = self.cells[base + UNTIL] - now
        return left if left > 0 else None

    def failed(self, ip: str) -> float | None:
        """Count a failed login from ``ip``; the length of the ban it starts now, or None."""
        policy = self.policy
        if policy.threshold is None or ip in self.safelist:
            return None
        key = address_key(ip)
        cells = self.cells
        with self.lock:
            now = self.clock()
            base = self._find(key, now, create=True)
            assert base is not None
            if now - cells[base + SEEN] > max(MEMORY, policy.time_max) and cells[base + SEEN]:
                cells[base + OFFENSES] = 0.0  # a reformed offender starts again from ban_time
            cells[base + SEEN] = now
            if cells[base + UNTIL] > now:
                return None  # already banned (a session that was in before the ban)
            if cells[base + COUNT] == 0 or now - cells[base + START] > policy.window:
                cells[base + START] = now
                cells[base + COUNT] = 0.0
            cells[base + COUNT] += 1
            if cells[base + COUNT] < policy.threshold:
                return None
            offenses = cells[base + OFFENSES]
            length = float(min(policy.time_max, policy.time * 2.0 ** offenses))
            cells[base + UNTIL] = now + length
            cells[base + OFFENSES] = offenses + 1
            cells[base + COUNT] = 0.0
            return length
