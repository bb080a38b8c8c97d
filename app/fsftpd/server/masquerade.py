"""The address announced in PASV replies when it is configured (``masquerade_address``).

An IP address is used as it is. A DNS name (a load balancer's host name, whose address may
change) is resolved when the server starts and again at most every :data:`TTL` seconds, in
the background: a PASV reply never waits for DNS, it uses the last address found. If a
name has never resolved, the control connection's own address is announced (and the
failure logged), as if no masquerade address were set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable

log = logging.getLogger("fsftpd.server")

#: seconds a resolved address is used before the name is looked up again
TTL = 30.0


class PassiveAddress:
    """``current(local_host)`` is the address to announce; ``None`` configured: ``local_host``."""

    def __init__(self, configured: str | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = configured
        self._clock = clock
        self._resolved: str | None = None
        self._expires = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self.is_name = False
        if configured:
            try:
                ipaddress.ip_address(configured)
                self._resolved = configured
            except ValueError:
                self.is_name = True

    def current(self, local_host: str) -> str:
        if not self.is_name:
            return self._resolved or local_host
        if self._clock() >= self._expires and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        return self._resolved or local_host

    async def refresh(self) -> None:
        """Look the name up now (IPv4: PASV replies carry IPv4 addresses only)."""
        if not self.is_name or not self.configured:
            return
        self._expires = self._clock() + TTL  # also after a failure: retry in TTL, not at once
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self.configured, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("passive address %r did not resolve (%s); announcing %s", self.configured,
                        exc, self._resolved or "the control connection's address")
            return
        address = str(infos[0][4][0])
        if address != self._resolved:
            log.info("passive address %r resolves to %s", self.configured, address)
        self._resolved = address

    async def close(self) -> None:
        task = self._refreshing
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
