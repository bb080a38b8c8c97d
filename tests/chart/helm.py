"""Render the Helm chart with Helm's own engine (helm-python-sdk, no helm binary, no cluster)
and look at the result the way Kubernetes would.

- :func:`render` returns every rendered object, parsed;
- :func:`pod_env` is the environment one pod of the StatefulSet really gets: the downward API
  filled in for that pod (its name ``fsftpd-N``, its node's IP), ``secretKeyRef`` read from the
  rendered Secret, and ``$(VAR)`` references expanded as the kubelet expands them;
- :func:`contract_slice` is the appliance contract's split of the passive range, written
  independently of the chart's template so that a test can compare the two.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "fsftpd"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "fsftpd"
NAMESPACE = "ftp"


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART))


def ci_values(name: str) -> dict[str, Any]:
    """The values of ``ci/NAME-values.yaml``."""
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


def render_raw(values: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``{template path: manifest text}``, as ``helm install --dry-run`` would render it."""
    return chart().render(dict(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (NOTES.txt left out)."""
    objects: list[dict[str, Any]] = []
    for template, text in sorted(render_raw(values).items()):
        if not template.endswith(".yaml"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The fsftpd container of the StatefulSet's pod template."""
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    (ctr,) = [c for c in pod["containers"] if c["name"] == "fsftpd"]
    return ctr


def contract_slice(low: int, high: int, replicas: int, index: int) -> list[int]:
    """APPLIANCE_CONTRACT.md: block size = len(range) // N, block i = ports[i*size:(i+1)*size]."""
    ports = list(range(low, high + 1))
    size = len(ports) // replicas
    return ports[index * size : (index + 1) * size]


def replica_index(value: str) -> int:
    """FSFTPD_REPLICA_INDEX as the appliance reads it: an int, or a pod name's trailing number."""
    match = re.fullmatch(r"(?:.*\D)?(\d+)", value)
    assert match, f"not a replica index: {value!r}"
    return int(match.group(1))


_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def _expand(value: str, defined: Mapping[str, str]) -> str:
    """The kubelet's expansion: ``$(NAME)`` of an earlier variable is replaced, ``$$`` is a
    literal ``$``, an unknown reference stays as written."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return _REF.sub(sub, value)


def pod_env(
    objects: list[dict[str, Any]],
    ordinal: int,
    *,
    host_ip: str = "192.0.2.10",
    pod_ip: str = "10.0.0.10",
    secrets: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """The environment of pod ``ordinal`` of the rendered StatefulSet, as Kubernetes builds it.

    ``secrets`` adds Secrets that exist outside the chart (``existingSecret``): name -> data.
    """
    sts = only(objects, "StatefulSet")
    name = f"{sts['metadata']['name']}-{ordinal}"
    fields = {
        "metadata.name": name,
        "metadata.namespace": sts["metadata"]["namespace"],
        "status.hostIP": host_ip,
        "status.podIP": pod_ip,
    }
    known: dict[str, dict[str, str]] = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        for s in of_kind(objects, "Secret")
    }
    known.update({k: dict(v) for k, v in (secrets or {}).items()})
    env: dict[str, str] = {}
    for var in container(objects).get("env", []):
        if "value" in var:
            env[var["name"]] = _expand(str(var["value"]), env)
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = known[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"unexpected env source: {var}")
    return env


def service_ports(service: dict[str, Any]) -> dict[str, int]:
    """``{port name: port}`` of a rendered Service."""
    return {p["name"]: p["port"] for p in service["spec"]["ports"]}
