"""Fixtures of the container tests: the fsftpd image built once per run on the CI base, and
the server configuration in the form the command on this tree understands.

Every test here skips when podman is not installed; ``tests/run.sh`` installs it (and runc,
debootstrap), so CI runs them. Containers publish on 127.0.0.1 only, on free ports.
"""

from __future__ import annotations

import ftplib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.image import podman

# The environment configuration (issue 12) and the metrics sidecar (issue 13), when this tree
# has them. Before the appliance the image's command only takes the old flags.
APPLIANCE = (podman.REPO / "app/fsftpd/appliance/cli.py").exists()
SIDECAR = (podman.REPO / "app/fsftpd/appliance/sidecar.py").exists()

needs_podman = pytest.mark.skipif(not podman.available(),
                                  reason="podman/runc not installed (tests/run.sh installs them)")
needs_appliance = pytest.mark.skipif(not APPLIANCE, reason="the env configuration is not on this tree")
needs_sidecar = pytest.mark.skipif(not SIDECAR, reason="the metrics sidecar is not on this tree")

USER = "alice"
PASSWORD = "s3cret-Pass"


@pytest.fixture(scope="session")
def image() -> str:
    """The image id of this tree's Dockerfile built on localhost/ci-base:bookworm."""
    if not podman.available():
        pytest.skip("podman not installed")
    return podman.app_image()


@dataclass
class FtpConfig:
    """How to start the image as an FTP server for USER/PASSWORD on a passive range."""

    passive: range
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)


def ftp_config(passive: range, **env: str) -> FtpConfig:
    low, high = passive.start, passive.stop - 1
    if APPLIANCE:
        return FtpConfig(passive, {
            "FSFTPD_USER": USER, "FSFTPD_PASSWORD": PASSWORD,
            "FSFTPD_PASSIVE_PORTS": f"{low}-{high}", "FSFTPD_PASSIVE_ADDRESS": "127.0.0.1",
            **env})
    # The old command: flags only; its home is the first argument.
    return FtpConfig(passive, dict(env), ["/data", "--user", USER, "--password", PASSWORD,
                                          "--passive-ports", f"{low}-{high}"])


def ftp_client(port: int, *, user: str = USER, password: str = PASSWORD) -> ftplib.FTP:
    ftp = ftplib.FTP()
    # With the env configuration, PASV announces FSFTPD_PASSIVE_ADDRESS: use what it says,
    # so the test fails if the address is not the one the client can reach. The old command
    # announces the container's own address, which only the container network reaches.
    ftp.trust_server_pasv_ipv4_address = APPLIANCE
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login(user, password)
    return ftp


@pytest.fixture
def containers() -> Iterator[list[podman.Container]]:
    """Containers a test starts; removed (with their anonymous volumes) afterwards."""
    started: list[podman.Container] = []
    yield started
    for container in started:
        container.remove()
