"""A real fsftpd server with the metrics sidecar installed, on a background thread, and
helpers to scrape it over HTTP and read the samples."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import fsftpd
from fsftpd.appliance import sidecar
from tests.harness import ServerThread


class SidecarServer(ServerThread):
    """:class:`tests.harness.ServerThread` plus :func:`fsftpd.appliance.sidecar.install`
    (run on the server's loop before it listens, as the runner does)."""

    def __init__(self, users: list[fsftpd.User] | None, *, per_user: bool = True,
                 lifecycle: Callable[[], str] | None = None, **options: Any) -> None:
        super().__init__(users, **options)
        self.per_user = per_user
        self.lifecycle = lifecycle
        self.installed: sidecar.Installed | None = None

    async def _main(self) -> None:
        try:
            self._stop = asyncio.Event()
            self.server = fsftpd.Server(self._users, **self._options)
            self.installed = await sidecar.install(self.server, host="127.0.0.1", port=0,
                                                   per_user=self.per_user, lifecycle=self.lifecycle)
            await self.server.start(self.host, 0)
            self.port = self.server.address[1]
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        await self._stop.wait()
        await self.server.close(timeout=5)
        self.installed.close()

    @property
    def http_port(self) -> int:
        assert self.installed is not None
        return self.installed.port

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        return http_get(self.http_port, path, headers)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.http_port)


def http_get(port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, body, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def raw_metrics(port: int) -> str:
    status, body, _ = http_get(port, "/metrics")
    assert status == 200, body
    return body


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one real scrape."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(raw_metrics(port)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as for a counter nobody incremented yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(check: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        time.sleep(interval)


@contextlib.contextmanager
def sidecar_server(users: list[fsftpd.User] | None = None, **options: Any) -> Iterator[SidecarServer]:
    srv = SidecarServer(users, **options).start()
    assert isinstance(srv, SidecarServer)
    try:
        yield srv
    finally:
        srv.stop()
