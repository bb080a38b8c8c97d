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
    #: why: "server-limit" (maximum_connections), "ip-limit" (maximum_connections_per_ip),
    #: "user-limit" (the user's maximum_connections, at login), "banned" (the address is
    #: banned after failed logins, see ban_threshold), "shutdown" (the server is closing)
    reason: str


@dataclass(frozen=True, slots=True)
class CommandDone:
    session_id: int
    user: str | None
    verb: str
    code: int
    duration: float


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """Bytes moved on a running transfer (emitted per block, for live metrics)."""

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
