"""A path-IO wrapper that times every storage call and reports it (for metrics).

The server wraps a home's path-IO in :class:`TimedPathIO` only when a storage timer is set
(``server.events.storage_timer``), so a server without one pays nothing. Each call reports
``(operation, seconds, error)`` to ``record``: ``error`` is None on success and for the
outcomes a client causes (a missing file, an existing name, a file where a directory is
expected, a permission), else the exception's class name. A cancelled call (ABOR, a
timeout, shutdown) is not reported.

Invariant: the wrapper changes no behaviour; every result and exception passes through
unchanged, and unknown attributes are looked up on the wrapped path-IO.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ..protocol.listing import Entry, StatRenderer
from ..protocol.selection import NameMatch
from .base import AbstractPathIO, EntryBatch, ReadStream, WriteStream

T = TypeVar("T")
_clock = time.perf_counter

#: ``record(operation, seconds, error)``
Record = Callable[[str, float, str | None], None]

#: failures that are the client's doing, not the storage's
EXPECTED = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


async def _timed(record: Record, operation: str, awaitable: Awaitable[T]) -> T:
    started = _clock()
    try:
        result = await awaitable
    except EXPECTED:
        record(operation, _clock() - started, None)
        raise
    except Exception as exc:
        record(operation, _clock() - started, type(exc).__name__)
        raise
    record(operation, _clock() - started, None)
    return result


async def _timed_steps(record: Record, operation: str, items: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """Each step of a storage iterator timed as one ``operation`` (a listing page)."""
    iterator = items.__aiter__()
    try:
        while True:
            started = time.perf_counter()
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                record(operation, time.perf_counter() - started, None)
                return
            except EXPECTED:
                record(operation, time.perf_counter() - started, None)
                raise
            except Exception as exc:
                record(operation, time.perf_counter() - started, type(exc).__name__)
                raise
            record(operation, time.perf_counter() - started, None)
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class TimedReadStream(ReadStream):
    def __init__(self, inner: ReadStream, record: Record) -> None:
        self.inner = inner
        self.record = record
        self.block_size = inner.block_size

    async def read(self, size: int) -> bytes:
        return await _timed(self.record, "read", self.inner.read(size))

    def fileno(self) -> int | None:
        return self.inner.fileno()

    async def close(self) -> None:
        await self.inner.close()


class TimedWriteStream(WriteStream):
    def __init__(self, inner: WriteStream, record: Record) -> None:
        self.inner = inner
        self.record = record
        self.block_size = inner.block_size

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await _timed(self.record, "write", self.inner.write(data))

    def write_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        return self.inner.write_nowait(data)  # no wait, nothing worth timing

    async def commit(self) -> None:
        await _timed(self.record, "commit", self.inner.commit())

    async def abort(self) -> None:
        await _timed(self.record, "abort", self.inner.abort())

    @property
    def bytes_written(self) -> int:
        return self.inner.bytes_written


class TimedPathIO(AbstractPathIO):
    """``inner`` with every call timed (see the module docstring). ``streams=False``
    leaves the read and write streams unwrapped (their read, write, commit and abort are
    then not timed): the server does so for local disk, where a download goes by
    sendfile, a small upload is handed over without waiting and a commit is a rename, so
    the wrappers would cost more than the calls they time."""

    def __init__(self, inner: AbstractPathIO, record: Record, *, streams: bool = True) -> None:
        self.inner = inner
        self.record = record
        self.streams = streams
        self.root = inner.root
        self.max_rename_objects = inner.max_rename_objects

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # stat, open_read_sized and open_write, the calls of nearly every command and transfer,
    # time themselves inline: one coroutine fewer per call than going through _timed.
    async def stat(self, path: str) -> Entry:
        started = _clock()
        try:
            entry = await self.inner.stat(path)
        except EXPECTED:
            self.record("stat", _clock() - started, None)
            raise
        except Exception as exc:
            self.record("stat", _clock() - started, type(exc).__name__)
            raise
        self.record("stat", _clock() - started, None)
        return entry

    def list(self, path: str) -> AsyncIterator[Entry]:
        return self.inner.list(path)  # entry by entry: timed as list_batches pages instead

    async def list_batches(self, path: str) -> AsyncIterator[EntryBatch]:
        async for batch in _timed_steps(self.record, "list", self.inner.list_batches(path)):
            yield batch

    def list_text(self, path: str, renderer: StatRenderer, *, match: NameMatch | None = None,
                  sort_limit: int = 0) -> AsyncGenerator[bytes, None] | None:
        text = self.inner.list_text(path, renderer, match=match, sort_limit=sort_limit)
        return None if text is None else _timed_steps(self.record, "list", text)

    async def mkdir(self, path: str) -> None:
        await _timed(self.record, "mkdir", self.inner.mkdir(path))

    async def rmdir(self, path: str) -> None:
        await _timed(self.record, "rmdir", self.inner.rmdir(path))

    async def unlink(self, path: str) -> None:
        await _timed(self.record, "unlink", self.inner.unlink(path))

    async def rename(self, source: str, target: str) -> None:
        await _timed(self.record, "rename", self.inner.rename(source, target))

    async def set_mtime(self, path: str, mtime: float) -> None:
        await _timed(self.record, "set_mtime", self.inner.set_mtime(path, mtime))

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        stream = await _timed(self.record, "open_read", self.inner.open_read(path, offset))
        return TimedReadStream(stream, self.record) if self.streams else stream

    async def open_read_sized(self, path: str, offset: int = 0) -> tuple[ReadStream, int]:
        started = _clock()
        try:
            stream, size = await self.inner.open_read_sized(path, offset)
        except EXPECTED:
            self.record("open_read", _clock() - started, None)
            raise
        except Exception as exc:
            self.record("open_read", _clock() - started, type(exc).__name__)
            raise
        self.record("open_read", _clock() - started, None)
        return (TimedReadStream(stream, self.record) if self.streams else stream), size

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        started = _clock()
        try:
            stream = await self.inner.open_write(path, offset=offset, append=append)
        except EXPECTED:
            self.record("open_write", _clock() - started, None)
            raise
        except Exception as exc:
            self.record("open_write", _clock() - started, type(exc).__name__)
            raise
        self.record("open_write", _clock() - started, None)
        return TimedWriteStream(stream, self.record) if self.streams else stream

    async def exists(self, path: str) -> bool:
        return await _timed(self.record, "stat", self.inner.exists(path))

    async def size(self, path: str) -> int:
        return await _timed(self.record, "stat", self.inner.size(path))

    async def is_dir(self, path: str) -> bool:
        return await _timed(self.record, "stat", self.inner.is_dir(path))

    async def ensure_root(self) -> None:
        await _timed(self.record, "ensure_root", self.inner.ensure_root())

    async def aclose(self) -> None:
        await self.inner.aclose()
