"""Homes of every kind for the wildcard and tnftp tests, and a probe that sees how many
directory entries a listing keeps alive.

``HOMES`` are the home kinds (local disk, memory, S3 on moto, S3 on SeaweedFS);
:func:`home_server` runs a server for one of them. With ``probe=True`` the user's path-IO
is wrapped in a :class:`ProbePathIO`, which hands out every listed entry as a
weak-referenceable copy and records, each time the server asks for the next batch, how many
entries handed out earlier are still alive: the entries the server holds at that moment
(CPython frees an entry as soon as nothing refers to it). Through the wrapper a local home
takes the Entry path, not its worker-thread text path (that one is probed through
``DirReader.held_peak`` in tests/server/test_wildcards.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsftpd
from fsftpd.protocol.listing import Entry
from fsftpd.storage import (
    AbstractPathIO,
    MemoryPathIO,
    PathIO,
    ReadStream,
    S3PathIO,
    StorageContext,
    WriteStream,
    open_home,
)
from tests.harness import ServerThread, running_server
from tests.s3.endpoints import S3Endpoint
from tests.s3.fixtures import HOMES as HOMES  # re-exported for the wildcard and tnftp tests
from tests.s3.fixtures import endpoint_named


class ProbedEntry(Entry):
    __slots__ = ("__weakref__",)


class ProbePathIO(AbstractPathIO):
    """Delegates to ``inner``; see the module docstring for what it records."""

    def __init__(self, inner: AbstractPathIO) -> None:
        self.inner = inner
        self.root = inner.root
        self.max_rename_objects = inner.max_rename_objects
        self._alive: weakref.WeakSet[ProbedEntry] = weakref.WeakSet()
        self.listed = 0  # entries handed out, all listings together
        self.peak_alive = 0  # most entries handed out earlier and still alive at a batch

    def reset(self) -> None:
        self._alive = weakref.WeakSet()
        self.listed = self.peak_alive = 0

    async def list_batches(self, path: str) -> AsyncIterator[list[Entry]]:
        async for batch in self.inner.list_batches(path):
            self.peak_alive = max(self.peak_alive, len(self._alive))
            probed: list[Entry] = [ProbedEntry(e.name, e.is_dir, e.size, e.mtime, e.mode, e.nlink, e.unique,
                                               e.is_link) for e in batch]
            del batch
            for entry in probed:
                self._alive.add(entry)  # type: ignore[arg-type]
            self.listed += len(probed)
            yield probed
            del probed  # only the server's references count at the next batch
        self.peak_alive = max(self.peak_alive, len(self._alive))

    async def list(self, path: str) -> AsyncIterator[Entry]:
        async for batch in self.list_batches(path):
            for entry in batch:
                yield entry

    async def stat(self, path: str) -> Entry:
        return await self.inner.stat(path)

    async def mkdir(self, path: str) -> None:
        await self.inner.mkdir(path)

    async def rmdir(self, path: str) -> None:
        await self.inner.rmdir(path)

    async def unlink(self, path: str) -> None:
        await self.inner.unlink(path)

    async def rename(self, source: str, target: str) -> None:
        await self.inner.rename(source, target)

    async def set_mtime(self, path: str, mtime: float) -> None:
        await self.inner.set_mtime(path, mtime)

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        return await self.inner.open_read(path, offset)

    async def open_read_sized(self, path: str, offset: int = 0) -> tuple[ReadStream, int]:
        return await self.inner.open_read_sized(path, offset)

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        return await self.inner.open_write(path, offset=offset, append=append)

    async def ensure_root(self) -> None:
        await self.inner.ensure_root()

    async def aclose(self) -> None:
        await self.inner.aclose()


def home_user(kind: str, tmp_path: Path, *, storage: dict[str, Any] | None = None,
              permissions: list[fsftpd.Permission] | None = None) -> fsftpd.User:
    rules = {"permissions": permissions} if permissions is not None else {}
    if kind == "local":
        return fsftpd.User("alice", "secret", base_path=str(tmp_path / "home"), **rules)
    if kind == "memory":
        return fsftpd.User("alice", "secret", base_path="memory://alice", **rules)
    endpoint = endpoint_named(kind.removeprefix("s3-"))
    return fsftpd.User("alice", "secret", base_path=f"s3://{endpoint.new_bucket()}/alice",
                       storage_options=endpoint.options(**(storage or {})), **rules)


@contextlib.contextmanager
def home_server(kind: str, tmp_path: Path, *, probe: bool = False, storage: dict[str, Any] | None = None,
                permissions: list[fsftpd.Permission] | None = None,
                **options: Any) -> Iterator[tuple[ServerThread, list[ProbePathIO]]]:
    """A server with user alice/secret on a home of ``kind``; with ``probe``, also the
    list its ProbePathIO lands in at the first login."""
    probes: list[ProbePathIO] = []

    def factory(base_path: str, *, storage_options: dict[str, Any],
                context: StorageContext) -> AbstractPathIO:
        io = ProbePathIO(open_home(base_path, storage_options=storage_options, context=context))
        probes.append(io)
        return io

    extra: dict[str, Any] = {"path_io_factory": factory} if probe else {}
    user = home_user(kind, tmp_path, storage=storage, permissions=permissions)
    with running_server([user], **extra, **options) as srv:
        yield srv, probes


def put_files(srv: ServerThread, files: dict[str, bytes]) -> None:
    """Store ``files`` (virtual path -> content) in alice's home, on the server's loop,
    straight into its storage: files on disk, the memory store, S3 PutObject (quicker for
    thousands of files than uploads through FTP or the path-IO: a memory upload's commit
    is a move that scans the whole store, an S3 one a multipart upload)."""

    async def write(server: fsftpd.Server) -> None:
        user = server.users.find("alice")
        assert user is not None
        io = await server.path_io_for(user)
        inner = io.inner if isinstance(io, ProbePathIO) else io
        directories = sorted({path.rpartition("/")[0] for path in files} - {""})
        if isinstance(inner, PathIO):
            _write_local(inner.root, directories, files)
            return
        for directory in directories:
            if not await io.exists(directory):
                await io.mkdir(directory)
        if isinstance(inner, MemoryPathIO):
            for path, data in files.items():
                inner.fs.pipe_file(inner._p(path), data)
            return
        assert isinstance(inner, S3PathIO)
        await asyncio.to_thread(_put_objects, inner, files)

    srv.run(write)


def _put_objects(io: S3PathIO, files: dict[str, bytes]) -> None:
    client = S3Endpoint("bulk", io.client.endpoint).boto()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=io.bucket, Key=io.key(item[0]), Body=item[1]),
                      files.items()))


def _write_local(root: str, directories: list[str], files: dict[str, bytes]) -> None:
    for directory in directories:
        os.makedirs(root + directory, exist_ok=True)
    for path, data in files.items():
        with open(root + path, "wb") as f:
            f.write(data)
