"""Copy loops between a data socket and a storage stream.

- RETR from a local file with no ASCII conversion: zero-copy ``os.sendfile`` driven by
  socket writability (works under uvloop, whose ``loop.sendfile`` is not implemented),
  throttled or not.
- Otherwise blocks are read ahead one step while the previous block is being sent.
- STOR: ``recv_into`` two reusable buffers; one fills while the other is written.

Every socket wait is bounded by ``socket_timeout`` and every storage call by
``path_timeout``. A reset or early close raises :class:`DataConnectionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..protocol.errors import DataConnectionError
from ..storage.base import ReadStream, WriteStream
from .throttle import Throttle

T = TypeVar("T")

SEND_BLOCK = 1024 * 1024
RECV_BLOCK = 1024 * 1024
SENDFILE_CHUNK = 8 * 1024 * 1024


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


async def _net(awaitable: Awaitable[T], deadlines: Deadlines) -> T:
    try:
        return await _bounded(awaitable, deadlines.socket_timeout)
    except TimeoutError:
        raise DataConnectionError("timed out") from None
    except (ConnectionError, BrokenPipeError) as exc:
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
) -> int:
    """Send ``reader`` to ``sock`` until end of file; return the bytes sent."""
    fd = reader.fileno()
    if fd is not None and not ascii_mode and hasattr(os, "sendfile"):
        return await _sendfile(sock, fd, throttle=throttle, deadlines=deadlines, progress=progress)
    loop = asyncio.get_running_loop()
    block = reader.block_size
    if throttle is not None and throttle.active:
        block = throttle.chunk_size(block)
    carry = b""
    total = 0
    pending: asyncio.Task[bytes] | None = asyncio.ensure_future(_storage(reader.read(block), deadlines))
    try:
        while pending is not None:
            data = await pending
            pending = None
            if not data:
                if carry:
                    await _net(loop.sock_sendall(sock, carry), deadlines)
                break
            pending = asyncio.ensure_future(_storage(reader.read(block), deadlines))
            if ascii_mode:
                data, carry = to_crlf(data, carry)
            if throttle is not None:
                await throttle.wait(len(data))
            await _net(loop.sock_sendall(sock, data), deadlines)
            total += len(data)
            progress(len(data))
    finally:
        if pending is not None:
            # Let an in-flight storage call finish rather than cancel it: a worker thread
            # may still hold the file descriptor the caller is about to close.
            with contextlib.suppress(BaseException):
                await pending
    return total


async def _sendfile(
    sock: socket.socket, fd: int, *, throttle: Throttle | None, deadlines: Deadlines, progress: Progress
) -> int:
    offset = os.lseek(fd, 0, os.SEEK_CUR)
    out = sock.fileno()
    total = 0
    throttled = throttle is not None and throttle.active
    chunk = throttle.chunk_size(SEND_BLOCK) if throttle is not None and throttled else SENDFILE_CHUNK
    while True:
        if throttle is not None and throttled:
            await throttle.wait(chunk)
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
        if throttle is not None and not throttled and throttle.active:
            throttled = True  # a limit was set while this transfer ran
            chunk = throttle.chunk_size(SEND_BLOCK)


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
    buffers = (bytearray(size), bytearray(size))
    pending: asyncio.Task[None] | None = None
    carry = b""
    total = 0
    index = 0
    try:
        eof = False
        while not eof:
            view = memoryview(buffers[index])
            filled = 0
            while filled < size:
                want = size - filled
                if throttle is not None and throttle.active:
                    want = min(want, throttle.chunk_size(want))
                n = await _net(loop.sock_recv_into(sock, view[filled : filled + want]), deadlines)
                if n == 0:
                    eof = True
                    break
                filled += n
                total += n
                progress(n)
                if throttle is not None:
                    await throttle.wait(n)
            if pending is not None:
                await pending
                pending = None
            if filled:
                chunk: bytes | memoryview = view[:filled]
                if ascii_mode:
                    chunk, carry = from_crlf(bytes(chunk), carry)
                pending = asyncio.ensure_future(_storage(writer.write(chunk), deadlines))
            index ^= 1
        if pending is not None:
            await pending
            pending = None
        if carry:
            await _storage(writer.write(carry), deadlines)
    finally:
        if pending is not None:
            # Let an in-flight storage call finish rather than cancel it: a worker thread
            # may still hold the file descriptor the caller is about to close.
            with contextlib.suppress(BaseException):
                await pending
    return total
