"""A lean blocking FTP client for the load generator: one reusable receive buffer, no
per-transfer allocations beyond what the socket layer needs, EPSV data channels."""

from __future__ import annotations

import socket

RECV_BUFFER = 1024 * 1024


class FtpReplyError(Exception):
    pass


class Control:
    def __init__(self, host: str, port: int, timeout: float = 60) -> None:
        self.host = host
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pending = b""
        self.expect(220)

    def close(self) -> None:
        self.sock.close()

    def reply(self) -> tuple[int, bytes]:
        """Read one (possibly multi-line) reply."""
        first: bytes | None = None
        while True:
            nl = self._pending.find(b"\n")
            while nl < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("control connection closed")
                self._pending += chunk
                nl = self._pending.find(b"\n")
            line, self._pending = self._pending[: nl + 1], self._pending[nl + 1 :]
            if first is None:
                first = line
                if line[3:4] != b"-":
                    return int(line[:3]), line
            elif line[:3] == first[:3] and line[3:4] == b" ":
                return int(first[:3]), line

    def expect(self, *codes: int) -> bytes:
        code, line = self.reply()
        if code not in codes:
            raise FtpReplyError(f"expected {codes}, got {line!r}")
        return line

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def cmd(self, line: str, *codes: int) -> bytes:
        self.send(line)
        return self.expect(*codes)

    def login(self, user: str, password: str) -> None:
        self.send(f"USER {user}")
        code, line = self.reply()
        if code == 331:
            self.cmd(f"PASS {password}", 230)
        elif code != 230:
            raise FtpReplyError(f"USER refused: {line!r}")
        self.cmd("TYPE I", 200)

    def quit(self) -> None:
        self.cmd("QUIT", 221)
        self.sock.close()

    def data(self) -> socket.socket:
        line = self.cmd("EPSV", 229)
        start = line.index(b"(")
        port = int(line[start + 4 : line.index(b"|", start + 4)])
        sock = socket.create_connection((self.host, port), timeout=self.sock.gettimeout())
        return sock

    def retr(self, path: str, buffer: memoryview) -> int:
        return self.download("RETR", path, buffer)

    def stor(self, path: str, payload: memoryview, size: int) -> int:
        data = self.data()
        try:
            self.cmd(f"STOR {path}", 150, 125)
            sent = 0
            block = len(payload)
            while sent < size:
                n = min(block, size - sent)
                data.sendall(payload[:n])
                sent += n
        finally:
            data.close()
        self.expect(226)
        return sent

    def download(self, verb: str, path: str, buffer: memoryview) -> int:
        """RETR / LIST / MLSD: receive into ``buffer`` (overwritten) until EOF."""
        data = self.data()
        try:
            self.cmd(f"{verb} {path}", 150, 125)
            total = 0
            recv_into = data.recv_into
            while True:
                n = recv_into(buffer)
                if not n:
                    break
                total += n
        finally:
            data.close()
        self.expect(226, 200, 250)  # aioftp ends MLSD with 200
        return total
