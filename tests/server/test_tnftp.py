"""The classic command-line client (tnftp, Debian's ``ftp``) driven non-interactively on
every home kind: ``mget`` and ``mdelete`` with wildcards (the client sends the pattern in
NLST and acts on each name the server answers), ``ls`` with a pattern, sorted ``ls`` and
``nlist``, a file literally called ``a*b``, and a pattern over a big directory."""

from __future__ import annotations

import ftplib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ServerThread
from tests.server.homes import HOMES, home_server, put_files

TNFTP = shutil.which("tnftp")
# tests/run.sh installs it: in CI a missing tnftp fails these tests instead of skipping them
pytestmark = pytest.mark.skipif(TNFTP is None and not os.environ.get("CI"),
                                reason="tnftp is not installed (apt-get install tnftp)")

FILES = {
    "/f2.txt": os.urandom(70_000),
    "/notes.md": b"not a txt",
    "/f1.txt": os.urandom(3),
    "/x.tmp": b"tmp x",
    "/Z.txt": os.urandom(1000),
    "/keep.tmpl": b"not a .tmp",
    "/y.tmp": b"tmp y",
    "/f3.txt": b"",
    "/a*b": b"a file called a*b",
    "/.dot.txt": b"hidden from *",
    "/sub/s.txt": b"in sub",
}
TXT = ["Z.txt", "f1.txt", "f2.txt", "f3.txt"]
ALL = sorted({path.split("/")[1] for path in FILES})


def tnftp(srv: ServerThread, cwd: Path, *commands: str) -> str:
    """Run tnftp on ``commands`` (after logging in, passive, no prompts, binary) and
    return what it printed; bounded by a timeout."""
    assert TNFTP is not None
    script = "\n".join(["user alice secret", "passive on", "prompt off", "binary", *commands, "bye", ""])
    done = subprocess.run([TNFTP, "-n", "-p", "-v", srv.host, str(srv.port)], input=script, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=True)
    assert "221" in done.stdout, done.stdout
    return done.stdout


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", HOMES)
def test_mget_mdelete_ls_and_a_literal_star(kind: str, tmp_path: Path) -> None:
    with home_server(kind, tmp_path) as (srv, _):
        put_files(srv, FILES)
        local = tmp_path / "local"
        local.mkdir()
        out = tnftp(srv, local, "mget *.txt", "mdelete *.tmp", "ls *.txt ls.out", "get a*b",
                    "nlist . nlist.out", "ls . list.out", "mget *.none")
        got = {p.name: p.read_bytes() for p in local.iterdir() if not p.name.endswith(".out")}
        # exactly the matching files, each byte for byte; no dot file, nothing from sub/
        assert {name: sha(data) for name, data in got.items()} == {
            **{name: sha(FILES["/" + name]) for name in TXT}, "a*b": sha(FILES["/a*b"])}
        # ls with a pattern: the matches, sorted, in ls -l form
        ls = (local / "ls.out").read_text().splitlines()
        assert [line.split(None, 8)[8] for line in ls] == TXT
        assert all(line.startswith("-rw") for line in ls)
        # mdelete removed exactly the .tmp files (keep.tmpl stays); listings are sorted
        left = sorted(set(ALL) - {"x.tmp", "y.tmp"})
        assert (local / "nlist.out").read_text().splitlines() == left
        assert [line.split(None, 8)[8] for line in (local / "list.out").read_text().splitlines()] == left
        assert "No files found matching *.none" in out
        ftp = srv.ftp("alice", "secret")
        assert ftp.nlst() == left  # what is on storage afterwards
        ftp.quit()


BIG = 10_000
MATCHES = ["hit-1.csv", "hit-2.csv", "hit-3.csv"]


@pytest.mark.parametrize("kind", HOMES)
def test_mget_from_a_big_directory_holds_only_the_matches(kind: str, tmp_path: Path) -> None:
    # S3: 600 objects in pages of 100 (six ListObjectsV2 requests, as for 6,000 objects
    # in pages of 1,000, at a tenth of the cost); the others: 10,000 entries, batches <= 1,024.
    s3 = kind.startswith("s3")
    count, batch = (600, 100) if s3 else (BIG, 1024)
    storage = {"list_page_size": batch} if s3 else None
    files = {f"/big/file-{i:05d}.dat": b"" for i in range(count - len(MATCHES))}
    files.update({f"/big/{name}": name.encode() * 100 for name in MATCHES})
    with home_server(kind, tmp_path, probe=True, storage=storage) as (srv, probes):
        put_files(srv, files)
        (probe,) = probes
        probe.reset()
        local = tmp_path / "local"
        local.mkdir()
        tnftp(srv, local, "cd big", "mget *.csv")
        assert sorted(p.name for p in local.iterdir()) == MATCHES
        for name in MATCHES:
            assert sha((local / name).read_bytes()) == sha(name.encode() * 100)
        assert probe.listed == count  # the whole directory went by...
        assert probe.peak_alive <= 2 * batch + len(MATCHES)  # ...but only a batch or two stayed
        ftp = srv.ftp("alice", "secret")
        assert ftp.nlst("big/hit-?.csv") == [f"big/{name}" for name in MATCHES]
        with pytest.raises(ftplib.error_perm, match=r"^550 No files found"):
            ftp.nlst("big/*.none")
        ftp.quit()
