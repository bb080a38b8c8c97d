"""Events the engine emits; observers (metrics, logs) subscribe. The engine never imports
Prometheus: it only calls the observers registered on the server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("fsftpd.events")


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: int
    peer: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    session_id: int
    peer: str
    user: str | None
    duration: float


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    session_id: int
    peer: str
    user: str
    success: bool


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    peer: str
    reason: str  # "server-limit", "ip-limit", "user-limit"


@dataclass(frozen=True, slots=True)
class CommandDone:
    session_id: int
    user: str | None
    verb: str
    code: int
    duration: float


@dataclass(frozen=True, slots=True)
class TransferFinished:
    """The end of a transfer (download, upload or listing): exactly one per transfer,
    whatever ended it (success, error, ABOR, the client vanishing, shutdown), emitted with
    its log line. ``bytes`` is what really crossed the data connection: the bytes sent of an
    aborted download, the bytes received of a discarded upload. It equals the sum of the
    transfer's :class:`TransferProgress` events. ``ok`` is True exactly when ``code`` is
    the 2xx final reply; then storage holds the whole upload (``426``/``451``: the target
    is as it was)."""

    session_id: int
    user: str | None
    verb: str  # RETR, STOR, APPE, STOU, LIST, NLST, MLSD
    path: str
    direction: str  # "download", "upload", "listing"
    bytes: int
    duration: float
    ok: bool
    code: int


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """Bytes moved on a running transfer, for live byte counters: one event per send or
    receive call that moved bytes (on a throttled transfer at most one throttle chunk,
    about 0.1 s of its rate, apart; a listing reports its bytes once, at its end).
    Invariant: the ``bytes`` of a transfer's progress events add up to the ``bytes`` of its
    one :class:`TransferFinished` event, so a counter fed by progress and one fed by
    finished transfers agree once the transfer is over."""

    user: str | None
    direction: str
    bytes: int


Event = (
    SessionStarted | SessionEnded | LoginAttempt | ConnectionRefused | CommandDone
    | TransferFinished | TransferProgress
)
Observer = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self.observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        self.observers.append(observer)

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # an observer must never break a session
                log.exception("event observer failed on %r", event)
