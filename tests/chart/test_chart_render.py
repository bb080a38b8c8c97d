"""The chart as `helm lint --strict` and a Kubernetes API server would judge it: lint, render
every ci values file, validate every object against the real Kubernetes schemas of the oldest
and newest supported versions, and check the properties a schema cannot see (secure pod
defaults, probes, the drain, exact environment names, client addresses kept)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.chart.helm import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    ci_values,
    container,
    of_kind,
    only,
    pod_env,
    render,
    render_raw,
)

# The oldest version Chart.yaml's kubeVersion accepts, and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.28.0", latest_version()]
CI_NAMES = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]


def test_ci_matrix_has_the_issue_cases() -> None:
    assert {"local-home", "s3-home", "three-replicas", "servicemonitor"} <= set(CI_NAMES)


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", ["default", *CI_NAMES])
def test_lint_strict(name: str, kube: str) -> None:
    values = {} if name == "default" else ci_values(name)
    result = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{kube}")
    assert result["errors"] == []
    # Severity 1 is INFO (only "icon is recommended"); warnings (2) and errors (3) fail.
    assert [m for m in result["messages"] if m["severity"] >= 2] == []


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The lint above can fail: a copy of the chart with a template error does not pass."""
    copy = tmp_path / "fsftpd"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "broken.yaml").write_text("kind: ConfigMap\nmetadata: {{ .Values.nope.nested }}\n")
    result = helm_python.lint(str(copy), {}, strict=True, kube_version="v1.28.0")
    assert any("nil pointer" in e for e in result["errors"]), result


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every object of every ci render in its own file (one kubernetes-validate run per version)."""
    out = tmp_path_factory.mktemp("rendered")
    for name in ["default", *CI_NAMES]:
        for i, obj in enumerate(render({} if name == "default" else ci_values(name))):
            (out / f"{name}-{i:02d}-{obj['kind']}.yaml").write_text(yaml.safe_dump(obj))
    return out


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_object_validates_strictly(rendered_dir: Path, kube: str) -> None:
    files = sorted(str(p) for p in rendered_dir.glob("*.yaml") if not p.name.endswith("ServiceMonitor.yaml"))
    assert len(files) > 30
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("kubernetes-validate")),
            "--strict",
            "--quiet",
            "-k",
            kube,
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout


def test_validation_can_fail(tmp_path: Path) -> None:
    """kubernetes-validate --strict rejects a misspelt field of our StatefulSet."""
    sts = only(render(), "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sts))
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("kubernetes-validate")),
            "--strict",
            "--quiet",
            "-k",
            "1.28.0",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0


def test_service_monitor_targets_the_metrics_port() -> None:
    """No Kubernetes schema exists for the CRD: check what the operator reads."""
    objects = render(ci_values("servicemonitor"))
    sm = only(objects, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "scheme": "http",
        "interval": "15s",
        "scrapeTimeout": "10s",
        "honorLabels": False,
    }
    selected = [
        s
        for s in of_kind(objects, "Service")
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["fsftpd-headless"]
    assert {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"} in selected[0][
        "spec"
    ]["ports"]
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert of_kind(render(), "ServiceMonitor") == []


@pytest.mark.parametrize("name", ["default", *CI_NAMES])
def test_secure_pod_defaults(name: str) -> None:
    objects = render({} if name == "default" else ci_values(name))
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    ctr = container(objects)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    assert {"/tmp", "/data"} <= set(mounts)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    claims = only(objects, "StatefulSet")["spec"].get("volumeClaimTemplates", [])
    assert mounts["/data"] in volumes or [c["metadata"]["name"] for c in claims] == [mounts["/data"]]
    assert ctr["resources"]["limits"]["memory"]
    sa = of_kind(objects, "ServiceAccount")
    assert all(s["automountServiceAccountToken"] is False for s in sa)


def test_probes_on_the_metrics_port() -> None:
    ctr = container(render())
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports["metrics"] == 9100
    for probe, path in [
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        assert ctr[probe]["httpGet"] == {"path": path, "port": "metrics"}
    off = container(render({"startupProbe": {"enabled": False}}))
    assert "startupProbe" not in off and "livenessProbe" in off


def test_grace_period_outlasts_the_drain() -> None:
    env = pod_env(render(), 0)
    pod = only(render(), "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(env["FSFTPD_SHUTDOWN_TIMEOUT"])
    pod = only(render({"config": {"shutdownTimeout": 120.5}}), "StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 120.5
    with pytest.raises(helm_python.HelmError, match=re.escape("must exceed config.shutdownTimeout")):
        render({"terminationGracePeriodSeconds": 10, "config": {"shutdownTimeout": 10}})


# The names of APPLIANCE_CONTRACT.md the chart may set besides one per fsftpd.ServerConfig
# field (pydantic-settings ignores an unknown FSFTPD_ name silently: a typo is a setting lost).
APPLIANCE_NAMES = {
    "FSFTPD_PORT",
    "FSFTPD_METRICS_PORT",
    "FSFTPD_PASSIVE_PORTS",
    "FSFTPD_PASSIVE_ADDRESS",
    "FSFTPD_REPLICAS",
    "FSFTPD_REPLICA_INDEX",
    "FSFTPD_HOME",
    "FSFTPD_STORAGE_OPTIONS",
    "FSFTPD_BANNER",
    "FSFTPD_WORKERS",
    "FSFTPD_LOG_LEVEL",
    "FSFTPD_LOG_FORMAT",
    "FSFTPD_METRICS_PER_USER",
    "FSFTPD_USERS_FILE",
    "FSFTPD_USER",
    "FSFTPD_PASSWORD",
    "FSFTPD_ANONYMOUS",
    "FSFTPD_ANONYMOUS_WRITE",
    # read by s3fs/botocore; POD_HOST_IP is the chart's own, for $(POD_HOST_IP)
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "POD_HOST_IP",
}


def _all_config() -> dict[str, Any]:
    return {
        "banner": "hello",
        "metricsPerUser": False,
        "maximumConnections": 200,
        "maximumConnectionsPerIp": 10,
        "idleTimeout": 300,
        "socketTimeout": 60,
        "pathTimeout": 30.5,
        "waitFutureTimeout": 10,
        "readSpeedLimit": 50_000_000,
        "writeSpeedLimit": 123456789,
        "readSpeedLimitPerConnection": 1e6,
        "writeSpeedLimitPerConnection": 2_000_000,
        "listingSortLimit": 0,
        "maxLoginAttempts": 5,
        "failedLoginDelay": 0.25,
        "passiveTimeout": 60,
        "passivePeerCheck": True,
        "activeMode": False,
        "banThreshold": 10,
        "banWindow": 600,
        "banTime": 600,
        "banTimeMax": 86400,
        "banSafelist": ["10.0.0.0/8", "192.0.2.7"],
        "tlsCert": "/etc/fsftpd/tls/tls.crt",
        "tlsKey": "/etc/fsftpd/tls/tls.key",
        "tlsMinVersion": "1.2",
        "tlsRequired": "control",
        "implicitTlsPort": 990,
        "tlsRequireSessionReuse": False,
        "tlsRequireCloseNotify": False,
        "tlsHandshakeTimeout": 30,
    }


def test_environment_names_are_the_contract() -> None:
    import fsftpd

    fields = fsftpd.ServerConfig.__dataclass_fields__
    server_config = {f"FSFTPD_{f.upper()}" for f in fields}
    seen: set[str] = set()
    for objects in [render({"config": _all_config()})] + [render(ci_values(n)) for n in CI_NAMES]:
        names = [v["name"] for v in container(objects)["env"]]
        assert len(names) == len(set(names)), names
        seen |= set(names)
    assert seen - APPLIANCE_NAMES - server_config == set()
    # every ServerConfig option under `config` reaches the pod
    wanted = {f"FSFTPD_{f.upper()}" for f in fields if f not in ("passive_ports", "masquerade_address")}
    assert wanted - seen == set()


def test_settings_become_exact_strings() -> None:
    """Helm turns numbers into float64: 50000000 must not reach the pod as 5e+07."""
    env = pod_env(render({"config": _all_config()}), 0)
    assert env["FSFTPD_READ_SPEED_LIMIT"] == "50000000"
    assert env["FSFTPD_WRITE_SPEED_LIMIT"] == "123456789"
    assert env["FSFTPD_READ_SPEED_LIMIT_PER_CONNECTION"] == "1000000"
    assert env["FSFTPD_PATH_TIMEOUT"] == "30.5"
    assert env["FSFTPD_FAILED_LOGIN_DELAY"] == "0.25"
    assert env["FSFTPD_METRICS_PER_USER"] == "false"
    assert env["FSFTPD_BANNER"] == "hello"
    assert "FSFTPD_IDLE_TIMEOUT" not in pod_env(render(), 0)  # null: the appliance's default


def test_s3_home_settings() -> None:
    env = pod_env(render(ci_values("s3-home")), 0)
    assert env["FSFTPD_HOME"] == "s3://ftp-bucket/homes"
    assert json.loads(env["FSFTPD_STORAGE_OPTIONS"]) == {"config_kwargs": {"max_pool_connections": 20}}
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"
    assert env["AWS_SECRET_ACCESS_KEY"] == "example-secret-key"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio.storage.svc:9000"
    assert env["FSFTPD_USER"] == "uploader"
    assert env["FSFTPD_PASSWORD"] == "not-a-real-password"
    # existingSecret: the keys come from the named Secret, the chart stores none
    objects = render(ci_values("three-replicas"))
    env = pod_env(objects, 1, secrets={"fsftpd-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}})
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("k", "s")
    assert of_kind(objects, "Secret") == []


def test_users_file_from_values() -> None:
    values = ci_values("local-home")
    objects = render(values)
    env = pod_env(objects, 0)
    assert "FSFTPD_USER" not in env and "FSFTPD_PASSWORD" not in env
    secret = only(objects, "Secret")
    users = json.loads(base64.b64decode(secret["data"]["users.json"]))
    assert users == values["auth"]["users"]
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["name"] == "users"]
    assert env["FSFTPD_USERS_FILE"] == mount["mountPath"] + "/users.json"
    assert "subPath" not in mount  # so that the file updates in place (SIGHUP reload)
    (vol,) = [v for v in pod["volumes"] if v["name"] == "users"]
    assert vol["secret"]["secretName"] == secret["metadata"]["name"]
    assert vol["secret"]["items"] == [{"key": "users.json", "path": "users.json"}]


def test_generated_password() -> None:
    """No users given: one user with a random password, stored in the Secret, never empty."""
    objects = render()
    env = pod_env(objects, 0)
    assert env["FSFTPD_USER"] == "ftp"
    assert len(env["FSFTPD_PASSWORD"]) == 24
    assert pod_env(render(), 0)["FSFTPD_PASSWORD"] != env["FSFTPD_PASSWORD"]


def test_client_addresses_kept_on_external_services() -> None:
    """externalTrafficPolicy Local on every NodePort/LoadBalancer Service that carries FTP,
    and never on a ClusterIP Service (the API server rejects it there)."""
    checked = 0
    for name in ["default", *CI_NAMES]:
        for svc in of_kind(render({} if name == "default" else ci_values(name)), "Service"):
            spec = svc["spec"]
            if spec.get("type", "ClusterIP") in ("NodePort", "LoadBalancer"):
                assert spec["externalTrafficPolicy"] == "Local", svc["metadata"]["name"]
                checked += 1
            else:
                assert "externalTrafficPolicy" not in spec
    assert checked >= 4
    svc = only(
        render({"service": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}}), "Service", "fsftpd"
    )
    assert svc["spec"]["externalTrafficPolicy"] == "Cluster"


def test_pdb_and_network_policy() -> None:
    objects = render(ci_values("three-replicas"))
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    labels = only(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = only(objects, "NetworkPolicy")
    ftp_rule, metrics_rule = policy["spec"]["ingress"]
    assert {"port": 30000, "endPort": 30029, "protocol": "TCP"} in ftp_rule["ports"]
    assert {"port": 2121, "protocol": "TCP"} in ftp_rule["ports"]
    assert "from" not in ftp_rule
    assert metrics_rule["ports"] == [{"port": 9100, "protocol": "TCP"}]
    assert metrics_rule["from"][0]["namespaceSelector"]
    with pytest.raises(helm_python.HelmError, match="not both"):
        render({"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}})


def test_notes_say_how_to_connect() -> None:
    notes = render_raw()["fsftpd/templates/NOTES.txt"]
    assert "kubectl get secret -n ftp fsftpd -o jsonpath='{.data.password}'" in notes
    assert "ftp://USER:PASSWORD@fsftpd-0.ftp.svc.cluster.local:21/" in notes
    notes = render_raw(ci_values("three-replicas"))["fsftpd/templates/NOTES.txt"]
    assert "pod fsftpd-1: ports 30010-30019, announces ftp-1.example.com, through Service fsftpd-1" in notes
    notes = render_raw(ci_values("addresses"))["fsftpd/templates/NOTES.txt"]
    assert "pod fsftpd-1: ports 30005-30009, announces 203.0.113.11" in notes
    notes = render_raw(ci_values("hostport"))["fsftpd/templates/NOTES.txt"]
    assert "pod fsftpd-0: ports 40000-40009, announces its node's IP, through hostPort" in notes
