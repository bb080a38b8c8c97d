"""The transport end of a control connection: line splitting with a hard length limit,
flow control on both directions, and an idle-timer hook. No FTP semantics live here.

Invariant: the receive buffer never holds more than about twice ``LINE_LIMIT`` bytes.
"""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING, cast

from ..protocol.commands import MAX_LINE

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Server


#: the longest line accepted, CRLF included (longer ones get 500 and are discarded)
LINE_LIMIT = MAX_LINE + 4


#: the poll event that tells the client shut its side down (0 where the OS has none)
_PEER_GONE: int = getattr(select, "POLLRDHUP", 0)


class LineTooLong(Exception):
    """A command line went over :data:`LINE_LIMIT`; the rest of it is being discarded."""


class ControlChannel(asyncio.Protocol):
    """The transport end of one control connection: splits the received bytes into lines
    and writes replies with flow control.

    A bare protocol rather than StreamReader/StreamWriter: one small object per session
    instead of three, and a line costs one buffer search. The buffer never holds more than
    about twice :data:`LINE_LIMIT` (reading pauses above that, as StreamReader does), and
    an over-long line is dropped as it arrives, never buffered whole.
    """

    __slots__ = (
        "_buffer",
        "_discarding",
        "_drain_waiter",
        "_eof",
        "_peer_gone",
        "_read_paused",
        "_waiter",
        "_write_paused",
        "connection",
        "server",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False  # the client closed (or the connection was lost)
        self._peer_gone = False  # the client's EOF or reset reached this protocol
        self._discarding = False  # dropping the rest of an over-long line
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.connection: Connection | None = None  # set once the server accepts the session

    # -- asyncio.Protocol callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.server.on_channel(self)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self._discarding = False
            data = data[newline + 1:]
        buf = self._buffer
        buf += data
        conn = self.connection
        if b"\n" in data or len(buf) > LINE_LIMIT:
            waiter = self._waiter
            if conn is not None and conn.task is None:
                # No session task yet (see Connection.start): lines are served here; the
                # task is started only for one that needs waiting.
                if conn.serve_inline():
                    conn.wake()
            elif waiter is not None and not waiter.done() and (conn is None or conn.serve_inline()):
                # The session task is idle, waiting for a line: lines whose replies need no
                # waiting are served right here; the task is woken only for the others.
                waiter.set_result(None)
        if len(buf) > 2 * LINE_LIMIT and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = self._peer_gone = True
        self._wake()
        # Keep the write side open: replies to lines already read still go out. (A TLS
        # transport closes anyway after the peer's close; asyncio warns if asked not to.)
        transport = self.transport
        return transport is None or transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._peer_gone = True
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- reading ------------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return
        conn = self.connection
        if conn is not None and conn.task is None:
            conn.wake()  # a session without a task: it ends here

    def time_out(self) -> bool:
        """Make a pending :meth:`read_line` raise TimeoutError; False if none is pending."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return False
        waiter.set_exception(TimeoutError())
        return True

    def next_line(self) -> bytes | None:
        """A complete buffered line (with its LF), or None if none is buffered yet. Raises
        :class:`LineTooLong` for a line over the limit, whose rest is then discarded."""
        buf = self._buffer
        end = buf.find(b"\n", 0, LINE_LIMIT + 1)
        if end >= 0:
            line = bytes(buf[:end + 1])
            del buf[:end + 1]
            self._maybe_resume()
            return line
        if len(buf) > LINE_LIMIT:
            newline = buf.find(b"\n")
            if newline < 0:
                buf.clear()
                self._discarding = True
            else:
                del buf[:newline + 1]
            self._maybe_resume()
            raise LineTooLong
        return None

    def peek_line(self) -> bytes | None:
        """The first complete buffered line (with its LF) within the length limit, left in
        the buffer; None if there is none (or the line is over-long: :meth:`next_line`
        deals with that)."""
        buf = self._buffer
        end = buf.find(b"\n", 0, LINE_LIMIT + 1)
        return bytes(buf[:end + 1]) if end >= 0 else None

    def consume(self, size: int) -> None:
        """Drop ``size`` bytes (a line returned by :meth:`peek_line`) from the buffer."""
        del self._buffer[:size]
        self._maybe_resume()

    def needs_reader(self) -> bool:
        """Whether the buffer holds something :meth:`read_line` must handle (an over-long
        line) or the input ended."""
        return self._eof or len(self._buffer) > LINE_LIMIT

    def exhausted(self) -> bool:
        """The input ended and nothing is left that :meth:`read_line` would return or
        answer (no complete line, no over-long one)."""
        return self._eof and len(self._buffer) <= LINE_LIMIT and self.peek_line() is None

    def discard_buffer(self) -> int:
        """Drop every buffered byte (AUTH TLS: nothing sent in the clear before the
        handshake may be read as protected); the number dropped."""
        dropped = len(self._buffer)
        self._buffer.clear()
        self._maybe_resume()
        return dropped
    def peer_closed(self) -> bool:
        """Whether the client has closed or reset the control connection: already seen
        here, or waiting in the kernel (a FIN or RST that arrived while its callback has
        not run yet; one ``poll`` with no wait). An upload asks this right before it is
        committed: a client that is gone cannot learn the result, so its upload is dropped
        (docs/engine.md, "A vanished client never replaces a file")."""
        transport = self.transport
        if self._peer_gone or transport is None or transport.is_closing():
            return True
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0 or not hasattr(select, "poll"):
            return False
        poller = select.poll()
        # POLLRDHUP (Linux): the peer shut its sending side down, even with bytes still
        # unread; POLLHUP and POLLERR (always reported): both sides down, or a reset.
        poller.register(fd, _PEER_GONE)
        return any(events & (_PEER_GONE | select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def stop_reading(self) -> None:
        """No further line is read: :meth:`read_line` returns None from now on."""
        self._eof = True

    def _maybe_resume(self) -> None:
        if self._read_paused and len(self._buffer) <= LINE_LIMIT and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    async def read_line(self) -> bytes | None:
        """The next line; None at end of input (a partial last line is dropped)."""
        while True:
            line = self.next_line()
            if line is not None:
                return line
            if self._eof:
                return None
            self._waiter = self.server.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # -- writing ------------------------------------------------------------------------------
    @property
    def write_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._write_paused:
            return
        if self._eof and (self.transport is None or self.transport.is_closing()):
            raise ConnectionResetError("connection lost")
        self._drain_waiter = self.server.loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None
