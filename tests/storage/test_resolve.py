"""resolved_path gives exactly what os.path.realpath gives, symlinks of every kind included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsftpd.storage.resolve import resolved_path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "file.txt").write_text("x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    os.symlink("dir/sub", root / "rel-dir")  # relative, inside
    os.symlink(root / "dir" / "sub" / "file.txt", root / "abs-file")  # absolute, inside
    os.symlink("../outside", root / "escape")  # relative, leads out
    os.symlink(tmp_path / "outside" / "secret", root / "dir" / "abs-escape")
    os.symlink("rel-dir", root / "chain")  # a link to a link
    os.symlink("nowhere", root / "dangling")
    os.symlink(tmp_path / "outside" / "new-file", root / "dangling-out")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("..", root / "dir" / "up")
    return root


CASES = [
    "", "dir", "dir/sub/file.txt", "rel-dir", "rel-dir/file.txt", "abs-file", "escape",
    "escape/secret", "dir/abs-escape", "chain/file.txt", "dangling", "dangling-out",
    "loop-a", "loop-a/x", "dir/up", "dir/up/dir/sub", "dir/up/../outside", "missing",
    "missing/deeper", "dir/sub/file.txt/below", "dir/./sub/../sub", "rel-dir/missing",
    "escape/missing",
]


@pytest.mark.parametrize("relative", CASES)
def test_same_as_realpath(tree: Path, relative: str) -> None:
    path = os.path.join(str(tree), relative) if relative else str(tree)
    assert resolved_path(path) == os.path.realpath(path)


def test_a_path_reached_through_a_symlinked_ancestor(tree: Path, tmp_path: Path) -> None:
    os.symlink(tree, tmp_path / "alias")
    path = str(tmp_path / "alias" / "dir" / "sub" / "file.txt")
    assert resolved_path(path) == os.path.realpath(path) == str(tree / "dir" / "sub" / "file.txt")
