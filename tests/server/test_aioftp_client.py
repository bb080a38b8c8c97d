"""The aioftp client (a test dependency only) against fsftpd, on its own event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path, PurePosixPath

import aioftp
import pytest

import fsftpd
from tests.conftest import sha256, sha256_file
from tests.harness import ipv6_available, running_server


async def _session(host: str, port: int, home: Path, tmp_path: Path, passive: tuple[str, ...]) -> None:
    client = aioftp.Client(passive_commands=passive, socket_timeout=30)
    await client.connect(host, port)
    try:
        await client.login("alice", "secret")
        await client.make_directory("a/b c/\u00e9t\u00e9")  # parents=True: MKD per level
        await client.change_directory("a/b c")
        assert await client.get_current_directory() == PurePosixPath("/a/b c")
        payload = os.urandom(3 * 1024 * 1024 + 1)
        async with client.upload_stream("\u00e9t\u00e9/blob") as stream:
            for i in range(0, len(payload), 256 * 1024):
                await stream.write(payload[i : i + 256 * 1024])
        digest = hashlib.sha256()
        async with client.download_stream("\u00e9t\u00e9/blob") as stream:
            async for block in stream.iter_by_block():
                digest.update(block)
        assert digest.hexdigest() == sha256(payload)
        # Resume a download and an upload at an offset (REST).
        async with client.download_stream("\u00e9t\u00e9/blob", offset=1_000_000) as stream:
            tail = b"".join([b async for b in stream.iter_by_block()])
        assert tail == payload[1_000_000:]
        async with client.append_stream("\u00e9t\u00e9/blob") as stream:
            await stream.write(b"appended")
        stat = await client.stat("\u00e9t\u00e9/blob")
        assert int(stat["size"]) == len(payload) + len(b"appended")
        assert stat["type"] == "file"
        listed = {str(p): info["type"] async for p, info in client.list("/", recursive=True)}
        assert listed == {
            "/a": "dir",
            "/a/b c": "dir",
            "/a/b c/\u00e9t\u00e9": "dir",
            "/a/b c/\u00e9t\u00e9/blob": "file",
        }
        lines = [(str(p), info["type"]) async for p, info in client.list("\u00e9t\u00e9", raw_command="LIST")]
        assert lines == [("\u00e9t\u00e9/blob", "file")]  # aioftp parses our LIST lines too
        local = tmp_path / "local"
        local.write_bytes(payload)
        await client.upload(local, "/uploaded", write_into=True)
        await client.download("/uploaded", tmp_path / "downloaded", write_into=True)
        assert sha256_file(tmp_path / "downloaded") == sha256(payload)
        await client.rename("/uploaded", "/renamed")
        assert await client.exists("/renamed") and not await client.exists("/uploaded")
        assert await client.is_file("/renamed")
        await client.change_directory("/")
        await client.remove("/a")  # recursive: DELE and RMD all the way down
        assert not await client.exists("/a")
        with pytest.raises(aioftp.StatusCodeError) as info:
            await client.change_directory("/nowhere")
        assert info.value.received_codes[0].matches("550")
    finally:
        await client.quit()
    assert sorted(p.name for p in home.iterdir()) == ["renamed"]  # noqa: ASYNC240
    assert sha256_file(home / "renamed") == sha256(payload)


@pytest.mark.parametrize(
    ("host", "passive"),
    [
        pytest.param("127.0.0.1", ("epsv",), id="ipv4-epsv"),
        pytest.param("127.0.0.1", ("pasv",), id="ipv4-pasv"),
        pytest.param(
            "::1",
            ("epsv",),
            id="ipv6",
            marks=pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback"),
        ),
    ],
)
def test_aioftp_client(tmp_path: Path, host: str, passive: tuple[str, ...]) -> None:
    home = tmp_path / "home"
    with running_server([fsftpd.User("alice", "secret", base_path=str(home))], host=host) as srv:
        asyncio.run(asyncio.wait_for(_session(host, srv.port, home, tmp_path, passive), 60))


def test_aioftp_abort(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "big").write_bytes(os.urandom(32 * 1024 * 1024))

    async def run(port: int) -> None:
        async with aioftp.Client.context("127.0.0.1", port, "alice", "secret") as client:
            stream = await client.download_stream("big")
            await stream.read(4096)
            await client.abort()  # waits for 426, then 226
            stream.close()
            code, _ = await client.command("NOOP", "200")
            assert code.matches("200")

    with running_server([fsftpd.User("alice", "secret", base_path=str(home))]) as srv:
        asyncio.run(asyncio.wait_for(run(srv.port), 60))
