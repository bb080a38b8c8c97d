"""lftp as the client (subprocess): `mirror -R` (upload) and `mirror` (download) of a tree
of 500 files, passive and active, IPv4 and IPv6, verified by sha256 on both sides."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

import fsftpd
from tests.conftest import sha256_file
from tests.harness import ServerThread, ipv6_available, running_server

pytestmark = pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")

SETTINGS = (
    "set cmd:fail-exit yes; set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 30; "
    "set net:reconnect-interval-base 1; set xfer:clobber on; set mirror:parallel-transfer-count 4; "
)


def lftp(srv: ServerThread, script: str, passive: bool = True) -> str:
    mode = f"set ftp:passive-mode {'on' if passive else 'off'}; "
    if not passive:
        mode += "set ftp:port-ipv4 127.0.0.1; "
    cmd = f"{SETTINGS}{mode}open -u alice,secret ftp://{srv.url_host}:{srv.port}; {script}"
    proc = subprocess.run(["lftp", "-c", cmd], capture_output=True, timeout=240)
    assert proc.returncode == 0, (
        cmd,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    return proc.stdout.decode()


def make_tree(root: Path, files: int, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    dirs = [
        "",
        "a",
        "a/b",
        "a/b/c",
        "with space",
        "\u00fcml\u00e4ut",
        "\u65e5\u672c",
        "deep/er/still",
        "x",
        "y",
    ]
    digests: dict[str, str] = {}
    for i in range(files):
        d = dirs[i % len(dirs)]
        name = f"{d}/file {i:03d}.bin".lstrip("/") if i % 7 else f"{d}/f\u00e9{i:03d}".lstrip("/")
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.choice((0, 1, 100, 4096, rng.randrange(1, 65536), rng.randrange(65536, 300_000)))
        path.write_bytes(rng.randbytes(size))
        digests[name] = sha256_file(path)
    (root / "empty dir").mkdir()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("host", "passive"),
    [
        pytest.param("127.0.0.1", True, id="ipv4-passive"),
        pytest.param("127.0.0.1", False, id="ipv4-active"),
        pytest.param(
            "::1",
            True,
            id="ipv6-passive",
            marks=pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback"),
        ),
    ],
)
def test_mirror_500_files_both_ways(tmp_path: Path, host: str, passive: bool) -> None:
    home = tmp_path / "home"
    src = tmp_path / "src"
    back = tmp_path / "back"
    expected = make_tree(src, 500, seed=int.from_bytes(os.urandom(4), "big"))
    assert len(expected) == 500
    verbs: set[str] = set()
    with running_server([fsftpd.User("alice", "secret", base_path=str(home))], host=host) as srv:
        srv.call(lambda s: s.events.subscribe(lambda e: verbs.add(getattr(e, "verb", ""))))
        lftp(srv, f'mirror -R "{src}" /tree', passive=passive)
        assert tree_digests(home / "tree") == expected  # the server side
        assert (home / "tree" / "empty dir").is_dir()
        lftp(srv, f'mirror /tree "{back}"', passive=passive)
        assert tree_digests(back) == expected  # and back again
        assert (back / "empty dir").is_dir()
        # A second mirror finds nothing to do and changes nothing.
        lftp(srv, f'mirror -R "{src}" /tree', passive=passive)
        assert tree_digests(home / "tree") == expected
        assert not any(p.name.startswith(".fsftpd-upload-") for p in home.rglob("*"))
    # The data connections really were made the way the test says.
    assert bool(verbs & {"PORT", "EPRT"}) is not passive
    assert bool(verbs & {"PASV", "EPSV"}) is passive


def test_lftp_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    with running_server([fsftpd.User("alice", "secret", base_path=str(home))]) as srv:
        out = lftp(
            srv,
            f'mkdir "new dir"; cd "new dir"; put "{local}" -o "r\u00e9mote.bin"; '
            'mv "r\u00e9mote.bin" moved.bin; ls; cls -1; pwd',
        )
        assert "moved.bin" in out and out.rstrip().endswith("/new%20dir")
        assert sha256_file(home / "new dir" / "moved.bin") == sha256_file(local)
        got = tmp_path / "got.bin"
        lftp(srv, f'get "new dir/moved.bin" -o "{got}"')
        assert sha256_file(got) == sha256_file(local)
        # Resume a partial download (REST).
        got.write_bytes(local.read_bytes()[:1_000_000])
        lftp(srv, f'get -c "new dir/moved.bin" -o "{got}"')
        assert sha256_file(got) == sha256_file(local)
        lftp(srv, 'rm "new dir/moved.bin"; rmdir "new dir"')
        assert list(home.iterdir()) == []
