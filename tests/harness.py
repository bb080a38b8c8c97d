"""Run a real fsftpd server on loopback in a background thread, for blocking clients
(ftplib, curl, lftp) and for async clients on their own loop (aioftp).

    with running_server(users=[User("u", "p", base_path=str(tmp_path))]) as srv:
        ftp = srv.ftp("u", "p")        # a logged-in ftplib.FTP
        srv.call(lambda s: ...)        # run code on the server's loop (change limits...)
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import fsftpd

T = TypeVar("T")

#: "uvloop" runs every test server on uvloop (as the appliance does); default: asyncio's loop
SERVER_LOOP = os.environ.get("FSFTPD_TEST_LOOP", "asyncio")


def new_server_loop() -> asyncio.AbstractEventLoop:
    if SERVER_LOOP == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class ServerThread:
    def __init__(self, users: list[fsftpd.User] | None, host: str = "127.0.0.1", **options: Any) -> None:
        self.host = host
        self._users = users
        self._options = options
        self.loop = new_server_loop()
        self.server: fsftpd.Server | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="fsftpd-test-server", daemon=True)
        self._started: Future[None] = Future()
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        try:
            self._stop = asyncio.Event()
            self.server = fsftpd.Server(self._users, **self._options)
            await self.server.start(self.host, 0)
            self.port = self.server.address[1]
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        await self._stop.wait()
        await self.server.close(timeout=5)

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def call(self, func: Callable[[fsftpd.Server], T]) -> T:
        """Run ``func(server)`` on the server's loop thread and return its result."""
        assert self.server is not None
        server = self.server

        async def run() -> T:
            return func(server)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def run(self, coro_factory: Callable[[fsftpd.Server], Any]) -> Any:
        """Run ``await coro_factory(server)`` on the server's loop."""
        assert self.server is not None
        return asyncio.run_coroutine_threadsafe(coro_factory(self.server), self.loop).result(timeout=60)

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def ftp(self, user: str | None = None, password: str | None = None, timeout: float = 30) -> ftplib.FTP:
        ftp = ftplib.FTP(timeout=timeout)
        ftp.connect(self.host, self.port)
        if user is not None:
            ftp.login(user, password or "")
        return ftp


@contextlib.contextmanager
def running_server(users: list[fsftpd.User] | None = None, host: str = "127.0.0.1",
                   **options: Any) -> Iterator[ServerThread]:
    srv = ServerThread(users, host, **options).start()
    try:
        yield srv
    finally:
        srv.stop()
