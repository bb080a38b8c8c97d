"""The listener: accepts control connections, enforces connection limits, owns the
sessions and shared state (path-IOs, per-user buckets), and drains on close."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import math
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from ..auth.users import TLS_POLICIES, User, UserManager
from ..protocol.replies import Reply
from ..storage.base import AbstractPathIO, StorageContext
from ..storage.factory import PathIOFactory, adapt_factory, open_home, scheme_of
from ..storage.timed import TimedPathIO
from ..transfer.copy import Deadlines
from ..transfer.data import dynamic_port_count
from ..transfer.throttle import TokenBucket
from ..transfer.tls import make_context, reload_context
from . import handlers  # noqa: F401  (registers the command handlers)
from .acceptor import Acceptor, listen_sockets
from .bans import BanPolicy, BanTable, Safelist
from .config import ServerConfig
from .connection import Connection
from .control import ControlChannel
from .events import ConnectionRefused, EventBus
from .masquerade import PassiveAddress

if TYPE_CHECKING:
    from .shared import SharedLimits, WorkerSlot

log = logging.getLogger("fsftpd.server")


TIMEOUTS = ("socket_timeout", "path_timeout", "idle_timeout", "wait_future_timeout", "passive_timeout")


class Limits:
    """The limits that can be changed while the server runs.

    Plain attributes, read afresh on every new connection (connection limits) and on every
    booking of a running transfer (speed limits), so an assignment takes effect at once::

        server.limits.write_speed_limit = 2_000_000
        server.set_limits(maximum_connections=50, read_speed_limit=None)

    Speeds are bytes per second; ``None`` (or 0) means no limit. Per-user limits are the
    attributes of the :class:`User` objects, which are read the same way.
    """

    NAMES = (
        "maximum_connections", "maximum_connections_per_ip",
        "read_speed_limit", "write_speed_limit",
        "read_speed_limit_per_connection", "write_speed_limit_per_connection",
    )

    def __init__(self, config: ServerConfig) -> None:
        self.maximum_connections: int | None = None
        self.maximum_connections_per_ip: int | None = None
        self.read_speed_limit: float | None = None
        self.write_speed_limit: float | None = None
        self.read_speed_limit_per_connection: float | None = None
        self.write_speed_limit_per_connection: float | None = None
        self.update(**{name: getattr(config, name) for name in self.NAMES})
        # The server-wide buckets, shared by every connection.
        self.read_bucket = TokenBucket(lambda: self.read_speed_limit)
        self.write_bucket = TokenBucket(lambda: self.write_speed_limit)

    def update(self, **changes: float | None) -> None:
        """Check then assign: unknown names and negative values raise, nothing is changed."""
        unknown = set(changes) - set(self.NAMES)
        if unknown:
            raise TypeError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or value < 0):
                raise ValueError(f"{name} must be None or a number >= 0, not {value!r}")
        for name, value in changes.items():
            setattr(self, name, value)


def _tune_listener(sock: Any) -> None:
    """Options every control connection needs, set once on the listening socket: accepted
    sockets inherit them (Linux, BSD), which saves two system calls and a socket wrapper per
    connection. RFC 959 4.1.3: clients send ABOR as Telnet IP + Synch, the Synch as TCP
    urgent data; SO_OOBINLINE keeps that byte in the stream or the ABOR line loses its LF."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)


class Server:
    """An FTP server.

    >>> server = Server([User("alice", "secret", base_path="/srv/alice")])
    >>> await server.start("127.0.0.1", 2121)
    >>> await server.close()

    ``path_io_factory`` builds the storage for each user's ``base_path``; the default picks
    the backend from the URL scheme. Options are those of :class:`ServerConfig`.

    ``shared`` is set by :func:`fsftpd.run_workers` only: this server is one worker of
    several, and its connection counts, session counts, limits and server/user buckets live
    in memory shared with the other workers. ``None`` (a single process) keeps them here.
    """

    def __init__(self, users: Iterable[User] | None = None, *,
                 path_io_factory: Any = open_home, config: ServerConfig | None = None,
                 shared: WorkerSlot | None = None, **options: Any) -> None:
        known = {f.name for f in fields(ServerConfig)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown server option(s): {', '.join(sorted(unknown))}")
        base = config or ServerConfig()
        self.config = ServerConfig(**{**{f.name: getattr(base, f.name) for f in fields(ServerConfig)},
                                      **options})
        self.shared = shared
        self.users = UserManager(users, shared=shared)
        self.events = EventBus()
        for name in TIMEOUTS:
            value = getattr(self.config, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or value <= 0):
                raise ValueError(f"{name} must be None (no timeout) or a number of seconds > 0")
        sort_limit = self.config.listing_sort_limit
        if isinstance(sort_limit, bool) or not isinstance(sort_limit, int) or sort_limit < 0:
            raise ValueError("listing_sort_limit must be a count of entries >= 0")
        _check_passive_ports(self.config.passive_ports)
        self.tls_context = _tls_context(self.config)
        self.passive_address = PassiveAddress(self.config.masquerade_address)
        policy = BanPolicy(self.config.ban_threshold, self.config.ban_window, self.config.ban_time,
                           self.config.ban_time_max)
        safelist = Safelist(self.config.ban_safelist)
        #: failed-login bans (shared by the workers of run_workers)
        self.bans = BanTable(policy, safelist) if shared is None else shared.ban_table(policy, safelist)
        self.limits: Limits | SharedLimits = (
            Limits(self.config) if shared is None else shared.make_limits(self.config))
        # One Deadlines for every transfer: the timeouts are fixed for the server's life.
        self.deadlines = Deadlines(self.config.socket_timeout, self.config.path_timeout)
        self.path_io_factory: PathIOFactory = adapt_factory(path_io_factory)
        self.storage_context = StorageContext(storage_options=dict(self.config.storage_options))
        # Keyed by id(user); the value pins the user so that its id cannot be reused by
        # another User (set_users replaces users while the server runs).
        self._path_ios: dict[int, tuple[User, AbstractPathIO]] = {}
        self._ready_roots: set[int] = set()
        self._user_buckets: dict[int, tuple[TokenBucket, TokenBucket]] = {}
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._acceptors: list[Acceptor] = []
        self._connecting: set[asyncio.Task[None]] = set()  # transports being set up
        self._stopped: asyncio.Future[None] | None = None  # serve_forever's end
        self._implicit: list[Acceptor] = []  # implicit FTPS listeners
        # Session ids: with workers, worker i of n numbers i+1, i+1+n, i+1+2n... so ids
        # are unique across the workers (a restarted worker starts its sequence again).
        self._ids = (itertools.count(1) if shared is None
                     else itertools.count(shared.worker + 1, shared.state.workers))
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, host: str | Sequence[str] | None = None, port: int = 2121, **kwargs: Any) -> None:
        """Listen on ``host`` (None: every IPv4 and IPv6 address) and ``port`` (0: any free
        port, the same for every address; see :attr:`address`)."""
        hosts: list[str | None] = [host] if host is None or isinstance(host, str) else list(host)
        if host is None and port == 0:
            # One start_server(None, 0) would give each address family its own free port.
            hosts = ["0.0.0.0", "::"]
        unknown = set(kwargs) - {"backlog", "reuse_port"}
        if unknown:
            raise TypeError(f"unknown start() option(s): {', '.join(sorted(unknown))}")
        backlog = int(kwargs.get("backlog", 1024))
        reuse_port = bool(kwargs.get("reuse_port", False))
        loop = self._loop = asyncio.get_running_loop()
        await self.passive_address.refresh()
        for item in hosts:
            try:
                socks = listen_sockets(item, port, backlog=backlog, reuse_port=reuse_port)
            except OSError:
                if host is None and item == "::" and self._acceptors:
                    continue  # no IPv6 on this machine: IPv4 alone, as start_server(None) does
                raise
            for sock in socks:
                _tune_listener(sock)
                self._acceptors.append(Acceptor(sock, loop, self._accepted))
            if port == 0:
                port = socks[0].getsockname()[1]
        for acceptor in self._acceptors:
            acceptor.start()
            log.info("listening on %s", acceptor.sock.getsockname()[:2])
        implicit = self.config.implicit_tls_port
        if implicit is not None and self.tls_context is not None:
            # Implicit FTPS goes through the same acceptors (limits, bans, descriptor
            # back-off); the handshake is started when the transport is made.
            for item in hosts:
                try:
                    socks = listen_sockets(item, implicit, backlog=backlog, reuse_port=reuse_port)
                except OSError:
                    if host is None and item == "::" and self._implicit:
                        continue
                    raise
                for sock in socks:
                    _tune_listener(sock)
                    self._implicit.append(Acceptor(sock, loop, self._accepted_tls))
                if implicit == 0:
                    implicit = socks[0].getsockname()[1]
            for acceptor in self._implicit:
                acceptor.start()
                log.info("listening on %s (implicit FTPS)", acceptor.sock.getsockname()[:2])

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs on, looked up once (on Python 3.11 each
        ``asyncio.get_running_loop()`` costs a system call)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the first listening socket."""
        sock = self._acceptors[0].sock
        host, port = sock.getsockname()[:2]
        return host, port

    @property
    def implicit_tls_address(self) -> tuple[str, int] | None:
        """(host, port) of the first implicit FTPS listener, or None without one."""
        if not self._implicit:
            return None
        host, port = self._implicit[0].sock.getsockname()[:2]
        return host, port

    def reload_tls(self) -> None:
        """Read the certificate and key files (``tls_cert``, ``tls_key``) again, e.g. on
        SIGHUP after a renewal. New connections, including data connections of running
        sessions, present the new certificate; sessions and transfers already running
        go on undisturbed, and their TLS sessions stay resumable. Raises ``OSError`` or
        ``ssl.SSLError`` for an unreadable or mismatched pair, and then changes nothing.
        Call it on the server's event loop (it reads two small files)."""
        config = self.config
        if self.tls_context is None or config.tls_cert is None or config.tls_key is None:
            raise RuntimeError("TLS is not configured (tls_cert and tls_key)")
        reload_context(self.tls_context, config.tls_cert, config.tls_key)
        log.info("TLS certificate reloaded from %s", config.tls_cert)

    @property
    def listening(self) -> bool:
        """True from the moment :meth:`start` listens until :meth:`close` begins."""
        return bool(self._acceptors) and not self._closing

    def passive_ports(self) -> tuple[int, int]:
        """(in use, available) passive ports of this process: listeners opened by PASV/EPSV
        and not yet connected, and the rest of ``passive_ports`` (without a range: of the
        operating system's dynamic port range). Counted when asked, not kept up to date."""
        in_use = sum(1 for conn in self.connections if conn.passive is not None)
        ports = self.config.passive_ports
        total = len(ports) if ports else dynamic_port_count()
        return in_use, max(0, total - in_use)

    @property
    def sockets(self) -> list[socket.socket]:
        return [a.sock for a in self._acceptors + self._implicit]

    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called (the server is draining or closed)."""
        return self._closing

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` (the server accepts from :meth:`start` on)."""
        if self._stopped is None:
            self._stopped = self.loop.create_future()
        await asyncio.shield(self._stopped)

    async def close(self, timeout: float | None = None) -> None:
        """Stop listening, let running transfers finish (up to ``shutdown_timeout``), send
        421 to idle sessions, then cut off whatever is left."""
        self._closing = True
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors.clear()
        for acceptor in self._implicit:
            acceptor.close()
        self._implicit.clear()
        if self._connecting:
            await asyncio.wait(set(self._connecting), timeout=5)
        for conn in list(self.connections):
            conn.request_shutdown()
        pending = set(self._tasks)
        if pending:
            wait = self.config.shutdown_timeout if timeout is None else timeout
            _, still = await asyncio.wait(pending, timeout=wait)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        await self.passive_address.close()
        for _, io in self._path_ios.values():
            with contextlib.suppress(Exception):
                await io.aclose()
        self._path_ios.clear()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections ---------------------------------------------------------------------
    @property
    def connection_count(self) -> int:
        return len(self.connections)

    def set_limits(self, **changes: float | None) -> None:
        """Change server-wide limits on the running server (see :class:`Limits` for the
        names). They apply to new connections and to running transfers' next chunk. Call
        it on the server's event loop (``loop.call_soon_threadsafe`` from another thread).
        In a worker of :func:`fsftpd.run_workers` the limits live in shared memory, so a
        change applies to every worker."""
        self.limits.update(**changes)

    def _new_channel(self) -> ControlChannel:
        return ControlChannel(self)

    def _accepted_tls(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """The implicit FTPS acceptor's hand-over: as :meth:`_accepted`, with TLS."""
        self._accepted(sock, address, tls=True)

    def _accepted(self, sock: socket.socket, address: tuple[str, int], tls: bool = False) -> None:
        """The acceptor's hand-over. A refused connection gets its 421 and is closed right
        here, without a transport or a task (a flood costs little and holds no descriptor);
        an admitted one is counted now and gets a transport and a ControlChannel, whose
        connection_made calls :meth:`on_channel`."""
        ip = address[0]
        refusal = self._refusal(ip)
        if refusal is not None:
            self._refuse(sock, f"{ip}:{address[1]}", *refusal)
            return
        self._per_ip[ip] += 1  # this process's own count (the shared one is in _refusal)
        sock.setblocking(False)
        task = self.loop.create_task(self._connect(sock, ip, tls))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _refuse(self, sock: socket.socket, peer: str, reason: str, message: str) -> None:
        self.events.emit(ConnectionRefused(peer, reason))
        # A banned address that keeps connecting must not flood the log (the ban itself
        # was logged once, and the event counts every refusal).
        log.log(logging.DEBUG if reason == "banned" else logging.WARNING,
                "refusing %s: %s", peer.rpartition(":")[0], message)
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(Reply(421, message).encode())  # a new socket's buffer takes it whole
        sock.close()

    async def _connect(self, sock: socket.socket, ip: str, tls: bool = False) -> None:
        try:
            if tls and self.tls_context is not None:
                await self.loop.connect_accepted_socket(
                    self._new_channel, sock, ssl=self.tls_context,
                    ssl_handshake_timeout=self.config.tls_handshake_timeout)
            else:
                await self.loop.connect_accepted_socket(self._new_channel, sock)
        except Exception as exc:
            sock.close()
            self._forget(ip)
            log.info("a new connection was lost while it was set up: %r", exc)

    def _forget(self, ip: str) -> None:
        """Undo the counts of an admitted connection (its session ended, or never began)."""
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        if self.shared is not None:
            self.shared.close(ip)

    def on_channel(self, channel: ControlChannel) -> None:
        """An admitted connection has its transport: start its session (421 if the server
        began closing meanwhile)."""
        transport = channel.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("?", 0)
        if self._closing:
            with contextlib.suppress(Exception):
                transport.write(Reply(421, "Server shutting down").encode())
            transport.close()
            self._forget(peer[0])
            return
        # TCP_NODELAY and SO_OOBINLINE come from the listening socket (see _tune_listener).
        conn = Connection(self, channel, next(self._ids), peer)
        self.connections.add(conn)
        conn.start()  # no task yet: see Connection.start

    def spawn(self, conn: Connection) -> None:
        """Give a session its task (at its first command that needs waiting)."""
        task = self.loop.create_task(self._serve(conn))
        conn.task = task
        self._tasks.add(task)

    async def _serve(self, conn: Connection) -> None:
        try:
            await conn.run()
        finally:
            if conn.task is not None:
                self._tasks.discard(conn.task)
            self.session_ended(conn)

    def session_ended(self, conn: Connection) -> None:
        """The bookkeeping of a session that ended (with or without a task)."""
        self.connections.discard(conn)
        self._forget(conn.peer_host)

    def _refusal(self, ip: str) -> tuple[str, str] | None:
        if self._closing:
            return "shutdown", "Server shutting down"
        if self.bans.enabled:
            left = self.bans.banned(ip)
            if left is not None:
                return "banned", f"Too many failed logins from your address, try again in {math.ceil(left)} s"
        if self.shared is not None:
            return self.shared.try_open(ip)  # checks the limits and counts, across workers
        limit = self.limits.maximum_connections
        # Connections still getting their transport count too: a burst cannot overshoot.
        if limit is not None and len(self.connections) + len(self._connecting) >= limit:
            return "server-limit", f"Too many connections ({limit}), try again later"
        limit = self.limits.maximum_connections_per_ip
        if limit is not None and self._per_ip[ip] >= limit:
            return "ip-limit", f"Too many connections from your address ({limit}), try again later"
        return None

    def per_ip_count(self, ip: str) -> int:
        """Control connections from ``ip`` to this process (one worker's share, with workers)."""
        return self._per_ip.get(ip, 0)

    # -- users and storage -------------------------------------------------------------
    def set_users(self, users: Iterable[User] | None) -> None:
        """Replace the user list of the running server (a reload): new logins see the new
        list at once; sessions already logged in go on with the user they logged in as.
        A changed password applies at the next login. Call it on the server's event loop.
        In a worker of :func:`fsftpd.run_workers`, only that worker changes, and users
        that were not configured at start have no session count or speed limit shared
        with the other workers (each worker applies them to its own sessions)."""
        self.users.replace(users)
        current = {id(u) for u in self.users.users}
        # Storage of users no longer listed: forget it (sessions still using it hold it).
        for key in [k for k in self._path_ios if k not in current]:
            del self._path_ios[key]
            self._ready_roots.discard(key)

    def acquire_user(self, user: User) -> bool:
        return self.users.try_acquire(user)

    def release_user(self, user: User) -> None:
        self.users.release(user)

    def user_buckets(self, user: User) -> tuple[TokenBucket, TokenBucket]:
        """(read, write) buckets shared by all of ``user``'s sessions."""
        buckets = self._user_buckets.get(id(user))
        if buckets is None:
            if self.shared is None:
                buckets = (TokenBucket(lambda: user.read_speed_limit),
                           TokenBucket(lambda: user.write_speed_limit))
            else:
                buckets = self.shared.user_buckets(user)
            self._user_buckets[id(user)] = buckets
        return buckets

    async def path_io_for(self, user: User) -> AbstractPathIO:
        entry = self._path_ios.get(id(user))
        if entry is None:
            options = {**self.config.storage_options, **user.storage_options}
            io = self.path_io_factory(user.base_path, storage_options=options, context=self.storage_context)
            timer = self.events.storage_timer
            if timer is not None:
                backend = scheme_of(user.base_path)
                io = TimedPathIO(io, functools.partial(timer, backend), streams=backend != "file")
            self._path_ios[id(user)] = (user, io)
        else:
            io = entry[1]
        if id(user) not in self._ready_roots:
            await io.ensure_root()
            self._ready_roots.add(id(user))
        return io

    def ready_path_io(self, user: User) -> AbstractPathIO | None:
        """``user``'s storage if :meth:`path_io_for` has already made it ready, else None."""
        entry = self._path_ios.get(id(user)) if id(user) in self._ready_roots else None
        return entry[1] if entry is not None else None


def _check_passive_ports(ports: Sequence[int] | None) -> None:
    """A passive port range must be usable: ports 1-65535, at least one (an empty or
    reversed range would silently fall back to random ports)."""
    if ports is None:
        return
    ports = list(ports)
    if not ports:
        raise ValueError("passive_ports is empty (a reversed range?); use None for any free port")
    bad = [p for p in ports if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535]
    if bad:
        raise ValueError(f"passive_ports must be ports from 1 to 65535, not {bad[0]!r}")


def _tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The TLS context for ``tls_cert``/``tls_key`` (None without them); the policy
    options are checked here so a wrong one fails at construction, not at a login."""
    if config.tls_required is not None and config.tls_required not in TLS_POLICIES:
        raise ValueError(f"tls_required must be one of {', '.join(TLS_POLICIES)}, "
                         f"not {config.tls_required!r}")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ValueError("tls_cert and tls_key: give both or neither")
    if config.tls_cert is None or config.tls_key is None:
        if config.tls_required not in (None, "none") or config.implicit_tls_port is not None:
            raise ValueError("tls_required and implicit_tls_port need tls_cert and tls_key")
        return None
    if config.tls_handshake_timeout <= 0:
        raise ValueError("tls_handshake_timeout must be a number of seconds > 0")
    return make_context(config.tls_cert, config.tls_key, config.tls_min_version)
