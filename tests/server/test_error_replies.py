"""Every reply code in the errno -> reply table, provoked through a real client by a
fault-injecting storage backend (a local PathIO that fails on request)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import fsftpd
from fsftpd.protocol import errors
from fsftpd.protocol.listing import Entry
from fsftpd.storage.base import ReadStream, StorageContext, WriteStream
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all

CLASS_FAULTS: dict[str, BaseException] = {
    "FileNotFoundError": FileNotFoundError("gone"),
    "FileExistsError": FileExistsError("there"),
    "IsADirectoryError": IsADirectoryError("a dir"),
    "NotADirectoryError": NotADirectoryError("a file"),
    "PermissionError": PermissionError("denied"),
    "TimeoutError": TimeoutError(),
    "ConnectionError": ConnectionError("backend down"),
    "NotImplementedError": NotImplementedError("cannot"),
    "OSError": OSError("odd"),
    "RuntimeError": RuntimeError("internal bug"),
}
CLASS_CODES = {
    "FileNotFoundError": 550,
    "FileExistsError": 550,
    "IsADirectoryError": 550,
    "NotADirectoryError": 550,
    "PermissionError": 550,
    "TimeoutError": 451,
    "ConnectionError": 451,
    "NotImplementedError": 502,
    "OSError": 451,
    "RuntimeError": 451,
}


def fault_for(path: str, kind: str) -> BaseException | None:
    """``/x/<kind>-ENOSPC`` raises OSError(ENOSPC); ``<kind>-PermissionError`` that class."""
    name = path.rpartition("/")[2]
    if not name.startswith(kind + "-"):
        return None
    what = name[len(kind) + 1 :]
    if what in CLASS_FAULTS:
        return CLASS_FAULTS[what]
    number = getattr(errno, what)
    return OSError(number, f"injected {what}")


class FaultyWrite(WriteStream):
    def __init__(self, inner: WriteStream, fault: BaseException | None, at_commit: bool) -> None:
        self.inner, self.fault, self.at_commit = inner, fault, at_commit
        self.written = 0
        self.slow_commit = False

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        if self.fault is not None and not self.at_commit and self.written > 100_000:
            raise self.fault
        await self.inner.write(data)

    async def commit(self) -> None:
        if self.fault is not None and self.at_commit:
            raise self.fault
        if self.slow_commit:
            await asyncio.sleep(0.5)  # e.g. completing a large multipart upload
        await self.inner.commit()

    async def abort(self) -> None:
        await self.inner.abort()


class FaultyRead(ReadStream):
    def __init__(self, inner: ReadStream, fault: BaseException | None) -> None:
        self.inner, self.fault = inner, fault
        self.sent = 0

    async def read(self, size: int) -> bytes:
        if self.fault is not None and self.sent > 100_000:
            raise self.fault
        data = await self.inner.read(size)
        self.sent += len(data)
        return data

    async def close(self) -> None:
        await self.inner.close()


class FaultyPathIO(fsftpd.PathIO):
    def _check(self, path: str, kind: str = "fault") -> None:
        fault = fault_for(path, kind)
        if fault is not None:
            raise fault

    async def stat(self, path: str) -> Entry:
        self._check(path)
        return await super().stat(path)

    async def list(self, path: str) -> AsyncIterator[Entry]:
        self._check(path, "listfault")
        async for entry in super().list(path):
            yield entry

    async def mkdir(self, path: str) -> None:
        self._check(path)
        await super().mkdir(path)

    async def rename(self, source: str, target: str) -> None:
        self._check(target)
        await super().rename(source, target)

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        return FaultyRead(await super().open_read(path, offset), fault_for(path, "readfault"))

    async def open_read_sized(self, path: str, offset: int = 0) -> tuple[ReadStream, int]:
        reader, size = await super().open_read_sized(path, offset)
        if not isinstance(reader, FaultyRead):
            reader = FaultyRead(reader, fault_for(path, "readfault"))
        return reader, size

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        self._check(path, "openfault")
        inner = await super().open_write(path, offset=offset, append=append)
        commit_fault = fault_for(path, "commitfault")
        if commit_fault is not None:
            return FaultyWrite(inner, commit_fault, at_commit=True)
        stream = FaultyWrite(inner, fault_for(path, "writefault"), at_commit=False)
        stream.slow_commit = path.rpartition("/")[2].startswith("slowcommit")
        return stream


def _factory(base_path: str, *, storage_options: dict[str, Any], context: StorageContext) -> FaultyPathIO:
    return FaultyPathIO(base_path)


@pytest.fixture
def faulty(home: Path) -> Iterator[ServerThread]:
    with running_server(
        [fsftpd.User("alice", "secret", base_path=str(home))], path_io_factory=_factory
    ) as srv:
        yield srv


ERRNO_CASES = sorted((errno.errorcode[n], code) for n, (code, _) in errors._ERRNO_TABLE.items())


def test_every_table_entry_is_covered() -> None:
    assert {name for name, _ in ERRNO_CASES} == {errno.errorcode[n] for n in errors._ERRNO_TABLE}
    table_classes = {cls.__name__ for cls, _ in errors._CLASS_TABLE}
    assert table_classes <= set(CLASS_FAULTS)


@pytest.mark.parametrize(("name", "code"), ERRNO_CASES + sorted(CLASS_CODES.items()))
def test_storage_error_reply(faulty: ServerThread, home: Path, name: str, code: int) -> None:
    with Raw(faulty.host, faulty.port) as raw:
        raw.login("alice", "secret")
        # Metadata commands (stat).
        for cmd in (
            f"SIZE fault-{name}",
            f"MDTM fault-{name}",
            f"MLST fault-{name}",
            f"CWD fault-{name}",
            f"MKD fault-{name}",
        ):
            reply_code, text = raw.cmd(cmd)
            assert reply_code == code, (cmd, reply_code, text)
            assert "internal bug" not in text  # internals never leak
        (home / "src").write_bytes(b"s")
        assert raw.code("RNFR src") == 350
        assert raw.code(f"RNTO fault-{name}") == code
        # Upload refused before 150: nothing is created.
        raw.epsv().close()
        assert raw.code(f"STOR openfault-{name}") == code
        # A listing that fails after 150.
        (home / f"listfault-{name}").mkdir()
        data = raw.epsv()
        assert raw.cmd(f"MLSD listfault-{name}")[0] == 150
        recv_all(data)
        assert raw.read()[0] == code
        assert raw.code("NOOP") == 200
    assert sorted(p.name for p in home.iterdir()) == [f"listfault-{name}", "src"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("ENOSPC", 552),
        ("EDQUOT", 552),
        ("EFBIG", 552),
        ("EIO", 451),
        ("PermissionError", 550),
        ("TimeoutError", 451),
    ],
)
@pytest.mark.parametrize("when", ["writefault", "commitfault"])
def test_upload_failing_mid_transfer(
    faulty: ServerThread, home: Path, name: str, code: int, when: str
) -> None:
    target = f"{when}-{name}"
    (home / target).write_bytes(b"previous version")
    with Raw(faulty.host, faulty.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.cmd(f"STOR {target}")[0] == 150
        try:
            data.sendall(os.urandom(3 * 1024 * 1024))
        except OSError:
            pass  # the server may close the data connection as soon as storage fails
        data.close()
        reply_code, text = raw.read()
        assert reply_code == code, text  # never 226
        assert raw.code("NOOP") == 200
    assert (home / target).read_bytes() == b"previous version"
    assert sorted(p.name for p in home.iterdir()) == [target]  # no temp file


@pytest.mark.parametrize(("name", "code"), [("EIO", 451), ("ETIMEDOUT", 451), ("ConnectionError", 451)])
def test_download_failing_mid_transfer(faulty: ServerThread, home: Path, name: str, code: int) -> None:
    (home / f"readfault-{name}").write_bytes(os.urandom(1024 * 1024))
    with Raw(faulty.host, faulty.port) as raw:
        raw.login("alice", "secret")
        raw.cmd("TYPE A")  # not the sendfile path: blocks go through read()
        data = raw.epsv()
        assert raw.cmd(f"RETR readfault-{name}")[0] == 150
        received = recv_all(data)
        assert len(received) < 1024 * 1024 * 2
        assert raw.read()[0] == code  # never 226 for a short download
        assert raw.code("NOOP") == 200


def test_abor_while_the_upload_is_being_committed(faulty: ServerThread, home: Path) -> None:
    # All data arrived and the client closed cleanly; ABOR comes while storage commits.
    # Cancelling the commit could report 426 for a file that ends up committed anyway.
    payload = os.urandom(1024 * 1024)
    with Raw(faulty.host, faulty.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.cmd("STOR slowcommit")[0] == 150
        data.sendall(payload)
        data.close()
        time.sleep(0.2)  # the server has seen EOF and is inside the slow commit
        codes = [raw.cmd("ABOR")[0]]
        codes.append(raw.read()[0])
        assert raw.code("NOOP") == 200
    # Too late to abort: the commit finishes (226), then ABOR finds nothing to abort (225).
    assert codes == [226, 225]
    assert (home / "slowcommit").read_bytes() == payload
    assert sorted(p.name for p in home.iterdir()) == ["slowcommit"]
