"""Telnet option negotiation is refused and the session goes on (RFC 854); a stalled ASCII
download holds little memory."""

from __future__ import annotations

import ftplib
import socket
from pathlib import Path

from tests.appliance.proc import base_env, serving, wait_until
from tests.harness import ServerThread


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_telnet_negotiation_gets_wont_dont_and_the_session_goes_on(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        # What a telnet client sends first: WILL terminal-type, DO echo, a subnegotiation.
        sock.sendall(b"\xff\xfb\x18\xff\xfd\x01\xff\xfa\x18\x00xterm\xff\xf0USER alice\r\n")
        assert reader.read(6) == b"\xff\xfe\x18\xff\xfc\x01"  # DONT 24, WONT 1
        assert reader.readline().startswith(b"331 ")
        sock.sendall(b"\xff\xfd\x03\r\nPASS secret\r\n")  # a line of negotiation only: no reply
        assert reader.read(3) == b"\xff\xfc\x03"
        assert reader.readline().startswith(b"230 ")
        sock.sendall(b"\xff\xf4\xff\xf2NOOP\r\n")  # IP + DM (the RFC 959 abort prefix)
        assert reader.readline().startswith(b"200 ")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_stalled_ascii_downloads_hold_little_memory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "text.txt").write_bytes(b"a line of text\n" * 2_000_000)  # 30 MB, all LF
    env = base_env(tmp_path, FSFTPD_USER="alice", FSFTPD_PASSWORD="secret", FSFTPD_METRICS_PORT="0")
    stalled = 20
    with serving(env) as proc:
        assert proc.proc is not None
        pid = proc.proc.pid
        clients: list[tuple[ftplib.FTP, socket.socket]] = []
        try:
            warm = proc.ftp("alice", "secret")
            warm.voidcmd("TYPE A")
            warm.retrlines("RETR text.txt", lambda _: None)  # warm the code paths once
            warm.quit()
            baseline = _rss(pid)
            for _ in range(stalled):
                ftp = proc.ftp("alice", "secret")
                ftp.voidcmd("TYPE A")
                data = ftp.transfercmd("RETR text.txt")
                data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                clients.append((ftp, data))  # never read: the download stalls
            # Wait until every download is stuck (its send buffer full): memory stops growing.
            samples: list[int] = []

            def steady() -> bool:
                samples.append(_rss(pid))
                return len(samples) > 10 and max(samples[-10:]) - min(samples[-10:]) < 512 * 1024

            wait_until(steady, timeout=30, what="the stalled downloads to settle")
            grown = max(samples[-10:]) - baseline
        finally:
            for ftp, data in clients:
                data.close()
                ftp.close()
    # 64 KiB blocks: a few hundred KiB each at most (about 3 MiB each before: 60 MiB for 20).
    assert grown < stalled * 1024 * 1024, f"{grown / 2**20:.1f} MiB for {stalled} stalled ASCII downloads"
