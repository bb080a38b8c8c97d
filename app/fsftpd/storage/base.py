"""The abstract path-IO contract that every backend implements.

Contract (checked by tests/storage for every backend):
- paths are virtual absolute POSIX paths; "/" is the backend's root;
- ``stat`` of a missing path raises FileNotFoundError;
- ``list`` yields entries lazily (a huge directory is never held in memory whole) and raises
  NotADirectoryError for a file, FileNotFoundError for a missing path;
- ``open_write`` returns a stream whose data becomes visible at ``path`` only on
  ``commit()``; ``abort()`` leaves ``path`` exactly as it was before the upload;
- write streams never keep a reference to the buffer passed to ``write`` after it returns.
"""

from __future__ import annotations

import abc
import errno
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol.listing import Entry, StatRenderer
from ..protocol.selection import NameMatch

#: entries per :meth:`AbstractPathIO.list_batches` batch
LIST_BATCH = 256
#: one batch of directory entries (an alias: inside the classes ``list`` is a method)
EntryBatch = list[Entry]


class ReadStream(abc.ABC):
    """An open file being downloaded."""

    #: block size the backend prefers for ``read``
    block_size: int = 256 * 1024

    @abc.abstractmethod
    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of file."""

    def fileno(self) -> int | None:
        """An OS file descriptor positioned at the current offset, for zero-copy sendfile."""
        return None

    @abc.abstractmethod
    async def close(self) -> None: ...


class WriteStream(abc.ABC):
    """An upload in progress: invisible until ``commit``."""

    block_size: int = 1024 * 1024

    @abc.abstractmethod
    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``; must not keep a reference to it after returning."""

    def write_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Take ``data`` without waiting (copying it if it is kept) and return True, or
        return False, taking nothing: the caller then awaits ``write``."""
        return False

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the upload visible at its path, atomically where the backend allows."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Discard the upload; the target is left as it was before."""

    @property
    def bytes_written(self) -> int:
        return 0


class AbstractPathIO(abc.ABC):
    """Storage for one user's home."""

    #: a human-readable description of where "/" lives (for logs)
    root: str = ""
    #: RNFR/RNTO of a directory with more objects than this is refused (None: no limit)
    max_rename_objects: int | None = None

    @abc.abstractmethod
    async def stat(self, path: str) -> Entry: ...

    @abc.abstractmethod
    def list(self, path: str) -> AsyncIterator[Entry]: ...

    @abc.abstractmethod
    async def mkdir(self, path: str) -> None: ...

    @abc.abstractmethod
    async def rmdir(self, path: str) -> None: ...

    @abc.abstractmethod
    async def unlink(self, path: str) -> None: ...

    @abc.abstractmethod
    async def rename(self, source: str, target: str) -> None: ...

    @abc.abstractmethod
    async def set_mtime(self, path: str, mtime: float) -> None: ...

    @abc.abstractmethod
    async def open_read(self, path: str, offset: int = 0) -> ReadStream: ...

    @abc.abstractmethod
    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        """Start an upload. ``offset`` > 0 keeps the first ``offset`` bytes of the existing
        file (REST + STOR); ``append`` keeps all of it (APPE)."""

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except FileNotFoundError:
            return False
        return True

    async def list_batches(self, path: str) -> AsyncIterator[EntryBatch]:
        """The entries of :meth:`list` in lists, so a listing of thousands of entries costs
        one await per batch, not per entry. Backends that fetch pages override it."""
        batch: EntryBatch = []
        async for entry in self.list(path):
            batch.append(entry)
            if len(batch) >= LIST_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def list_text(self, path: str, renderer: StatRenderer, *, match: NameMatch | None = None,
                  sort_limit: int = 0) -> AsyncGenerator[bytes, None] | None:
        """Directory ``path`` already rendered to UTF-8 lines by ``renderer`` from the
        backend's own stat records, or None (the default): the caller then renders
        :meth:`list_batches` itself. Only names that ``match`` accepts (all if None) are
        listed; a directory of at most ``sort_limit`` of them comes sorted by name, a
        larger one in directory order (see :class:`~fsftpd.protocol.selection.SortWindow`).
        A chunk may be empty (a step that read entries but has nothing to show yet: each
        step stays short). Local disk implements it."""
        return None

    async def open_read_sized(self, path: str, offset: int = 0) -> tuple[ReadStream, int]:
        """``open_read`` plus the file's size, for RETR: IsADirectoryError for a directory.
        An ``offset`` beyond the end is not an error here (the caller compares it with the
        size and closes the stream). Backends that learn the size while opening override
        this to save a round trip."""
        entry = await self.stat(path)
        if entry.is_dir:
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        return await self.open_read(path, min(offset, entry.size)), entry.size

    async def size(self, path: str) -> int:
        """What SIZE reports and REST is checked against: the file's size. Backends that
        keep interrupted uploads for resumption (S3) report the bytes they hold of one."""
        entry = await self.stat(path)
        if entry.is_dir:
            raise IsADirectoryError(errno.EISDIR, "SIZE is for files, not directories")
        return entry.size

    async def is_dir(self, path: str) -> bool:
        try:
            return (await self.stat(path)).is_dir
        except FileNotFoundError:
            return False

    async def ensure_root(self) -> None:
        """Make sure "/" exists (create a local base directory); called before first use."""

    async def aclose(self) -> None:
        """Release clients and sessions held by this path-IO."""


@dataclass
class StorageContext:
    """Per-server state shared by the path-IOs one server creates (memory stores,
    filesystem instances keyed by their options)."""

    cache: dict[Any, Any] = field(default_factory=dict)
    storage_options: dict[str, Any] = field(default_factory=dict)
