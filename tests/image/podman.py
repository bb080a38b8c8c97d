"""Podman for the image, compose and Helm chart tests: the one place that knows how to build
and run containers on these machines (Debian 12, root, no registry, no Docker engine).

Standard library only, so it also runs as a script before any virtualenv exists:

    python3 tests/image/podman.py setup     # write containers.conf, make the CI base image
    python3 tests/image/podman.py env       # print `export CONTAINERS_CONF=...` for a shell
    python3 tests/image/podman.py build     # build the fsftpd image on the CI base, print its id

Interface (stable: tests/image, tests/compose and the chart tests use it)

``available() -> bool``
    podman and runc are installed. Tests skip without them; ``tests/run.sh`` installs them.
``env() -> dict[str, str]``
    ``os.environ`` plus ``CONTAINERS_CONF`` pointing at a private file (runc, the file events
    logger, ulimits this sandbox allows); pass it to any podman or podman-compose process.
``podman(*args, timeout=300, check=True, input=None) -> CompletedProcess[str]``
    run podman with that environment; on failure raises :class:`PodmanError` with stderr.
``ensure_ci_base(tag=CI_BASE) -> str``
    the Debian bookworm base (python3, venv, the host's CA bundle as ``PIP_CERT``) made by
    debootstrap + ``podman import`` when the tag is missing, cached by tag; a file lock
    keeps two test runs on one machine from making it twice.
``build(tag, *, context=REPO, dockerfile="Dockerfile", build_args=None) -> str``
    ``podman build --format docker`` (keeps HEALTHCHECK), layer cache on; returns the image
    id. Run containers by that id: another worktree may retag the same name meanwhile.
``app_image() -> str``
    the fsftpd image of this tree built on the CI base (once per process), its id.
``free_port_range(count) -> range``
    ``count`` consecutive free loopback ports, for a passive range published 1:1.
``run(image, *, env=None, ports=(), user=None, read_only=False, tmpfs=(), volumes=(),
      args=(), name=None, network=None, extra=()) -> Container``
    ``podman run -d``. ``ports`` are container ports (int or ``range``): each is published on
    127.0.0.1, on a free host port of podman's choice, or on the same port number when given
    as ``(port, port)`` / a ``range`` (passive ports must keep their number: PASV announces
    it). ``volumes`` are ``(host_path, container_path)`` bind mounts, ``tmpfs`` container paths
    (``PATH:OPTIONS`` passes mount options, e.g. ``/data:rw,U`` to give it to ``user``).
``run_pod_container(image, pod_spec, *, container=None, secrets=None, config_maps=None,
      pod_name="fsftpd-0", passive=None) -> Container``
    run a Kubernetes container spec (from a rendered Deployment or StatefulSet) as podman
    would: its env (``value``, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``
    metadata.name/namespace, status.podIP as 127.0.0.1), its user and group
    (``runAsUser``/``runAsGroup``/``fsGroup`` as a supplementary group), read-only root
    filesystem, dropped capabilities, ``emptyDir`` mounts as tmpfs, ``args``/``command``, and
    its ``containerPort`` s published as :func:`run` does (``passive``: a range published 1:1;
    by default the ports named ``pasv-*``/``passive*`` or numbered 30000-32767 are 1:1);
    ``emptyDir`` mounts are tmpfs owned by the container's user (writable, as the kubelet's are).
``Container``
    ``.name``, ``.host_port(container_port) -> int``, ``.logs() -> str``,
    ``.inspect() -> dict``, ``.running() -> bool``, ``.exec(*cmd) -> CompletedProcess``,
    ``.healthcheck() -> int`` (``podman healthcheck run``: 0 healthy),
    ``.wait_port(container_port, timeout=60, banner=b"")`` (connects until the published port
    answers, and reads ``banner`` if given; raises with the logs if the container exits),
    ``.stop(timeout=30) -> int`` (SIGTERM, SIGKILL after ``timeout``; the exit code),
    ``.wait(timeout=60) -> int`` (until it exits by itself; the exit code),
    ``.remove()`` (with its anonymous volumes); a context manager that removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CI_BASE = "localhost/ci-base:bookworm"
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
# Where the CA bundle of the host machine lands in the CI base image (pip needs it: TLS to the
# package index only verifies with the host's bundle on these machines).
BASE_CA_FILE = "/etc/ssl/certs/host-ca-bundle.crt"
STATE_DIR = Path(os.environ.get("FSFTPD_PODMAN_DIR", "/var/tmp/fsftpd-podman"))


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its command line and stderr."""


def available() -> bool:
    return shutil.which("podman") is not None and shutil.which("runc") is not None


def _containers_conf() -> Path:
    """Write the private containers.conf (idempotent) and return its path.

    runc instead of crun (crun fails on this machine's hybrid cgroups), the file events logger
    (no journald here), the docker image format (OCI drops HEALTHCHECK) and ulimits no higher
    than this sandbox's hard limits (podman's defaults ask for more and fail)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile == resource.RLIM_INFINITY:
        nofile = 1048576
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except OSError:
        pid_max = 32768
    text = (
        "# written by tests/image/podman.py\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={pid_max}:{pid_max}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'events_logger = "file"\n'
        # docker format keeps HEALTHCHECK, also in builds podman-compose starts
        'image_default_format = "docker"\n'
    )
    path = STATE_DIR / "containers.conf"
    if not path.exists() or path.read_text() != text:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(_containers_conf()), "BUILDAH_FORMAT": "docker"}


def podman(*args: str, timeout: float = 300, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["podman", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(),
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise PodmanError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _apt_mirror() -> str:
    """The Debian mirror apt already uses here (the base must come from the same place)."""
    out = subprocess.run(["apt-get", "indextargets", "--format", "$(REPO_URI)"],
                         capture_output=True, text=True, check=False).stdout.split()
    for uri in out:
        if "-security" not in uri and "debian" in uri:
            return uri
    return "http://deb.debian.org/debian/"


def host_ca_bundle() -> Path:
    return Path(ssl.get_default_verify_paths().openssl_cafile)


def ensure_ci_base(tag: str = CI_BASE) -> str:
    """Make the CI base image unless it exists (debootstrap minbase + podman import)."""
    if image_exists(tag):
        return tag
    with _lock("ci-base"):
        if image_exists(tag):
            return tag
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ci-base-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
                            SUITE, str(rootfs), _apt_mirror()],
                           check=True, stdout=subprocess.DEVNULL, timeout=900)
            shutil.copyfile(host_ca_bundle(), rootfs / BASE_CA_FILE.lstrip("/"))
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / cache).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            imp = subprocess.run(
                ["podman", "import",
                 "--change", f"ENV PIP_CERT={BASE_CA_FILE}",
                 "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--change", 'CMD ["/bin/bash"]',
                 "-", tag],
                stdin=tar.stdout, capture_output=True, text=True, env=env(), timeout=600)
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
            if imp.returncode != 0 or tar.returncode != 0:
                raise PodmanError(f"podman import of {tag} failed:\n{imp.stderr[-4000:]}")
        print(f"made {tag} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return tag


def build(tag: str, *, context: Path | str = REPO, dockerfile: str = "Dockerfile",
          build_args: Mapping[str, str] | None = None, timeout: float = 900) -> str:
    """podman build (docker format, so HEALTHCHECK is kept); returns the image id."""
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        cmd = ["build", "--format", "docker", "--layers", "--iidfile", str(iidfile),
               "-t", tag, "-f", str(Path(context) / dockerfile)]
        for key, value in (build_args or {}).items():
            cmd += ["--build-arg", f"{key}={value}"]
        podman(*cmd, str(context), timeout=timeout)
        return iidfile.read_text().strip()


_app_image: str | None = None


def app_image() -> str:
    """The fsftpd image of this tree on the CI base; built once per process."""
    global _app_image
    if _app_image is None:
        _app_image = build("localhost/fsftpd:test", build_args={"BASE": ensure_ci_base()})
    return _app_image


def free_port_range(count: int) -> range:
    """``count`` consecutive ports free on 127.0.0.1, below the ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(12000, 32000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return range(base, base + count)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


PortSpec = int | range | tuple[int, int]


def _publish_args(ports: Iterable[PortSpec]) -> list[str]:
    args: list[str] = []
    for spec in ports:
        if isinstance(spec, range):
            span = f"{spec.start}-{spec.stop - 1}" if len(spec) > 1 else str(spec.start)
            args += ["-p", f"127.0.0.1:{span}:{span}"]
        elif isinstance(spec, tuple):
            args += ["-p", f"127.0.0.1:{spec[1]}:{spec[0]}"]
        else:
            args += ["-p", f"127.0.0.1::{spec}"]
    return args


class Container:
    """A container started by :func:`run`; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(podman("container", "inspect", self.name).stdout)
        return data[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def host_port(self, container_port: int) -> int:
        out = podman("port", self.name, f"{container_port}/tcp").stdout.split()
        return int(out[0].rsplit(":", 1)[1])

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *cmd, check=check)

    def healthcheck(self) -> int:
        return podman("healthcheck", "run", self.name, check=False, timeout=60).returncode

    def wait_port(self, container_port: int, timeout: float = 60, banner: bytes = b"") -> None:
        """Connect to the published port until it answers (and sends ``banner``)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise PodmanError(f"container {self.name} exited:\n{self.logs()[-4000:]}")
            try:
                port = self.host_port(container_port)
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    if not banner:
                        return
                    data = sock.recv(len(banner))
                    if data.startswith(banner):
                        return
                    last = RuntimeError(f"port {container_port} answered {data!r}")
            except (OSError, PodmanError, IndexError) as exc:
                last = exc
            time.sleep(0.25)
        raise PodmanError(f"port {container_port} of {self.name} never answered ({last}):\n"
                          f"{self.logs()[-4000:]}")

    def stop(self, timeout: int = 30) -> int:
        """SIGTERM (the image's stop signal), SIGKILL after ``timeout`` s; the exit code."""
        podman("stop", "-t", str(timeout), self.name, timeout=timeout + 60)
        return int(self.inspect()["State"]["ExitCode"])

    def wait(self, timeout: float = 60) -> int:
        """Wait for the container to exit by itself; its exit code."""
        return int(podman("wait", self.name, timeout=timeout).stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        podman("rm", "-f", "-v", self.name, check=False, timeout=120)


def run(image: str, *, env: Mapping[str, str] | None = None, ports: Iterable[PortSpec] = (),
        user: str | None = None, read_only: bool = False, tmpfs: Iterable[str] = (),
        volumes: Iterable[tuple[str | os.PathLike[str], str]] = (), args: Sequence[str] = (),
        name: str | None = None, network: str | None = None,
        extra: Sequence[str] = ()) -> Container:
    name = name or f"fsftpd-test-{uuid.uuid4().hex[:10]}"
    cmd = ["run", "-d", "--name", name, *_publish_args(ports)]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    if user is not None:
        cmd += ["--user", user]
    if read_only:
        cmd += ["--read-only"]
    for path in tmpfs:
        cmd += ["--tmpfs", path]
    for host, target in volumes:
        cmd += ["-v", f"{os.fspath(host)}:{target}"]
    if network:
        cmd += ["--network", network]
    cmd += [*extra, image, *args]
    podman(*cmd)
    return Container(name)


def _is_passive(port: Mapping[str, Any]) -> bool:
    name = str(port.get("name", ""))
    number = int(port["containerPort"])
    return name.startswith(("pasv", "passive")) or 30000 <= number <= 32767


def run_pod_container(image: str, pod_spec: Mapping[str, Any], *, container: str | None = None,
                      secrets: Mapping[str, Mapping[str, str]] | None = None,
                      config_maps: Mapping[str, Mapping[str, str]] | None = None,
                      pod_name: str = "fsftpd-0", namespace: str = "default",
                      passive: Iterable[int] | None = None) -> Container:
    """Run one container of a rendered pod spec with its env, user, ports and filesystem."""
    spec = next(c for c in pod_spec["containers"] if container is None or c["name"] == container)
    pod_sc: Mapping[str, Any] = pod_spec.get("securityContext") or {}
    sc: Mapping[str, Any] = {**pod_sc, **(spec.get("securityContext") or {})}
    env_vars: dict[str, str] = {}
    for item in spec.get("env") or []:
        if "value" in item:
            env_vars[item["name"]] = str(item["value"])
            continue
        ref = item.get("valueFrom") or {}
        if "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            source = (secrets or {}).get(key_ref["name"], {})
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            source = (config_maps or {}).get(key_ref["name"], {})
        elif "fieldRef" in ref:
            field_path = ref["fieldRef"]["fieldPath"]
            fields = {"metadata.name": pod_name, "metadata.namespace": namespace,
                      "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
            env_vars[item["name"]] = fields[field_path]
            continue
        else:
            raise ValueError(f"env {item['name']}: unsupported valueFrom {ref}")
        if key_ref["key"] in source:
            env_vars[item["name"]] = source[key_ref["key"]]
        elif not key_ref.get("optional"):
            raise KeyError(f"env {item['name']}: {key_ref['name']}/{key_ref['key']} not given")
    one_to_one = set(passive) if passive is not None else None
    ports: list[PortSpec] = []
    for port in spec.get("ports") or []:
        number = int(port["containerPort"])
        same = number in one_to_one if one_to_one is not None else _is_passive(port)
        ports.append((number, number) if same else number)
    user = None
    if "runAsUser" in sc:
        user = str(sc["runAsUser"]) + (f":{sc['runAsGroup']}" if "runAsGroup" in sc else "")
    extra: list[str] = []
    if "fsGroup" in pod_sc:
        extra += ["--group-add", str(pod_sc["fsGroup"])]
    for cap in (sc.get("capabilities") or {}).get("drop") or []:
        extra += ["--cap-drop", cap]
    for cap in (sc.get("capabilities") or {}).get("add") or []:
        extra += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        extra += ["--security-opt", "no-new-privileges"]
    empty_dirs = {v["name"] for v in pod_spec.get("volumes") or [] if "emptyDir" in v}
    # An emptyDir is a directory the pod's user may write (the kubelet makes it 0777). podman
    # 4.3 ignores a tmpfs mode= (root's 0755 stays), so "U" gives the tmpfs to the user instead.
    tmpfs = [f"{m['mountPath']}:rw,U" for m in spec.get("volumeMounts") or []
             if m["name"] in empty_dirs]
    if spec.get("command"):
        extra += ["--entrypoint", json.dumps(spec["command"])]
    return run(image, env=env_vars, ports=ports, user=user,
               read_only=bool(sc.get("readOnlyRootFilesystem")), tmpfs=tmpfs,
               args=[str(a) for a in spec.get("args") or []], extra=extra)


def main(argv: Sequence[str]) -> int:
    command = argv[0] if argv else "setup"
    if command == "env":
        print(f"export CONTAINERS_CONF={_containers_conf()}")
    elif command == "setup":
        _containers_conf()
        ensure_ci_base()
    elif command == "build":
        print(app_image())
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
