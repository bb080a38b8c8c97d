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
    reason: str  # "server-limit", "ip-limit", "user-limit"


@dataclass(slots=True)
class CommandDone:
    session_id: int
    user: str | None
    verb: str
    code: int
    duration: float


@dataclass(slots=True)
class TransferFinished:
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
    """Bytes moved on a running transfer (emitted per block, for live metrics)."""

    user: str | None
    direction: str
    bytes: int


@dataclass(slots=True)
class ThrottleWait:
    """A transfer slept ``seconds`` to keep to a speed limit (emitted per sleep)."""

    user: str | None
    direction: str  # "download" or "upload"
    seconds: float


@dataclass(slots=True)
class StorageOperation:
    """One path-IO call, timed. Sent only to observers subscribed with ``storage=True``
    (the path-IOs are wrapped for timing only then)."""

    backend: str  # the home's URL scheme: "file", "memory", "s3", ...
    operation: str  # the path-IO method: "stat", "list", "open_read", "read", "commit", ...
    duration: float
    #: None, or the exception's class name when the call failed for a reason that is not
    #: the client's (a missing file, an existing name or a permission is not an error)
    error: str | None


Event = (
    SessionStarted | SessionEnded | LoginAttempt | ConnectionRefused | CommandDone
    | TransferFinished | TransferProgress | ThrottleWait | StorageOperation
)
Observer = Callable[[Event], None]


class EventBus:
    """The server's observers. Emitting sites check ``observers`` (or
    ``storage_observers``) first, so a server nobody observes builds no event at all."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []
        #: the observers that also want a :class:`StorageOperation` per path-IO call
        self.storage_observers: list[Observer] = []

    def subscribe(self, observer: Observer, *, storage: bool = False) -> None:
        """Call ``observer(event)`` for every event. ``storage=True`` adds the timing of
        every storage call; it applies to the path-IOs made after subscribing (subscribe
        before the server starts)."""
        self.observers.append(observer)
        if storage:
            self.storage_observers.append(observer)

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer(event)
            except Exception:  # an observer must never break a session
                log.exception("event observer failed on %r", event)

    def emit_storage(self, event: StorageOperation) -> None:
        for observer in self.storage_observers:
            try:
                observer(event)
            except Exception:
                log.exception("event observer failed on %r", event)
