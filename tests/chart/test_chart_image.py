"""The closest thing to a cluster this machine allows: the built image run by podman with
exactly the environment, ports, user and filesystem of one pod of the rendered StatefulSet
(pod fsftpd-1 of three, downward-API values filled in as the kubelet would), then its probes'
targets asked, and a real FTP session whose passive port must lie in that pod's own slice."""

from __future__ import annotations

import base64
import copy
import ftplib
import hashlib
import importlib.util
import io
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.chart.helm import REPO, contract_slice, of_kind, only, pod_env, render

try:
    from tests.image import podman  # the image engineer's helper (issue 14, tests/image/podman.py)
except ImportError:
    podman = None  # type: ignore[assignment]

_MISSING = [
    what
    for what, present in [
        ("the Dockerfile (issue 14)", (REPO / "Dockerfile").exists()),
        ("tests/image/podman.py (issue 14)", podman is not None),
        (
            "the appliance, fsftpd.appliance.cli (issue 12)",
            importlib.util.find_spec("fsftpd.appliance") is not None,
        ),
        (
            "the sidecar serving /healthz and /readyz, fsftpd.appliance.sidecar (issue 13)",
            (REPO / "app" / "fsftpd" / "appliance" / "sidecar.py").exists(),
        ),
    ]
    if not present
]
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason="the image run of the rendered pod needs " + ", ".join(_MISSING) + " on main"
)

REPLICAS = 3
ORDINAL = 1
PASSWORD = "chart-pod-password"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _pod_spec_as_kubelet_gives_it(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod template with every env entry resolved to the value pod fsftpd-1 would see."""
    spec = copy.deepcopy(only(objects, "StatefulSet")["spec"]["template"]["spec"])
    env = pod_env(objects, ORDINAL, host_ip="127.0.0.1", pod_ip="127.0.0.1")
    (ctr,) = spec["containers"]
    ctr["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return spec


@pytest.mark.slow
def test_image_runs_as_the_rendered_pod() -> None:
    assert podman is not None
    if not podman.available():
        pytest.skip("podman/runc not installed (tests/run.sh installs them)")
    passive = podman.free_port_range(2 * REPLICAS)
    values = {
        "replicaCount": REPLICAS,
        "passive": {"minPort": passive.start, "maxPort": passive.stop - 1, "address": "127.0.0.1"},
        "auth": {"username": "alice", "password": PASSWORD},
        "config": {"shutdownTimeout": 5},
    }
    objects = render(values)
    spec = _pod_spec_as_kubelet_gives_it(objects)
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["FSFTPD_REPLICA_INDEX"] == f"fsftpd-{ORDINAL}"
    my_slice = contract_slice(passive.start, passive.stop - 1, REPLICAS, ORDINAL)
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in of_kind(objects, "Secret")
    }
    image = podman.app_image()
    with podman.run_pod_container(
        image, spec, secrets=secrets, pod_name=f"fsftpd-{ORDINAL}", passive=passive
    ) as ctr:
        ctr.wait_port(2121, timeout=60, banner=b"220")
        # the user of the pod's securityContext, not the image's default
        user = ctr.inspect()["Config"]["User"]
        assert user.split(":")[0] == str(spec["securityContext"]["runAsUser"])
        # every probe of the rendered container answers 200 on its port and path
        metrics_port = ctr.host_port(int(env["FSFTPD_METRICS_PORT"]))
        container_spec = spec["containers"][0]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container_spec[probe]["httpGet"]["path"]
            deadline = time.monotonic() + 30
            status, body = _get(f"http://127.0.0.1:{metrics_port}{path}")
            while status != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
                status, body = _get(f"http://127.0.0.1:{metrics_port}{path}")
            assert status == 200, f"{probe} {path}: {status} {body}\n{ctr.logs()}"
        # a real session: the passive port offered is in this pod's slice, the bytes round-trip
        data = bytes(range(256)) * 4096
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", ctr.host_port(int(env["FSFTPD_PORT"])), timeout=30)
            ftp.login("alice", PASSWORD)
            reply = ftp.sendcmd("PASV")
            numbers = reply[reply.index("(") + 1 : reply.index(")")].split(",")
            assert ".".join(numbers[:4]) == "127.0.0.1"
            assert int(numbers[4]) * 256 + int(numbers[5]) in my_slice, (reply, my_slice)
            ftp.storbinary("STOR blob.bin", io.BytesIO(data))
            out = io.BytesIO()
            ftp.retrbinary("RETR blob.bin", out.write)
            assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(data).hexdigest()
        # SIGTERM drains and exits 0 well within the pod's grace period
        assert ctr.stop(timeout=int(spec["terminationGracePeriodSeconds"])) == 0, ctr.logs()
