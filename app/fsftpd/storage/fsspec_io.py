"""Path-IO over a synchronous fsspec filesystem (memory, and any other sync backend).

``FsspecPathIO(fs, root)`` maps virtual "/x" to ``root + "/x"`` on ``fs``. Calls go to a
worker thread unless the filesystem is known not to block (memory). Uploads are written
to a hidden temporary name and moved over the target on commit. The S3 path-IO
(:mod:`fsftpd.storage.s3`) builds on the same entry mapping but talks to s3fs directly.

Invariant: every read stream owns its position, whatever the filesystem hands out. fsspec's
memory filesystem returns the *same* file object to every ``open(path, "rb")``, so two
downloads of one file would share (and corrupt) one position; a tar archive's members share
the archive's file. A stream therefore keeps its own offset and reads with seek + read in
one step: on the event loop (memory: nothing else runs in between) or under a lock.
Memory uploads and renames put a new file object into the store, so a reader keeps the
whole version it opened while the file is replaced.
"""

from __future__ import annotations

import asyncio
import errno
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from ..protocol.listing import Entry
from .base import AbstractPathIO, ReadStream, StorageContext, WriteStream

T = TypeVar("T")

TEMP_PREFIX = ".fsftpd-upload-"

#: locks making a worker thread's seek + read one step on a file object that another
#: stream may share (striped by the object's id: a collision only serialises two reads)
_READ_LOCKS = tuple(threading.Lock() for _ in range(64))
#: protocols whose open files share one underlying file (every member of a tar archive
#: reads the archive's file object): their reads are serialised per filesystem
_SHARED_FILE_PROTOCOLS = frozenset({"tar"})


def _mtime(info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0


def entry_from_info(info: dict[str, Any], name: str | None = None) -> Entry:
    """Turn an fsspec ``info`` dict into an :class:`Entry`."""
    is_dir = info.get("type") == "directory"
    full = str(info.get("name", "")).rstrip("/")
    return Entry(
        name=name if name is not None else full.rpartition("/")[2],
        is_dir=is_dir,
        size=0 if is_dir else int(info.get("size") or 0),
        mtime=_mtime(info),
        unique=str(info.get("ETag", "")).strip('"')[:32] if info.get("ETag") else "",
    )


class FsspecPathIO(AbstractPathIO):
    """A home at ``root`` on any synchronous fsspec filesystem ``fs``."""

    def __init__(self, fs: Any, root: str = "", *, blocking: bool = True) -> None:
        self.fs = fs
        self._root = root.rstrip("/")
        self.root = f"{getattr(fs, 'protocol', 'fsspec')}:{self._root or '/'}"
        self._blocking = blocking

    def _p(self, path: str) -> str:
        return self._root + path if path != "/" else (self._root or "/")

    async def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self._blocking:
            return func(*args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, partial(func, *args, **kwargs))

    async def stat(self, path: str) -> Entry:
        real = self._p(path)
        try:
            info = await self._call(self.fs.info, real)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory") from None
        entry = entry_from_info(info)
        if path == "/":
            return Entry("/", True, 0, entry.mtime)
        return entry

    async def list(self, path: str) -> AsyncIterator[Entry]:
        entry = await self.stat(path)
        if not entry.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
        infos = await self._call(self.fs.ls, self._p(path), detail=True)
        for info in infos:
            item = entry_from_info(info)
            if item.name.startswith(TEMP_PREFIX) or not item.name:
                continue
            yield item

    async def _parent_is_dir(self, path: str) -> None:
        parent = path.rpartition("/")[0] or "/"
        if not await self.is_dir(parent):
            raise FileNotFoundError(errno.ENOENT, "Parent directory does not exist")

    async def mkdir(self, path: str) -> None:
        if await self.exists(path):
            raise FileExistsError(errno.EEXIST, "File exists")
        await self._parent_is_dir(path)
        await self._call(self.fs.mkdir, self._p(path), create_parents=False)

    async def rmdir(self, path: str) -> None:
        entry = await self.stat(path)
        if not entry.is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
        async for _ in self.list(path):
            raise OSError(errno.ENOTEMPTY, "Directory not empty")
        await self._call(self.fs.rmdir, self._p(path))

    async def unlink(self, path: str) -> None:
        entry = await self.stat(path)
        if entry.is_dir:
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        await self._call(self.fs.rm_file, self._p(path))

    async def rename(self, source: str, target: str) -> None:
        src = await self.stat(source)
        await self._parent_is_dir(target)
        if source == target:
            return
        target_is_dir = await self.is_dir(target)
        if target_is_dir and not src.is_dir:
            raise IsADirectoryError(errno.EISDIR, "Target is a directory")
        if target_is_dir:
            # POSIX rename(2), as on local disk: a directory replaces an *empty* directory;
            # fsspec's mv would move the source inside the target instead.
            await self.rmdir(target)
        elif src.is_dir and await self.exists(target):
            raise NotADirectoryError(errno.ENOTDIR, "Target is not a directory")
        await self._call(self._move, self._p(source), self._p(target), src.is_dir)

    def _move(self, src: str, dst: str, is_dir: bool) -> None:
        """Move by exact names. fsspec's ``mv`` expands ``*``, ``?`` and ``[...]`` in names
        as glob patterns: "photo [1].jpg" would not be found, "a*" would move others too."""
        fs = self.fs
        if not is_dir:
            fs.cp_file(src, dst)
            fs.rm_file(src)
            return
        prefix = src.rstrip("/")
        fs.makedirs(dst, exist_ok=True)
        dirs: list[str] = []
        for name, info in sorted(fs.find(src, withdirs=True, detail=True).items()):
            name = name.rstrip("/")
            rel = name[len(prefix):]
            if not rel:
                continue
            if info.get("type") == "directory":
                fs.makedirs(dst + rel, exist_ok=True)
                dirs.append(name)
            else:
                fs.cp_file(name, dst + rel)
                fs.rm_file(name)
        for name in sorted(dirs, reverse=True):
            fs.rmdir(name)
        fs.rmdir(src)

    async def set_mtime(self, path: str, mtime: float) -> None:
        await self.stat(path)
        raise NotImplementedError("This storage cannot set modification times")

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        stream, _ = await self._open_read_sized(path, offset)
        return stream

    async def open_read_sized(self, path: str, offset: int = 0) -> tuple[ReadStream, int]:
        cls = type(self)
        if cls.open_read is not FsspecPathIO.open_read or cls.stat is not FsspecPathIO.stat:
            return await super().open_read_sized(path, offset)  # honour a subclass's changes
        return await self._open_read_sized(path, offset)

    async def _open_read_sized(self, path: str, offset: int) -> tuple[ReadStream, int]:
        entry = await self.stat(path)
        if entry.is_dir:
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        handle = await self._call(self.fs.open, self._p(path), "rb")
        # The size of the object really opened (memory: the version this stream keeps
        # even if the file is replaced meanwhile); the earlier stat's otherwise.
        size = getattr(handle, "size", None)
        if not isinstance(size, int):
            size = entry.size
        lock = None
        if self._blocking:
            protocol = getattr(self.fs, "protocol", "")
            protocol = protocol[0] if isinstance(protocol, (tuple, list)) else protocol
            key = self.fs if protocol in _SHARED_FILE_PROTOCOLS else handle
            lock = _READ_LOCKS[(id(key) >> 4) % len(_READ_LOCKS)]
        return FsspecReadStream(handle, self._call, lock, min(offset, size)), size

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        if await self.is_dir(path):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        await self._parent_is_dir(path)
        parent = path.rpartition("/")[0]
        temp = f"{parent}/{TEMP_PREFIX}{secrets.token_hex(8)}"
        handle = await self._call(self.fs.open, self._p(temp), "wb")
        stream = FsspecWriteStream(self, handle, temp, path)
        keep = None if append else offset
        if keep is None or keep > 0:
            try:
                await stream.copy_prefix(keep)
            except BaseException:
                await stream.abort()
                raise
        return stream


class FsspecReadStream(ReadStream):
    """A download with its own position (see the module's invariant)."""

    def __init__(self, handle: Any, call: Callable[..., Any], lock: threading.Lock | None,
                 offset: int = 0) -> None:
        self._handle = handle
        self._call = call
        self._lock = lock
        self._pos = offset

    def _read_at(self, position: int, size: int) -> bytes:
        handle = self._handle
        if self._lock is None:  # on the event loop: nothing runs between seek and read
            handle.seek(position)
            data: bytes = handle.read(size)
            return data
        with self._lock:
            handle.seek(position)
            data = handle.read(size)
            return data

    async def read(self, size: int) -> bytes:
        data: bytes = await self._call(self._read_at, self._pos, size)
        self._pos += len(data)
        return data

    async def close(self) -> None:
        await self._call(self._handle.close)


class FsspecWriteStream(WriteStream):
    def __init__(self, owner: FsspecPathIO, handle: Any, temp: str, path: str) -> None:
        self._owner = owner
        self._handle = handle
        self._temp = temp
        self._path = path
        self._written = 0
        self._done = False

    async def copy_prefix(self, keep: int | None) -> None:
        try:
            source, size = await self._owner.open_read_sized(self._path)
        except FileNotFoundError:
            if keep:
                raise
            return
        try:
            remaining = size if keep is None else keep
            if remaining > size:
                raise OSError(errno.EINVAL, "Restart offset beyond end of file")
            while remaining > 0:
                block = await source.read(min(remaining, 1 << 20))
                if not block:
                    break
                await self.write(block)
                remaining -= len(block)
        finally:
            await source.close()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self._owner._call(self._handle.write, bytes(data))
        self._written += len(data)

    @property
    def bytes_written(self) -> int:
        return self._written

    async def commit(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._owner._call(self._handle.close)
            owner = self._owner
            await owner._call(owner._move, owner._p(self._temp), owner._p(self._path), False)
        except BaseException:
            await self._remove_temp()
            raise

    async def _remove_temp(self) -> None:
        try:
            await self._owner._call(self._owner.fs.rm_file, self._owner._p(self._temp))
        except (OSError, KeyError):
            pass

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._owner._call(self._handle.close)
        finally:
            await self._remove_temp()


def _new_memory_fs() -> Any:
    """A MemoryFileSystem with its own store: fsspec's class keeps one global store."""
    from fsspec.implementations.memory import MemoryFileSystem

    cls = type("ServerMemoryFileSystem", (MemoryFileSystem,), {"store": {}, "pseudo_dirs": [""]})
    return cls(skip_instance_cache=True)


class MemoryPathIO(FsspecPathIO):
    """A home in memory. Path-IOs built with the same :class:`StorageContext` (one per
    server) share one store; different servers never see each other's files."""

    def __init__(self, root: str = "/", *, context: StorageContext | None = None) -> None:
        if root.startswith("memory://"):
            root = root[len("memory://") :]
        root = "/" + root.strip("/") if root.strip("/") else ""
        if context is None:
            fs = _new_memory_fs()
        else:
            fs = context.cache.get("memory-fs")
            if fs is None:
                fs = context.cache["memory-fs"] = _new_memory_fs()
        super().__init__(fs, root, blocking=False)
        if root and not fs.exists(root):
            fs.makedirs(root, exist_ok=True)
