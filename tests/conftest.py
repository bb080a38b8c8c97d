from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.harness import ServerThread, running_server


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    root.mkdir()
    return root


@pytest.fixture
def user(home: Path) -> fsftpd.User:
    return fsftpd.User("alice", "secret", base_path=str(home))


@pytest.fixture
def server(user: fsftpd.User) -> Iterator[ServerThread]:
    """A server with one local-disk user alice/secret."""
    with running_server([user]) as srv:
        yield srv
