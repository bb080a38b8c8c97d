"""The byte count of one running transfer, and its live progress events.

Invariant: a transfer's :class:`~fsftpd.server.events.TransferProgress` events add up to
the ``bytes`` of its one :class:`~fsftpd.server.events.TransferFinished` event, whatever
ended it (the copy loops call the meter for each send or receive that moved bytes).
"""

from __future__ import annotations

from .events import EventBus, TransferProgress


class TransferMeter:
    """Counts the bytes one transfer moves; each count is also a progress event when
    anyone listens. Called by the copy loops as ``meter(n)``."""

    __slots__ = ("_events", "_user", "direction", "total")

    def __init__(self, events: EventBus, user: str | None, direction: str) -> None:
        self._events = events
        self._user = user
        self.direction = direction
        self.total = 0

    def __call__(self, n: int) -> None:
        if n <= 0:
            return
        self.total += n
        if self._events.observers:
            self._events.emit(TransferProgress(self._user, self.direction, n))

    def settle(self, moved: int) -> None:
        """Count what a data phase reports having moved beyond what it metered (a listing
        is sent without per-call counts)."""
        self(moved - self.total)
