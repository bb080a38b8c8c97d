"""The server's configuration as one frozen dataclass of plain typed values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerConfig:
    """Every option of :class:`fsftpd.Server`. Times are seconds, speeds bytes per second;
    ``None`` means "no limit"."""

    maximum_connections: int | None = None
    maximum_connections_per_ip: int | None = None
    socket_timeout: float | None = None
    path_timeout: float | None = None
    idle_timeout: float | None = None
    wait_future_timeout: float | None = 1
    read_speed_limit: float | None = None
    write_speed_limit: float | None = None
    read_speed_limit_per_connection: float | None = None
    write_speed_limit_per_connection: float | None = None
    #: ports offered for PASV/EPSV; None lets the OS pick
    passive_ports: Sequence[int] | None = None
    #: address announced in 227 replies (for NAT / containers); None: the control socket's
    masquerade_address: str | None = None
    banner: str = "fsftpd ready"
    #: options passed to every storage backend (a user's own options take precedence)
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: how long close() lets running transfers finish before cutting them off
    shutdown_timeout: float = 10.0
    #: LIST, NLST, MLSD and STAT of a directory (or of a pattern's matches) with at most
    #: this many entries come sorted by name; a larger one comes in directory order, so
    #: its listing still streams. 0: never sort. See docs/engine.md, "Listings".
    listing_sort_limit: int = 10_000
    #: maximum failed logins on one connection before it is closed
    max_login_attempts: int = 3
    #: seconds to wait before answering a failed login (slows guessing)
    failed_login_delay: float = 0.5
