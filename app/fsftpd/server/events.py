"""Events the engine emits; observers (metrics, logs) subscribe. The engine never imports
Prometheus: it only calls the observers registered on the server.

Events are slotted dataclasses but not frozen: a frozen dataclass costs about four times as
much to build (every field goes through ``object.__setattr__``), and a few are built for
every command and transfer while anyone observes. Observers must treat them as read-only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("fsftpd.events")


@dataclass(slots=True)
class SessionStarted:
    session_id: int
    peer: str


@dataclass(slots=True)
class SessionEnded:
    session_id: int
    peer: str
    user: str | None
    duration: float


@dataclass(slots=True)
class LoginAttempt:
    session_id: int
    peer: str
    user: str
    success: bool


@dataclass(slots=True)
class ConnectionRefused:
    peer: str
    #: why: "server-limit" (maximum_connections), "ip-limit" (maximum_connections_per_ip),
    #: "user-limit" (the user's maximum_connections, at login), "banned" (the address is
    #: banned after failed logins, see ban_threshold), "shutdown" (the server is closing)
    reason: str


@dataclass(slots=True)
class CommandDone:
    session_id: int
    user: str | None
    verb: str
    code: int
    duration: float


@dataclass(slots=True)
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


@dataclass(slots=True)
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


@dataclass(slots=True)
class ThrottleWait:
    """A transfer slept ``seconds`` to keep to a speed limit (emitted per sleep)."""

    user: str | None
    direction: str  # "download" or "upload"
    seconds: float


Event = (
    SessionStarted | SessionEnded | LoginAttempt | ConnectionRefused | CommandDone
    | TransferFinished | TransferProgress | ThrottleWait
)
Observer = Callable[[Event], None]
#: ``timer(backend, operation, seconds, error)``: told of every storage call (see
#: :attr:`EventBus.storage_timer`)
StorageTimer = Callable[[str, str, float, "str | None"], None]


class EventBus:
    """The server's observers. Emitting sites check ``observers`` first, so a server
    nobody observes builds no event at all.

    ``storage_timer``, if set, is called as ``timer(backend, operation, seconds, error)``
    after every storage (path-IO) call: ``backend`` is the home's URL scheme ("file",
    "memory", "s3"...), ``operation`` the call ("stat", "list" (one page), "open_read",
    "read", "commit"...), ``error`` None or the exception's class name when the call
    failed for a reason that is not the client's (see :mod:`fsftpd.storage.timed`). It is a
    plain call rather than an event because it runs for every storage call; it applies
    to the homes opened after it is set, so set it before the server starts. None (the
    default): storage calls are not timed at all."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []
        self.storage_timer: StorageTimer | None = None

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer(event)`` for every event."""
        self.observers.append(observer)

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # an observer must never break a session
                log.exception("event observer failed on %r", event)
