"""The listening sockets and their accept loop, owned by the server rather than by the
event loop, so that running out of descriptors is handled here.

Why not ``loop.create_server``: when ``accept()`` fails with EMFILE (too many open files),
uvloop calls its error path again for every readiness event of the listening socket,
which stays readable while connections wait in the backlog: the server spun at 75% CPU
writing 4.5 MB of log a second. asyncio's own loop pauses one second and logs a traceback
every time. Here the accept loop stops accepting for a short back-off that doubles while
the shortage lasts, logs one line per :data:`LOG_INTERVAL`, and leaves the sessions
already in untouched (they are served by the same loop meanwhile).

Invariants:
- at most :data:`BATCH` accepts per readiness event (other sessions get their turn);
- while paused the socket has no reader on the loop (nothing to spin on), and exactly one
  timer re-arms it;
- the back-off starts at :data:`BACKOFF_MIN` and resets after a successful accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable

log = logging.getLogger("fsftpd.server")

#: accepts per readiness event
BATCH = 64
#: first pause after a descriptor shortage, and its cap (seconds)
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
#: at most one log line per this many seconds about a shortage (seconds)
LOG_INTERVAL = 10.0
#: accept() errors that mean "no resources now": pause, then try again
SHORTAGE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

Accepted = Callable[[socket.socket, tuple[str, int]], None]


def listen_sockets(host: str | None, port: int, *, backlog: int,
                   reuse_port: bool = False) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host`` (None: every address) and ``port``,
    as ``loop.create_server`` makes them (SO_REUSEADDR; IPv6 sockets IPv6 only)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    made: list[socket.socket] = []
    seen: set[tuple[int, tuple[object, ...]]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: "
                                         f"{(exc.strerror or '').lower()}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


class Acceptor:
    """Accepts connections on one listening socket and hands each to ``accepted``."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, accepted: Accepted) -> None:
        self.sock = sock
        self._loop = loop
        self._accepted = accepted
        self._fd = sock.fileno()
        self._reading = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._backoff = BACKOFF_MIN
        self._logged_at = -LOG_INTERVAL
        self.shortages = 0  # accept() calls that failed for lack of resources (for tests, logs)
        self._unlogged = 0

    def start(self) -> None:
        if not self._closed and not self._reading:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _on_readable(self) -> None:
        sock = self.sock
        for _ in range(BATCH):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in SHORTAGE:
                    self._pause(exc)
                else:  # something else (ECONNABORTED variants, EPROTO...): skip that one
                    log.warning("accept() failed: %s", exc)
                return
            self._backoff = BACKOFF_MIN
            try:
                self._accepted(conn, address)
            except Exception:
                conn.close()
                log.exception("a new connection could not be set up")

    def _pause(self, exc: OSError) -> None:
        """No descriptor (or memory) for a new connection: stop watching the socket for a
        while; connections wait in the backlog meanwhile."""
        self.shortages += 1
        delay = self._backoff
        self._backoff = min(BACKOFF_MAX, self._backoff * 2)
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        self._timer = self._loop.call_later(delay, self._resume)
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            more = f" ({self._unlogged} more since the last message)" if self._unlogged else ""
            log.error("cannot accept connections: %s; pausing accepts for %.2f s%s",
                      exc.strerror or exc, delay, more)
            self._logged_at = now
            self._unlogged = 0
        else:
            self._unlogged += 1

    def _resume(self) -> None:
        self._timer = None
        self.start()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            self._reading = False
        self.sock.close()
