"""The image run as users run it: `podman run` with env vars, published control, passive and
metrics ports, a read-only root filesystem; real FTP transfers through the published ports,
the metrics scrape, the healthcheck, the SIGTERM drain; the host user with a bind-mounted
home; an arbitrary UID in group 0 (OpenShift)."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import threading
import urllib.request
from pathlib import Path

from tests.image import podman
from tests.image.conftest import (
    APPLIANCE,
    SIDECAR,
    USER,
    FtpConfig,
    ftp_client,
    ftp_config,
    needs_appliance,
    needs_podman,
    needs_sidecar,
)

pytestmark = needs_podman


def start(image: str, containers: list[podman.Container], config: FtpConfig, *,
          metrics: bool = False, **options: object) -> podman.Container:
    env = dict(config.env)
    if not (metrics and SIDECAR):
        # without the sidecar the healthcheck checks the FTP greeting instead of /healthz
        env.setdefault("FSFTPD_METRICS_PORT", "0")
    ports: list[podman.PortSpec] = [2121, config.passive]
    if metrics and SIDECAR:
        ports.append(9100)
    container = podman.run(image, env=env, ports=ports, args=config.args, **options)  # type: ignore[arg-type]
    containers.append(container)
    container.wait_port(2121, banner=b"220")
    return container


def round_trip(ftp: ftplib.FTP, passive: range, name: str, data: bytes) -> None:
    """Upload then download ``data`` in passive mode through the published range."""
    host, port = ftplib.parse227(ftp.sendcmd("PASV"))
    assert port in passive
    if APPLIANCE:
        assert host == "127.0.0.1"  # FSFTPD_PASSIVE_ADDRESS, not the container's address
    assert ftp.storbinary(f"STOR {name}", io.BytesIO(data)).startswith("226")
    out = io.BytesIO()
    assert ftp.retrbinary(f"RETR {name}", out.write).startswith("226")
    assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert ftp.size(name) == len(data)
    folder, _, base = name.rpartition("/")
    assert base in [entry.rpartition("/")[2] for entry in ftp.nlst(folder or ".")]


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in the scrape")


def test_ftp_through_published_ports_read_only_root(image: str, containers: list[podman.Container]) -> None:
    passive = podman.free_port_range(4)
    container = start(image, containers, ftp_config(passive), metrics=True, read_only=True)
    data = os.urandom(3 * 1024 * 1024 + 17)
    ftp = ftp_client(container.host_port(2121))
    try:
        round_trip(ftp, passive, "upload.bin", data)
        ftp.mkd("sub")
        round_trip(ftp, passive, "sub/small.txt", b"hello\n")
    finally:
        ftp.quit()
    # the file is in /data (the only writable place beside /tmp), owned by the image's user
    owner = container.exec("stat", "-c", "%u:%g %s", "/data/upload.bin").stdout.split()
    assert owner == ["10001:0", str(len(data))]
    root = [line.split() for line in container.exec("cat", "/proc/mounts").stdout.splitlines()]
    assert "ro" in next(fields[3].split(",") for fields in root if fields[1] == "/")
    # fsftpd is PID 1
    assert "fsftpd" in container.exec("cat", "/proc/1/cmdline").stdout
    assert container.healthcheck() == 0


@needs_sidecar
def test_metrics_scrape_and_healthz(image: str, containers: list[podman.Container]) -> None:
    passive = podman.free_port_range(2)
    container = start(image, containers, ftp_config(passive), metrics=True, read_only=True)
    data = os.urandom(200_000)
    ftp = ftp_client(container.host_port(2121))
    try:
        round_trip(ftp, passive, "m.bin", data)
    finally:
        ftp.quit()
    base = f"http://127.0.0.1:{container.host_port(9100)}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert metric(text, "fsftpd_received_bytes_total", user=USER) == len(data)
    assert metric(text, "fsftpd_sent_bytes_total", user=USER) == len(data)
    # the appliance extra is in the image: the server runs on uvloop
    from prometheus_client.parser import text_string_to_metric_families

    info = [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "fsftpd_server_info"]
    assert info and info[0].labels["event_loop"].startswith("uvloop")
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=10) as reply:
            assert reply.status == 200
    assert container.healthcheck() == 0


@needs_appliance
def test_sigterm_drains_a_running_download_and_exits_0(image: str,
                                                       containers: list[podman.Container]) -> None:
    passive = podman.free_port_range(2)
    size = 1_000_000
    config = ftp_config(passive, FSFTPD_WRITE_SPEED_LIMIT_PER_CONNECTION="250000",
                        FSFTPD_SHUTDOWN_TIMEOUT="30")
    container = start(image, containers, config, read_only=True)
    port = container.host_port(2121)
    data = os.urandom(size)
    ftp = ftp_client(port)
    ftp.storbinary("STOR big.bin", io.BytesIO(data))
    idle = ftp_client(port)
    received = io.BytesIO()
    started = threading.Event()
    result: dict[str, object] = {}

    def download() -> None:
        def chunk(block: bytes) -> None:
            received.write(block)
            if received.tell() >= 100_000:
                started.set()
        try:
            result["reply"] = ftp.retrbinary("RETR big.bin", chunk)
        except Exception as exc:
            result["reply"] = exc
        started.set()

    thread = threading.Thread(target=download)
    thread.start()
    assert started.wait(30)
    assert container.stop(timeout=60) == 0  # SIGTERM; 137 would mean killed after 60 s
    thread.join(30)
    assert isinstance(result["reply"], str) and result["reply"].startswith("226"), result
    assert hashlib.sha256(received.getvalue()).digest() == hashlib.sha256(data).digest()
    # the idle session was told the server is going away
    idle.sock.settimeout(10)
    assert idle.getline().startswith("421")


def test_sigterm_exits_0(image: str, containers: list[podman.Container]) -> None:
    passive = podman.free_port_range(2)
    container = start(image, containers, ftp_config(passive, FSFTPD_SHUTDOWN_TIMEOUT="5"),
                      read_only=True)
    ftp = ftp_client(container.host_port(2121))
    ftp.voidcmd("NOOP")
    assert container.stop(timeout=60) == 0


def test_host_user_with_bind_mounted_home(image: str, containers: list[podman.Container],
                                          tmp_path: Path) -> None:
    """`--user "$(id -u):$(id -g)" -v "$PWD/data:/data"`: files belong to the host user."""
    home = tmp_path / "data"
    home.mkdir()
    if os.getuid() == 0:
        # CI runs as root: stand in for an ordinary host user the image knows nothing of
        uid, gid = 4321, 4321
        os.chown(home, uid, gid)
    else:
        uid, gid = os.getuid(), os.getgid()
    home.chmod(0o755)
    passive = podman.free_port_range(2)
    container = start(image, containers, ftp_config(passive), user=f"{uid}:{gid}",
                      volumes=[(home, "/data")], read_only=True)
    data = os.urandom(100_000)
    ftp = ftp_client(container.host_port(2121))
    try:
        round_trip(ftp, passive, "report.bin", data)
        ftp.mkd("inbox")
    finally:
        ftp.quit()
    stored = home / "report.bin"
    assert stored.read_bytes() == data
    assert (stored.stat().st_uid, stored.stat().st_gid) == (uid, gid)
    assert (home / "inbox").is_dir() and (home / "inbox").stat().st_uid == uid


def test_arbitrary_uid_in_group_0(image: str, containers: list[podman.Container]) -> None:
    """OpenShift's restricted policy: a random UID, group 0, read-only root."""
    passive = podman.free_port_range(2)
    container = start(image, containers, ftp_config(passive), user="1000770000:0", read_only=True)
    assert container.exec("id", "-u").stdout.strip() == "1000770000"
    ftp = ftp_client(container.host_port(2121))
    try:
        round_trip(ftp, passive, "any-uid.bin", os.urandom(50_000))
    finally:
        ftp.quit()
    owner = container.exec("stat", "-c", "%u:%g", "/data/any-uid.bin").stdout.strip()
    assert owner == "1000770000:0"


@needs_appliance
def test_invalid_configuration_exits_2_with_one_line(image: str,
                                                     containers: list[podman.Container]) -> None:
    container = podman.run(image, env={"FSFTPD_PASSIVE_PORTS": "30009-30000",
                                       "FSFTPD_USER": USER, "FSFTPD_PASSWORD": "x"})
    containers.append(container)
    assert container.wait(timeout=60) == 2
    logs = container.logs()
    assert "FSFTPD_PASSIVE_PORTS" in logs and "Traceback" not in logs


def test_healthcheck_fails_when_nothing_answers(image: str, containers: list[podman.Container]) -> None:
    """The healthcheck is not green by default: aimed at ports nothing serves, it fails."""
    passive = podman.free_port_range(2)
    container = start(image, containers, ftp_config(passive), read_only=True)
    assert container.healthcheck() == 0
    check = ["/opt/venv/bin/python", "/opt/fsftpd/healthcheck.py"]
    for env in (["-e", "FSFTPD_METRICS_PORT=0", "-e", "FSFTPD_PORT=1"],
                ["-e", "FSFTPD_METRICS_PORT=1"]):
        proc = podman.podman("exec", *env, container.name, *check, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
