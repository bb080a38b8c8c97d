"""FTP acceptance on S3 homes: real clients (ftplib, curl, aioftp) against a real server
whose homes live on real S3 endpoints (moto, SeaweedFS) on loopback. Contents are checked
by sha256 through FTP and directly in the bucket."""

from __future__ import annotations

import asyncio
import ftplib
import hashlib
import io
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fsftpd
from fsftpd.server.events import TransferFinished
from tests.harness import ServerThread, running_server
from tests.s3.endpoints import S3Endpoint
from tests.server.rawftp import rst, wait_until

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
PREFIX = "homes/alice/"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_user(endpoint: S3Endpoint, bucket: str, **options: Any) -> fsftpd.User:
    return fsftpd.User("alice", "secret", base_path=f"s3://{bucket}/{PREFIX}",
                       storage_options=endpoint.options(**options))


@pytest.fixture
def s3_server(s3_endpoint: S3Endpoint, bucket: str) -> Iterator[ServerThread]:
    with running_server([s3_user(s3_endpoint, bucket)]) as srv:
        yield srv


def object_bytes(endpoint: S3Endpoint, bucket: str, key: str) -> bytes:
    return bytes(endpoint.boto().get_object(Bucket=bucket, Key=PREFIX + key)["Body"].read())


def keys(endpoint: S3Endpoint, bucket: str) -> list[str]:
    reply = endpoint.boto().list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in reply.get("Contents", [])]


def open_uploads(endpoint: S3Endpoint, bucket: str) -> list[str]:
    reply = endpoint.boto().list_multipart_uploads(Bucket=bucket)
    return [item["Key"] for item in reply.get("Uploads", [])]


def retr(ftp: ftplib.FTP, name: str, rest: int | None = None) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write, rest=rest)
    return out.getvalue()


def test_stor_retr_rest(s3_server: ServerThread, s3_endpoint: S3Endpoint, bucket: str) -> None:
    small, large = os.urandom(1000), os.urandom(12 * MiB + 3)
    ftp = s3_server.ftp("alice", "secret")
    assert ftp.storbinary("STOR small.txt", io.BytesIO(small)).startswith("226")
    assert ftp.storbinary("STOR large.bin", io.BytesIO(large)).startswith("226")
    assert sha(object_bytes(s3_endpoint, bucket, "large.bin")) == sha(large)
    assert object_bytes(s3_endpoint, bucket, "small.txt") == small
    assert sha(retr(ftp, "large.bin")) == sha(large)
    assert sha(retr(ftp, "large.bin", rest=7 * MiB + 1)) == sha(large[7 * MiB + 1 :])
    assert ftp.size("large.bin") == len(large)
    assert ftp.sendcmd("MDTM large.bin").startswith("213 ")
    with pytest.raises(ftplib.error_perm, match=r"^502"):
        ftp.sendcmd("MFMT 20200101000000 large.bin")
    assert sorted(ftp.nlst()) == ["large.bin", "small.txt"]
    assert open_uploads(s3_endpoint, bucket) == []
    ftp.quit()


def test_directories(s3_server: ServerThread, s3_endpoint: S3Endpoint, bucket: str) -> None:
    ftp = s3_server.ftp("alice", "secret")
    assert ftp.mkd("docs") == "/docs"
    assert PREFIX + "docs/" in keys(s3_endpoint, bucket)  # the marker object
    assert ftp.nlst() == ["docs"]
    assert ftp.nlst("docs") == []  # the marker never shows
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert len(lines) == 1 and lines[0].startswith("d") and lines[0].endswith(" docs")
    assert {name: facts["type"] for name, facts in ftp.mlsd()} == {"docs": "dir"}
    ftp.cwd("docs")
    ftp.storbinary("STOR a.txt", io.BytesIO(b"a"))
    ftp.cwd("/")
    with pytest.raises(ftplib.error_perm, match=r"^550.*not empty"):
        ftp.rmd("docs")
    # A file and a directory of one name cannot be made through FTP.
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.storbinary("STOR docs", io.BytesIO(b"x"))
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.mkd("docs/a.txt")
    # A directory that exists only as a prefix (written by another tool) is listed and
    # enterable.
    s3_endpoint.boto().put_object(Bucket=bucket, Key=PREFIX + "imported/deep/file.bin", Body=b"imp")
    assert sorted(ftp.nlst()) == ["docs", "imported"]
    ftp.cwd("/imported/deep")
    assert retr(ftp, "file.bin") == b"imp"
    ftp.cwd("/")
    ftp.delete("docs/a.txt")
    ftp.rmd("docs")
    assert PREFIX + "docs/" not in keys(s3_endpoint, bucket)
    assert ftp.nlst() == ["imported"]
    ftp.quit()


def test_rename(s3_endpoint: S3Endpoint, bucket: str) -> None:
    with running_server([s3_user(s3_endpoint, bucket, max_rename_objects=3)]) as srv:
        ftp = srv.ftp("alice", "secret")
        ftp.storbinary("STOR a.txt", io.BytesIO(b"alpha"))
        ftp.rename("a.txt", "b.txt")
        assert ftp.nlst() == ["b.txt"]
        assert retr(ftp, "b.txt") == b"alpha"
        ftp.mkd("small")
        ftp.storbinary("STOR small/1", io.BytesIO(b"1"))
        ftp.rename("small", "moved")
        assert sorted(ftp.nlst()) == ["b.txt", "moved"]
        assert retr(ftp, "moved/1") == b"1"
        ftp.mkd("big")
        for i in range(4):
            ftp.storbinary(f"STOR big/{i}", io.BytesIO(b"x"))
        with pytest.raises(ftplib.error_perm, match=r"^550.*more than 3 objects"):
            ftp.rename("big", "big2")
        assert sorted(ftp.nlst("big")) == ["0", "1", "2", "3"]  # source intact
        assert "big2" not in ftp.nlst()
        ftp.quit()


def test_appe_and_rest_stor(s3_server: ServerThread, s3_endpoint: S3Endpoint, bucket: str) -> None:
    ftp = s3_server.ftp("alice", "secret")
    ftp.storbinary("APPE log.txt", io.BytesIO(b"one\n"))
    ftp.storbinary("APPE log.txt", io.BytesIO(b"two\n"))
    assert retr(ftp, "log.txt") == b"one\ntwo\n"
    base = os.urandom(6 * MiB)  # kept by a server-side UploadPartCopy
    ftp.storbinary("STOR big.bin", io.BytesIO(base))
    ftp.storbinary("APPE big.bin", io.BytesIO(b"tail"))
    assert sha(object_bytes(s3_endpoint, bucket, "big.bin")) == sha(base + b"tail")
    # REST n + STOR on a committed object keeps its first n bytes (copied server-side).
    keep = 6 * MiB - 2
    ftp.storbinary("STOR big.bin", io.BytesIO(b"NEW"), rest=keep)
    assert sha(retr(ftp, "big.bin")) == sha(base[:keep] + b"NEW")
    ftp.storbinary("STOR log.txt", io.BytesIO(b"ON"), rest=2)
    assert retr(ftp, "log.txt") == b"onON"
    assert open_uploads(s3_endpoint, bucket) == []
    ftp.quit()


def interrupted_stor(srv: ServerThread, name: str, data: bytes, endpoint: S3Endpoint,
                     bucket: str, min_parts: int = 1) -> None:
    """Send ``data`` with STOR, wait until S3 holds ``min_parts`` parts of it, then reset
    the data connection the way a crashed client or a broken network does."""
    ftp = srv.ftp("alice", "secret")
    conn = ftp.transfercmd(f"STOR {name}")
    sender = threading.Thread(target=lambda: _send_quietly(conn, data), daemon=True)
    sender.start()
    client = endpoint.boto()

    def parts() -> int:
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            if upload["Key"] == PREFIX + name:
                found = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                return len(found.get("Parts", []))
        return 0

    assert wait_until(lambda: parts() >= min_parts, timeout=20)
    rst(conn)
    sender.join(timeout=10)
    with pytest.raises(ftplib.error_temp, match=r"^426"):
        ftp.voidresp()
    ftp.quit()


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    try:
        conn.sendall(data)
    except OSError:
        pass


def test_resume_interrupted_upload(s3_endpoint: S3Endpoint, bucket: str) -> None:
    data = os.urandom(12 * MiB + 11)
    with running_server([s3_user(s3_endpoint, bucket)]) as srv:
        interrupted_stor(srv, "iso.img", data, s3_endpoint, bucket)
        ftp = srv.ftp("alice", "secret")
        # Nothing partial is visible...
        assert ftp.nlst() == []
        assert PREFIX + "iso.img" not in keys(s3_endpoint, bucket)
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            retr(ftp, "iso.img")
        # ...but SIZE tells how much the server holds: whole 5 MiB parts.
        held = ftp.size("iso.img")
        assert held is not None and held > 0 and held % (5 * MiB) == 0
        # REST n + STOR sends only the rest.
        reply = ftp.storbinary("STOR iso.img", io.BytesIO(data[held:]), rest=held)
        assert reply.startswith("226")
        assert sha(retr(ftp, "iso.img")) == sha(data)
        assert sha(object_bytes(s3_endpoint, bucket, "iso.img")) == sha(data)
        assert open_uploads(s3_endpoint, bucket) == []
        ftp.quit()


def test_resume_with_curl(moto_endpoint: S3Endpoint, moto_bucket: str, tmp_path: Path) -> None:
    data = os.urandom(11 * MiB)
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    with running_server([s3_user(moto_endpoint, moto_bucket)]) as srv:
        interrupted_stor(srv, "c.bin", data, moto_endpoint, moto_bucket)
        ftp = srv.ftp("alice", "secret")
        held = ftp.size("c.bin")
        ftp.quit()
        assert held is not None and held > 0
        finished: list[TransferFinished] = []
        srv.call(lambda server: server.events.subscribe(
            lambda event: finished.append(event) if isinstance(event, TransferFinished) else None))
        # curl -C - asks SIZE, then APPEs the rest of the local file.
        url = f"ftp://alice:secret@127.0.0.1:{srv.port}/c.bin"
        done = subprocess.run(["curl", "-sS", "--fail", "-C", "-", "-T", str(source), url],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert [(e.verb, e.bytes, e.code) for e in finished] == [("APPE", len(data) - held, 226)]
        target = tmp_path / "download.bin"
        done = subprocess.run(["curl", "-sS", "--fail", "-o", str(target), url],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert sha(target.read_bytes()) == sha(data)
        assert open_uploads(moto_endpoint, moto_bucket) == []


def test_restart_offset_that_cannot_resume(moto_endpoint: S3Endpoint, moto_bucket: str) -> None:
    data = os.urandom(11 * MiB)
    with running_server([s3_user(moto_endpoint, moto_bucket)]) as srv:
        interrupted_stor(srv, "x.bin", data, moto_endpoint, moto_bucket)
        ftp = srv.ftp("alice", "secret")
        with pytest.raises(ftplib.error_perm, match=r"^554"):
            ftp.storbinary("STOR x.bin", io.BytesIO(b"z"), rest=123)
        held = ftp.size("x.bin")  # the interrupted upload is still there
        assert held is not None and held > 0
        # A plain STOR starts over and discards it.
        ftp.storbinary("STOR x.bin", io.BytesIO(b"fresh"))
        assert retr(ftp, "x.bin") == b"fresh"
        assert open_uploads(moto_endpoint, moto_bucket) == []
        ftp.quit()


def test_concurrent_writers_refused(moto_endpoint: S3Endpoint, moto_bucket: str) -> None:
    with running_server([s3_user(moto_endpoint, moto_bucket)]) as srv:
        first = srv.ftp("alice", "secret")
        conn = first.transfercmd("STOR shared.bin")
        conn.sendall(b"A" * MiB)
        second = srv.ftp("alice", "secret")
        with pytest.raises(ftplib.error_temp, match=r"^450"):
            second.storbinary("STOR shared.bin", io.BytesIO(b"B" * 100))
        conn.sendall(b"A" * MiB)
        conn.close()
        assert first.voidresp().startswith("226")
        assert retr(second, "shared.bin") == b"A" * (2 * MiB)
        first.quit()
        second.quit()


def test_two_servers_see_each_others_writes(moto_endpoint: S3Endpoint, moto_bucket: str) -> None:
    user_a, user_b = s3_user(moto_endpoint, moto_bucket), s3_user(moto_endpoint, moto_bucket)
    with running_server([user_a]) as a, running_server([user_b]) as b:
        ftp_a, ftp_b = a.ftp("alice", "secret"), b.ftp("alice", "secret")
        assert ftp_b.nlst() == []
        ftp_a.storbinary("STOR one.txt", io.BytesIO(b"1"))
        ftp_a.mkd("d")
        assert sorted(ftp_b.nlst()) == ["d", "one.txt"]
        ftp_b.delete("one.txt")
        ftp_b.rmd("d")
        assert ftp_a.nlst() == []
        ftp_a.quit()
        ftp_b.quit()


def test_curl_and_aioftp(s3_server: ServerThread, tmp_path: Path) -> None:
    data = os.urandom(6 * MiB + 1)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    base = f"ftp://alice:secret@127.0.0.1:{s3_server.port}"
    done = subprocess.run(["curl", "-sS", "--fail", "--ftp-create-dirs", "-T", str(source),
                           f"{base}/sub/curl.bin"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "back.bin"
    done = subprocess.run(["curl", "-sS", "--fail", "-o", str(target), f"{base}/sub/curl.bin"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sha(target.read_bytes()) == sha(data)

    async def with_aioftp() -> bytes:
        import aioftp

        async with aioftp.Client.context("127.0.0.1", s3_server.port, "alice", "secret") as client:
            async with client.upload_stream("sub/aio.bin") as stream:
                for start in range(0, len(data), MiB):
                    await stream.write(data[start : start + MiB])
            names = [str(path.name) for path, _ in await client.list("sub")]
            assert sorted(names) == ["aio.bin", "curl.bin"]
            out = bytearray()
            async with client.download_stream("sub/aio.bin") as stream:
                async for block in stream.iter_by_block():
                    out += block
            return bytes(out)

    assert sha(asyncio.run(with_aioftp())) == sha(data)


def test_abor_during_stor(moto_endpoint: S3Endpoint, moto_bucket: str) -> None:
    with running_server([s3_user(moto_endpoint, moto_bucket)]) as srv:
        ftp = srv.ftp("alice", "secret")
        ftp.storbinary("STOR keep.bin", io.BytesIO(b"old"))
        conn = ftp.transfercmd("STOR keep.bin")
        conn.sendall(os.urandom(7 * MiB))
        assert wait_until(lambda: open_uploads(moto_endpoint, moto_bucket) == [PREFIX + "keep.bin"])
        assert ftp.abort().startswith("426")  # the transfer's reply...
        assert ftp.getresp().startswith("226")  # ...then ABOR's
        conn.close()
        assert retr(ftp, "keep.bin") == b"old"  # the old object is untouched
        assert object_bytes(moto_endpoint, moto_bucket, "keep.bin") == b"old"
        assert ftp.nlst() == ["keep.bin"]
        ftp.quit()
