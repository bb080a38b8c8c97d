"""Run the appliance: build :class:`fsftpd.Server` (or :func:`fsftpd.run_workers`) from the
settings, on uvloop when it is installed; drain on SIGTERM/SIGINT (exit 0); reload the
users and the TLS certificate on SIGHUP.

The seams for the metrics sidecar (issue 13), both process-wide:

- :data:`SETUP`: callbacks ``setup(server, worker_index)`` run in each serving process
  (each worker, or the single process as worker 0) on its event loop, after the access
  log is subscribed and before the server listens: subscribe observers to
  ``server.events`` there. A coroutine function is awaited. Add with :func:`add_setup`.
- :data:`LIFECYCLE`: the process's state, ``starting`` -> ``ready`` -> ``draining``, for a
  readiness probe. In a serving process it reads its server live (listening: ready;
  ``server.closing``: draining). In the supervisor of several workers it is ``ready`` once
  every worker listens; the supervisor cannot see the drain (``run_workers`` owns its
  signals), so a readiness probe belongs in the workers.

Invariants: a problem found before serving (a home that does not answer, a port in use)
is one line on stderr and exit code 2, never a traceback; a reload that fails keeps the
users in place and logs why.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import fsftpd

from . import logs, sidecar
from .settings import Settings, server_options
from .users import UserSet
from .values import split_hosts

log = logging.getLogger("fsftpd.appliance")

Setup = Callable[[fsftpd.Server, int], Any]
#: per-worker setup callbacks (the metrics issue's seam): see the module docstring
SETUP: list[Setup] = []
#: how long the start-up check of one home may take (seconds)
HOME_CHECK_TIMEOUT = 20.0


def add_setup(callback: Setup) -> None:
    """Run ``callback(server, worker_index)`` in every serving process before it listens."""
    SETUP.append(callback)


class Lifecycle:
    """``starting`` -> ``ready`` -> ``draining`` (see the module docstring)."""

    def __init__(self) -> None:
        self.server: fsftpd.Server | None = None
        self._state = "starting"

    def bind(self, server: fsftpd.Server) -> None:
        self.server = server

    def set(self, state: str) -> None:
        self._state = state

    @property
    def state(self) -> str:
        server = self.server
        if server is None:
            return self._state
        if server.closing or self._state == "draining":
            return "draining"
        return "ready" if server.sockets else "starting"


LIFECYCLE = Lifecycle()

Reload = Callable[[], tuple[UserSet | None, list[str]]]


class StartError(Exception):
    """A problem that stops the start: one line, exit code 2."""


# -- checks before serving ------------------------------------------------------------------
def check_listen(hosts: list[str] | None, port: int) -> None:
    """Bind (without listening) each address: a port in use or an address that is not this
    machine's is reported before any worker starts."""
    if port == 0:
        return
    for host in hosts or ["0.0.0.0"]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise StartError(_listen_problem(host, port, exc)) from None


def _listen_problem(host: str | None, port: int, exc: OSError) -> str:
    name = "FSFTPD_HOST" if exc.errno == errno.EADDRNOTAVAIL else "FSFTPD_PORT"
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{name}: cannot listen on {host or '*'} port {port}: {reason}"


async def check_homes(users: list[fsftpd.User], settings: Settings) -> list[str]:
    """One cheap request to each configured home (create a local one, list one entry):
    a home that cannot serve stops the start, with the reason."""
    problems: list[str] = []
    seen: set[str] = set()
    home = await asyncio.to_thread(os.path.abspath, settings.home)
    for user in users:
        options = {**settings.storage_options, **user.storage_options}
        key = user.base_path + json.dumps(options, sort_keys=True, default=str)
        if key in seen or user.base_path.startswith("memory://"):
            continue
        seen.add(key)
        where = ("FSFTPD_HOME" if user.login in (None, "ftp") or user.base_path in (home, settings.home)
                 else f"home of user {user.login!r}")
        problem = await _check_home(user.base_path, options)
        if problem is not None:
            problems.append(f"{where}: {user.base_path}: {problem}")
    return problems


async def _check_home(url: str, options: dict[str, Any]) -> str | None:
    if "://" not in url or url.startswith(("file://", "local://")):
        problem = await asyncio.to_thread(_check_local, url.partition("://")[2] if "://" in url else url)
        if problem is not None:
            return problem
    context = fsftpd.StorageContext(storage_options=options)
    io = fsftpd.open_home(url, storage_options=options, context=context)
    try:
        async with asyncio.timeout(HOME_CHECK_TIMEOUT):
            await io.ensure_root()
            async for _ in io.list("/"):
                break
    except TimeoutError:
        return f"no answer within {HOME_CHECK_TIMEOUT:g} s"
    except Exception as exc:
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return str(text)
    finally:
        with contextlib.suppress(Exception):
            await io.aclose()
    return None


def _check_local(path: str) -> str | None:
    """A local home is created if missing, but not a whole missing tree (a typo)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(path) and not os.path.isdir(parent):
        return f"its parent directory {parent} does not exist"
    return None


# -- serving --------------------------------------------------------------------------------
def event_loop_kind() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _run(main: Callable[[], Any]) -> Any:
    if event_loop_kind() == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def _stop_early(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM before serving: stop like SIGINT (the command exits 0)


def raise_nofile() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one (the default soft limit, often 1024,
    is far below what a busy server needs). Returns the (old, new) soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            return soft, soft
    return soft, hard


def serve(settings: Settings, userset: UserSet, reload: Reload) -> int:
    """Serve until SIGTERM/SIGINT; the exit code."""
    old, new = raise_nofile()
    if new != old:
        log.info("descriptor limit raised from %d to %d", old, new)
    # Until the serving loop installs its own handlers, SIGTERM (podman stop right after
    # the start) stops the start cleanly instead of killing the process.
    signal.signal(signal.SIGTERM, _stop_early)
    problems = _run(lambda: check_homes(userset.users, settings))
    if problems:
        for line in problems:
            print(f"fsftpd: {line}", file=sys.stderr)
        return 2
    options = server_options(settings)
    plan: tuple[sidecar.SidecarPlan, Setup] | None = None
    try:
        if settings.workers > 1:
            check_listen(settings.hosts(), settings.port)
        plan = _metrics_sidecar(settings)
        if settings.workers > 1:
            return _serve_workers(settings, userset, reload, options)
        return int(_run(lambda: _serve_one(settings, userset, reload, options)))
    except StartError as exc:
        print(f"fsftpd: {exc}", file=sys.stderr)
        return 2
    finally:
        if plan is not None:
            SETUP.remove(plan[1])
            plan[0].close()


def _metrics_sidecar(settings: Settings) -> tuple[sidecar.SidecarPlan, Setup] | None:
    """FSFTPD_METRICS_*: the sidecar (/metrics, /healthz, /readyz) of every serving
    process, through the per-worker setup seam; None when the port is 0 (off)."""
    if settings.metrics_port == 0:
        return None
    hosts = split_hosts(settings.metrics_host) if settings.metrics_host else None
    def problem(exc: OSError) -> StartError:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return StartError(f"FSFTPD_METRICS_PORT: cannot listen on {settings.metrics_host or '*'} "
                          f"port {settings.metrics_port}: {reason}")

    try:
        plan = sidecar.SidecarPlan(host=hosts, port=settings.metrics_port, per_user=settings.metrics_per_user,
                                   workers=settings.workers, lifecycle=lambda: LIFECYCLE.state)
    except OSError as exc:
        raise problem(exc) from None

    async def setup(server: fsftpd.Server, index: int) -> None:
        try:
            await plan.setup(server, index)
        except OSError as exc:  # the port was taken since the check
            raise problem(exc) from None

    add_setup(setup)
    return plan, setup


async def _setup(server: fsftpd.Server, index: int, reload: Reload, userset: UserSet) -> None:
    server.events.subscribe(logs.AccessLog())
    LIFECYCLE.bind(server)
    current = {"users": userset}
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()  # owned here until they finish

    def on_hup() -> None:
        task = loop.create_task(_reload(server, reload, current))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for callback in SETUP:
        result = callback(server, index)
        if inspect.isawaitable(result):
            await result


def _reload_tls(server: fsftpd.Server) -> None:
    """SIGHUP: the certificate and key files again (a renewed certificate); running
    sessions keep theirs. A bad pair keeps the current one."""
    if server.tls_context is None:
        return
    try:
        server.reload_tls()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.error("reload refused, keeping the current TLS certificate: %s", exc)


async def _reload(server: fsftpd.Server, reload: Reload, current: dict[str, UserSet]) -> None:
    log.info("SIGHUP: reloading users")
    _reload_tls(server)
    try:
        userset, problems = await asyncio.to_thread(reload)
    except Exception as exc:  # a reload must never take the server down
        userset, problems = None, [f"reload failed: {exc!r}"]
    if userset is None or problems:
        for line in problems:
            log.error("reload refused, keeping the current users: %s", line)
        return
    if userset.generated is not None:
        # A new random password nobody was told about would lock everyone out.
        log.info("reload: no password configured; keeping the current users and password")
        return
    server.set_users(userset.users)
    current["users"] = userset
    log.info("reload: %d user(s) from %s", len(userset.users), userset.source,
             extra={"users": len(userset.users)})
    if userset.plain:
        log.warning("plain-text passwords for %s: store hashes (fsftpd hash-password)",
                    ", ".join(userset.plain))


async def _serve_one(settings: Settings, userset: UserSet, reload: Reload, options: dict[str, Any]) -> int:
    logs.set_worker(None)
    server = fsftpd.Server(userset.users, **options)
    await _setup(server, 0, reload, userset)
    try:
        await server.start(settings.hosts(), settings.port)
    except OSError as exc:
        raise StartError(_listen_problem(settings.host, settings.port, exc)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = server.address[1]
    log.info("fsftpd ready on port %d (event loop %s, 1 process)", port, event_loop_kind(),
             extra={"event": "ready", "port": port})
    await stop.wait()
    LIFECYCLE.set("draining")
    log.info("draining: running transfers have %g s to finish", options["shutdown_timeout"],
             extra={"event": "draining"})
    await server.close()
    log.info("stopped", extra={"event": "stopped"})
    return 0


def _serve_workers(settings: Settings, userset: UserSet, reload: Reload, options: dict[str, Any]) -> int:
    def setup(server: fsftpd.Server, index: int) -> Any:
        logs.set_worker(index)
        return _setup(server, index, reload, userset)

    def ready() -> None:
        LIFECYCLE.set("ready")
        log.info("fsftpd ready on port %d (event loop %s, %d workers)", settings.port, event_loop_kind(),
                 settings.workers, extra={"event": "ready", "port": settings.port})

    try:
        fsftpd.run_workers(userset.users, host=settings.hosts(), port=settings.port,
                           workers=settings.workers, ready=ready, setup=setup, **options)
    except ValueError as exc:
        raise StartError(f"FSFTPD_WORKERS: {exc}") from None
    except RuntimeError as exc:
        raise StartError(f"FSFTPD_WORKERS: {exc}") from None
    LIFECYCLE.set("draining")
    log.info("stopped", extra={"event": "stopped"})
    return 0
