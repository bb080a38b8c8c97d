"""Data integrity through FTP: what the reply says (or, for a client that is gone, the log
line and the TransferFinished event) is what happened to the bytes.

- concurrent downloads of one file each get the whole file (memory homes used to share one
  read position between them);
- a download whose storage gives a different byte count than the size seen at open is 451;
- a client that closes or resets its connections at any point of an upload never leaves a
  partial file with a 426, and never loses the old file without a 226;
- every transfer has exactly one event and one log line, with the bytes really moved, and
  its progress events add up to them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from fsftpd.server.events import Event, TransferFinished, TransferProgress
from fsftpd.storage.base import ReadStream, WriteStream
from fsftpd.transfer.throttle import CHUNK
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all, rst, wait_until

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024
RESULT = re.compile(r"session (\d+): (\w+) (.+) (\d+) bytes -> (\d+)$")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Recorder:
    """The server's TransferFinished and TransferProgress events (observed on its loop)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.since = len(caplog.records)  # log records before this are not ours
        self.lock = threading.Lock()
        self.finished: list[TransferFinished] = []
        self.progress: list[TransferProgress] = []

    def __call__(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, TransferFinished):
                self.finished.append(event)
            elif isinstance(event, TransferProgress):
                self.progress.append(event)

    def count(self) -> int:
        with self.lock:
            return len(self.finished)

    def progress_bytes(self, direction: str) -> int:
        with self.lock:
            return sum(event.bytes for event in self.progress if event.direction == direction)

    def finished_bytes(self, direction: str) -> int:
        with self.lock:
            return sum(event.bytes for event in self.finished if event.direction == direction)


def result_lines(recorder: Recorder) -> list[tuple[int, str, str, int, int]]:
    """(session, verb, path, bytes, code) of every transfer's result log line."""
    found = []
    for record in recorder.caplog.records[recorder.since:]:
        if record.name == "fsftpd.session" and (match := RESULT.match(record.getMessage())):
            found.append((int(match[1]), match[2], match[3], int(match[4]), int(match[5])))
    return found


def assert_one_result_per_transfer(recorder: Recorder) -> None:
    """Every TransferFinished event has its log line (same session, verb, bytes, code), and
    no session logged two results for one transfer."""
    with recorder.lock:
        events = sorted((e.session_id, e.verb, e.path, e.bytes, e.code) for e in recorder.finished)
    assert sorted(result_lines(recorder)) == events


def observe(srv: ServerThread, caplog: pytest.LogCaptureFixture) -> Recorder:
    recorder = Recorder(caplog)
    srv.call(lambda s: s.events.subscribe(recorder))
    return recorder


def store(srv: ServerThread, name: str, data: bytes, recorder: Recorder | None = None) -> None:
    """STOR ``name``; with ``recorder``, also wait for the transfer's event (the server
    replies first and reports the transfer just after)."""
    before = recorder.count() if recorder is not None else 0
    with Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        data_sock = raw.epsv()
        code, text = raw.cmd(f"STOR {name}")
        assert code == 150, text
        data_sock.sendall(data)
        data_sock.close()
        code, text = raw.read()
        assert code == 226, text
    if recorder is not None:
        assert wait_until(lambda: recorder.count() > before)


def fetch(srv: ServerThread, name: str, recorder: Recorder | None = None) -> bytes:
    before = recorder.count() if recorder is not None else 0
    with Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        data_sock = raw.epsv()
        code, text = raw.cmd(f"RETR {name}")
        assert code == 150, text
        data = recv_all(data_sock)
        code, text = raw.read()
        assert code == 226, text
    if recorder is not None:
        assert wait_until(lambda: recorder.count() > before)
    return data


@pytest.fixture(params=["local", "memory"])
def home_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "home") if request.param == "local" else "memory://alice"


# -- concurrent downloads ---------------------------------------------------------------
@pytest.mark.parametrize("clients", [2, 5])
def test_concurrent_downloads_of_one_file_each_get_all_of_it(
        home_url: str, clients: int, caplog: pytest.LogCaptureFixture) -> None:
    # The reproduction: every client sends RETR, then the data connections are
    # read one after the other, so the downloads interleave on the server.
    caplog.set_level(logging.INFO, logger="fsftpd.session")
    data = os.urandom(8 * MiB + 17)
    with running_server([fsftpd.User("alice", "secret", base_path=home_url)]) as srv:
        recorder = observe(srv, caplog)
        store(srv, "d.bin", data, recorder)
        raws = [Raw(srv.host, srv.port) for _ in range(clients)]
        try:
            socks = []
            for i, raw in enumerate(raws):
                raw.login("alice", "secret")
                socks.append(raw.epsv())
                code, text = raw.cmd(f"REST {i * 1000}" if i % 2 else "NOOP")
                assert code in (200, 350), text
                code, text = raw.cmd("RETR d.bin")
                assert code == 150, text
            for i, (raw, sock) in enumerate(zip(raws, socks, strict=True)):
                got = recv_all(sock)
                code, text = raw.read()
                assert code == 226, text
                start = i * 1000 if i % 2 else 0
                assert len(got) == len(data) - start and sha(got) == sha(data[start:]), i
        finally:
            for raw in raws:
                raw.close()
        assert wait_until(lambda: recorder.count() == clients + 1)
    assert recorder.progress_bytes("download") == recorder.finished_bytes("download")
    assert all(e.ok and e.code == 226 for e in recorder.finished)
    assert_one_result_per_transfer(recorder)


# -- defence in depth: the byte count of a download -------------------------------------
class MisreadingPathIO(fsftpd.MemoryPathIO):
    """A faulty memory backend: files named ``short*`` end early when read, ``long*``
    give more bytes than they hold."""

    async def open_read(self, path: str, offset: int = 0) -> ReadStream:
        stream = await super().open_read(path, offset)
        name = path.rpartition("/")[2]
        if name.startswith(("short", "long")):
            return MisreadStream(stream, short=name.startswith("short"))
        return stream


class MisreadStream(ReadStream):
    def __init__(self, inner: ReadStream, *, short: bool) -> None:
        self._inner = inner
        self._short = short
        self._reads = 0
        self._extra = b"" if short else b"extra bytes"

    async def read(self, size: int) -> bytes:
        self._reads += 1
        if self._short and self._reads > 1:
            return b""
        data = await self._inner.read(size)
        if not data:
            data, self._extra = self._extra, b""
        return data

    async def close(self) -> None:
        await self._inner.close()


@pytest.mark.parametrize(("name", "rest"), [("short.bin", 0), ("long.bin", 0), ("short.bin", 10),
                                            ("long.bin", 700_000)])
def test_a_download_of_the_wrong_length_is_451_not_226(
        name: str, rest: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fsftpd.session")
    data = os.urandom(MiB + 5)
    user = fsftpd.User("alice", "secret", base_path="memory://alice")
    with running_server([user], path_io_factory=MisreadingPathIO) as srv:
        recorder = observe(srv, caplog)
        store(srv, name, data, recorder)
        with Raw(srv.host, srv.port) as raw:
            raw.login("alice", "secret")
            sock = raw.epsv()
            if rest:
                assert raw.code(f"REST {rest}") == 350
            code, text = raw.cmd(f"RETR {name}")
            assert code == 150, text
            got = recv_all(sock)
            code, text = raw.read()
            assert code == 451, text
            assert len(got) != len(data) - rest
            assert raw.code("NOOP") == 200
        assert wait_until(lambda: recorder.count() == 2)
    event = recorder.finished[1]
    assert (event.verb, event.ok, event.code, event.bytes) == ("RETR", False, 451, len(got))
    faults = [r for r in caplog.records if r.levelno == logging.WARNING and "RETR" in r.getMessage()]
    assert len(faults) == 1 and "bytes of a file that held" in faults[0].getMessage()
    assert_one_result_per_transfer(recorder)


# -- clients that vanish during an upload ------------------------------------------------
class SlowCommitPathIO(fsftpd.MemoryPathIO):
    """Memory storage whose commits take a while and, like a rename in a worker thread,
    complete even when the task awaiting them is cancelled."""

    async def open_write(self, path: str, *, offset: int = 0, append: bool = False) -> WriteStream:
        return SlowCommit(await super().open_write(path, offset=offset, append=append))


class SlowCommit(WriteStream):
    def __init__(self, inner: WriteStream) -> None:
        self._inner = inner

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.write(data)

    async def commit(self) -> None:
        async def commit_later() -> None:
            await asyncio.sleep(0.03)
            await self._inner.commit()

        await asyncio.shield(asyncio.ensure_future(commit_later()))

    async def abort(self) -> None:
        await self._inner.abort()


#: how the client goes away after sending part of the upload: "data" (FIN on the data
#: connection), "control" (FIN on the control connection), "rst-..." (a reset), "sleep N"
#: (milliseconds); control-first ways must always leave the old file
VANISH = {
    "data, control": (["data", "control"], False),
    "data, 1 ms, control": (["data", "sleep 1", "control"], False),
    "data, 2 ms, control": (["data", "sleep 2", "control"], False),
    "data, 3 ms, control": (["data", "sleep 3", "control"], False),
    "data, 40 ms, control": (["data", "sleep 40", "control"], False),
    "control, data": (["control", "data"], True),
    "control, 2 ms, data": (["control", "sleep 2", "data"], True),
    "rst-data, control": (["rst-data", "control"], True),
    "rst-control, data": (["rst-control", "data"], True),
    "rst-control, rst-data": (["rst-control", "rst-data"], True),
}


def vanish(raw: Raw, data_sock: object, steps: list[str]) -> None:
    import socket

    assert isinstance(data_sock, socket.socket)
    for step in steps:
        if step == "data":
            data_sock.close()
        elif step == "control":
            raw.close()
        elif step == "rst-data":
            rst(data_sock)
        elif step == "rst-control":
            raw.reset()
        else:
            time.sleep(int(step.split()[1]) / 1000)


@pytest.mark.parametrize("backend", ["local", "memory", "slow-commit"])
def test_a_client_vanishing_mid_upload_never_makes_the_log_and_the_file_disagree(
        backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fsftpd.session")
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    old = os.urandom(1_000_000)
    options: dict[str, object] = {}
    base = str(tmp_path / "home") if backend == "local" else "memory://alice"
    if backend == "slow-commit":
        options["path_io_factory"] = SlowCommitPathIO
    rounds = 3 if backend == "slow-commit" else 5
    with running_server([fsftpd.User("alice", "secret", base_path=base)], **options) as srv:
        recorder = observe(srv, caplog)
        store(srv, "target.bin", old, recorder)
        for _ in range(rounds):
            for way, (steps, must_keep) in VANISH.items():
                partial = os.urandom(rng.randrange(1, 1_500_000))
                raw = Raw(srv.host, srv.port)
                raw.login("alice", "secret")
                data_sock = raw.epsv()
                code, text = raw.cmd("STOR target.bin")
                assert code == 150, text
                data_sock.sendall(partial)
                before = recorder.count()
                vanish(raw, data_sock, steps)
                assert wait_until(lambda n=before: recorder.count() > n)
                event = recorder.finished[-1]
                assert event.verb == "STOR", event
                now = fetch(srv, "target.bin", recorder)
                if event.code == 226:
                    assert not must_keep, way
                    assert event.ok and event.bytes == len(partial)
                    assert sha(now) == sha(partial), way  # the log says 226: the new file
                    store(srv, "target.bin", old, recorder)
                else:
                    assert not event.ok and event.code in (426, 451), (way, event)
                    assert sha(now) == sha(old), (way, event)  # the log says 426: the old file
                    # the bytes that arrived before the server saw the client leave
                    assert event.bytes <= len(partial)
        assert wait_until(lambda: all(c.transfer is None or c.transfer.done()
                                      for c in srv.server.connections))  # type: ignore[union-attr]
    if backend == "local":
        assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["target.bin"]
    assert recorder.progress_bytes("upload") == recorder.finished_bytes("upload")
    assert_one_result_per_transfer(recorder)


KILLED_CLIENT = textwrap.dedent("""
    import socket, sys, re, time
    host, port = sys.argv[1], int(sys.argv[2])
    ctl = socket.create_connection((host, port))
    f = ctl.makefile("rb")
    def reply():
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        return line
    reply()
    for line in (b"USER alice", b"PASS secret", b"EPSV"):
        ctl.sendall(line + b"\\r\\n")
        text = reply()
    port2 = int(re.search(rb"\\|\\|\\|(\\d+)\\|", text).group(1))
    data = socket.create_connection((host, port2))
    ctl.sendall(b"STOR target.bin\\r\\n")
    reply()
    print("sending", flush=True)
    block = b"z" * 65536
    while True:  # about 13 MB/s: a steady upload, not a disk-filling one
        data.sendall(block)
        time.sleep(0.005)
""")


def test_a_killed_client_never_replaces_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # kill -9 mid-upload: the kernel closes the client's sockets; the old file survives.
    caplog.set_level(logging.INFO, logger="fsftpd.session")
    old = os.urandom(1_000_000)
    script = tmp_path / "client.py"
    script.write_text(KILLED_CLIENT)
    with running_server([fsftpd.User("alice", "secret", base_path=str(tmp_path / "home"))]) as srv:
        recorder = observe(srv, caplog)
        store(srv, "target.bin", old, recorder)
        for _ in range(6):
            before = recorder.count()
            proc = subprocess.Popen([sys.executable, str(script), srv.host, str(srv.port)],
                                    stdout=subprocess.PIPE)
            try:
                assert proc.stdout is not None and proc.stdout.readline() == b"sending\n"
                # killed after 0.6-0.9 s: the server then watches the control connection
                # for 6-9 ms after the data connection closes (1% of the upload's time)
                time.sleep(random.uniform(0.6, 0.9))
            finally:
                proc.kill()
                proc.wait(timeout=30)
                if proc.stdout is not None:
                    proc.stdout.close()
            assert wait_until(lambda n=before: recorder.count() > n)
            event = recorder.finished[-1]
            assert event.verb == "STOR" and event.code != 226 and not event.ok, event
            assert sha(fetch(srv, "target.bin", recorder)) == sha(old)
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["target.bin"]
    assert recorder.progress_bytes("upload") == recorder.finished_bytes("upload")
    assert_one_result_per_transfer(recorder)


# -- the bytes of a transfer ---------------------------------------------------------------
def test_an_aborted_download_reports_the_bytes_sent(home_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fsftpd.session")
    data = os.urandom(16 * MiB)
    with running_server([fsftpd.User("alice", "secret", base_path=home_url)]) as srv:
        recorder = observe(srv, caplog)
        store(srv, "big.bin", data, recorder)
        with Raw(srv.host, srv.port) as raw:
            raw.login("alice", "secret")
            sock = raw.epsv()
            assert raw.code("RETR big.bin") == 150
            received = 0
            while received < 1_100_000:
                chunk = sock.recv(65536)
                assert chunk
                received += len(chunk)
            raw.send("ABOR")
            sock.close()
            codes = [raw.read()[0], raw.read()[0]]
            assert codes in ([426, 226], [426, 225], [226, 225]), codes
        assert wait_until(lambda: recorder.count() == 2)
    event = recorder.finished[1]
    assert event.verb == "RETR" and received <= event.bytes <= len(data)
    assert event.ok == (event.code == 226)
    assert recorder.progress_bytes("download") == event.bytes
    assert_one_result_per_transfer(recorder)


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_a_throttled_transfer_reports_progress_chunk_by_chunk(
        home_url: str, direction: str, caplog: pytest.LogCaptureFixture) -> None:
    # A throttled chunk takes at most CHUNK_SECONDS: one progress event per chunk keeps
    # byte counters moving all through a long transfer, not only at its end.
    caplog.set_level(logging.INFO, logger="fsftpd.session")
    rate = 1024 * 1024
    size = 700_000
    data = os.urandom(size)
    user = fsftpd.User("alice", "secret", base_path=home_url)
    with running_server([user]) as srv:
        store(srv, "t.bin", data)
        assert wait_until(lambda: srv.call(lambda s: len(s.connections)) == 0)  # its event is out
        if direction == "download":
            user.write_speed_limit = rate
        else:
            user.read_speed_limit = rate
        recorder = observe(srv, caplog)
        if direction == "download":
            assert sha(fetch(srv, "t.bin", recorder)) == sha(data)
        else:
            store(srv, "t.bin", data, recorder)
    with recorder.lock:
        events = [e for e in recorder.progress if e.direction == direction]
    assert sum(e.bytes for e in events) == recorder.finished[0].bytes == size
    assert len(events) >= size // CHUNK
    assert max(e.bytes for e in events) <= CHUNK
    assert_one_result_per_transfer(recorder)


@pytest.fixture
def many_files(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    (home / "tree").mkdir(parents=True)
    for i in range(60):
        (home / "tree" / f"f{i:02d}.bin").write_bytes(os.urandom(200_000))
    (home / "big.bin").write_bytes(os.urandom(6 * MiB))
    yield home


LFTP = ("set cmd:fail-exit yes; set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 30; "
        "set xfer:clobber on; set mirror:parallel-transfer-count 4; ")
COMMAND = re.compile(r"session (\d+): (RETR|STOR) ")
needs_lftp = pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")


def commands_and_results(recorder: Recorder) -> tuple[list[int], list[int]]:
    """The sessions of every RETR/STOR command read, and of every transfer result line."""
    commands = [int(m[1]) for r in recorder.caplog.records[recorder.since:] if r.name == "fsftpd.session"
                and (m := COMMAND.match(r.getMessage())) and "bytes ->" not in r.getMessage()]
    return sorted(commands), sorted(line[0] for line in result_lines(recorder) if line[1] in ("RETR", "STOR"))


@needs_lftp
def test_lftp_pget_and_a_killed_mirror_leave_a_result_for_every_transfer(
        many_files: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # pget ends each segment with ABOR and QUIT at once; a killed mirror drops its
    # connections mid-transfer. Each RETR still gets one event and one log line.
    caplog.set_level(logging.DEBUG, logger="fsftpd.session")
    out = tmp_path / "out"
    out.mkdir()
    with running_server([fsftpd.User("alice", "secret", base_path=str(many_files))]) as srv:
        recorder = observe(srv, caplog)
        opening = f"{LFTP}open -u alice,secret ftp://{srv.host}:{srv.port}; "
        # rate-limited, so that the four segments really run side by side
        pget = opening + f"set net:limit-rate 8000000; lcd {out}; pget -n 4 big.bin"
        proc = subprocess.run(["lftp", "-c", pget], capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert sha((out / "big.bin").read_bytes()) == sha((many_files / "big.bin").read_bytes())
        script = opening + f"set net:limit-rate 2000000; mirror tree {out}/tree"
        mirror = subprocess.Popen(["lftp", "-c", script], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            assert wait_until(lambda: len(list((out / "tree").glob("*"))) >= 5, timeout=60)
        finally:
            mirror.kill()
            mirror.wait(timeout=30)
        assert wait_until(lambda: srv.call(lambda s: len(s.connections)) == 0, timeout=30)
        commands, results = commands_and_results(recorder)
        assert len(commands) > 5
        assert commands == results
    assert recorder.progress_bytes("download") == recorder.finished_bytes("download")
    assert_one_result_per_transfer(recorder)
