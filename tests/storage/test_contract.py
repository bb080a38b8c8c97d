"""The path-IO contract, run unchanged against every backend: local disk, memory, and S3
on moto and on SeaweedFS (real S3 servers on loopback)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fsftpd.storage import AbstractPathIO, MemoryPathIO, PathIO, S3PathIO, StorageContext
from tests.s3.fixtures import endpoint_named

MiB = 1024 * 1024

BACKENDS = [
    "local",
    "memory",
    pytest.param("s3-moto", marks=pytest.mark.s3),
    pytest.param("s3-seaweedfs", marks=pytest.mark.s3),
]


@pytest.fixture(params=BACKENDS)
async def io(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AbstractPathIO]:
    kind = request.param
    backend: AbstractPathIO
    if kind == "local":
        backend = PathIO(str(tmp_path / "home"))
    elif kind == "memory":
        backend = MemoryPathIO("memory://home", context=StorageContext())
    else:
        endpoint = endpoint_named(kind.removeprefix("s3-"))
        bucket = endpoint.new_bucket()
        backend = S3PathIO.from_url(f"s3://{bucket}/homes/alice", storage_options=endpoint.options(),
                                    context=StorageContext())
    await backend.ensure_root()
    try:
        yield backend
    finally:
        await backend.aclose()


async def put(io: AbstractPathIO, path: str, data: bytes, chunk: int = MiB) -> None:
    stream = await io.open_write(path)
    for start in range(0, len(data), chunk):
        await stream.write(data[start : start + chunk])
    await stream.commit()


async def get(io: AbstractPathIO, path: str, offset: int = 0) -> bytes:
    stream = await io.open_read(path, offset)
    out = bytearray()
    try:
        while block := await stream.read(64 * 1024):
            out += block
    finally:
        await stream.close()
    return bytes(out)


async def names(io: AbstractPathIO, path: str) -> dict[str, bool]:
    return {entry.name: entry.is_dir async for entry in io.list(path)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_root_is_an_empty_directory(io: AbstractPathIO) -> None:
    assert (await io.stat("/")).is_dir
    assert await names(io, "/") == {}


async def test_missing_paths(io: AbstractPathIO) -> None:
    with pytest.raises(FileNotFoundError):
        await io.stat("/nope")
    with pytest.raises(FileNotFoundError):
        [e async for e in io.list("/nope")]
    with pytest.raises(FileNotFoundError):
        await io.open_read("/nope")
    with pytest.raises(FileNotFoundError):
        await io.unlink("/nope")
    with pytest.raises(FileNotFoundError):
        await io.rmdir("/nope")
    with pytest.raises(FileNotFoundError):
        await io.rename("/nope", "/other")
    assert not await io.exists("/nope")


async def test_write_commit_read(io: AbstractPathIO) -> None:
    data = os.urandom(3 * MiB + 123)
    await put(io, "/f.bin", data)
    entry = await io.stat("/f.bin")
    assert not entry.is_dir and entry.size == len(data) and entry.mtime > 0
    assert await io.size("/f.bin") == len(data)
    assert sha(await get(io, "/f.bin")) == sha(data)
    assert sha(await get(io, "/f.bin", 1000)) == sha(data[1000:])
    assert await names(io, "/") == {"f.bin": False}


async def test_multipart_sized_upload(io: AbstractPathIO) -> None:
    # Over two 5 MiB parts on S3, written in the engine's 1 MiB chunks.
    data = os.urandom(11 * MiB + 7)
    await put(io, "/big.bin", data)
    assert (await io.stat("/big.bin")).size == len(data)
    assert sha(await get(io, "/big.bin")) == sha(data)
    assert sha(await get(io, "/big.bin", 10 * MiB + 1)) == sha(data[10 * MiB + 1 :])


async def test_empty_file(io: AbstractPathIO) -> None:
    await put(io, "/empty", b"")
    assert (await io.stat("/empty")).size == 0
    assert await get(io, "/empty") == b""


async def test_upload_invisible_until_commit(io: AbstractPathIO) -> None:
    stream = await io.open_write("/new.txt")
    await stream.write(b"x" * 1000)
    with pytest.raises(FileNotFoundError):
        await io.stat("/new.txt")
    assert await names(io, "/") == {}
    await stream.commit()
    assert await get(io, "/new.txt") == b"x" * 1000


async def test_abort_leaves_nothing_and_keeps_old_content(io: AbstractPathIO) -> None:
    stream = await io.open_write("/gone.bin")
    await stream.write(os.urandom(6 * MiB))
    await stream.abort()
    assert not await io.exists("/gone.bin")
    assert await names(io, "/") == {}
    await put(io, "/keep.txt", b"old content")
    stream = await io.open_write("/keep.txt")
    await stream.write(b"new content that is never committed")
    await stream.abort()
    assert await get(io, "/keep.txt") == b"old content"
    assert await names(io, "/") == {"keep.txt": False}


async def test_write_keeps_no_reference_to_the_buffer(io: AbstractPathIO) -> None:
    buffer = bytearray(b"a" * 4096)
    stream = await io.open_write("/ref.txt")
    await stream.write(buffer)
    await stream.write(memoryview(buffer)[:10])
    buffer[:] = b"b" * 4096
    await stream.commit()
    assert await get(io, "/ref.txt") == b"a" * 4106


async def test_restart_and_append(io: AbstractPathIO) -> None:
    await put(io, "/r.txt", b"0123456789")
    stream = await io.open_write("/r.txt", offset=4)
    await stream.write(b"abc")
    await stream.commit()
    assert await get(io, "/r.txt") == b"0123abc"
    stream = await io.open_write("/r.txt", append=True)
    await stream.write(b"XYZ")
    await stream.commit()
    assert await get(io, "/r.txt") == b"0123abcXYZ"
    stream = await io.open_write("/new-append.txt", append=True)
    await stream.write(b"first")
    await stream.commit()
    assert await get(io, "/new-append.txt") == b"first"


async def test_append_to_a_large_file(io: AbstractPathIO) -> None:
    data = os.urandom(6 * MiB + 5)  # S3: the kept prefix is copied server-side
    await put(io, "/a.bin", data)
    stream = await io.open_write("/a.bin", append=True)
    await stream.write(b"tail")
    await stream.commit()
    assert sha(await get(io, "/a.bin")) == sha(data + b"tail")


async def test_directories(io: AbstractPathIO) -> None:
    await io.mkdir("/d")
    await io.mkdir("/d/e")
    assert (await io.stat("/d")).is_dir
    assert await names(io, "/") == {"d": True}
    assert await names(io, "/d") == {"e": True}
    assert await names(io, "/d/e") == {}
    with pytest.raises(FileExistsError):
        await io.mkdir("/d")
    with pytest.raises(FileNotFoundError):
        await io.mkdir("/missing/child")
    await put(io, "/d/e/f.txt", b"f")
    with pytest.raises(OSError) as info:
        await io.rmdir("/d/e")
    assert info.value.errno == errno.ENOTEMPTY
    await io.unlink("/d/e/f.txt")
    await io.rmdir("/d/e")
    await io.rmdir("/d")
    assert await names(io, "/") == {}


async def test_file_and_directory_of_one_name(io: AbstractPathIO) -> None:
    await put(io, "/x", b"file")
    with pytest.raises(FileExistsError):
        await io.mkdir("/x")
    await io.mkdir("/y")
    with pytest.raises(IsADirectoryError):
        await io.open_write("/y")
    with pytest.raises((NotADirectoryError, FileNotFoundError)):
        await io.open_write("/x/child")
    with pytest.raises(NotADirectoryError):
        [e async for e in io.list("/x")]
    with pytest.raises(NotADirectoryError):
        await io.rmdir("/x")
    with pytest.raises(IsADirectoryError):
        await io.unlink("/y")
    with pytest.raises(IsADirectoryError):
        await io.open_read("/y")


async def test_rename_file_and_directory(io: AbstractPathIO) -> None:
    await put(io, "/a.txt", b"alpha")
    await io.rename("/a.txt", "/b.txt")
    assert await names(io, "/") == {"b.txt": False}
    assert await get(io, "/b.txt") == b"alpha"
    await put(io, "/c.txt", b"gamma")
    await io.rename("/c.txt", "/b.txt")  # replaces, like POSIX rename
    assert await get(io, "/b.txt") == b"gamma"
    await io.mkdir("/dir")
    await io.mkdir("/dir/sub")
    await put(io, "/dir/sub/x", b"x")
    await put(io, "/dir/y", b"y")
    await io.rename("/dir", "/moved")
    assert await names(io, "/") == {"b.txt": False, "moved": True}
    assert await names(io, "/moved") == {"sub": True, "y": False}
    assert await get(io, "/moved/sub/x") == b"x"
    with pytest.raises(IsADirectoryError):
        await io.rename("/b.txt", "/moved")
    with pytest.raises((FileNotFoundError, NotADirectoryError)):
        await io.rename("/b.txt", "/nowhere/b.txt")


async def test_set_mtime_or_refuse(io: AbstractPathIO) -> None:
    await put(io, "/t.txt", b"t")
    try:
        await io.set_mtime("/t.txt", 1_000_000_000.0)
    except NotImplementedError:
        return  # S3, memory: no settable mtime (502)
    assert abs((await io.stat("/t.txt")).mtime - 1_000_000_000.0) < 1


async def test_size_of_a_directory_is_refused(io: AbstractPathIO) -> None:
    await io.mkdir("/d")
    with pytest.raises(IsADirectoryError):
        await io.size("/d")


async def test_many_readers_of_one_file_each_keep_their_own_position(io: AbstractPathIO) -> None:
    # fsspec's memory filesystem hands every reader the same file object: readers that
    # trusted its position each got a different, wrong share of the file.
    data = os.urandom(2 * MiB + 333)
    await put(io, "/shared.bin", data)
    offsets = [0, 0, 1, 4096, 65536 + 7, MiB, 2 * MiB, len(data)]
    streams = [await io.open_read("/shared.bin", offset) for offset in offsets]
    got = [bytearray() for _ in streams]
    try:
        # Round robin in blocks of different sizes: every read of one stream comes
        # between reads of all the others.
        live = set(range(len(streams)))
        while live:
            for i in sorted(live):
                block = await streams[i].read(16 * 1024 + 1000 * i)
                if block:
                    got[i] += block
                else:
                    live.discard(i)
    finally:
        for stream in streams:
            await stream.close()
    for offset, out in zip(offsets, got, strict=True):
        assert sha(bytes(out)) == sha(data[offset:]), offset
    # and all at once, as concurrent downloads do (worker threads on local disk)
    results = await asyncio.gather(*(get(io, "/shared.bin", offset) for offset in offsets))
    for offset, out in zip(offsets, results, strict=True):
        assert sha(out) == sha(data[offset:]), offset


async def test_prefix_copy_while_others_read(io: AbstractPathIO) -> None:
    # APPE and REST+STOR read the old file while downloads of it go on.
    data = os.urandom(MiB + 99)
    await put(io, "/p.bin", data)
    reader = await io.open_read("/p.bin")
    first = await reader.read(100_000)
    writer = await io.open_write("/p.bin", append=True)
    await writer.write(b"tail")
    rest = bytearray()
    while block := await reader.read(64 * 1024):
        rest += block
    await reader.close()
    await writer.commit()
    assert sha(first + bytes(rest)) == sha(data)
    assert sha(await get(io, "/p.bin")) == sha(data + b"tail")


@pytest.mark.parametrize("replace", ["upload", "rename"])
async def test_a_reader_during_an_overwrite_sees_one_whole_version(io: AbstractPathIO, replace: str) -> None:
    old = os.urandom(3 * MiB + 1)
    new = os.urandom(2 * MiB + 2)
    await put(io, "/v.bin", old)
    reader = await io.open_read("/v.bin")
    out = bytearray(await reader.read(64 * 1024))
    if replace == "upload":
        await put(io, "/v.bin", new)
    else:
        await put(io, "/other.bin", new)
        await io.rename("/other.bin", "/v.bin")
    try:
        while block := await reader.read(64 * 1024):
            out += block
    except OSError:
        pass  # refusing to go on is honest (S3: the ETag the download is pinned to changed)
    else:
        assert sha(bytes(out)) in (sha(old), sha(new))  # never a mix, never cut short
    finally:
        await reader.close()
    assert sha(await get(io, "/v.bin")) == sha(new)
