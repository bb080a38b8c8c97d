"""Transfers with ftplib over IPv4 and IPv6, passive and active; ASCII conversion; REST for
RETR and STOR; APPE; ABOR while data moves and while the data connection is awaited."""

from __future__ import annotations

import ftplib
import io
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.conftest import sha256
from tests.harness import ServerThread, ipv6_available, running_server
from tests.server.rawftp import Raw, recv_all, wait_until

HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6", marks=pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")),
]


@pytest.fixture(params=HOSTS)
def any_server(request: pytest.FixtureRequest, user: fsftpd.User) -> Iterator[ServerThread]:
    with running_server([user], host=request.param) as srv:
        yield srv


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_round_trip(any_server: ServerThread, home: Path, passive: bool) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    ftp = any_server.ftp("alice", "secret")
    ftp.set_pasv(passive)
    assert ftp.storbinary("STOR blob", io.BytesIO(payload)).startswith("226")
    assert sha256((home / "blob").read_bytes()) == sha256(payload)
    out = io.BytesIO()
    assert ftp.retrbinary("RETR blob", out.write).startswith("226")
    assert sha256(out.getvalue()) == sha256(payload)
    assert ftp.nlst() == ["blob"]
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert len(lines) == 1 and lines[0].endswith(" blob") and str(len(payload)) in lines[0]
    assert dict(ftp.mlsd())["blob"]["size"] == str(len(payload))
    ftp.quit()


def test_ipv6_uses_extended_commands(home: Path, user: fsftpd.User) -> None:
    if not ipv6_available():
        pytest.skip("no IPv6 loopback")
    with running_server([user], host="::1") as srv, Raw("::1", srv.port) as raw:
        raw.login("alice", "secret")
        assert raw.code("PASV") == 522  # RFC 2428: PASV cannot express an IPv6 address
        assert raw.code("PORT 127,0,0,1,200,1") == 522
        assert raw.code("EPSV 1") == 522
        assert raw.code("EPSV 2") == 229
        assert raw.code("EPRT |1|127.0.0.1|51000|") == 501


def test_listens_on_ipv4_and_ipv6_at_once(home: Path, user: fsftpd.User) -> None:
    if not ipv6_available():
        pytest.skip("no IPv6 loopback")
    with running_server([user], host=["127.0.0.1", "::1"]) as srv:  # type: ignore[arg-type]
        for host in ("127.0.0.1", "::1"):
            ftp = ftplib.FTP()
            ftp.connect(host, srv.port, timeout=10)
            ftp.login("alice", "secret")
            ftp.storbinary(f"STOR from-{host.replace(':', '_')}", io.BytesIO(host.encode()))
            ftp.quit()
    assert sorted(p.name for p in home.iterdir()) == ["from-127.0.0.1", "from-__1"]


def test_ascii_type_converts_both_ways(server: ServerThread, home: Path) -> None:
    ftp = server.ftp("alice", "secret")
    # Upload in ASCII: CRLF on the wire becomes LF on disk.
    ftp.storlines("STOR text", io.BytesIO(b"one\ntwo\nthree\n"))
    assert (home / "text").read_bytes() == b"one\ntwo\nthree\n"
    ftp.voidcmd("TYPE A")
    conn = ftp.transfercmd("STOR raw")
    conn.sendall(b"a\r\nb\r")
    time.sleep(0.05)
    conn.sendall(b"\nc\r\n")  # a CRLF split across two segments
    conn.close()
    ftp.voidresp()
    assert (home / "raw").read_bytes() == b"a\nb\nc\n"
    # Download in ASCII: LF on disk becomes CRLF on the wire.
    big = b"".join(b"line %d\n" % i for i in range(200_000))  # many blocks, so carries matter
    (home / "lf").write_bytes(big)
    conn = ftp.transfercmd("RETR lf")
    wire = recv_all(conn)
    ftp.voidresp()
    assert wire == big.replace(b"\n", b"\r\n")
    # ...and binary is byte-exact.
    ftp.voidcmd("TYPE I")
    out = io.BytesIO()
    ftp.retrbinary("RETR lf", out.write)
    assert out.getvalue() == big
    ftp.quit()


def test_ascii_download_keeps_existing_crlf(server: ServerThread, home: Path) -> None:
    (home / "dos").write_bytes(b"a\r\nb\nc")
    ftp = server.ftp("alice", "secret")
    ftp.voidcmd("TYPE A")
    wire = recv_all(ftp.transfercmd("RETR dos"))
    ftp.voidresp()
    assert wire == b"a\r\nb\r\nc"
    ftp.quit()


def test_rest_retr_and_stor(server: ServerThread, home: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    (home / "f").write_bytes(payload)
    ftp = server.ftp("alice", "secret")
    for offset in (0, 1, 1024 * 1024 + 3, len(payload) - 1, len(payload)):
        out = io.BytesIO()
        ftp.retrbinary("RETR f", out.write, rest=offset)
        assert out.getvalue() == payload[offset:], offset
    # Resume an upload: the first part already there, the rest sent from the offset.
    (home / "up").write_bytes(payload[:700_000])
    ftp.storbinary("STOR up", io.BytesIO(payload[700_000:]), rest=700_000)
    assert sha256((home / "up").read_bytes()) == sha256(payload)
    # REST + STOR truncates whatever was beyond the offset.
    ftp.storbinary("STOR up", io.BytesIO(b"TAIL"), rest=10)
    assert (home / "up").read_bytes() == payload[:10] + b"TAIL"
    with pytest.raises(ftplib.error_perm, match=r"^554"):
        ftp.storbinary("STOR up", io.BytesIO(b"x"), rest=10_000)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.storbinary("STOR nothing-here", io.BytesIO(b"x"), rest=5)
    assert (home / "up").read_bytes() == payload[:10] + b"TAIL"
    assert sorted(p.name for p in home.iterdir()) == ["f", "up"]
    ftp.quit()


def test_appe(server: ServerThread, home: Path) -> None:
    ftp = server.ftp("alice", "secret")
    ftp.storbinary("APPE new", io.BytesIO(b"first"))  # APPE creates a missing file
    ftp.storbinary("APPE new", io.BytesIO(b"-second"))
    assert (home / "new").read_bytes() == b"first-second"
    ftp.quit()


def _start_retr(server: ServerThread, home: Path, size: int) -> tuple[Raw, socket.socket]:
    (home / "big").write_bytes(os.urandom(size))
    raw = Raw(server.host, server.port)
    raw.login("alice", "secret")
    data = raw.epsv()
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert raw.cmd("RETR big")[0] == 150
    assert len(data.recv(65536)) > 0
    return raw, data


def test_abor_during_retr(home: Path, user: fsftpd.User) -> None:
    # A slow client: the server is blocked on a full socket, mid-transfer.
    with running_server([user]) as server:
        raw, data = _start_retr(server, home, 64 * 1024 * 1024)
        assert raw.cmd("STAT")[1].count("Transfer in progress: yes") == 1
        raw.send(b"\xff\xf4\xff\xf2ABOR")  # Telnet IP + Synch, as RFC 959 4.1.3 describes
        assert raw.read()[0] == 426
        assert raw.read() == (226, "ABOR command successful")
        received = len(recv_all(data))
        assert received < 64 * 1024 * 1024  # it really stopped
        assert raw.code("NOOP") == 200
        assert "Transfer in progress: no" in raw.cmd("STAT")[1]
        raw.close()


def test_abor_with_ftplib_urgent_data(server: ServerThread, home: Path) -> None:
    (home / "big").write_bytes(os.urandom(32 * 1024 * 1024))
    ftp = server.ftp("alice", "secret")
    conn = ftp.transfercmd("RETR big")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.recv(1024)
    # ftplib sends IAC IP IAC DM + ABOR with MSG_OOB: the last byte is TCP urgent data.
    assert ftp.abort().startswith("426")
    assert ftp.getresp().startswith("226")
    conn.close()
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()


def test_abor_during_stor_discards_the_upload(server: ServerThread, home: Path) -> None:
    (home / "target").write_bytes(b"old contents")
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.cmd("STOR target")[0] == 150
        data.sendall(os.urandom(2 * 1024 * 1024))
        time.sleep(0.1)
        assert raw.cmd("ABOR")[0] == 426
        assert raw.read()[0] == 226
        data.close()
        assert (home / "target").read_bytes() == b"old contents"
        assert sorted(p.name for p in home.iterdir()) == ["target"]  # no temp file either
        assert raw.code("NOOP") == 200


@pytest.mark.parametrize("verb", ["RETR f", "STOR g", "LIST"])
def test_abor_while_data_connection_is_awaited(home: Path, user: fsftpd.User, verb: str) -> None:
    (home / "f").write_bytes(b"x")
    with running_server([user], wait_future_timeout=30) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        code, _ = raw.cmd("EPSV")  # the client never connects
        assert code == 229
        started = time.monotonic()
        assert raw.cmd(verb)[0] == 150
        assert raw.cmd("ABOR")[0] == 426
        assert raw.read()[0] == 226
        assert time.monotonic() - started < 20  # did not wait for the 30 s deadline
        assert sorted(p.name for p in home.iterdir()) == ["f"]
        assert raw.code("NOOP") == 200


@pytest.mark.parametrize("verb", ["STOR g", "RETR f"])
def test_pipelined_abor_right_after_the_transfer_command(server: ServerThread, home: Path, verb: str) -> None:
    # The ABOR is already buffered when the transfer command is read: the transfer task
    # has not run a single step yet. It must still clean up and answer.
    (home / "f").write_bytes(b"x" * 100)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        raw.sock.sendall(f"{verb}\r\nABOR\r\n".encode())
        # Either ABOR stops the transfer (426, then 226 for the ABOR) or the transfer is
        # already complete or ending (its 226, then 225: nothing left to abort).
        codes = [raw.read()[0]]
        while codes[-2:] not in ([426, 226], [226, 225]):
            assert len(codes) < 4, codes
            codes.append(raw.read()[0])
        assert codes[0] == 150, codes
        data.close()
        assert raw.code("NOOP") == 200
        assert wait_until(lambda: sorted(p.name for p in home.iterdir()) in (["f"], ["f", "g"]))
        names = sorted(p.name for p in home.iterdir())
        assert not any(n.startswith(".fsftpd-upload-") for n in names), names
        if server.server is not None:
            assert wait_until(
                lambda: all(c.transfer is None or c.transfer.done() for c in server.server.connections)
            )  # type: ignore[union-attr]


def test_commands_during_a_transfer(server: ServerThread, home: Path) -> None:
    # RFC 959 4.1.3: NOOP/STAT/HELP answer at once; other commands wait for the transfer;
    # QUIT lets the transfer finish, then closes.
    (home / "big").write_bytes(os.urandom(48 * 1024 * 1024))  # more than socket buffers hold
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        assert raw.cmd("RETR big")[0] == 150
        data.recv(1000)
        assert raw.code("NOOP") == 200
        assert raw.code("HELP") == 214
        assert raw.code("STAT /") == 450  # a listing on the control connection must wait
        assert "Transfer in progress: yes" in raw.cmd("STAT")[1]
        raw.send("PWD")  # queued behind the transfer
        raw.send("QUIT")
        received = 1000 + len(recv_all(data))
        assert received == 48 * 1024 * 1024
        assert raw.read() == (226, "Transfer complete")
        assert raw.read()[0] == 257
        assert raw.read()[0] == 221
        assert raw.file.readline() == b""


def test_default_host_listens_on_every_family_on_one_port(home: Path, user: fsftpd.User) -> None:
    # start(host=None, port=0): every IPv4 and IPv6 address, and one port for all of them.
    with running_server([user], host=None) as srv:  # type: ignore[arg-type]
        assert srv.server is not None
        ports = {sock.getsockname()[1] for sock in srv.server.sockets}
        assert ports == {srv.port}
        hosts = ["127.0.0.1", "::1"] if ipv6_available() else ["127.0.0.1"]
        for host in hosts:
            ftp = ftplib.FTP()
            ftp.connect(host, srv.port, timeout=10)
            ftp.login("alice", "secret")
            ftp.storbinary(f"STOR via-{host.replace(':', '_')}", io.BytesIO(b"x"))
            ftp.quit()
    assert len(list(home.iterdir())) == len(hosts)


@pytest.mark.parametrize("boundary", [256 * 1024, 1024 * 1024])
def test_ascii_crlf_split_across_read_blocks(server: ServerThread, home: Path, boundary: int) -> None:
    # A CRLF whose CR ends one storage block and whose LF starts the next stays one CRLF.
    body = b"x" * (boundary - 1) + b"\r\n" + b"tail\nend\r"
    (home / "edge").write_bytes(body)
    ftp = server.ftp("alice", "secret")
    ftp.voidcmd("TYPE A")
    wire = recv_all(ftp.transfercmd("RETR edge"))
    ftp.voidresp()
    assert wire == b"x" * (boundary - 1) + b"\r\ntail\r\nend\r"
    ftp.quit()


def test_aborted_upload_never_writes_into_a_reused_descriptor(
    server: ServerThread, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disk write still running in its worker thread when ABOR discards the upload must
    # finish before the descriptor is closed: otherwise it lands in whatever file the OS
    # hands the same number to next (here: files this test opens right after the 226).
    import fsftpd.storage.local as local

    real_write = local._write_fd

    def slow_write(fd: int, data: bytes | bytearray | memoryview) -> None:
        time.sleep(0.3)
        real_write(fd, data)

    monkeypatch.setattr(local, "_write_fd", slow_write)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.cmd("STOR upload")[0] == 150
        data.sendall(b"U" * 3_000_000)
        time.sleep(0.1)  # the server is now inside a slow write
        assert raw.cmd("ABOR")[0] == 426
        assert raw.read()[0] == 226
        victims = [home / f"victim{i}" for i in range(8)]
        fds = [os.open(v, os.O_WRONLY | os.O_CREAT) for v in victims]
        time.sleep(0.8)
        for fd in fds:
            os.close(fd)
        data.close()
    assert [v.stat().st_size for v in victims] == [0] * len(victims)
    assert not (home / "upload").exists()
    assert not any(p.name.startswith(".fsftpd-upload-") for p in home.iterdir())


def test_abor_while_a_local_upload_is_being_committed(
    server: ServerThread, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ABOR arrives after the whole upload was received, while the worker thread commits
    # it (slowed down here): the reply must match what ends up on storage.
    import fsftpd.storage.local as local

    real_finish = local.LocalWriteStream._finish_locked

    def slow_finish(self: local.LocalWriteStream, keep: bool) -> None:
        time.sleep(0.5)
        real_finish(self, keep)

    monkeypatch.setattr(local.LocalWriteStream, "_finish_locked", slow_finish)
    payload = os.urandom(1024 * 1024)
    with Raw(server.host, server.port) as raw:
        raw.login("alice", "secret")
        data = raw.epsv()
        assert raw.cmd("STOR committing")[0] == 150
        data.sendall(payload)
        data.close()
        time.sleep(0.2)
        codes = [raw.cmd("ABOR")[0], raw.read()[0]]
        assert raw.code("NOOP") == 200
    # Too late to abort: the commit finishes (226), then ABOR finds nothing to abort (225).
    assert codes == [226, 225]
    assert (home / "committing").read_bytes() == payload
