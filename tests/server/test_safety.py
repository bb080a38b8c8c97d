"""No client reaches outside its home: `..`, absolute paths, repeated slashes, backslashes,
NUL bytes and symlinks on local disk (to a file and to a directory outside the base).
Permissions: the longest matching prefix decides and every permission listed counts."""

from __future__ import annotations

import ftplib
import io
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all

SECRET = b"TOPSECRET-outside-the-home"


def snapshot(root: Path) -> dict[str, tuple[bytes, float] | None]:
    out: dict[str, tuple[bytes, float] | None] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (p.read_bytes(), p.stat().st_mtime) if p.is_file() else None
    return out


@pytest.fixture
def jail(tmp_path: Path) -> Iterator[tuple[ServerThread, Path, Path]]:
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(SECRET)
    (outside / "sub" / "deep").write_bytes(SECRET)
    home.mkdir()
    (home / "mine").write_bytes(b"my own file")
    (home / "link-file").symlink_to(outside / "secret")
    (home / "link-dir").symlink_to(outside)
    (home / "dangling").symlink_to(outside / "not-yet")
    (home / "inner").mkdir()
    (home / "inner" / "ok-link").symlink_to(home / "mine")  # a link that stays inside is fine
    with running_server([fsftpd.User("alice", "secret", base_path=str(home))]) as srv:
        yield srv, home, outside


ESCAPES = [
    "../outside/secret",
    "/../outside/secret",
    "../../../../../../../../etc/passwd",
    "..\\outside\\secret",
    "\\..\\..\\outside\\secret",
    "//..//..//outside//secret",
    "/./../outside/./secret",
    "link-file",
    "/link-file",
    "link-dir/secret",
    "link-dir/sub/deep",
    "link-dir//sub///deep",
    "link-dir\\secret",
    "inner/../link-dir/secret",
    "link-dir",
    "link-dir/sub",
    "dangling",
]


def _transfer(raw: Raw, verb: str, payload: bytes | None = None) -> tuple[int, bytes, int | None]:
    data = raw.epsv()
    code, _ = raw.cmd(verb)
    if code != 150:
        data.close()
        return code, b"", None
    if payload is None:
        received = recv_all(data)
    else:
        data.sendall(payload)
        data.close()
        received = b""
    return code, received, raw.read()[0]


@pytest.mark.parametrize("path", ESCAPES)
def test_reading_never_escapes(jail: tuple[ServerThread, Path, Path], path: str) -> None:
    srv, _home, outside = jail
    before = snapshot(outside)
    seen = b""
    with Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        for verb in ("RETR", "LIST", "NLST", "MLSD"):
            code, received, _final = _transfer(raw, f"{verb} {path}")
            seen += received
            if verb == "RETR":
                assert code == 550, (verb, path, code)
        for verb in ("SIZE", "MDTM", "MLST", "STAT", "CWD"):
            code, text = raw.cmd(f"{verb} {path}")
            seen += text.encode()
            assert code in (550, 501) or (verb == "CWD" and code == 250), (verb, path, code, text)
            if verb == "CWD" and code == 250:
                # Only a path that resolved to an inside directory may be entered.
                assert raw.cmd("PWD")[1].split('"')[1] in ("/outside", "/etc"), path
                raw.cmd("CWD /")
    assert b"TOPSECRET" not in seen
    assert b"deep" not in seen and b"root:" not in seen
    assert snapshot(outside) == before


@pytest.mark.parametrize("path", ESCAPES)
def test_writing_never_escapes(jail: tuple[ServerThread, Path, Path], path: str) -> None:
    srv, _home, outside = jail
    before = snapshot(outside)
    with Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        for verb in ("STOR", "APPE"):
            code, _, final = _transfer(raw, f"{verb} {path}", b"overwritten")
            if code == 150:
                assert final == 226
        code, _, final = _transfer(raw, f"STOR {path}/new-file", b"x")
        raw.cmd("REST 3")
        _transfer(raw, f"STOR {path}", b"x")
        for cmd in (
            f"MKD {path}/newdir",
            f"MKD {path}",
            f"RMD {path}",
            f"RMD {path}/sub",
            f"DELE {path}/deep",
            f"DELE {path}/secret",
            f"MFMT 20000101000000 {path}",
            f"RNFR {path}",
        ):
            raw.cmd(cmd)
        raw.cmd("RNFR mine")
        raw.cmd(f"RNTO {path}/stolen")
        raw.cmd("RNFR mine")
        raw.cmd(f"RNTO {path}")
    assert snapshot(outside) == before
    # Whatever happened inside, the symlinked file was never written through.
    assert (outside / "secret").read_bytes() == SECRET
    assert not (outside / "not-yet").exists()


def test_appe_on_a_symlink_does_not_copy_outside_bytes_in(jail: tuple[ServerThread, Path, Path]) -> None:
    srv, home, outside = jail
    ftp = srv.ftp("alice", "secret")
    for cmd, rest in (("APPE link-file", None), ("STOR link-file", 3), ("APPE dangling", None)):
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.storbinary(cmd, io.BytesIO(b""), rest=rest)
    for name in ("link-file", "dangling"):
        assert (home / name).is_symlink()
    assert (outside / "secret").read_bytes() == SECRET
    assert not (outside / "not-yet").exists()
    ftp.quit()


def test_symlink_inside_the_home_works(jail: tuple[ServerThread, Path, Path]) -> None:
    srv, _home, _ = jail
    ftp = srv.ftp("alice", "secret")
    out = io.BytesIO()
    ftp.retrbinary("RETR inner/ok-link", out.write)
    assert out.getvalue() == b"my own file"
    ftp.quit()


def test_listing_the_root_with_links_does_not_leak(jail: tuple[ServerThread, Path, Path]) -> None:
    srv, _, outside = jail
    # Distinctive metadata on the outside target: none of it may show through the link.
    os.utime(outside / "secret", (978_307_200, 978_307_200))  # 2001-01-01
    (outside / "secret").chmod(0o600)
    ftp = srv.ftp("alice", "secret")
    names = ftp.nlst()
    assert "mine" in names and "link-file" in names
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    link_line = next(line for line in lines if line.endswith(" link-file"))
    assert " 2001 " not in link_line and f" {len(SECRET)} " not in link_line
    assert not link_line.startswith("-rw-------")
    facts = dict(ftp.mlsd())
    assert not facts["link-file"]["modify"].startswith("2001")
    assert facts["link-file"]["size"] != str(len(SECRET))
    assert facts["link-dir"]["type"] != "dir"  # not presented as a directory to enter
    ftp.quit()


def test_clamped_paths_land_inside(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with running_server([fsftpd.User("alice", "secret", base_path=str(home))]) as srv:
        ftp = srv.ftp("alice", "secret")
        ftp.storbinary("STOR ../../escaped", io.BytesIO(b"1"))
        ftp.storbinary("STOR \\..\\back", io.BytesIO(b"2"))
        ftp.storbinary("STOR //a//..//b", io.BytesIO(b"3"))
        ftp.mkd("../../d1")
        assert ftp.pwd() == "/"
        ftp.cwd("../../../..")
        assert ftp.pwd() == "/"
        ftp.cwd("d1")
        ftp.cwd("..\\..\\..")
        assert ftp.pwd() == "/"
        ftp.quit()
    assert sorted(p.name for p in home.iterdir()) == ["b", "back", "d1", "escaped"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


# -- permissions ----------------------------------------------------------------------------


def _perm_user(home: Path, order: int) -> fsftpd.User:
    perms = [
        fsftpd.Permission("/", readable=True, writable=False),
        fsftpd.Permission("/rw", readable=True, writable=True),
        fsftpd.Permission("/rw/ro", readable=True, writable=False),
        fsftpd.Permission("/hidden", readable=False, writable=False),
        fsftpd.Permission("/dropbox", readable=False, writable=True),
    ]
    random.Random(order).shuffle(perms)  # the order they are listed in must not matter
    return fsftpd.User("alice", "secret", base_path=str(home), permissions=perms)


@pytest.fixture(params=[0, 1, 2])
def perm_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    home = tmp_path / "home"
    for d in ("rw/ro/sub", "rw/rox", "hidden", "dropbox", "top"):
        (home / d).mkdir(parents=True)
    for f in ("topfile", "rw/ro/f", "hidden/f", "rw/f", "dropbox/f"):
        (home / f).write_bytes(b"content of " + f.encode())
    with running_server([_perm_user(home, request.param)]) as srv:
        yield srv, home


def test_read_only_subtree_refuses_writes(perm_server: tuple[ServerThread, Path]) -> None:
    srv, home = perm_server
    before = snapshot(home)
    with Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        for where in ("/", "/rw/ro", "/rw/ro/sub", "/top", "/hidden"):
            for cmd in (
                f"MKD {where}/new",
                f"DELE {where}/f",
                f"RMD {where}/sub",
                f"RNFR {where}/f",
                f"MFMT 20000101000000 {where}/f",
                f"STOR {where}/f",
                f"APPE {where}/f",
            ):
                raw.epsv().close()
                assert raw.code(cmd) == 550, cmd
            raw.cmd(f"CWD {where}")
            raw.epsv().close()
            assert raw.code("STOU") == 550
            raw.cmd("CWD /")
        # Moving a writable file into a read-only place is refused too.
        assert raw.code("RNFR /rw/f") == 350
        assert raw.code("RNTO /rw/ro/moved") == 550
        # Path tricks do not dodge the rule.
        for trick in ("/rw/../x", "/rw//ro/x", "\\rw\\ro\\x", "/rw/./ro/x", "rw/ro/../ro/x"):
            assert raw.code(f"MKD {trick}") == 550, trick
    assert snapshot(home) == before


def test_longest_prefix_allows_and_every_permission_counts(perm_server: tuple[ServerThread, Path]) -> None:
    srv, home = perm_server
    ftp = srv.ftp("alice", "secret")
    ftp.storbinary("STOR /rw/new", io.BytesIO(b"1"))  # /rw beats /
    ftp.storbinary("STOR /rw/rox/new", io.BytesIO(b"2"))  # /rw/rox is not below /rw/ro
    ftp.storbinary("STOR /rw/ro/../ok", io.BytesIO(b"3"))
    ftp.mkd("/rw/made")
    ftp.rename("/rw/made", "/rw/renamed")
    ftp.rmd("/rw/renamed")
    ftp.delete("/rw/f")
    # Write-only drop box: uploads yes, reads no.
    ftp.storbinary("STOR /dropbox/upload", io.BytesIO(b"4"))
    for cmd in ("RETR /dropbox/f", "RETR /hidden/f"):
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrbinary(cmd, lambda b: None)
    for cmd in ("CWD /hidden", "SIZE /hidden/f", "MLST /dropbox/f", "STAT /hidden"):
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.sendcmd(cmd)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.nlst("/hidden")
    # Reading the read-only parts works.
    out = io.BytesIO()
    ftp.retrbinary("RETR /rw/ro/f", out.write)
    assert out.getvalue() == b"content of rw/ro/f"
    facts = dict(ftp.mlsd("/rw"))
    assert "c" in facts["rox"]["perm"] and "c" not in facts["ro"]["perm"]
    ftp.quit()
    assert (home / "rw" / "new").read_bytes() == b"1"
    assert (home / "rw" / "rox" / "new").read_bytes() == b"2"
    assert (home / "rw" / "ok").read_bytes() == b"3"
    assert (home / "dropbox" / "upload").read_bytes() == b"4"
    assert not (home / "rw" / "f").exists()


def test_no_matching_permission_means_no_access(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "pub").mkdir(parents=True)
    (home / "private").write_bytes(b"p")
    user = fsftpd.User(
        "alice",
        "secret",
        base_path=str(home),
        home_path="/pub",
        permissions=[fsftpd.Permission("/pub", readable=True, writable=True)],
    )
    with running_server([user]) as srv, Raw(srv.host, srv.port) as raw:
        raw.login("alice", "secret")
        assert raw.cmd("PWD")[1].startswith('"/pub"')  # home_path is where the session starts
        assert raw.code("RETR /private") == 550
        assert raw.code("SIZE /private") == 550
        assert raw.code("CDUP") == 550
        assert raw.code("STOR /x") == 550
        assert raw.code("MKD /pub/ok") == 257
    assert (home / "pub" / "ok").is_dir()


def test_passive_port_only_accepts_the_client_address(tmp_path: Path) -> None:
    # Another host (here 127.0.0.2, a different loopback address) racing to the announced
    # port is turned away; the real client still gets its data (no data theft).
    home = tmp_path / "home"
    home.mkdir()
    (home / "f").write_bytes(b"private data")
    with (
        running_server([fsftpd.User("alice", "secret", base_path=str(home))]) as srv,
        Raw(srv.host, srv.port) as raw,
    ):
        raw.login("alice", "secret")
        _code, text = raw.cmd("EPSV")
        port = int(text.split("|||")[1].split("|")[0])
        thief = socket.socket()
        try:
            thief.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("cannot bind 127.0.0.2")
        thief.settimeout(5)
        thief.connect(("127.0.0.1", port))
        raw.send("RETR f")
        assert raw.read()[0] == 150
        assert thief.recv(100) == b""  # closed without data
        thief.close()
        data = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert recv_all(data) == b"private data"
        assert raw.read()[0] == 226


def test_replacing_a_file_keeps_its_permission_bits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    private = home / "private"
    private.write_bytes(b"old")
    private.chmod(0o600)
    with running_server([fsftpd.User("alice", "secret", base_path=str(home))]) as srv:
        ftp = srv.ftp("alice", "secret")
        ftp.storbinary("STOR private", io.BytesIO(b"new contents"))
        ftp.storbinary("APPE private", io.BytesIO(b"!"))
        ftp.quit()
    assert private.read_bytes() == b"new contents!"
    assert private.stat().st_mode & 0o777 == 0o600  # not widened to the umask default
