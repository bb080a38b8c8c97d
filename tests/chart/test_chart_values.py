"""values.yaml and values.schema.json: every value documented and typed, bad values refused
before anything reaches a cluster, and the Grafana dashboard shipped as the metrics issue's."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import yaml

from tests.chart.helm import CHART, REPO, chart, ci_values, only, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def _leaves(
    values: dict[str, Any], schema: dict[str, Any], prefix: str = ""
) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key, value in values.items():
        sub = schema.get("properties", {}).get(key)
        assert sub is not None, f"{prefix}{key} is not in values.schema.json"
        out.append((f"{prefix}{key}", sub))
        if isinstance(value, dict) and "properties" in sub:
            out.extend(_leaves(value, sub, f"{prefix}{key}."))
    return out


def test_every_value_is_typed_and_described() -> None:
    leaves = _leaves(VALUES, SCHEMA)
    assert len(leaves) > 100
    for path, sub in leaves:
        assert sub.get("type"), f"{path} has no type"
        assert sub.get("description"), f"{path} has no description"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _commented(lines: list[str], n: int) -> bool:
    """A comment right above line n, or right above a block that encloses it."""
    if n > 0 and lines[n - 1].strip().startswith("#"):
        return True
    for k in range(n - 1, -1, -1):
        if (
            lines[k].strip()
            and not lines[k].strip().startswith("#")
            and _indent(lines[k]) < _indent(lines[n])
        ):
            return _commented(lines, k)
    return False


def test_every_value_is_commented_in_values_yaml() -> None:
    """Every leaf key of values.yaml (a scalar, a list, an empty map) has a comment right above
    it, or right above the block it belongs to (podSecurityContext's fields)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for n, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        following = next((x for x in lines[n + 1 :] if x.strip() and not x.strip().startswith("#")), "")
        is_group = (
            stripped.endswith(":")
            and _indent(following) > _indent(line)
            and not following.strip().startswith("- ")
        )
        if is_group:
            continue
        if not _commented(lines, n):
            undocumented.append(stripped)
    assert undocumented == []


def test_schema_is_closed_where_it_matters() -> None:
    for key in (
        "image",
        "passive",
        "service",
        "config",
        "auth",
        "s3",
        "persistence",
        "serviceMonitor",
        "podDisruptionBudget",
        "networkPolicy",
        "dashboards",
    ):
        assert SCHEMA["properties"][key]["additionalProperties"] is False, key
    assert SCHEMA["additionalProperties"] is False


def test_defaults_and_ci_values_pass_the_schema() -> None:
    chart().validate_schema({})
    for name in ("local-home", "s3-home", "three-replicas", "servicemonitor", "hostport", "addresses"):
        chart().validate_schema(ci_values(name))


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": 0},
        {"replicaCount": "3"},
        {"replicCount": 3},
        {"passive": {"minPort": 80}},
        {"passive": {"maxPort": 70000}},
        {"passive": {"expose": "ingress"}},
        {"passive": {"addresses": ["not an ip"]}},
        {"passive": {"service": {"type": "ExternalName"}}},
        {"passive": {"service": {"externalTrafficPolicy": "local"}}},
        {"service": {"port": 0}},
        {"config": {"idleTimeout": -5}},
        {"config": {"idleTimout": 300}},
        {"config": {"logFormat": "xml"}},
        {"config": {"workers": 0}},
        {"config": {"maximumConnections": 1.5}},
        {"auth": {"users": [{"password": "no login"}]}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"persistence": {"size": "lots"}},
        {"podDisruptionBudget": {"maxUnavailable": "half"}},
        {"serviceMonitor": {"interval": "often"}},
        {"s3": {"endpointUrl": "minio:9000"}},
    ],
)
def test_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmError):
        chart().validate_schema(bad)
    # and so does rendering: helm install would refuse it the same way
    with pytest.raises(helm_python.HelmError):
        render(bad)


DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "fsftpd.json"
COPY = CHART / "dashboards" / "fsftpd.json"


def test_dashboard_copy_equals_the_original() -> None:
    if not DASHBOARD.exists():
        pytest.skip(
            f"{DASHBOARD.relative_to(REPO)} (issue 13) is not in this tree yet; "
            "the chart ships a placeholder until then"
        )
    assert COPY.read_bytes() == DASHBOARD.read_bytes(), (
        f"cp {DASHBOARD.relative_to(REPO)} {COPY.relative_to(REPO)}"
    )


def test_dashboard_config_map() -> None:
    objects = render(ci_values("servicemonitor"))
    cm = only(objects, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "FTP"}
    assert json.loads(cm["data"]["fsftpd.json"]) == json.loads(COPY.read_text())
    assert cm["data"]["fsftpd.json"].strip() == COPY.read_text().strip()
    assert not [o for o in render({"dashboards": {"enabled": False}}) if o["kind"] == "ConfigMap"]


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["type"] == "application"
    assert meta["kubeVersion"] == ">=1.28.0-0"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{meta["appVersion"]}"' in pyproject


def test_readme_and_docs_point_to_the_chart() -> None:
    assert "docs/kubernetes.md" in (REPO / "README.md").read_text()
    doc = (REPO / "docs" / "kubernetes.md").read_text()
    for value in (
        "replicaCount",
        "passive.minPort",
        "passive.address",
        "passive.addresses",
        "externalTrafficPolicy",
        "existingSecret",
        "serviceMonitor.enabled",
    ):
        assert value in doc, value
