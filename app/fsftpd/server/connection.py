"""One control connection: read a line, check the command's preconditions, run its
handler, reply. Transfers run as a task owned by the connection so that ABOR, STAT, NOOP
and QUIT are served while data moves (RFC 959 section 4.1.3).

Invariants:
- every exception raised by a handler becomes exactly one reply, through
  :func:`reply_for_exception`;
- at most one transfer task per connection; it is awaited (never orphaned) on every exit;
- the user's session counter is released on every exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from ..auth.users import User
from ..protocol import paths
from ..protocol.commands import MAX_LINE, Access, Command, CommandSpec, lookup, parse_line
from ..protocol.errors import DataConnectionError, FtpError, TransferAborted, reply_for_exception
from ..protocol.replies import Reply
from ..protocol.session import DataMode, Session, TransferType
from ..storage.base import AbstractPathIO
from ..transfer.copy import Deadlines
from ..transfer.data import PassiveListener, connect_active
from ..transfer.throttle import Throttle, TokenBucket
from ..transfer.tls import TlsDataSocket
from .control import ControlChannel, LineTooLong
from .events import CommandDone, SessionEnded, SessionStarted, ThrottleWait, TransferFinished
from .meter import TransferMeter

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("fsftpd.session")
T = TypeVar("T")

#: After the data connection of an upload closes, the control connection is watched for
#: 1/CLOSE_GRACE_RATIO of the upload's time (at most CLOSE_GRACE_MAX seconds; none under
#: CLOSE_GRACE_MIN) before the upload is committed. A client killed mid-upload has both
#: connections closed by its kernel in an order the kernel picks (recent Linux: the data
#: connection first, tens of microseconds before the control connection, more when the
#: dying process is preempted); without the wait the server can see the data connection's
#: end alone and commit the partial upload. The wait costs at most 1% of an upload's time,
#: and nothing to the short uploads of a mirror of small files.
CLOSE_GRACE_RATIO = 100
CLOSE_GRACE_MIN = 0.001
CLOSE_GRACE_MAX = 0.05


@dataclass(frozen=True, slots=True)
class Request:
    command: Command
    spec: CommandSpec

    @property
    def arg(self) -> str:
        return self.command.arg


#: A handler either is a coroutine function, or a plain function that returns its reply
#: at once (a reply computed without waiting), or returns an awaitable for the cases that
#: must wait. A plain function's work before it returns an awaitable must be free of side
#: effects: the inline path (below) drops that awaitable and lets the session task run the
#: handler again from the start.
Handler = Callable[["Connection", Request], Awaitable[Reply | None] | Reply]
HANDLERS: dict[str, Handler] = {}
#: the handlers that are plain functions (see :meth:`Connection.serve_inline`)
INLINE: set[str] = set()


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register the handler for the command(s) whose spec names ``name``."""

    def register(func: Handler) -> Handler:
        HANDLERS[name] = func
        if not inspect.iscoroutinefunction(func):
            INLINE.add(name)
        return func

    return register


# Data phase of a transfer: gets the data socket, returns the bytes moved.
DataPhase = Callable[[socket.socket], Awaitable[int]]


class Connection:
    """The state and control loop of one session (one object per connection: keep it small)."""

    __slots__ = (
        "_abort_requested",
        "_buckets",
        "_committing",
        "_ending",
        "_idle_timer",
        "_local_host",
        "_main",
        "_shutting_down",
        "active_target",
        "channel",
        "closing",
        "config",
        "id",
        "io",
        "last_activity",
        "login_failures",
        "passive",
        "peer_host",
        "peer_port",
        "pending_user",
        "server",
        "session",
        "started",
        "task",
        "transfer",
        "transport",
        "user",
    )

    def __init__(self, server: Server, channel: ControlChannel, session_id: int,
                 peer: tuple[str, int] | None = None) -> None:
        self.server = server
        self.config = server.config
        self.channel = channel
        transport = channel.transport
        assert transport is not None
        self.transport: asyncio.Transport = transport
        self.id = session_id
        if peer is None:
            peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer_host: str = peer[0]
        self.peer_port: int = peer[1]
        self._local_host: str | None = None  # looked up when first needed (PASV, PORT)
        self.session = Session()
        self.user: User | None = None
        self.pending_user: User | None = None
        self.io: AbstractPathIO | None = None
        self.login_failures = 0
        self.passive: PassiveListener | None = None
        self.active_target: tuple[str, int] | None = None
        self.transfer: asyncio.Task[None] | None = None
        self._abort_requested = False
        self._committing = False  # the upload is all in; storage is making it visible
        self._ending = False  # the transfer's outcome is decided; it is cleaning up, replying
        self._shutting_down = False
        self.closing = False
        self.started = time.monotonic()
        self.last_activity = self.started  # last reply or transfer end (for idle_timeout)
        # Per-connection buckets (read, write, user's read, user's write), made on the first
        # transfer: most sessions never need them.
        self._buckets: tuple[TokenBucket, TokenBucket, TokenBucket, TokenBucket] | None = None
        self._main: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None  # the task running this session (set by the server)
        self._idle_timer: asyncio.TimerHandle | None = None
        channel.connection = self
        if server.tls_context is not None and transport.get_extra_info("sslcontext") is not None:
            # Implicit FTPS: protected from the first byte, data protected by default
            # (what ftps:// clients expect; they send PBSZ 0 and PROT P anyway).
            self.session.tls = self.session.pbsz = self.session.protect_data = True

    @property
    def peer(self) -> str:
        return f"{self.peer_host}:{self.peer_port}"

    @property
    def local_host(self) -> str:
        """The server's address on this control connection."""
        if self._local_host is None:
            local = self.transport.get_extra_info("sockname") or ("127.0.0.1", 0)
            self._local_host = local[0]
        return self._local_host

    @property
    def reader(self) -> ControlChannel:
        """The control channel (its ``_buffer`` holds the received, unparsed bytes)."""
        return self.channel

    @property
    def deadlines(self) -> Deadlines:
        return self.server.deadlines

    # -- public helpers for handlers ------------------------------------------------
    @property
    def user_name(self) -> str | None:
        return self.user.name if self.user is not None else None

    @property
    def storage_io(self) -> AbstractPathIO:
        if self.io is None:
            raise FtpError(530, "Not logged in")
        return self.io

    async def storage(self, awaitable: Awaitable[T]) -> T:
        """Run one storage operation under ``path_timeout`` (expiry -> 451)."""
        timeout = self.config.path_timeout
        if timeout is None:
            return await awaitable
        async with asyncio.timeout(timeout):
            return await awaitable

    async def storage_each(self, items: AsyncIterator[T]) -> AsyncGenerator[T, None]:
        """The items of a storage iterator, each step under ``path_timeout`` like
        :meth:`storage`. Closing this generator closes ``items``: callers that may stop
        early use ``contextlib.aclosing`` so a listing releases its directory at once, not
        when it is collected."""
        iterator = items.__aiter__()
        try:
            while True:
                try:
                    item = await self.storage(iterator.__anext__())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    def path(self, req: Request, arg: str | None = None, access: Access | None = None) -> str:
        """Resolve a path argument and check the access the command's spec demands."""
        target = paths.resolve(self.session.cwd, req.arg if arg is None else arg)
        self.check_access(target, req.spec.access if access is None else access)
        return target

    def check_access(self, target: str, access: Access) -> None:
        user = self.user
        if user is None:
            raise FtpError(530, "Not logged in")
        if access is Access.READ and not user.can_read(target):
            raise FtpError(550, "Permission denied")
        if access is Access.WRITE and not user.can_write(target):
            raise FtpError(550, "Permission denied")

    async def reply(self, reply: Reply) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(reply.encode())
        if not self.channel.write_paused:
            return  # below the high-water mark (the usual case): nothing to wait for
        timeout = self.config.socket_timeout
        try:
            if timeout is None:
                await self.channel.drain()
            else:
                async with asyncio.timeout(timeout):
                    await self.channel.drain()
        except (ConnectionError, TimeoutError):
            self.closing = True
            transport.abort()

    # -- the session's life -------------------------------------------------------------
    #
    # A session starts without a task: the greeting is written at once, and command lines
    # are served from the channel's receive callback (serve_inline) for as long as their
    # replies need no waiting. The first line that needs waiting gives the session its
    # task (run); a session that ends before that (QUIT, the client closing, idle timeout,
    # shutdown) is ended right in the callback (_end_now). A login-and-leave session or an
    # idle logged-in one thus never costs a task, a coroutine frame or a future.
    def start(self) -> None:
        """The session begins: greeting and idle timer."""
        events = self.server.events
        if events.observers:
            events.emit(SessionStarted(self.id, self.peer))
        if log.isEnabledFor(logging.INFO):
            log.info("session %d: connected from %s", self.id, self.peer)
        idle = self.config.idle_timeout
        if idle is not None:
            self._idle_timer = self.server.loop.call_later(idle, self._idle_check)
        self.transport.write(Reply(220, self.config.banner).encode())

    def wake(self) -> None:
        """The channel's call when :meth:`serve_inline` asks for the task and the session
        has none yet: end the session if it is over, else start its task."""
        channel = self.channel
        if self.closing or self._shutting_down or channel.exhausted():
            self._end_now()
        else:
            self.server.spawn(self)

    async def run(self) -> None:
        """The session's task: read a line, handle it, reply, until the session ends."""
        # Set only once running: a task cancelled before its first step would skip cleanup.
        self._main = self.task if self.task is not None else asyncio.current_task()
        try:
            if self._shutting_down:  # shutdown came before this task's first step
                raise asyncio.CancelledError
            while not self.closing:
                line = await self._read_line()
                if line is None or self.closing:  # closing: served inline (QUIT)
                    break
                await self._handle_line(line)
        except asyncio.CancelledError:
            if not self._shutting_down:
                raise
            await self.reply(Reply(421, "Server shutting down, closing control connection"))
        except (ConnectionError, TimeoutError):
            pass
        finally:
            await self._cleanup()

    def _end_now(self, reply: Reply | None = None) -> None:
        """End a session that has no task, from a callback: ``reply`` (if any) is its last."""
        if self.channel.connection is not self:
            return  # already ended
        if reply is not None and not self.transport.is_closing():
            self.transport.write(reply.encode())
        self._release()
        self.server.session_ended(self)

    def _idle_check(self) -> None:
        """The idle timer: one per session, re-armed lazily. It may fire early (activity
        since it was armed only moves the deadline later); then it re-arms itself. Silence
        longer than ``idle_timeout`` since the last reply or the end of the last transfer,
        while waiting for a command, times the read out."""
        idle = self.config.idle_timeout
        assert idle is not None
        now = time.monotonic()
        due = self.last_activity + idle
        if self.transfer is not None and not self.transfer.done():
            due = now + idle  # a running transfer is not idle
        elif due <= now:
            if self.task is None:
                self._idle_timer = None
                log.info("session %d: idle for %ss, closing", self.id, idle)
                self._end_now(_idle_reply(idle))
                return
            if self.channel.time_out():
                self._idle_timer = None
                return
            due = now + idle  # busy with a command, not waiting for one
        self._idle_timer = self.server.loop.call_later(due - now, self._idle_check)

    async def _read_line(self) -> bytes | None:
        """The next command line, or None when the session should end. Silence longer than
        ``idle_timeout`` since the last reply or the end of the last transfer gets 421."""
        self.last_activity = time.monotonic()
        while True:
            try:
                return await self.channel.read_line()
            except TimeoutError:
                idle = self.config.idle_timeout
                assert idle is not None
                await self._idle_close(idle)
                return None
            except LineTooLong:
                # Reply first: a client that sent a huge line without a newline is
                # waiting for an answer, not sending the rest. The channel drops the rest
                # of the line as it comes; waiting for it is waiting for the client (idle).
                await self.reply(Reply(500, f"Command line too long (limit {MAX_LINE} bytes)"))
                log.warning("session %d: over-long command line discarded", self.id)
                self.last_activity = time.monotonic()

    async def _idle_close(self, idle: float) -> None:
        log.info("session %d: idle for %ss, closing", self.id, idle)
        await self.reply(_idle_reply(idle))

    async def _handle_line(self, line: bytes) -> None:
        started = time.perf_counter()
        verb = ""
        reply: Reply | None
        try:
            command = parse_line(line)
            if command.telnet or not command.verb:
                self._telnet(command)
                if not command.verb:
                    return
            verb = command.verb
            spec = lookup(command)
            if self.transfer is not None and not self.transfer.done() and not spec.during_transfer:
                # RFC 959 4.1.3: other commands wait until the transfer completes.
                await asyncio.shield(self.transfer)
            if spec.login and not self.session.logged_in:
                raise FtpError(530, "Please log in with USER and PASS first")
            self.session.before(verb)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("session %d: %s", self.id, command)
            result = HANDLERS[spec.handler](self, Request(command, spec))
            reply = result if isinstance(result, Reply) else await result
        except FtpError as exc:
            reply = self._error_reply(exc, verb)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            reply = self._error_reply(exc, verb)
        if verb:
            self.session.after(verb)
        if reply is None and self.transfer is not None and not self.transfer.done():
            # Let the new transfer task take its first step before the next line is read:
            # a task cancelled before it starts (an ABOR pipelined right behind STOR, or the
            # client vanishing) would never run its cleanup (temp file, open file).
            await asyncio.sleep(0)
        if reply is not None:
            await self.reply(reply)
            self._command_done(verb, reply, started)

    def _telnet(self, command: Command) -> None:
        """Refuse the Telnet options the line asked for (RFC 854); no reply of its own."""
        if command.telnet and not self.transport.is_closing():
            self.transport.write(command.telnet)

    def _error_reply(self, exc: Exception, verb: str) -> Reply:
        if isinstance(exc, FtpError):
            log.info("session %d: %s -> %s", self.id, verb or "?", exc.reply)
            return exc.reply
        reply = reply_for_exception(exc)
        level = logging.WARNING if reply.code in (451, 452) else logging.INFO
        log.log(level, "session %d: %s failed: %r -> %s", self.id, verb, exc, reply)
        return reply

    def _command_done(self, verb: str, reply: Reply, started: float) -> None:
        events = self.server.events
        if events.observers:
            events.emit(CommandDone(self.id, self.user_name, verb or "?", reply.code,
                                    time.perf_counter() - started))

    # -- the inline path ----------------------------------------------------------------
    def serve_inline(self) -> bool:
        """Serve buffered command lines right in the channel's receive callback, while the
        session task waits for a line: a command whose reply needs no waiting (USER,
        PASS with a ready home, TYPE, EPSV, PWD, QUIT, every error reply...) then costs
        no task wake-up. Stops at the first line that needs waiting and leaves it in the
        buffer for the task. Returns True when the task must be woken (a line is left,
        or the session ends); order is kept because the task is idle meanwhile."""
        channel = self.channel
        while not (self.closing or self._shutting_down or channel.write_paused):
            line = channel.peek_line()
            if line is None:
                return channel.needs_reader()
            if not self._inline(line):
                return True
            channel.consume(len(line))
            self.last_activity = time.monotonic()
        if self.closing:
            channel.stop_reading()  # QUIT: the task reads no further line, it ends the session
        return True

    def _inline(self, line: bytes) -> bool:
        """One line served without waiting, or False (and nothing changed) if it needs
        the task. The same steps as :meth:`_handle_line`."""
        if self.transfer is not None and not self.transfer.done():
            return False
        started = time.perf_counter()
        verb = ""
        reply: Reply | None
        try:
            command = parse_line(line)
            if not command.verb:  # only Telnet negotiation: refuse it, no reply
                self._telnet(command)
                return True
            if command.telnet:
                return False  # rare: the task serves the line (and answers the Telnet part once)
            verb = command.verb
            spec = lookup(command)
            if spec.login and not self.session.logged_in:
                raise FtpError(530, "Please log in with USER and PASS first")
            if spec.handler not in INLINE:
                return False
            self.session.before(verb)
            result = HANDLERS[spec.handler](self, Request(command, spec))
            if not isinstance(result, Reply):
                # This case needs waiting: the handler made no change yet (see Handler).
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                return False
            if log.isEnabledFor(logging.DEBUG):
                log.debug("session %d: %s (inline)", self.id, command)
            reply = result
        except Exception as exc:
            reply = self._error_reply(exc, verb)
        if verb:
            self.session.after(verb)
        if not self.transport.is_closing():
            self.transport.write(reply.encode())
        self._command_done(verb, reply, started)
        return True

    # -- TLS (RFC 4217) ------------------------------------------------------------------
    def tls_required(self) -> tuple[bool, bool]:
        """(control, data): whether this session must protect its control connection and
        its data connections: the server's ``tls_required`` plus the user's own."""
        policies: set[str] = {self.config.tls_required or "none"}
        user = self.user or self.pending_user
        if user is not None:
            policies.add(str(user.require_tls))
        return (bool(policies & {"control", "both"}), bool(policies & {"data", "both"}))

    async def start_tls(self, reply: Reply) -> None:
        """AUTH TLS: send ``reply`` (234) in the clear, then run the handshake on the
        control connection; the session goes on over the TLS transport. A failed
        handshake ends the session."""
        context = self.server.tls_context
        assert context is not None
        dropped = self.channel.discard_buffer()
        if dropped:
            # Plaintext pipelined behind AUTH would be read as if it had been protected
            # (the STARTTLS command injection): it is dropped, never executed.
            log.warning("session %d: %d byte(s) sent after AUTH before the handshake dropped",
                        self.id, dropped)
        self.transport.write(reply.encode())
        try:
            transport = await self.server.loop.start_tls(
                self.transport, self.channel, context, server_side=True,
                ssl_handshake_timeout=self.config.tls_handshake_timeout)
        except (OSError, TimeoutError, ConnectionError) as exc:  # ssl.SSLError is an OSError
            log.info("session %d: TLS handshake on the control connection failed: %r", self.id, exc)
            self.closing = True
            with contextlib.suppress(Exception):
                self.transport.abort()
            return
        if transport is None:  # the client went away during the handshake
            self.closing = True
            return
        self.transport = self.channel.transport = transport
        self.session.tls = True
        if log.isEnabledFor(logging.INFO):
            ssl_object = transport.get_extra_info("ssl_object")
            log.info("session %d: control connection protected (%s)", self.id,
                     ssl_object.version() if ssl_object is not None else "TLS")

    def check_data_protection(self) -> None:
        """A data command under a policy that requires protected data: 522 when the
        control connection has no TLS (PROT P is impossible), 521 after PROT C
        (RFC 4217 section 9)."""
        if self.session.protect_data or not self.tls_required()[1]:
            return
        if not self.session.tls:
            raise FtpError(522, "TLS required on data connections: use AUTH TLS, PBSZ 0, PROT P")
        raise FtpError(521, "Data connection cannot be opened with this PROT setting: use PROT P")

    async def _secure_data(self, sock: socket.socket) -> TlsDataSocket:
        """PROT P: the TLS handshake on a new data connection (522 when it fails, or when
        the client does not resume its control connection's session and the server
        requires it)."""
        context = self.server.tls_context
        assert context is not None
        tls = TlsDataSocket(sock, context)
        try:
            await tls.handshake(self.config.tls_handshake_timeout)
        except (OSError, TimeoutError, ConnectionError) as exc:
            tls.close()
            raise FtpError(522, f"TLS handshake on the data connection failed: {exc}") from None
        except BaseException:
            tls.close()
            raise
        if self.config.tls_require_session_reuse and not tls.session_reused:
            tls.close()
            raise FtpError(522, "Data connection must resume the control connection's TLS session")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session %d: data connection protected (%s, session %s)", self.id, tls.version,
                      "resumed" if tls.session_reused else "new")
        return tls

    # -- data connections ------------------------------------------------------------
    def close_data_channel(self) -> None:
        if self.passive is not None:
            self.passive.close()
            self.passive = None
        self.active_target = None
        self.session.data_mode = DataMode.NONE

    async def _open_data(self) -> socket.socket:
        wait = self.config.wait_future_timeout
        try:
            if self.passive is not None:
                listener, self.passive = self.passive, None
                if listener.expiry is not None:
                    listener.expiry.cancel()  # in use now: its timeout no longer applies
                    listener.expiry = None
                try:
                    ready = listener.accept_ready()
                    if ready is not None:
                        return ready
                    if wait is None:
                        return await listener.accept()
                    async with asyncio.timeout(wait):
                        return await listener.accept()
                finally:
                    listener.close()
            if self.active_target is not None:
                host, port = self.active_target
                self.active_target = None
                if wait is None:
                    return await connect_active(host, port, self.local_host)
                async with asyncio.timeout(wait):
                    return await connect_active(host, port, self.local_host)
        except TimeoutError:
            raise FtpError(425, "Data connection was not established in time") from None
        finally:
            self.session.data_mode = DataMode.NONE
        raise FtpError(425, "Use PASV, EPSV, PORT or EPRT first")

    def require_data_channel(self) -> None:
        if self.passive is None and self.active_target is None:
            raise FtpError(425, "Use PASV, EPSV, PORT or EPRT first")

    def throttle(self, direction: str) -> Throttle:
        """The buckets for a transfer. "download" is the server writing (write limits)."""
        server = self.server
        limits = server.limits
        buckets = self._buckets
        if buckets is None:
            # Rates are read at every booking, so limits changed later still apply.
            buckets = self._buckets = (
                TokenBucket(lambda: limits.read_speed_limit_per_connection),
                TokenBucket(lambda: limits.write_speed_limit_per_connection),
                TokenBucket(lambda: self.user.read_speed_limit_per_connection
                            if self.user is not None else None),
                TokenBucket(lambda: self.user.write_speed_limit_per_connection
                            if self.user is not None else None),
            )
        read, write, user_read, user_write = buckets
        if direction == "download":
            chosen = [limits.write_bucket, write]
            if self.user is not None:
                chosen += [server.user_buckets(self.user)[1], user_write]
        else:
            chosen = [limits.read_bucket, read]
            if self.user is not None:
                chosen += [server.user_buckets(self.user)[0], user_read]
        events = server.events
        if not events.observers:
            return Throttle(chosen)
        user = self.user_name

        def waited(seconds: float) -> None:
            events.emit(ThrottleWait(user, direction, seconds))

        return Throttle(chosen, on_wait=waited)

    def start_transfer(
        self,
        verb: str,
        path: str,
        direction: str,
        data_phase: DataPhase,
        *,
        preliminary: Reply,
        finish: Callable[[], Awaitable[None]] | None = None,
        fail: Callable[[], Awaitable[None]] | None = None,
        release: Callable[[], Awaitable[None]] | None = None,
        success: Reply | None = None,
        meter: TransferMeter | None = None,
    ) -> None:
        """Run the data phase in a task: 150, data connection, copy, ``finish`` (commit),
        226. On any failure ``fail`` (abort the upload) runs and the error is replied.
        ``meter``: the :meth:`progress` the data phase counts its bytes with."""
        self.require_data_channel()
        self.check_data_protection()
        if meter is None:
            meter = self.progress(direction)
        self.transfer = asyncio.create_task(
            self._transfer(verb, path, direction, data_phase, preliminary, finish, fail, release, success,
                           meter),
            name=f"fsftpd-transfer-{self.id}",
        )

    async def _transfer(
        self,
        verb: str,
        path: str,
        direction: str,
        data_phase: DataPhase,
        preliminary: Reply,
        finish: Callable[[], Awaitable[None]] | None,
        fail: Callable[[], Awaitable[None]] | None,
        release: Callable[[], Awaitable[None]] | None,
        success: Reply | None,
        meter: TransferMeter,
    ) -> None:
        """One transfer, start to end. Whatever ends it (success, error, ABOR, the client
        vanishing, a cancel arriving during the cleanup), it ends with exactly one reply
        attempt, one TransferFinished event and one log line, carrying ``meter.total``."""
        started = time.perf_counter()
        sock: socket.socket | TlsDataSocket | None = None
        reply = success or Reply(226, "Transfer complete")
        ok = False
        outside: asyncio.CancelledError | None = None  # a cancel that is not ours: re-raised
        self._ending = False
        try:
            await self.reply(preliminary)
            sock = await self._open_data()
            if self.session.protect_data:
                sock = await self._secure_data(sock)
                # The copy loops see the socket API they use (see transfer/tls.py).
                meter.settle(await data_phase(cast(socket.socket, sock)))
                await self._end_tls_data(sock, direction)
            else:
                meter.settle(await data_phase(sock))
                if direction == "upload":
                    self._check_clean_close(sock)
            if direction == "upload":
                grace = min((time.perf_counter() - started) / CLOSE_GRACE_RATIO, CLOSE_GRACE_MAX)
                if grace >= CLOSE_GRACE_MIN:
                    await asyncio.sleep(grace)
                if self.channel.peer_closed():
                    # The client cannot learn the result: dropping the upload is the only
                    # outcome its last reply (150) and the storage can agree on.
                    raise FtpError(426, "Transfer aborted: control connection closed before commit")
            if finish is not None:
                # From here on ABOR and the session's end wait for the transfer instead of
                # cancelling it: a cancelled await would not stop storage from finishing
                # the commit, and the reply would say 426 about a file that was replaced.
                self._committing = True
                try:
                    await self.storage(finish())
                finally:
                    self._ending = True
                    self._committing = False
            ok = True
        except asyncio.CancelledError as exc:
            reply = reply_for_exception(TransferAborted())
            outside = self._own_cancel(exc)
        except (FtpError, DataConnectionError) as exc:
            reply = reply_for_exception(exc)
        except Exception as exc:
            reply = reply_for_exception(exc)
            log.warning("session %d: %s %s failed: %r", self.id, verb, path, exc)
        # Cleanup runs on every path: an aborted upload must never stay half-written. The
        # outcome is decided: ABOR and the session's end now wait rather than cancel, and
        # a cancel from elsewhere skips neither a step nor the report.
        self._ending = True
        if sock is not None:
            sock.close()
        if not ok and fail is not None:
            outside = await self._step(self.storage(fail()), outside)
        if release is not None:
            outside = await self._step(release(), outside)
        outside = await self._step(self.reply(reply), outside)
        events = self.server.events
        if events.observers:
            events.emit(TransferFinished(
                self.id, self.user_name, verb, path, direction, meter.total,
                time.perf_counter() - started, ok, reply.code,
            ))
        if log.isEnabledFor(logging.INFO):
            log.info("session %d: %s %s %s bytes -> %d", self.id, verb, path, meter.total, reply.code)
        self.transfer_done()
        if outside is not None:
            raise outside

    async def _step(self, awaitable: Awaitable[object],
                    outside: asyncio.CancelledError | None) -> asyncio.CancelledError | None:
        """One cleanup step; its failure is dropped (the transfer's reply is decided).
        Returns ``outside`` or a cancel that is not ours, to be re-raised at the end.
        Awaited directly, not in a task of its own: nothing of ours cancels now."""
        try:
            await awaitable
        except asyncio.CancelledError as exc:
            return outside or self._own_cancel(exc)
        except Exception:
            pass
        return outside

    def _own_cancel(self, exc: asyncio.CancelledError) -> asyncio.CancelledError | None:
        """A cancel of the transfer task: ours (ABOR, the session ending) is absorbed here
        and the task ends normally; any other (server shutdown) is returned, to be
        re-raised once the transfer is cleaned up and reported."""
        task = asyncio.current_task()
        if self._abort_requested and task is not None:
            task.uncancel()
            return None
        return exc

    async def _end_tls_data(self, tls: TlsDataSocket, direction: str) -> None:
        """The end of a protected data phase. A download or listing sends close_notify
        after its last byte. An upload ended cleanly (the copy loop saw close_notify or
        a FIN at a record boundary; a FIN inside a record or a reset raised before), and
        ``tls_require_close_notify`` may insist on close_notify."""
        if direction == "upload" and log.isEnabledFor(logging.DEBUG):
            log.debug("session %d: upload ended by %s", self.id, tls.closed_by)
        if (direction == "upload" and tls.closed_by != "close_notify"
                and self.config.tls_require_close_notify):
            raise DataConnectionError("the client closed the TLS data connection without "
                                          "close_notify (the upload may be truncated)")
        if direction == "upload":
            self._check_clean_close(tls)  # before our close_notify, which may meet a reset
        with contextlib.suppress(OSError, TimeoutError):
            await tls.shutdown(self.config.socket_timeout or self.config.tls_handshake_timeout)

    @staticmethod
    def _check_clean_close(sock: socket.socket | TlsDataSocket) -> None:
        """After EOF on an upload, a pending socket error means the client reset the
        connection rather than closing it cleanly: the upload is incomplete."""
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise DataConnectionError(f"connection reset by client (errno {err})")

    def progress(self, direction: str) -> TransferMeter:
        """A new transfer's byte counter (it also emits the TransferProgress events);
        pass it to :meth:`start_transfer` as ``meter``."""
        return TransferMeter(self.server.events, self.user_name, direction)

    async def abort_transfer(self) -> bool:
        """ABOR: stop the running transfer (it replies 426). True if one was running."""
        task = self.transfer
        if task is None or task.done():
            return False
        if self._committing or self._ending:
            # Every byte arrived and storage is committing the upload, or the transfer has
            # its outcome and is replying: too late to abort (cancelling now could report
            # 426 for a file that is committed anyway). Let it finish and send its own
            # reply; ABOR then finds nothing to abort.
            await asyncio.wait([task])
            return False
        self._abort_requested = True
        task.cancel()
        try:
            await asyncio.wait([task])  # the task replies 426 itself
        finally:
            self._abort_requested = False
        return True

    # -- shutdown ----------------------------------------------------------------------
    def request_shutdown(self) -> None:
        """Graceful drain: idle sessions get 421 now; a running transfer may finish first."""
        self._shutting_down = True
        if self.task is None:
            self._end_now(Reply(421, "Server shutting down, closing control connection"))
        elif self._main is not None and (self.transfer is None or self.transfer.done()):
            self._main.cancel()

    async def _cleanup(self) -> None:
        task = self.transfer
        if task is not None and not task.done():
            self._abort_requested = True
            if not (self._committing or self._ending):
                task.cancel()  # else too late: the transfer has its outcome (see _transfer)
            with contextlib.suppress(BaseException):
                await task
        self._release()

    def _release(self) -> None:
        """The synchronous end of every session: timers, data channel, user slot, socket."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.close_data_channel()
        if self.user is not None:
            self.server.release_user(self.user)
            self.user = None
        self.closing = True
        self.channel.connection = None  # no reference cycle left for the collector
        with contextlib.suppress(Exception):
            self.transport.close()
        events = self.server.events
        if events.observers:
            events.emit(SessionEnded(self.id, self.peer, self.session.user_name,
                                     time.monotonic() - self.started))
        if log.isEnabledFor(logging.INFO):
            log.info("session %d: closed", self.id)

    def transfer_done(self) -> None:
        self.last_activity = time.monotonic()
        if self._shutting_down and self._main is not None:
            self._main.cancel()

    def set_type_ascii(self) -> bool:
        return self.session.transfer_type is TransferType.ASCII


def _idle_reply(idle: float) -> Reply:
    return Reply(421, f"Idle timeout ({idle:g} s), closing control connection")

