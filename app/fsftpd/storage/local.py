"""Local-disk path-IO. Blocking calls run in worker threads; the event loop never waits
on the disk.

Invariants:
- every real path is ``root + virtual path``, and its resolved form (symlinks followed)
  must stay inside the resolved root, else PermissionError: a symlink cannot lead out;
- the object opened is the object checked: a file opened for a download, and the directory
  an upload's temporary file is made in and renamed in (and both directories of a rename),
  are checked through their open descriptor, after opening, so a symlink swapped between
  the check and the open (a local program racing the server) cannot lead out either;
- uploads go to a hidden temporary file in the target's directory and are renamed over
  the target on commit (atomic on POSIX); abort unlinks the temporary file.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as stat_mod
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from functools import partial
from typing import TypeVar

from ..protocol.listing import Entry, StatRenderer, entry_from_stat
from ..protocol.selection import NameMatch
from . import threads
from .base import AbstractPathIO, EntryBatch, ReadStream, WriteStream
from .local_listing import DirReader
from .resolve import descriptor_path, resolved_path

T = TypeVar("T")

TEMP_PREFIX = ".fsftpd-upload-"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: O_NOCTTY|O_NONBLOCK: opening whatever a racing symlink points at (a terminal, a FIFO)
#: must neither take a controlling terminal nor block before the check closes it. Regular
#: files ignore O_NONBLOCK.
_READ_FLAGS = os.O_RDONLY | _CLOEXEC | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
#: entries per worker-thread call of list_batches (Entry objects) and list_text (text)
LIST_BATCH = 1024
LIST_TEXT_BATCH = 4096


#: worker threads for local-disk calls. Most calls take microseconds, but some block on
#: the disk (an ext4 rename over an existing file starts writeback of the new data), and
#: with the loop's small default pool a few of those stall every session's file calls.
DISK_THREADS = 32
_threads = threads.pool(DISK_THREADS)


async def _run(func: Callable[..., T], *args: object) -> T:
    return await _threads.run(partial(func, *args) if args else func)


_entry = entry_from_stat


async def _close_dir(reader: DirReader) -> None:
    if not reader.try_close():  # a batch is still running in its thread: wait for it
        await _run(reader.close)


class PathIO(AbstractPathIO):
    """A home on local disk rooted at ``root`` (a directory path or ``file://`` URL)."""

    def __init__(self, root: str = ".") -> None:
        if root.startswith("file://"):
            root = root[len("file://") :] or "/"
        self.root = os.path.abspath(root)
        self._real_root = os.path.realpath(self.root)

    async def ensure_root(self) -> None:
        def make() -> str:
            os.makedirs(self.root, exist_ok=True)
            return os.path.realpath(self.root)

        self._real_root = await _run(make)

    # -- path mapping ------------------------------------------------------------
    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/")) if path != "/" else self.root

    def _inside(self, resolved: str) -> bool:
        return resolved == self._real_root or resolved.startswith(self._real_root + os.sep)

    def _check_inside(self, real: str, *, must_exist_parent_only: bool = False) -> None:
        target = os.path.dirname(real) if must_exist_parent_only else real
        if not self._inside(resolved_path(target)):
            raise PermissionError(errno.EACCES, "Path leads outside the home directory")

    def _check_fd(self, fd: int) -> None:
        """The object open on ``fd`` must be inside the home (closes ``fd`` if not)."""
        resolved = descriptor_path(fd)
        if resolved is not None and not self._inside(resolved):
            os.close(fd)
            raise PermissionError(errno.EACCES, "Path leads outside the home directory")

    def _open_dir_fd(self, real_dir: str) -> int:
        """A descriptor on directory ``real_dir``, checked to be inside the home: names made,
        opened or renamed relative to it stay inside, whatever happens to the path."""
        fd = os.open(real_dir, _DIR_FLAGS)
        self._check_fd(fd)
        return fd

    def _safe(self, path: str, *, parent_only: bool = False) -> str:
        real = self._real(path)
        self._check_inside(real, must_exist_parent_only=parent_only)
        return real

    # -- metadata ----------------------------------------------------------------
    def _stat(self, path: str) -> Entry:
        real = self._safe(path)
        return _entry(os.path.basename(real.rstrip("/")) or "/", os.stat(real))

    async def stat(self, path: str) -> Entry:
        return await _run(self._stat, path)

    def _open_dir(self, path: str) -> tuple[str, int]:
        """The real path of directory ``path`` and a descriptor open on it."""
        real = self._safe(path)
        if not os.path.isdir(real):
            if os.path.exists(real):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return real, os.open(real, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))

    def _dir_reader(self, path: str, *, match: NameMatch | None = None, sort_limit: int = 0) -> DirReader:
        # opened by its first batch, in that batch's worker-thread call
        return DirReader(partial(self._open_dir, path), self._inside, TEMP_PREFIX, match=match,
                         sort_limit=sort_limit)

    async def list(self, path: str) -> AsyncIterator[Entry]:
        async for batch in self._entry_batches(path):
            for entry in batch:
                yield entry

    def _fast_listing(self) -> bool:
        # a subclass that changed list() or list_batches(): listings must go through it
        cls = type(self)
        return cls.list is PathIO.list and cls.list_batches is PathIO.list_batches

    def list_batches(self, path: str) -> AsyncIterator[EntryBatch]:
        # A subclass's list() that calls super().list() ends up in _entry_batches, not
        # back here (that would recurse).
        return self._entry_batches(path) if self._fast_listing() else super().list_batches(path)

    async def _entry_batches(self, path: str) -> AsyncIterator[EntryBatch]:
        # one worker-thread call per LIST_BATCH entries (scandir + stat + Entry)
        reader = self._dir_reader(path)
        try:
            while True:
                batch, more = await _run(reader.entries, LIST_BATCH)
                if batch:
                    yield batch
                if not more:
                    break
        finally:
            await _close_dir(reader)

    def list_text(self, path: str, renderer: StatRenderer, *, match: NameMatch | None = None,
                  sort_limit: int = 0) -> AsyncGenerator[bytes, None] | None:
        """The listing of directory ``path`` as UTF-8 text (names that are not UTF-8 keep
        their bytes), rendered by ``renderer`` in worker threads: one thread call per
        :data:`LIST_TEXT_BATCH` entries read or rendered does the reading, stat and
        formatting, and the event loop only sends. Same entries, clamps and errors as
        :meth:`list`; names are filtered by ``match`` before any stat, and ordered as
        :meth:`AbstractPathIO.list_text` says. None when a subclass changed how listings
        are made (then the caller renders :meth:`list_batches`)."""
        if not self._fast_listing():
            return None
        return self._list_text(renderer, self._dir_reader(path, match=match, sort_limit=sort_limit))

    async def _list_text(self, renderer: StatRenderer, reader: DirReader) -> AsyncGenerator[bytes, None]:
        try:
            while True:
                data, more = await _run(reader.text, renderer, LIST_TEXT_BATCH)
                # an empty chunk too: one step per thread call, each under path_timeout
                if data or more:
                    yield data
                if not more:
                    break
        finally:
            await _close_dir(reader)

    # -- namespace changes ----------------------------------------------------------
    def _at_parent(self, path: str, action: Callable[[str, int], T]) -> T:
        """``action(name, directory descriptor)`` on the last name of ``path``, relative to
        its parent directory checked through its descriptor (see _open_dir_fd)."""
        real = self._safe(path, parent_only=True)
        directory = self._open_dir_fd(os.path.dirname(real))
        try:
            return action(os.path.basename(real), directory)
        finally:
            os.close(directory)

    async def mkdir(self, path: str) -> None:
        await _run(self._at_parent, path, lambda name, d: os.mkdir(name, dir_fd=d))

    async def rmdir(self, path: str) -> None:
        await _run(self._at_parent, path, lambda name, d: os.rmdir(name, dir_fd=d))

    @staticmethod
    def _unlink_at(name: str, directory: int) -> None:
        if stat_mod.S_ISDIR(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        os.unlink(name, dir_fd=directory)

    def _unlink(self, path: str) -> None:
        self._at_parent(path, self._unlink_at)

    async def unlink(self, path: str) -> None:
        await _run(self._unlink, path)

    def _rename(self, source: str, target: str) -> None:
        src = self._safe(source, parent_only=True)
        dst = self._safe(target, parent_only=True)
        if not os.path.lexists(src):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        if os.path.isdir(dst) and not os.path.isdir(src):
            raise IsADirectoryError(errno.EISDIR, "Target is a directory")
        # Renamed relative to the two checked directories (the names themselves are
        # never followed by rename).
        src_dir = self._open_dir_fd(os.path.dirname(src))
        try:
            dst_dir = self._open_dir_fd(os.path.dirname(dst))
            try:
                os.rename(os.path.basename(src), os.path.basename(dst),
                          src_dir_fd=src_dir, dst_dir_fd=dst_dir)
            finally:
                os.close(dst_dir)
        finally:
            os.close(src_dir)

    async def rename(self, source: str, target: str) -> None:
        await _run(self._rename, source, target)

    async def set_mtime(self, path: str, mtime: float) -> None:
        def _set() -> None:
            real = self._safe(path)
            st = os.stat(real)
            os.utime(real, (st.st_atime, mtime))

        await _run(_set)

    # -- data --------------------------------------------------------------------
    def _open_read(self, path: str, offset: int) -> int:
        real = self._safe(path)
        fd = os.open(real, _READ_FLAGS)
        self._check_fd(fd)  # what was opened, not what was checked a moment ago
        try:
            if stat_mod.S_ISDIR(os.fstat(fd).st_mode):
                raise IsADirectoryError(errno.EISDIR, "Is a directory")
            if offset:
                os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        return LocalReadStream(await _run(self._open_read, path, offset))

    def _open_read_sized(self, path: str, offset: int) -> tuple[int, int]:
        fd = self._open_read(path, 0)
        try:
            size = os.fstat(fd).st_size
            if offset:
                os.lseek(fd, min(offset, size), os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd, size

    async def open_read_sized(self, path: str, offset: int = 0) -> tuple[ReadStream, int]:
        cls = type(self)
        if cls.open_read is not PathIO.open_read or cls.stat is not PathIO.stat:
            return await super().open_read_sized(path, offset)  # honour a subclass's changes
        # one worker-thread call instead of two (stat, then open)
        fd, size = await _run(self._open_read_sized, path, offset)
        return LocalReadStream(fd), size

    def _open_write(self, path: str, keep: int | None) -> tuple[int, int, str, str]:
        """(file descriptor, directory descriptor, temp name, target name): the temporary
        file is made in, and later renamed in, a directory descriptor checked to be inside
        the home."""
        # The full check, not just the parent's: APPE/REST copy the existing file's bytes,
        # so a symlink leading outside must not be followed (nor silently replaced).
        real = self._safe(path)
        if os.path.isdir(real):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        directory = self._open_dir_fd(os.path.dirname(real))
        name = os.path.basename(real)
        temp = TEMP_PREFIX + secrets.token_hex(8)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o666, dir_fd=directory)
        except BaseException:
            os.close(directory)
            raise
        try:
            try:
                # A replaced file keeps its permission bits: the temp file would otherwise
                # turn a private 0600 file into a umask-default 0644 one.
                os.fchmod(fd, stat_mod.S_IMODE(os.stat(name, dir_fd=directory).st_mode))
            except FileNotFoundError:
                pass
            if keep is None or keep > 0:
                self._copy_prefix(directory, name, fd, keep)
        except BaseException:
            os.close(fd)
            os.unlink(temp, dir_fd=directory)
            os.close(directory)
            raise
        return fd, directory, temp, name

    def _copy_prefix(self, directory: int, name: str, fd: int, keep: int | None) -> None:
        """Copy the first ``keep`` bytes (all when None) of the existing file into ``fd``."""
        try:
            src = os.open(name, _READ_FLAGS, dir_fd=directory)
        except FileNotFoundError:
            if keep:
                raise
            return
        self._check_fd(src)
        try:
            size = os.fstat(src).st_size
            remaining = size if keep is None else keep
            if remaining > size:
                raise OSError(errno.EINVAL, "Restart offset beyond end of file")
            offset = 0
            while remaining > 0:
                try:
                    copied = os.copy_file_range(src, fd, remaining, offset, offset)
                except OSError:
                    copied = os.write(fd, os.pread(src, min(remaining, 1 << 20), offset))
                if copied == 0:
                    break
                offset += copied
                remaining -= copied
            os.lseek(fd, offset, os.SEEK_SET)
        finally:
            os.close(src)

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        keep = None if append else offset
        fd, directory, temp, name = await _run(self._open_write, path, keep)
        return LocalWriteStream(fd, temp, name, directory)


class AsyncPathIO(PathIO):
    """Local disk with every blocking call in a worker thread.

    Kept under the seed's name; :class:`PathIO` already never blocks the loop, so the two
    behave the same.
    """


class LocalReadStream(ReadStream):
    """Reads run in worker threads. A read whose awaiting task was cancelled (ABOR, a
    vanished client) keeps running in its thread, so ``close`` waits for it under the
    stream's lock: closing first would let the late read hit whatever file or socket the
    OS gives the same descriptor number next."""

    block_size = 1024 * 1024

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def _read(self, size: int) -> bytes:
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "Download already closed")
            return os.read(self._fd, size)

    async def read(self, size: int) -> bytes:
        return await _run(self._read, size)

    def fileno(self) -> int | None:
        return self._fd

    def _close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)

    async def close(self) -> None:
        if self._lock.acquire(blocking=False):  # no read in flight: close right here
            try:
                if self._fd >= 0:
                    fd, self._fd = self._fd, -1
                    os.close(fd)
            finally:
                self._lock.release()
        else:
            await _run(self._close)


#: a first write up to this size is held (copied) and written by commit, in the same
#: worker-thread call as close and rename: a small upload costs two thread hops, not three
HOLD_MAX = 256 * 1024


def _write_fd(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class LocalWriteStream(WriteStream):
    """An upload into temporary file ``temp``, renamed to ``real`` on commit. With
    ``directory`` (a descriptor, owned and closed by the stream) both names are relative to
    it; without, they are paths."""

    def __init__(self, fd: int, temp: str, real: str, directory: int | None = None) -> None:
        self._fd = fd
        self._temp = temp
        self._real = real
        self._dir = directory
        self._relative = directory is not None  # the names are relative to self._dir
        self._written = 0
        self._held = b""  # written by the next write or by commit; dropped by abort
        # Held by every worker-thread call on the descriptor: a write whose task was
        # cancelled (ABOR, a vanished client) still runs, and abort must not close the
        # descriptor under it (the late write would land in whatever reuses the number).
        self._lock = threading.Lock()

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "Upload already finished")
            self._write_locked(data)

    def _write_locked(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            held, self._held = self._held, b""
            _write_fd(self._fd, held)
        _write_fd(self._fd, data)

    def write_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        if self._written or len(data) > HOLD_MAX:
            return False
        self._held = bytes(data)  # a copy: the caller reuses its buffer
        self._written = len(data)
        return True

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.write_nowait(data):
            await _run(self._write_all, data)
            self._written += len(data)

    @property
    def bytes_written(self) -> int:
        return self._written

    def _finish(self, keep: bool) -> None:
        with self._lock:
            self._finish_locked(keep)

    def _finish_locked(self, keep: bool) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        held, self._held = self._held, b""
        try:
            if keep and held:
                _write_fd(fd, held)
        except BaseException:
            keep = False
            raise
        finally:
            try:
                os.close(fd)
            finally:
                if keep:
                    # A failed rename leaves the directory open for _cleanup's unlink.
                    os.rename(self._temp, self._real, src_dir_fd=self._dir, dst_dir_fd=self._dir)
                else:
                    try:
                        os.unlink(self._temp, dir_fd=self._dir)
                    except FileNotFoundError:
                        pass
                self._close_dir()

    def _close_dir(self) -> None:
        if self._dir is not None:
            directory, self._dir = self._dir, None
            os.close(directory)

    async def commit(self) -> None:
        try:
            await _run(self._finish, True)
        except BaseException:
            await _run(self._cleanup)
            raise

    def _cleanup(self) -> None:
        with self._lock:
            if self._relative and self._dir is None:
                return  # finished already (the directory is closed with it)
            try:
                os.unlink(self._temp, dir_fd=self._dir)
            except OSError:
                pass
            self._close_dir()

    async def abort(self) -> None:
        await _run(self._finish, False)
