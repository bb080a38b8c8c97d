"""Homes: the anonymous default (no users: "/" is the current directory), the explicit
path-IO classes, and memory homes (one store per server instance)."""

from __future__ import annotations

import ftplib
import io
import os
import time
from pathlib import Path

import pytest

import fsftpd
from tests.conftest import sha256
from tests.harness import running_server
from tests.server.rawftp import Raw, rst


def test_anonymous_default_serves_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "existing").write_bytes(b"already here")
    monkeypatch.chdir(tmp_path)
    with running_server(None) as srv:
        for name in ("anonymous", "ftp", "whoever"):
            ftp = srv.ftp(name, "any@password")
            assert "existing" in ftp.nlst()
            out = io.BytesIO()
            ftp.retrbinary("RETR existing", out.write)
            assert out.getvalue() == b"already here"
            ftp.storbinary(f"STOR by-{name}", io.BytesIO(name.encode()))
            ftp.mkd(f"dir-{name}")
            ftp.quit()
        with Raw(srv.host, srv.port) as raw:
            code, text = raw.cmd("USER anonymous")
            assert code == 331 and "Anonymous" in text
    monkeypatch.chdir("/")
    for name in ("anonymous", "ftp", "whoever"):
        assert (tmp_path / f"by-{name}").read_bytes() == name.encode()
        assert (tmp_path / f"dir-{name}").is_dir()


def test_named_users_and_anonymous_together(tmp_path: Path) -> None:
    (tmp_path / "pub").mkdir()
    (tmp_path / "alice").mkdir()
    users = [
        fsftpd.User(base_path=str(tmp_path / "pub"), permissions=[fsftpd.Permission("/", writable=False)]),
        fsftpd.User("alice", "secret", base_path=str(tmp_path / "alice")),
    ]
    with running_server(users) as srv:
        anon = srv.ftp("anonymous", "x")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            anon.storbinary("STOR nope", io.BytesIO(b""))
        anon.quit()
        for name, password in (("mallory", "x"), ("alice", "wrong")):
            # An unknown name is not anonymous when named users exist.
            ftp = srv.ftp()
            with pytest.raises(ftplib.error_perm, match=r"^530"):
                ftp.login(name, password)
            ftp.close()
        alice = srv.ftp("alice", "secret")
        alice.storbinary("STOR yes", io.BytesIO(b"y"))
        alice.quit()
    assert list((tmp_path / "pub").iterdir()) == []
    assert (tmp_path / "alice" / "yes").read_bytes() == b"y"


@pytest.mark.parametrize("factory", [fsftpd.PathIO, fsftpd.AsyncPathIO], ids=["PathIO", "AsyncPathIO"])
def test_local_path_io_classes(tmp_path: Path, factory: type) -> None:
    base = tmp_path / "created-on-first-login"
    with running_server([fsftpd.User("u", "p", base_path=str(base))], path_io_factory=factory) as srv:
        ftp = srv.ftp("u", "p")
        payload = os.urandom(300_000)
        ftp.storbinary("STOR f", io.BytesIO(payload))
        out = io.BytesIO()
        ftp.retrbinary("RETR f", out.write)
        assert out.getvalue() == payload
        ftp.quit()
    assert (base / "f").read_bytes() == payload


def _memory_session(srv_factory: object = None) -> dict[str, object]:
    return {} if srv_factory is None else {"path_io_factory": srv_factory}


@pytest.mark.parametrize("how", ["url", "class"])
def test_memory_home_full_session(how: str) -> None:
    if how == "url":
        users = [fsftpd.User("u", "p", base_path="memory://alice")]
        options: dict[str, object] = {}
    else:
        users = [fsftpd.User("u", "p", base_path="/alice")]
        options = {"path_io_factory": fsftpd.MemoryPathIO}
    with running_server(users, **options) as srv:
        ftp = srv.ftp("u", "p")
        assert ftp.nlst() == []
        ftp.mkd("d")
        ftp.cwd("d")
        payload = os.urandom(5 * 1024 * 1024 + 3)
        ftp.storbinary("STOR f", io.BytesIO(payload))
        assert ftp.size("f") == len(payload)
        out = io.BytesIO()
        ftp.retrbinary("RETR f", out.write)
        assert sha256(out.getvalue()) == sha256(payload)
        out = io.BytesIO()
        ftp.retrbinary("RETR f", out.write, rest=1000)
        assert out.getvalue() == payload[1000:]
        ftp.storbinary("APPE f", io.BytesIO(b"tail"))
        ftp.storbinary("STOR g", io.BytesIO(b"0123456789"))
        ftp.storbinary("STOR g", io.BytesIO(b"XY"), rest=4)
        out = io.BytesIO()
        ftp.retrbinary("RETR g", out.write)
        assert out.getvalue() == b"0123XY"
        assert ftp.size("f") == len(payload) + 4
        ftp.voidcmd("TYPE A")
        ftp.storlines("STOR text", io.BytesIO(b"a\nb\n"))
        lines: list[str] = []
        ftp.retrlines("RETR text", lines.append)
        assert lines == ["a", "b"]
        ftp.voidcmd("TYPE I")
        facts = dict(ftp.mlsd())
        assert facts["f"]["type"] == "file" and facts["f"]["size"] == str(len(payload) + 4)
        assert ftp.sendcmd("MDTM f").startswith("213 ")
        with pytest.raises(ftplib.error_perm, match=r"^502"):
            ftp.sendcmd("MFMT 20200101000000 f")  # memory cannot set times: not supported
        ftp.cwd("/")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.rmd("d")  # not empty
        ftp.rename("d", "e")
        assert ftp.nlst("e") != []
        assert sorted(ftp.nlst("e")) == ["f", "g", "text"]
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.size("d/f")
        for name in ("f", "g", "text"):
            ftp.delete(f"e/{name}")
        ftp.rmd("e")
        assert ftp.nlst() == []
        ftp.quit()


def test_memory_upload_reset_leaves_nothing() -> None:
    with (
        running_server([fsftpd.User("u", "p", base_path="memory://x")]) as srv,
        Raw(srv.host, srv.port) as raw,
    ):
        raw.login("u", "p")
        data = raw.epsv()
        assert raw.cmd("STOR partial")[0] == 150
        data.sendall(os.urandom(256 * 1024))
        time.sleep(0.05)
        rst(data)
        assert raw.read()[0] == 426
        data = raw.epsv()
        assert raw.cmd("LIST -a")[0] == 150
        listing = b""
        while chunk := data.recv(65536):
            listing += chunk
        data.close()
        assert raw.read()[0] == 226
        assert listing == b""  # neither the target nor a temporary name


def test_memory_store_is_per_server_and_shared_by_its_users() -> None:
    users = [
        fsftpd.User("a", "p", base_path="memory://shared"),
        fsftpd.User("b", "p", base_path="memory://shared"),
        fsftpd.User("c", "p", base_path="memory://other"),
    ]
    with running_server(users) as one, running_server(users) as two:
        a = one.ftp("a", "p")
        a.storbinary("STOR note", io.BytesIO(b"from a on server one"))
        b = one.ftp("b", "p")
        assert b.nlst() == ["note"]  # same server, same root: same files
        c = one.ftp("c", "p")
        assert c.nlst() == []  # another root is another tree
        a2 = two.ftp("a", "p")
        assert a2.nlst() == []  # another server never sees them
        for ftp in (a, b, c, a2):
            ftp.quit()


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_rename_semantics_are_the_same_on_every_backend(tmp_path: Path, backend: str) -> None:
    base = str(tmp_path / "home") if backend == "local" else "memory://rename"
    with running_server([fsftpd.User("u", "p", base_path=base)]) as srv:
        ftp = srv.ftp("u", "p")
        for d in ("d1", "empty", "full", "d1/sub"):
            ftp.mkd(d)
        ftp.storbinary("STOR d1/x", io.BytesIO(b"x"))
        ftp.storbinary("STOR full/y", io.BytesIO(b"y"))
        ftp.storbinary("STOR f", io.BytesIO(b"f"))
        ftp.storbinary("STOR g", io.BytesIO(b"g"))
        ftp.rename("d1", "empty")  # a directory replaces an empty directory (POSIX rename)
        assert sorted(ftp.nlst("empty")) == ["sub", "x"]
        assert "d1" not in ftp.nlst()
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.rename("empty", "full")  # ...but never a non-empty one
        assert ftp.nlst("full") == ["y"]
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.rename("empty", "f")  # nor a file
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.rename("f", "full")  # a file never replaces a directory
        ftp.rename("f", "g")  # a file replaces a file
        out = io.BytesIO()
        ftp.retrbinary("RETR g", out.write)
        assert out.getvalue() == b"f"
        ftp.rename("g", "g")  # onto itself: nothing happens
        assert sorted(ftp.nlst()) == ["empty", "full", "g"]
        ftp.quit()
