"""FsspecPathIO over synchronous fsspec filesystems whose open files share state, read
from worker threads: every download still owns its position."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
from pathlib import Path

from fsspec.implementations.tar import TarFileSystem

from fsftpd.storage import FsspecPathIO
from fsftpd.storage.fsspec_io import _new_memory_fs

MiB = 1024 * 1024


async def _get(path_io: FsspecPathIO, path: str, offset: int) -> bytes:
    stream = await path_io.open_read(path, offset)
    out = bytearray()
    try:
        while block := await stream.read(8 * 1024 + offset % 1000):
            out += block
    finally:
        await stream.close()
    return bytes(out)


async def _readers(path_io: FsspecPathIO, path: str, data: bytes) -> None:
    offsets = [0, 0, 0, 1, 1000, 100_000, len(data) // 2, len(data) - 1] * 2
    results = await asyncio.gather(*(_get(path_io, path, offset) for offset in offsets))
    for offset, out in zip(offsets, results, strict=True):
        assert hashlib.sha256(out).digest() == hashlib.sha256(data[offset:]).digest(), offset


def test_memory_filesystem_read_from_worker_threads() -> None:
    # The same file object for every reader, and seek + read from several threads.
    fs = _new_memory_fs()
    data = os.urandom(MiB + 5)
    fs.pipe_file("/home/f.bin", data)
    path_io = FsspecPathIO(fs, "/home", blocking=True)
    size = asyncio.run(path_io.open_read_sized("/f.bin"))[1]
    assert size == len(data)
    asyncio.run(_readers(path_io, "/f.bin", data))


def test_tar_members_read_from_worker_threads(tmp_path: Path) -> None:
    # Every member of a tar archive reads the archive's one file object.
    data = os.urandom(MiB + 77)
    other = os.urandom(300_000)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name, content in (("d/f.bin", data), ("g.bin", other)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path_io = FsspecPathIO(TarFileSystem(str(archive)), "", blocking=True)

    async def both() -> None:
        await asyncio.gather(_readers(path_io, "/d/f.bin", data), _readers(path_io, "/g.bin", other))

    asyncio.run(both())
