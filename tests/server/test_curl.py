"""curl as the client (subprocess): upload, download, passive and active, listings, resume,
ASCII, names with spaces and UTF-8, IPv4 and IPv6. Contents are checked by sha256."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import fsftpd
from tests.conftest import sha256, sha256_file
from tests.harness import ServerThread, ipv6_available, running_server

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6", marks=pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")),
]


@pytest.fixture(params=HOSTS)
def srv(request: pytest.FixtureRequest, user: fsftpd.User) -> Iterator[ServerThread]:
    with running_server([user], host=request.param) as server:
        yield server


def curl(srv: ServerThread, path: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    url = f"ftp://alice:secret@{srv.url_host}:{srv.port}/{path}"
    cmd = ["curl", "--silent", "--show-error", "--globoff", "--max-time", "60", *args, url]
    proc = subprocess.run(cmd, capture_output=True, timeout=90)
    if check:
        assert proc.returncode == 0, (cmd, proc.stderr.decode(errors="replace"))
    return proc


@pytest.mark.parametrize(
    "mode",
    [[], ["--ftp-pasv"], ["--disable-epsv"], ["-P", "-"], ["-P", "-", "--disable-eprt"]],
    ids=["default", "pasv", "no-epsv", "active", "active-port"],
)
def test_upload_download(srv: ServerThread, home: Path, tmp_path: Path, mode: list[str]) -> None:
    if srv.host == "::1" and "--disable-eprt" in mode:
        pytest.skip("PORT cannot express IPv6 (RFC 2428)")
    if srv.host == "::1" and "--disable-epsv" in mode:
        pytest.skip("PASV cannot express IPv6 (RFC 2428)")
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(4 * 1024 * 1024 + 123))
    curl(srv, "up.bin", "-T", str(local), *mode)
    assert sha256_file(home / "up.bin") == sha256_file(local)
    down = tmp_path / "down.bin"
    curl(srv, "up.bin", "-o", str(down), *mode)
    assert sha256_file(down) == sha256_file(local)


def test_listings_and_quote_commands(srv: ServerThread, home: Path) -> None:
    (home / "sub dir").mkdir()
    (home / "a.txt").write_bytes(b"a")
    (home / "\u00e9t\u00e9.txt").write_bytes(b"b")
    listing = curl(srv, "").stdout.decode()
    assert len(listing.splitlines()) == 3 and "sub dir" in listing and "\u00e9t\u00e9.txt" in listing
    names = curl(srv, "", "--list-only").stdout.decode().split()
    assert sorted(names) == sorted(["sub", "dir", "a.txt", "\u00e9t\u00e9.txt"])
    # -Q sends raw commands after the transfer: DELE, MKD.
    curl(srv, "", "--list-only", "-Q", "-DELE a.txt", "-Q", "-MKD made by curl")
    assert not (home / "a.txt").exists()
    assert (home / "made by curl").is_dir()
    bad = curl(srv, "", "-Q", "-DELE missing", check=False)
    assert bad.returncode != 0


def test_resume_download_and_upload(srv: ServerThread, home: Path, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    (home / "f").write_bytes(payload)
    part = tmp_path / "part"
    part.write_bytes(payload[:1_000_001])
    curl(srv, "f", "-C", "-", "-o", str(part))  # REST 1000001 + RETR
    assert sha256_file(part) == sha256(payload)
    # Upload resume: curl asks SIZE, then APPE the rest.
    (home / "g").write_bytes(payload[:777_777])
    whole = tmp_path / "whole"
    whole.write_bytes(payload)
    curl(srv, "g", "-C", "-", "-T", str(whole))
    assert sha256_file(home / "g") == sha256(payload)


def test_ascii_mode(srv: ServerThread, home: Path, tmp_path: Path) -> None:
    text = b"".join(b"line %d\n" % i for i in range(50_000))
    (home / "t.txt").write_bytes(text)
    down = tmp_path / "t.txt"
    curl(srv, "t.txt;type=a", "-o", str(down))
    # The server sends CRLF (checked byte-exact in test_transfers); libcurl turns it back
    # into local LF line ends, so the round trip is exact.
    assert down.read_bytes() == text
    # curl sends a local LF file as CRLF in ASCII mode; the server stores LF again.
    lf = tmp_path / "lf.txt"
    lf.write_bytes(b"x\ny\n" * 10_000)
    curl(srv, "up.txt", "-T", str(lf), "--use-ascii")
    assert (home / "up.txt").read_bytes() == b"x\ny\n" * 10_000


def test_names_with_spaces_and_utf8(srv: ServerThread, home: Path, tmp_path: Path) -> None:
    name = "d\u00e9j\u00e0 vu \u65e5\u672c/fichier \u00e9t\u00e9 #1.bin"
    local = tmp_path / "x"
    local.write_bytes(os.urandom(100_000))
    curl(srv, quote(name), "-T", str(local), "--ftp-create-dirs")
    assert sha256_file(home / name) == sha256_file(local)
    down = tmp_path / "y"
    curl(srv, quote(name), "-o", str(down))
    assert sha256_file(down) == sha256_file(local)


def test_missing_file_fails_cleanly(srv: ServerThread) -> None:
    proc = curl(srv, "does-not-exist", "-o", os.devnull, check=False)
    assert proc.returncode == 78  # CURLE_REMOTE_FILE_NOT_FOUND: curl saw our 550
    bad_login = subprocess.run(
        ["curl", "-sS", "--globoff", f"ftp://alice:WRONG@{srv.url_host}:{srv.port}/"],
        capture_output=True,
        timeout=60,
    )
    assert bad_login.returncode == 67  # CURLE_LOGIN_DENIED: 530
