"""The real appliance reads what the chart sets: each pod's environment (as the kubelet builds
it) goes to `fsftpd --print-config`, which must accept it (exit 0) and print back every
FSFTPD_* variable the chart set, with the same value. pydantic-settings ignores an unknown
FSFTPD_ name silently, so this is the check that no chart setting is lost to a typo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.chart.helm import CI_VALUES, ci_values, pod_env, render

try:
    from fsftpd.appliance.cli import main  # issue 12
except ImportError:
    pytest.skip(
        "the appliance (fsftpd.appliance.cli, issue 12) is not on this branch yet", allow_module_level=True
    )

CI_NAMES = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
EXISTING = {"fsftpd-s3": {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example"}}
SECRETS = {"FSFTPD_PASSWORD"}


def _print_config(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """`fsftpd --print-config` in this process (a subprocess per pod costs seconds of imports)."""
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.startswith(("FSFTPD_", "AWS_", "PASV_", "FTP_", "PUBLICHOST", "TLS_")):
                m.delenv(key)
        for key, value in env.items():
            m.setenv(key, value)
        capsys.readouterr()
        code = main(["--print-config"])
        out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _same(chart_value: str, printed: str) -> bool:
    if chart_value == printed:
        return True
    for parse in (json.loads, float):
        try:
            return bool(parse(chart_value) == parse(printed))
        except (ValueError, TypeError):
            continue
    return chart_value.lower() == printed.lower()


@pytest.mark.parametrize("name", ["default", *CI_NAMES])
def test_appliance_accepts_every_pod_environment(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {} if name == "default" else ci_values(name)
    objects = render(values)
    replicas = int(values.get("replicaCount", 1))
    for ordinal in [replicas - 1]:  # the last pod: its index is parsed from its name
        env = pod_env(objects, ordinal, host_ip="198.51.100.7", secrets=EXISTING)
        if "FSFTPD_USERS_FILE" in env:
            # the file Kubernetes mounts from the Secret (or an existingSecret holding one user)
            users = values.get("auth", {}).get("users") or [{"login": "carol", "password": "pw-carol"}]
            path = tmp_path / f"users-{ordinal}.json"
            path.write_text(json.dumps(users))
            env["FSFTPD_USERS_FILE"] = str(path)
        printed = dict(
            line.lstrip("# ").split("=", 1)
            for line in _print_config(env, monkeypatch, capsys).splitlines()
            if "=" in line
        )
        for key, value in env.items():
            if not key.startswith("FSFTPD_"):
                continue
            assert key in printed, f"the appliance does not know {key}"
            if key not in SECRETS:
                assert _same(value, printed[key]), (key, value, printed[key])
        assert printed["FSFTPD_REPLICA_INDEX"] == f"fsftpd-{ordinal}"
        assert printed["FSFTPD_REPLICAS"] == str(replicas)
