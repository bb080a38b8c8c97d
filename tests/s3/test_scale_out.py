"""Scale-out on S3: several ``fsftpd`` processes (the appliance command, as replicas run
it) on one bucket behave as one server. Interrupted uploads are resumed through another
process and after a restart, expire on whichever process sees them first, other tools'
uploads are left alone, concurrent writers never mix parts, and every process sees what
another completed. Real processes, real clients (ftplib, curl), real S3 (moto, SeaweedFS)."""

from __future__ import annotations

import ftplib
import hashlib
import io
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance.proc import Fsftpd, base_env
from tests.s3.endpoints import S3Endpoint
from tests.server.rawftp import rst, wait_until

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
HOME = "homes/alice"
KEY_PREFIX = HOME + "/"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replica_env(tmp: Path, endpoint: S3Endpoint, bucket: str, **options: Any) -> dict[str, str]:
    return base_env(tmp, FSFTPD_HOME=f"s3://{bucket}/{HOME}", FSFTPD_USER="alice",
                    FSFTPD_PASSWORD="secret",
                    FSFTPD_STORAGE_OPTIONS=json.dumps(endpoint.options(**options)))


class Replicas:
    """Replica processes started on demand, all killed at the end."""

    def __init__(self, tmp: Path, endpoint: S3Endpoint, bucket: str) -> None:
        self.tmp, self.endpoint, self.bucket = tmp, endpoint, bucket
        self.started: list[Fsftpd] = []

    def start(self, **options: Any) -> Fsftpd:
        proc = Fsftpd(replica_env(self.tmp, self.endpoint, self.bucket, **options)).__enter__()
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            proc.__exit__(None, None, None)


@pytest.fixture
def replicas(tmp_path: Path, s3_endpoint: S3Endpoint, bucket: str) -> Iterator[Replicas]:
    group = Replicas(tmp_path, s3_endpoint, bucket)
    try:
        yield group
    finally:
        group.close()


def open_uploads(endpoint: S3Endpoint, bucket: str) -> list[str]:
    return [u["Key"] for u in endpoint.boto().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def markers(endpoint: S3Endpoint, bucket: str) -> list[str]:
    reply = endpoint.boto().list_objects_v2(Bucket=bucket, Prefix=".fsftpd-uploads/")
    return [item["Key"] for item in reply.get("Contents", [])]


def stored(endpoint: S3Endpoint, bucket: str, name: str) -> bytes:
    return bytes(endpoint.boto().get_object(Bucket=bucket, Key=KEY_PREFIX + name)["Body"].read())


def retr(ftp: ftplib.FTP, name: str) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write)
    return out.getvalue()


def parts_held(endpoint: S3Endpoint, bucket: str, name: str) -> int:
    client = endpoint.boto()
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        if upload["Key"] == KEY_PREFIX + name:
            found = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            return len(found.get("Parts", []))
    return 0


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    try:
        conn.sendall(data)
    except OSError:
        pass


def cut_upload(proc: Fsftpd, name: str, data: bytes, endpoint: S3Endpoint, bucket: str) -> None:
    """STOR ``data`` through ``proc`` and reset the data connection once S3 holds a part
    of it, as a crashed client or a broken network does."""
    ftp = proc.ftp("alice", "secret")
    conn = ftp.transfercmd(f"STOR {name}")
    sender = threading.Thread(target=_send_quietly, args=(conn, data), daemon=True)
    sender.start()
    assert wait_until(lambda: parts_held(endpoint, bucket, name) >= 1, timeout=30)
    rst(conn)
    sender.join(timeout=20)
    with pytest.raises(ftplib.error_temp, match=r"^426"):
        ftp.voidresp()
    ftp.quit()
    # Kept for resumption: the marker is in the bucket once the 426 is out.
    assert wait_until(lambda: len(markers(endpoint, bucket)) == 1, timeout=20)


def foreign_upload(endpoint: S3Endpoint, bucket: str, name: str) -> str:
    """Another tool's multipart upload of the same key, with one 5 MiB part."""
    client = endpoint.boto()
    upload_id = str(client.create_multipart_upload(Bucket=bucket, Key=KEY_PREFIX + name)["UploadId"])
    client.upload_part(Bucket=bucket, Key=KEY_PREFIX + name, UploadId=upload_id, PartNumber=1,
                       Body=b"f" * (5 * MiB))
    return upload_id


def foreign_intact(endpoint: S3Endpoint, bucket: str, name: str, upload_id: str) -> bool:
    parts = endpoint.boto().list_parts(Bucket=bucket, Key=KEY_PREFIX + name, UploadId=upload_id)
    return [p["Size"] for p in parts.get("Parts", [])] == [5 * MiB]


def test_resume_on_another_process(replicas: Replicas, s3_endpoint: S3Endpoint, bucket: str) -> None:
    data = os.urandom(12 * MiB + 7)
    a, b = replicas.start(), replicas.start()
    other = foreign_upload(s3_endpoint, bucket, "big.iso")
    cut_upload(a, "big.iso", data, s3_endpoint, bucket)
    ftp_b = b.ftp("alice", "secret")
    assert ftp_b.nlst() == []  # nothing partial is visible, on either process
    held = ftp_b.size("big.iso")
    assert held is not None and held > 0 and held % (5 * MiB) == 0
    assert ftp_b.storbinary("STOR big.iso", io.BytesIO(data[held:]), rest=held).startswith("226")
    ftp_a = a.ftp("alice", "secret")
    assert sha(retr(ftp_a, "big.iso")) == sha(data)
    assert sha(stored(s3_endpoint, bucket, "big.iso")) == sha(data)
    assert markers(s3_endpoint, bucket) == []
    # The other tool's upload of the same key was neither adopted nor aborted.
    assert open_uploads(s3_endpoint, bucket) == [KEY_PREFIX + "big.iso"]
    assert foreign_intact(s3_endpoint, bucket, "big.iso", other)
    ftp_a.quit()
    ftp_b.quit()


def test_curl_resumes_on_another_process(replicas: Replicas, s3_endpoint: S3Endpoint, bucket: str,
                                         tmp_path: Path) -> None:
    data = os.urandom(11 * MiB)
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    a, b = replicas.start(), replicas.start()
    cut_upload(a, "c.bin", data, s3_endpoint, bucket)
    # curl -C - asks B for SIZE, then APPEs the rest of the file.
    url = f"ftp://alice:secret@127.0.0.1:{b.port}/c.bin"
    done = subprocess.run(["curl", "-sS", "--fail", "-C", "-", "-T", str(source), url],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "download.bin"
    done = subprocess.run(["curl", "-sS", "--fail", "-o", str(target),
                           f"ftp://alice:secret@127.0.0.1:{a.port}/c.bin"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sha(target.read_bytes()) == sha(data)
    assert open_uploads(s3_endpoint, bucket) == [] and markers(s3_endpoint, bucket) == []


def test_resume_after_the_process_is_killed(replicas: Replicas, s3_endpoint: S3Endpoint,
                                            bucket: str) -> None:
    data = os.urandom(11 * MiB + 3)
    a = replicas.start()
    cut_upload(a, "k.bin", data, s3_endpoint, bucket)
    a.__exit__(None, None, None)  # SIGKILL: nothing of the process survives
    again = replicas.start()
    ftp = again.ftp("alice", "secret")
    held = ftp.size("k.bin")
    assert held is not None and held > 0
    assert ftp.storbinary("STOR k.bin", io.BytesIO(data[held:]), rest=held).startswith("226")
    assert sha(retr(ftp, "k.bin")) == sha(data)
    assert open_uploads(s3_endpoint, bucket) == [] and markers(s3_endpoint, bucket) == []
    ftp.quit()


def test_expired_upload_aborted_by_whichever_process_sees_it(replicas: Replicas, s3_endpoint: S3Endpoint,
                                                             bucket: str) -> None:
    other = foreign_upload(s3_endpoint, bucket, "e.bin")
    a = replicas.start(resume_ttl=3600)
    b = replicas.start(resume_ttl=1)  # B's resume time is over one second after the cut
    cut_upload(a, "e.bin", os.urandom(6 * MiB), s3_endpoint, bucket)
    ftp_b = b.ftp("alice", "secret")

    def gone_on_b() -> bool:
        try:
            ftp_b.size("e.bin")
        except ftplib.error_perm:
            return True
        return False

    assert wait_until(gone_on_b, timeout=30, interval=0.3)
    # B aborted it in the bucket: A (which would still keep it) finds nothing either.
    ftp_a = a.ftp("alice", "secret")
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp_a.size("e.bin")
    assert markers(s3_endpoint, bucket) == []
    assert open_uploads(s3_endpoint, bucket) == [KEY_PREFIX + "e.bin"]
    assert foreign_intact(s3_endpoint, bucket, "e.bin", other)
    ftp_a.quit()
    ftp_b.quit()


@pytest.mark.parametrize("conditional", [False, True], ids=["last-wins", "conditional"])
def test_concurrent_writers_on_two_processes(replicas: Replicas, s3_endpoint: S3Endpoint, bucket: str,
                                             conditional: bool) -> None:
    """Two clients write one name through A and B at once, both holding parts before
    either completes: the result is exactly one of the two files, whole, never a mix. The
    later completion wins; with conditional_writes the later one is refused with 450."""
    one, two = os.urandom(11 * MiB), os.urandom(11 * MiB)
    a, b = replicas.start(conditional_writes=conditional), replicas.start(conditional_writes=conditional)
    ftp_a, ftp_b = a.ftp("alice", "secret"), b.ftp("alice", "secret")
    conn_a = ftp_a.transfercmd("STOR same.bin")
    conn_b = ftp_b.transfercmd("STOR same.bin")
    conn_a.sendall(one[: 6 * MiB])
    conn_b.sendall(two[: 6 * MiB])
    assert wait_until(lambda: len(open_uploads(s3_endpoint, bucket)) == 2, timeout=30)
    conn_b.sendall(two[6 * MiB :])
    conn_a.sendall(one[6 * MiB :])
    conn_a.close()
    assert ftp_a.voidresp().startswith("226")  # A completes first
    conn_b.close()
    if conditional:
        with pytest.raises(ftplib.error_temp, match=r"^450"):
            ftp_b.voidresp()
        winner = one
    else:
        assert ftp_b.voidresp().startswith("226")
        winner = two
    assert sha(stored(s3_endpoint, bucket, "same.bin")) == sha(winner)
    assert sha(retr(ftp_a, "same.bin")) == sha(winner) == sha(retr(ftp_b, "same.bin"))
    assert open_uploads(s3_endpoint, bucket) == [] and markers(s3_endpoint, bucket) == []
    ftp_a.quit()
    ftp_b.quit()


def test_each_process_sees_what_another_completed(replicas: Replicas, s3_endpoint: S3Endpoint,
                                                   bucket: str) -> None:
    a, b = replicas.start(), replicas.start()
    ftp_a, ftp_b = a.ftp("alice", "secret"), b.ftp("alice", "secret")
    assert ftp_b.nlst() == [] and ftp_a.nlst() == []  # listed once before the writes
    ftp_a.storbinary("STOR new.txt", io.BytesIO(b"first"))
    assert ftp_b.nlst() == ["new.txt"]
    assert ftp_b.size("new.txt") == 5
    assert ftp_b.sendcmd("MDTM new.txt").startswith("213 ")
    ftp_b.storbinary("STOR new.txt", io.BytesIO(b"second version"))
    assert ftp_a.size("new.txt") == len(b"second version")
    assert retr(ftp_a, "new.txt") == b"second version"
    facts = ftp_a.sendcmd("MLST new.txt")
    assert "size=14;" in facts.lower()
    ftp_a.delete("new.txt")
    assert ftp_b.nlst() == []
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp_b.size("new.txt")
    ftp_a.quit()
    ftp_b.quit()
