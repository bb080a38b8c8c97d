"""The sidecar HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on their own port.

It runs on its own thread with its own small asyncio loop, not on the FTP server's loop:

- ``/healthz`` must answer 503 while the server's loop is blocked, which a handler on
  that loop could never do (it would just hang);
- rendering a scrape (and, with several workers, reading every worker's files) then never
  delays FTP sessions, on asyncio or uvloop alike (the server's loop is only touched by
  the storage probes of ``/readyz``, scheduled there with ``run_coroutine_threadsafe``).

The HTTP side is deliberately small: GET/HEAD, HTTP/1.0 and 1.1 with keep-alive, a 16 KiB
request head read within :data:`REQUEST_TIMEOUT`, at most :data:`MAX_CLIENTS` connections.

:func:`install` wires everything to a server: the metrics observer, the heartbeat, the
storage probes and this endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

import fsftpd

from . import metrics
from .health import Health, Heartbeat, StorageProbes

log = logging.getLogger("fsftpd.sidecar")

REQUEST_TIMEOUT = 10.0
#: how long a scrape waits for the server's loop to hand over its pending sums (seconds)
FLUSH_WAIT = 1.0
MAX_CLIENTS = 64
MAX_HEAD = 16 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class HttpEndpoint:
    """A minimal HTTP server on its own thread and loop. ``routes`` maps a path to a
    coroutine function ``(headers) -> Response``, run on that loop."""

    def __init__(self, routes: dict[str, Callable[[dict[str, str]], asyncio.Future[Response] | object]],
                 *, host: str | Sequence[str] | None, port: int, reuse_port: bool = False) -> None:
        self.routes = routes
        self.host = host
        self.requested_port = port
        self.reuse_port = reuse_port
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._clients = 0
        self._thread = threading.Thread(target=self._run, name="fsftpd-sidecar", daemon=True)
        self._ready: Future[None] = Future()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> HttpEndpoint:
        """Listen (raising the bind error, if any) and serve from the thread."""
        self._thread.start()
        self._ready.result(timeout=30)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            try:
                self._server = self.loop.run_until_complete(self._listen(self.host))
            except OSError as exc:
                # Every address (host None) on a machine or container without IPv6: the
                # IPv4 ones alone, as the FTP listener does.
                if self.host is not None or exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    raise
                self._server = self.loop.run_until_complete(self._listen("0.0.0.0"))
        except BaseException as exc:
            self._ready.set_exception(exc)
            self.loop.close()
            return
        self._ready.set_result(None)
        try:
            self.loop.run_forever()
        finally:
            self._server.close()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self._server.wait_closed())
            self.loop.close()

    async def _listen(self, host: str | Sequence[str] | None) -> asyncio.Server:
        return await asyncio.start_server(self._client, host, self.requested_port,
                                          reuse_port=self.reuse_port or None, limit=MAX_HEAD, backlog=128)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._server is not None
        return [s.getsockname()[:2] for s in self._server.sockets]

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    # -- HTTP ---------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.transport.abort()
            return
        self._clients += 1
        try:
            while await self._exchange(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError,
                ValueError):
            pass
        finally:
            self._clients -= 1
            writer.transport.abort() if writer.transport.is_closing() else writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its response; False when the connection should close."""
        async with asyncio.timeout(REQUEST_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, Response(400, b"bad request\n"), head_only=False, keep=False)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        if "content-length" in headers or "transfer-encoding" in headers:
            keep = False  # no request bodies here: do not try to find the next request
        route = self.routes.get(target.split("?", 1)[0])
        if method not in ("GET", "HEAD"):
            response = Response(405, b"method not allowed\n", headers={"Allow": "GET, HEAD"})
        elif route is None:
            response = Response(404, b"not found: try /metrics, /healthz or /readyz\n")
        else:
            try:
                response = await route(headers)  # type: ignore[misc]
            except Exception:
                log.exception("sidecar %s failed", target)
                response = Response(503, b"internal error\n")
        await self._send(writer, response, head_only=method == "HEAD", keep=keep)
        return keep

    async def _send(self, writer: asyncio.StreamWriter, response: Response, *, head_only: bool,
                    keep: bool) -> None:
        reason = _REASONS.get(response.status, "Unknown")
        head = [f"HTTP/1.1 {response.status} {reason}", f"Content-Type: {response.content_type}",
                f"Content-Length: {len(response.body)}", "Cache-Control: no-store",
                f"Connection: {'keep-alive' if keep else 'close'}"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await writer.drain()


@dataclass
class Installed:
    """What :func:`install` set up; :meth:`close` undoes it (call on the server's loop)."""

    observer: metrics.MetricsObserver
    heartbeat: Heartbeat
    probes: StorageProbes
    health: Health
    endpoint: HttpEndpoint
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return self.endpoint.port

    def close(self) -> None:
        self.endpoint.close()
        self.heartbeat.stop()


def metrics_response(registry: CollectorRegistry, headers: dict[str, str]) -> Response:
    """The exposition in the format the scraper asked for (``Accept``), gzipped if it
    accepts that. With several workers, dead workers' gauge files are dropped first."""
    directory = metrics.multiprocess_dir()
    if directory is not None:
        metrics.forget_dead_workers(directory)
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    body = encoder(registry)
    extra: dict[str, str] = {}
    if "gzip" in headers.get("accept-encoding", "") and len(body) > 1024:
        body = gzip.compress(body, compresslevel=5)
        extra["Content-Encoding"] = "gzip"
    return Response(200, body, content_type, extra)


async def install(server: fsftpd.Server, *, host: str | Sequence[str] | None = None, port: int = 9100,
                  per_user: bool = True, lifecycle: Callable[[], str] | None = None,
                  multiprocess_dir: str | None = None, reuse_port: bool = False) -> Installed:
    """Observe ``server`` and serve its metrics and health on ``host``:``port``. Call it on
    the server's loop before ``server.start`` (so storage calls are timed from the first).

    ``multiprocess_dir``: one worker of several; the metrics go to prometheus-client's
    files there, every worker listens on ``port`` (``reuse_port``), and any of them
    answers for the whole server. ``lifecycle``: see :class:`~.health.Health`."""
    loop = asyncio.get_running_loop()
    if multiprocess_dir is not None:
        metrics.enable_multiprocess(multiprocess_dir)
    registry = CollectorRegistry(auto_describe=False)
    observer = metrics.MetricsObserver(server, per_user=per_user, registry=registry)
    server.events.subscribe(observer.observe)
    server.events.storage_timer = observer.time_storage
    heartbeat = Heartbeat(loop, on_tick=observer.sample, directory=multiprocess_dir)
    heartbeat.start()
    probes = StorageProbes(server)
    health = Health(server, loop, heartbeat, probes, lifecycle=lifecycle, directory=multiprocess_dir)
    scrape = metrics.scrape_registry(registry, metrics.event_loop_name(loop))

    async def flush() -> None:
        observer.flush()

    async def metrics_route(headers: dict[str, str]) -> Response:
        # This process's pending sums first (on the server's loop, which owns them), so a
        # scrape is up to date; a blocked loop gets a second, then the scrape goes ahead.
        done = asyncio.run_coroutine_threadsafe(flush(), loop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(done), FLUSH_WAIT)
        return metrics_response(scrape, headers)

    async def healthz(headers: dict[str, str]) -> Response:
        ok, text = health.live()
        return Response(200 if ok else 503, text.encode())

    async def readyz(headers: dict[str, str]) -> Response:
        ok, text = await health.ready()
        return Response(200 if ok else 503, text.encode())

    endpoint = HttpEndpoint({"/metrics": metrics_route, "/healthz": healthz, "/readyz": readyz},
                            host=host, port=port, reuse_port=reuse_port)
    try:
        endpoint.start()
    except BaseException:
        heartbeat.stop()
        raise
    log.info("metrics and health on port %d (pid %d)", endpoint.port, os.getpid())
    return Installed(observer, heartbeat, probes, health, endpoint, registry)


class SidecarPlan:
    """The sidecar of a whole appliance process, made in the parent before it serves:
    :meth:`setup` is the per-worker setup callback (``setup(server, worker_index)``, the
    runner's seam), :meth:`close` cleans up after serving.

    With ``workers`` > 1 the plan makes the shared metrics directory on tmpfs (before the
    workers are forked) and every worker listens on the same port with ``SO_REUSEPORT``;
    port 0 then means one free port chosen here and held (bound, not listening) until
    :meth:`close`, so that all workers share it. Raises OSError when the port cannot be
    bound (in use, or an address that is not this machine's)."""

    def __init__(self, *, host: str | Sequence[str] | None, port: int, per_user: bool = True,
                 workers: int = 1, lifecycle: Callable[[], str] | None = None) -> None:
        self.host = host
        self.per_user = per_user
        self.workers = workers
        self.lifecycle = lifecycle
        self.directory: str | None = None
        self._placeholder: socket.socket | None = None
        self.port = port
        hosts = [host] if host is None or isinstance(host, str) else list(host)
        first = hosts[0] if hosts else None
        if workers > 1:
            self._placeholder = _reserve(first, port)
            self.port = self._placeholder.getsockname()[1]
            shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            self.directory = tempfile.mkdtemp(prefix="fsftpd-metrics-", dir=shm)
        else:
            _reserve(first, port).close()  # only a check: the worker binds it for real

    async def setup(self, server: fsftpd.Server, worker_index: int) -> Installed:
        return await install(server, host=self.host, port=self.port, per_user=self.per_user,
                             lifecycle=self.lifecycle, multiprocess_dir=self.directory,
                             reuse_port=self.directory is not None)

    def close(self) -> None:
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _reserve(host: str | None, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` with SO_REUSEPORT (so workers can bind it too)."""
    family, _, _, _, address = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
