"""Copy loops between a data socket and a storage stream.

- RETR from a local file with no ASCII conversion: zero-copy ``os.sendfile`` driven by
  socket writability (works under uvloop, whose ``loop.sendfile`` is not implemented),
  throttled or not.
- Otherwise blocks are read ahead one step while the previous block is being sent.
- STOR: ``recv_into`` two reusable buffers; one fills while the other is written.

Every socket wait is bounded by ``socket_timeout`` and every storage call by
``path_timeout``. A reset or early close raises :class:`DataConnectionError`.

``progress(n)`` is called for every ``n`` bytes that really crossed the data socket (each
send, sendfile or receive call), so the sum of its calls is the bytes moved even when the
loop ends in an error; the loops' return values equal that sum. A download given the
size seen at open (``expected``) fails with ``OSError(EIO)`` when the storage gives a
different number of bytes: a short or long read must never end with 226.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..protocol.errors import DataConnectionError
from ..storage.base import ReadStream, WriteStream
from .data import SOCKET_BUFFER
from .throttle import Throttle

T = TypeVar("T")

SEND_BLOCK = 1024 * 1024
RECV_BLOCK = 1024 * 1024
FIRST_RECV_BLOCK = 128 * 1024
#: read size of an ASCII download (see send_stream)
ASCII_BLOCK = 64 * 1024
SENDFILE_CHUNK = 8 * 1024 * 1024
#: a throttled upload's receive buffer holds about this many seconds of its rate
RCVBUF_SECONDS = 0.25
MIN_RCVBUF = 64 * 1024  # smaller stalls loopback TCP (64 KiB MSS) on zero-window probes


@dataclass(frozen=True, slots=True)
class Deadlines:
    socket_timeout: float | None = None
    path_timeout: float | None = None


Progress = Callable[[int], None]


async def _bounded(awaitable: Awaitable[T], timeout: float | None) -> T:
    if timeout is None:
        return await awaitable
    async with asyncio.timeout(timeout):
        return await awaitable


async def _storage(awaitable: Awaitable[T], deadlines: Deadlines) -> T:
    return await _bounded(awaitable, deadlines.path_timeout)


async def _read_block(reader: ReadStream, size: int, deadlines: Deadlines) -> bytes:
    # The read coroutine is created inside the task, so a task cancelled before its
    # first step leaves no never-awaited coroutine behind.
    return await _bounded(reader.read(size), deadlines.path_timeout)


async def _write_block(writer: WriteStream, data: bytes | memoryview, deadlines: Deadlines) -> None:
    await _bounded(writer.write(data), deadlines.path_timeout)


async def _net(awaitable: Awaitable[T], deadlines: Deadlines) -> T:
    try:
        return await _bounded(awaitable, deadlines.socket_timeout)
    except TimeoutError:
        raise DataConnectionError("timed out") from None
    except OSError as exc:  # only socket calls come through here: any failure is the data link's
        raise DataConnectionError(exc.strerror or type(exc).__name__) from None


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


def to_crlf(data: bytes, carry: bytes) -> tuple[bytes, bytes]:
    """ASCII download: LF -> CRLF. Returns (converted, carry) where carry is a trailing CR."""
    data = carry + data
    carry = b""
    if data.endswith(b"\r"):
        data, carry = data[:-1], b"\r"
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), carry


def from_crlf(data: bytes, carry: bytes) -> tuple[bytes, bytes]:
    """ASCII upload: CRLF -> LF."""
    data = carry + data
    carry = b""
    if data.endswith(b"\r"):
        data, carry = data[:-1], b"\r"
    return data.replace(b"\r\n", b"\n"), carry


async def send_stream(
    sock: socket.socket,
    reader: ReadStream,
    *,
    throttle: Throttle | None,
    ascii_mode: bool,
    deadlines: Deadlines,
    progress: Progress,
    offset: int = 0,
    expected: int | None = None,
) -> int:
    """Send ``reader`` to ``sock`` until end of file; return the bytes sent. ``expected``:
    the bytes the file holds past ``offset`` at open (None: unknown, not checked)."""
    fd = reader.fileno()
    # sendfile only on a plain socket: a TLS data connection (transfer/tls.py) must
    # encrypt every byte, so it takes the block loop below.
    if fd is not None and not ascii_mode and hasattr(os, "sendfile") and isinstance(sock, socket.socket):
        sent = await _sendfile(sock, fd, throttle=throttle, deadlines=deadlines, progress=progress)
        _check_size(sent, expected)
        return sent
    block = reader.block_size
    if ascii_mode:
        # The conversion copies each block up to twice its size; with the read-ahead a
        # stalled ASCII download would hold about 3 MiB. Small blocks bound it to ~4 of them.
        block = min(block, ASCII_BLOCK)
    carry = b""
    total = 0
    read = 0  # bytes from storage (ASCII mode sends more)
    pending: asyncio.Task[bytes] | None = asyncio.ensure_future(_read_block(reader, block, deadlines))
    try:
        while pending is not None:
            # Shielded: a cancel (ABOR) must not cancel the storage call under way; the
            # finally below waits for it (a worker thread may still be using the file).
            data = await asyncio.shield(pending)
            pending = None
            if not data:
                _check_size(read, expected)
                if carry:
                    await _send_all(sock, carry, deadlines, progress)
                    total += len(carry)
                break
            read += len(data)
            pending = asyncio.ensure_future(_read_block(reader, block, deadlines))
            if ascii_mode:
                data, carry = to_crlf(data, carry)
            await _send_throttled(sock, data, throttle, deadlines, progress)
            total += len(data)
    finally:
        if pending is not None:
            # Let an in-flight storage call finish rather than cancel it: a worker thread
            # may still hold the file descriptor the caller is about to close.
            with contextlib.suppress(BaseException):
                await pending
    return total


def _check_size(read: int, expected: int | None) -> None:
    """Defence in depth: storage that hands out other bytes than the file held at open
    (a file shrunk or grown in place, a backend sharing one position between readers)
    turns the download into a 451, logged as a storage fault."""
    if expected is not None and read != expected:
        raise OSError(errno.EIO, f"storage gave {read} bytes of a file that held {expected} when opened")


def _ignore(_: int) -> None:
    return None


async def _send_all(sock: socket.socket, data: bytes | memoryview, deadlines: Deadlines,
                    progress: Progress = _ignore) -> None:
    """Send all of ``data``. ``socket_timeout`` bounds each wait for the socket to become
    writable (a stall), not the whole send: a slow but moving client is not cut off."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await _net(_writable(sock), deadlines)
            continue
        except (ConnectionError, BrokenPipeError) as exc:
            raise DataConnectionError(exc.strerror or type(exc).__name__) from None
        progress(sent)
        view = view[sent:]


async def _send_throttled(sock: socket.socket, data: bytes, throttle: Throttle | None,
                          deadlines: Deadlines, progress: Progress) -> None:
    """Send ``data`` in chunks of the throttle's size, booking each chunk once it is sent.
    The chunk size is re-read every time, so a limit set or lifted mid-transfer applies."""
    view = memoryview(data)
    while view:
        size = throttle.chunk_size(len(view)) if throttle is not None else len(view)
        await _send_all(sock, view[:size], deadlines, progress)
        if throttle is not None:
            await throttle.wait(size)
        view = view[size:]


async def _sendfile(
    sock: socket.socket, fd: int, *, throttle: Throttle | None, deadlines: Deadlines, progress: Progress
) -> int:
    offset = os.lseek(fd, 0, os.SEEK_CUR)
    out = sock.fileno()
    total = 0
    while True:
        # Re-read every round: a limit set, changed or lifted mid-transfer applies at once.
        chunk = throttle.chunk_size(SENDFILE_CHUNK) if throttle is not None else SENDFILE_CHUNK
        while True:
            try:
                sent = os.sendfile(out, fd, offset, chunk)
                break
            except BlockingIOError:
                await _net(_writable(sock), deadlines)
            except (ConnectionError, BrokenPipeError) as exc:
                raise DataConnectionError(exc.strerror or type(exc).__name__) from None
        if sent == 0:
            return total
        offset += sent
        total += sent
        progress(sent)
        if throttle is not None:
            await throttle.wait(sent)  # book what was really sent (sendfile may send less)


def _fit_receive_buffer(sock: socket.socket, rate: float | None) -> None:
    """A throttled upload gets a receive buffer of about :data:`RCVBUF_SECONDS` of its
    rate, so the kernel does not absorb megabytes the throttle has not let through yet
    and the client is really held back. Unthrottled: the large default again."""
    size = SOCKET_BUFFER if rate is None else int(min(SOCKET_BUFFER, max(MIN_RCVBUF, rate * RCVBUF_SECONDS)))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def receive_stream(
    sock: socket.socket,
    writer: WriteStream,
    *,
    throttle: Throttle | None,
    ascii_mode: bool,
    deadlines: Deadlines,
    progress: Progress,
) -> int:
    """Receive from ``sock`` until the client closes; write into ``writer``."""
    loop = asyncio.get_running_loop()
    size = max(RECV_BLOCK, writer.block_size)
    # The first block is small: most uploads on a busy server are small files, and they
    # should not cost 2 MiB of buffers each. Large ones switch to ``size`` blocks.
    block = FIRST_RECV_BLOCK
    buffers: list[bytearray | None] = [None, None]
    pending: asyncio.Task[None] | None = None
    carry = b""
    total = 0
    index = 0
    fitted: float | None = None  # the rate the receive buffer was last sized for
    try:
        eof = False
        while not eof:
            buffer = buffers[index]
            if buffer is None or len(buffer) < block:
                if buffer is not None:
                    _give_buffer(buffer)
                buffer = buffers[index] = _take_buffer(block)
            view = memoryview(buffer)
            filled = 0
            while filled < block:
                want = block - filled
                rate = throttle.rate if throttle is not None else None
                if rate != fitted:
                    _fit_receive_buffer(sock, rate)
                    fitted = rate
                if throttle is not None and rate is not None:
                    want = throttle.chunk_size(want)
                try:  # data is usually there already: no await, no future
                    n = sock.recv_into(view[filled : filled + want])
                except BlockingIOError:
                    n = await _net(loop.sock_recv_into(sock, view[filled : filled + want]), deadlines)
                except (ConnectionError, BrokenPipeError) as exc:
                    raise DataConnectionError(exc.strerror or type(exc).__name__) from None
                if n == 0:
                    eof = True
                    break
                filled += n
                total += n
                progress(n)
                if throttle is not None:
                    await throttle.wait(n)
            if pending is not None:
                await asyncio.shield(pending)  # see send_stream: never cancel a storage call
                pending = None
            if filled:
                chunk: bytes | memoryview = view[:filled]
                if ascii_mode:
                    chunk, carry = from_crlf(bytes(chunk), carry)
                if not writer.write_nowait(chunk):  # a small upload's only block: no task
                    pending = asyncio.ensure_future(_write_block(writer, chunk, deadlines))
            index ^= 1
            block = size
        if pending is not None:
            await asyncio.shield(pending)
            pending = None
        if carry:
            await _storage(writer.write(carry), deadlines)
    finally:
        if pending is not None:
            # Let an in-flight storage call finish rather than cancel it: a worker thread
            # may still hold the file descriptor the caller is about to close.
            with contextlib.suppress(BaseException):
                await pending
        for used in buffers:
            if used is not None:
                _give_buffer(used)
    return total


# Receive buffers are reused across uploads: allocating (and zeroing) two fresh 1 MiB
# buffers per STOR cost more than the whole transfer of a small file. The storage
# contract (WriteStream.write keeps no reference) makes reuse safe.
# Idle buffers are kept per size, up to a bound (16 MiB of large ones, 8 MiB of small).
_BUFFER_POOLS: dict[int, list[bytearray]] = {}
BUFFER_POOL_BYTES = {FIRST_RECV_BLOCK: 8 * 1024 * 1024, RECV_BLOCK: 16 * 1024 * 1024}


def _take_buffer(size: int) -> bytearray:
    pool = _BUFFER_POOLS.get(size)
    if pool:
        return pool.pop()
    return bytearray(size)


def _give_buffer(buffer: bytearray) -> None:
    size = len(buffer)
    limit = BUFFER_POOL_BYTES.get(size, 0) // size
    pool = _BUFFER_POOLS.setdefault(size, [])
    if len(pool) < limit:
        pool.append(buffer)


async def send_text(sock: socket.socket, chunks: AsyncIterator[str | bytes], deadlines: Deadlines,
                    *, flush_at: int = 64 * 1024) -> int:
    """Send listing text (runs of CRLF-terminated lines) in writes of about ``flush_at``
    bytes; return the bytes sent. Chunks already encoded (bytes: a local listing renders
    whole batches in its worker thread) go out as they are. Like file data,
    ``socket_timeout`` bounds each stall. ``chunks`` is closed when the sending ends."""
    pending: list[str] = []
    size = 0
    total = 0
    try:
        async for chunk in chunks:
            if isinstance(chunk, bytes):
                if pending:
                    data = "".join(pending).encode("utf-8", "surrogateescape")
                    pending, size = [], 0
                    await _send_all(sock, data, deadlines)
                    total += len(data)
                await _send_all(sock, chunk, deadlines)
                total += len(chunk)
                continue
            pending.append(chunk)
            size += len(chunk)
            if size >= flush_at:
                data = "".join(pending).encode("utf-8", "surrogateescape")
                pending, size = [], 0
                await _send_all(sock, data, deadlines)
                total += len(data)
        if pending:
            data = "".join(pending).encode("utf-8", "surrogateescape")
            await _send_all(sock, data, deadlines)
            total += len(data)
    finally:
        # an async generator left early (a failed send, ABOR) is closed here, so the
        # storage listing behind it releases its directory now, not at garbage collection
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return total
