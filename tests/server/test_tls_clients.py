"""FTPS with real clients over loopback: curl (--ssl-reqd, --ftp-ssl-control, ftps://),
lftp (ftp:ssl-force, ftp:ssl-protect-data; TLS 1.2 and 1.3) and aioftp's client
(explicit upgrade_to_tls and implicit ssl=). Every upload is checked by its hash."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aioftp
import pytest

import fsftpd
from tests.harness import ServerThread, running_server
from tests.server.tlsfixtures import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def srv(pki: Pki, home: Path) -> Iterator[ServerThread]:
    with running_server(users=[fsftpd.User("u", "p", base_path=str(home))], tls_cert=pki.cert,
                        tls_key=pki.key, tls_require_session_reuse=True, implicit_tls_port=0) as server:
        yield server


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def implicit_port(srv: ServerThread) -> int:
    assert srv.server is not None and srv.server.implicit_tls_address is not None
    return srv.server.implicit_tls_address[1]


# -- curl ---------------------------------------------------------------------------------
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(pki: Pki, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = ["curl", "--silent", "--show-error", "--max-time", "60", "--cacert", pki.ca_file,
           "-u", "u:p", *args, url]
    return subprocess.run(cmd, capture_output=True, timeout=90, check=True)


@needs_curl
@pytest.mark.parametrize("version", ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"])
def test_curl_ssl_reqd(pki: Pki, srv: ServerThread, home: Path, tmp_path: Path, version: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    base = f"ftp://127.0.0.1:{srv.port}"
    curl(pki, f"{base}/up.bin", "--ssl-reqd", *version.split(), "-T", str(local))
    assert sha((home / "up.bin").read_bytes()) == sha(data)
    down = tmp_path / "down.bin"
    curl(pki, f"{base}/up.bin", "--ssl-reqd", *version.split(), "-o", str(down))
    assert sha(down.read_bytes()) == sha(data)
    listing = curl(pki, f"{base}/", "--ssl-reqd", "--list-only").stdout.decode()
    assert listing.split() == ["up.bin"]


@needs_curl
def test_curl_ssl_control_only(pki: Pki, srv: ServerThread, home: Path, tmp_path: Path) -> None:
    # --ftp-ssl-control: the login is protected, the data goes in the clear (PROT C).
    data = os.urandom(500_000)
    local = tmp_path / "c.bin"
    local.write_bytes(data)
    curl(pki, f"ftp://127.0.0.1:{srv.port}/c.bin", "--ftp-ssl-control", "-T", str(local))
    assert sha((home / "c.bin").read_bytes()) == sha(data)


@needs_curl
def test_curl_implicit_ftps(pki: Pki, srv: ServerThread, home: Path, tmp_path: Path) -> None:
    data = os.urandom(1024 * 1024)
    local = tmp_path / "i.bin"
    local.write_bytes(data)
    url = f"ftps://127.0.0.1:{implicit_port(srv)}/i.bin"
    curl(pki, url, "-T", str(local))
    assert sha((home / "i.bin").read_bytes()) == sha(data)
    down = tmp_path / "back.bin"
    curl(pki, url, "-o", str(down))
    assert down.read_bytes() == data


# -- lftp ---------------------------------------------------------------------------------
needs_lftp = pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")
PRIORITY = {"1.2": "NORMAL:-VERS-ALL:+VERS-TLS1.2", "1.3": "NORMAL:-VERS-ALL:+VERS-TLS1.3"}


def lftp(pki: Pki, srv: ServerThread, version: str, script: str) -> None:
    cmd = (f"set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:ssl-protect-list true; "
           f"set ssl:ca-file {pki.ca_file}; set ssl:priority {PRIORITY[version]}; "
           "set net:max-retries 1; set net:timeout 30; set xfer:clobber on; "
           f"open -u u,p ftp://127.0.0.1:{srv.port}; {script}")
    proc = subprocess.run(["lftp", "-c", cmd], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


@needs_lftp
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_lftp_uploads_always_complete_whole(pki: Pki, srv: ServerThread, home: Path, tmp_path: Path,
                                            version: str) -> None:
    data = os.urandom(6 * 1024 * 1024 + 5)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    for i in range(4):
        lftp(pki, srv, version, f'put "{local}" -o up{i}.bin')
        assert sha((home / f"up{i}.bin").read_bytes()) == sha(data), i
    back = tmp_path / "back.bin"
    lftp(pki, srv, version, f'get up3.bin -o "{back}"; ls')
    assert sha(back.read_bytes()) == sha(data)


# -- aioftp -------------------------------------------------------------------------------
async def test_aioftp_control_connection(pki: Pki, srv: ServerThread, home: Path) -> None:
    """aioftp's client protects the control connection (explicit upgrade_to_tls and
    implicit ssl=) and fsftpd serves it. Its protected data connections cannot work with
    fsftpd (nor with vsftpd): aioftp completes the data connection's TLS handshake
    before it sends RETR/STOR, while the server starts it on the command (RFC 4217
    section 9); see docs/security.md."""
    client = aioftp.Client()
    await client.connect("127.0.0.1", srv.port)
    await client.upgrade_to_tls(pki.client_context())  # AUTH TLS, PBSZ 0, PROT P
    await client.login("u", "p")
    await client.make_directory("made over TLS")
    assert str(await client.get_current_directory()) == "/"
    await client.quit()
    client = aioftp.Client(ssl=pki.client_context())
    await client.connect("127.0.0.1", implicit_port(srv))
    await client.login("u", "p")
    await client.remove_directory("made over TLS")
    await client.quit()
    assert os.listdir(home) == []
