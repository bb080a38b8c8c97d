"""The server's configuration as one frozen dataclass of plain typed values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: what TLS a session must use: the control connection, the data connections, or both
TlsPolicy = Literal["none", "control", "data", "both"]


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
    #: a passive listener (PASV/EPSV) that no transfer command uses within this many seconds
    #: is closed, so idle clients cannot hold the passive port range
    passive_timeout: float | None = None
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
    #: FTPS (RFC 4217): the server's certificate chain and private key (PEM files);
    #: both set enables AUTH TLS, and :meth:`Server.reload_tls` re-reads them
    tls_cert: str | None = None
    tls_key: str | None = None
    #: the lowest TLS version accepted: "1.2" or "1.3"
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    #: TLS every session must use ("control", "data", "both"; None or "none": no
    #: requirement); a user's ``require_tls`` can only add to it
    tls_required: TlsPolicy | None = None
    #: a port for implicit FTPS (TLS from the first byte, as ftps:// clients expect);
    #: None: none; 0: any free port (see ``Server.implicit_tls_address``)
    implicit_tls_port: int | None = None
    #: refuse (522) a protected data connection that does not resume the TLS session of
    #: its control connection (vsftpd's require_ssl_reuse)
    tls_require_session_reuse: bool = False
    #: count a protected upload complete only when the client ends it with a TLS
    #: close_notify; False also accepts a TCP FIN at a TLS record boundary
    tls_require_close_notify: bool = False
    #: bound on a TLS handshake, control or data (s)
    tls_handshake_timeout: float = 30.0
    #: accept a passive data connection only from the control connection's address (off
    #: only for clients behind proxies that connect from another address)
    passive_peer_check: bool = True
    #: allow PORT/EPRT; False answers them 502 (passive mode only)
    active_mode: bool = True
    #: failed logins from one address within ``ban_window`` seconds that ban it (421 at
    #: connect) for ``ban_time`` seconds, doubling for each further ban up to
    #: ``ban_time_max``; None: no bans. Counted across sessions and worker processes.
    ban_threshold: int | None = None
    ban_window: float = 600.0
    ban_time: float = 600.0
    ban_time_max: float = 86400.0
    #: addresses and CIDR networks that are never banned
    ban_safelist: Sequence[str] = ()
