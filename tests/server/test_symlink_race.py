"""A local program swaps a symlink inside the home between an inside and an outside target
while a client transfers: no download may return the outside file, no upload (nor its
temporary file), rename or delete may touch the outside (the object opened is the object
checked)."""

from __future__ import annotations

import ftplib
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsftpd
from tests.harness import running_server
from tests.server.rawftp import Raw, recv_all

RETRS = 2000
STORS = 300
INSIDE = b"inside file\n" * 10
SECRET = b"SECRET outside the home\n" * 10


@contextmanager
def swapping(link: Path, targets: tuple[str, str]) -> Iterator[list[int]]:
    """A thread that points ``link`` at each target in turn (atomic rename of a new link
    over it), as fast as it can, until the block ends; yields its swap count."""
    stop = threading.Event()
    count = [0]
    spare = link.with_name(link.name + ".swap")

    def run() -> None:
        while not stop.is_set():
            for target in targets:
                os.symlink(target, spare)
                os.replace(spare, link)
            count[0] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield count
    finally:
        stop.set()
        thread.join(timeout=10)


def test_retr_never_returns_the_outside_file_while_a_link_is_swapped(tmp_path: Path) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    (home / "inside.txt").write_bytes(INSIDE)
    (outside / "secret.txt").write_bytes(SECRET)
    link = home / "link"
    os.symlink("inside.txt", link)
    user = fsftpd.User("alice", "secret", base_path=str(home))
    codes: dict[int, int] = {}
    with running_server([user]) as srv, Raw("127.0.0.1", srv.port) as raw:
        raw.login("alice", "secret")
        raw.cmd("TYPE I")
        with swapping(link, ("inside.txt", str(outside / "secret.txt"))) as swaps:
            for _ in range(RETRS):
                data = raw.epsv()
                code, _ = raw.cmd("RETR link")
                body = recv_all(data) if code == 150 else b""
                data.close()
                if code == 150:
                    code = raw.read()[0]
                codes[code] = codes.get(code, 0) + 1
                assert SECRET not in body
                if code == 226:
                    assert body == INSIDE
        assert raw.code("NOOP") == 200
    assert swaps[0] > 10, "the link was hardly swapped: the test proved nothing"
    assert codes.get(226, 0) > 0 and set(codes) <= {226, 550}, codes


def test_uploads_never_land_outside_while_a_directory_link_is_swapped(tmp_path: Path) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    (home / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.txt").write_bytes(SECRET)
    link = home / "dir"
    os.symlink("real", link)
    user = fsftpd.User("alice", "secret", base_path=str(home))
    ok = 0
    with running_server([user]) as srv:
        ftp = srv.ftp("alice", "secret")
        with swapping(link, ("real", str(outside))):
            for i in range(STORS):
                payload = f"upload {i}\n".encode() * 50
                try:
                    ftp.storbinary(f"STOR dir/up{i}.txt", io.BytesIO(payload))
                    ok += 1
                    assert (home / "real" / f"up{i}.txt").read_bytes() == payload
                except ftplib.error_perm as exc:
                    assert str(exc).startswith("550"), exc
                try:
                    ftp.rename(f"dir/up{i}.txt", f"dir/moved{i}.txt")
                except ftplib.error_perm as exc:
                    assert str(exc).startswith("550"), exc
                try:
                    ftp.delete("dir/victim.txt")  # exists only outside
                except ftplib.error_perm as exc:
                    assert str(exc).startswith("550"), exc
        ftp.quit()
    assert [p.name for p in outside.iterdir()] == ["victim.txt"], \
        "a file or a temporary file landed outside the home, or one was deleted there"
    assert (outside / "victim.txt").read_bytes() == SECRET
    assert ok > 0
