"""Several FTP clients at once on a few shared names, on every kind of home (local disk,
memory, S3 on moto and on SeaweedFS): RETR, REST+RETR, STOR, APPE and RNFR/RNTO mixed at
random, bounded in count and time.

Every upload body is made of 4 KiB blocks that name their upload, their index and the
body's length, so any byte string can be checked without knowing the order things
happened in: a file is a run of whole bodies of uploads that ended 226 (STOR replaces, APPE
adds one, a rename moves the lot). Checked:
- every download that ends 226 is such a file (after REST n: its suffix from a block
  boundary), never bytes of an upload that failed, never a mix cut at random;
- every upload that ends 226 is still in some file at the end, unless an operation on its
  name that ended after it started may have replaced or moved it.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import random
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import ServerThread, running_server
from tests.s3.fixtures import HOMES, user_on

pytestmark = pytest.mark.timeout(180)

NAMES = ["a.bin", "b.bin", "c.bin"]
BLOCK = 4096
HEADER = struct.Struct("!QII")  # upload id, block index, blocks in the body
CLIENTS = 4
OPERATIONS = 14  # per client
MAX_BLOCKS = 96  # a body is at most 384 KiB
DEADLINE = 90.0  # seconds for all the clients together


def block(upload: int, index: int, count: int) -> bytes:
    header = HEADER.pack(upload, index, count)
    return header + hashlib.shake_128(header).digest(BLOCK - HEADER.size)


def body(upload: int, count: int) -> bytes:
    return b"".join(block(upload, i, count) for i in range(count))


def uploads_in(data: bytes, *, suffix: bool = False) -> list[int]:
    """The uploads whose bodies ``data`` is made of, in order; AssertionError if it is not
    a run of whole bodies (``suffix``: the first may start at any block)."""
    assert len(data) % BLOCK == 0, f"{len(data)} bytes: not whole blocks"
    found: list[int] = []
    expect: tuple[int, int, int] | None = None  # the block that must come next
    for start in range(0, len(data), BLOCK):
        piece = data[start : start + BLOCK]
        upload, index, count = HEADER.unpack_from(piece)
        assert piece == block(upload, index, count), f"block at {start}: corrupt"
        if expect is None:
            assert index == 0 or (suffix and start == 0 and index < count), f"block at {start}: mid-body"
            found.append(upload)
        else:
            assert (upload, index, count) == expect, f"block at {start}: {upload, index} instead of {expect}"
        expect = (upload, index + 1, count) if index + 1 < count else None
    assert expect is None, "the last body is cut short"
    return found


@dataclass
class Op:
    kind: str  # STOR APPE RETR REST RENAME
    name: str
    started: float
    ended: float = 0.0
    code: int = 0
    upload: int = 0  # STOR, APPE
    target: str = ""  # RENAME
    offset: int = 0  # REST
    data: bytes = b""  # RETR, REST: what came, when the reply was 226


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: list[Op] = field(default_factory=list)
    next_upload: int = 1

    def new_upload(self) -> int:
        with self.lock:
            self.next_upload += 1
            return self.next_upload

    def add(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)


def code_of(exc: BaseException) -> int:
    text = str(exc)
    return int(text[:3]) if text[:3].isdigit() else 0


def run_op(ftp: ftplib.FTP, rng: random.Random, log: Log) -> None:
    kind = rng.choice(["STOR", "STOR", "APPE", "RETR", "RETR", "REST", "RENAME"])
    op = Op(kind, rng.choice(NAMES), time.monotonic())
    try:
        if kind in ("STOR", "APPE"):
            op.upload = log.new_upload()
            data = body(op.upload, rng.randint(1, MAX_BLOCKS))
            reply = ftp.storbinary(f"{kind} {op.name}", io.BytesIO(data))
            op.code = int(reply[:3])
        elif kind == "RENAME":
            op.target = rng.choice([n for n in NAMES if n != op.name])
            ftp.sendcmd(f"RNFR {op.name}")
            op.code = int(ftp.sendcmd(f"RNTO {op.target}")[:3])
        else:
            if kind == "REST":
                size = ftp.size(op.name) or 0
                op.offset = BLOCK * rng.randint(0, size // BLOCK)
            out = io.BytesIO()
            reply = ftp.retrbinary(f"RETR {op.name}", out.write, rest=op.offset if kind == "REST" else None)
            op.code = int(reply[:3])
            op.data = out.getvalue()
    except ftplib.error_reply as exc:
        op.code = code_of(exc)
    except (ftplib.error_temp, ftplib.error_perm) as exc:
        op.code = code_of(exc)
    op.ended = time.monotonic()
    log.add(op)


def client(srv: ServerThread, seed: int, log: Log, errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + DEADLINE
    try:
        ftp = srv.ftp("alice", "secret")
        try:
            for _ in range(OPERATIONS):
                if time.monotonic() > deadline:
                    break
                run_op(ftp, rng, log)
            ftp.quit()
        finally:
            ftp.close()
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


@pytest.fixture(params=HOMES)
def home_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    with running_server([user_on(request.param, tmp_path)]) as srv:
        yield srv


def test_concurrent_clients_on_shared_names_see_only_whole_versions(home_server: ServerThread) -> None:
    srv = home_server
    seed = int.from_bytes(os.urandom(4), "big")
    log = Log()
    ftp = srv.ftp("alice", "secret")
    for name in NAMES:  # every name starts with a version
        upload = log.new_upload()
        op = Op("STOR", name, time.monotonic(), upload=upload)
        op.code = int(ftp.storbinary(f"STOR {name}", io.BytesIO(body(upload, 8)))[:3])
        op.ended = time.monotonic()
        log.add(op)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=client, args=(srv, seed + i, log, errors)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE + 60)
    assert not errors, (seed, errors)
    assert not any(thread.is_alive() for thread in threads)

    ops = log.ops
    completed = {op.upload for op in ops if op.kind in ("STOR", "APPE") and op.code == 226}
    failed = {op.upload for op in ops if op.kind in ("STOR", "APPE") and op.code != 226}
    for op in ops:
        assert op.code in (226, 250, 450, 451, 550, 554), (seed, op.kind, op.name, op.code)
        if op.kind in ("RETR", "REST") and op.code == 226:
            seen = uploads_in(op.data, suffix=op.kind == "REST")
            assert set(seen) <= completed, (seed, op.kind, op.name, set(seen) - completed)
    final: dict[str, list[int]] = {}
    for name in NAMES:
        out = io.BytesIO()
        try:
            ftp.retrbinary(f"RETR {name}", out.write)
        except ftplib.error_perm as exc:
            assert code_of(exc) == 550, exc  # renamed away
            continue
        final[name] = uploads_in(out.getvalue())
    ftp.quit()
    visible = {upload for uploads in final.values() for upload in uploads}
    assert visible <= completed and not visible & failed, seed
    for op in ops:
        if op.kind not in ("STOR", "APPE") or op.code != 226 or op.upload in visible:
            continue
        # Gone: only an operation on that name that ended after this one started can
        # have replaced it (STOR, APPE copying an older prefix) or moved it (RNFR, RNTO).
        assert any(
            other is not op and other.ended > op.started and other.code in (226, 250)
            and op.name in ((other.name, other.target) if other.kind == "RENAME" else
                            (other.name,) if other.kind in ("STOR", "APPE") else ())
            for other in ops
        ), (seed, op.kind, op.name, op.upload)
