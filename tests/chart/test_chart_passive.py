"""Passive mode with several replicas: every pod owns its own contiguous slice of the passive
range, its own way in, and announces its own address. The slices are computed here from the
appliance contract's formula and the pods' environment, independently of the chart's template."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest

from tests.chart.helm import (
    ci_values,
    container,
    contract_slice,
    of_kind,
    only,
    pod_env,
    render,
    replica_index,
    service_ports,
)


def _pod_services(objects: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The per-pod Services, by the ordinal of the one pod each selects."""
    by_pod: dict[int, dict[str, Any]] = {}
    for svc in of_kind(objects, "Service"):
        pod = svc["spec"]["selector"].get("statefulset.kubernetes.io/pod-name")
        if pod is not None:
            by_pod[replica_index(pod)] = svc
    return by_pod


def _slice_of_pod(env: dict[str, str]) -> list[int]:
    """What the appliance will serve, from nothing but the pod's environment."""
    low, high = (int(p) for p in env["FSFTPD_PASSIVE_PORTS"].split("-"))
    return contract_slice(low, high, int(env["FSFTPD_REPLICAS"]), replica_index(env["FSFTPD_REPLICA_INDEX"]))


def test_three_replicas_own_disjoint_slices_and_services() -> None:
    objects = render(ci_values("three-replicas"))
    sts = only(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    services = _pod_services(objects)
    assert sorted(services) == [0, 1, 2]
    s3_keys = {"fsftpd-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}
    envs = [pod_env(objects, i, secrets=s3_keys) for i in range(3)]
    # the same REPLICAS for all, each its own index
    assert {e["FSFTPD_REPLICAS"] for e in envs} == {"3"}
    assert [replica_index(e["FSFTPD_REPLICA_INDEX"]) for e in envs] == [0, 1, 2]
    assert [e["FSFTPD_REPLICA_INDEX"] for e in envs] == ["fsftpd-0", "fsftpd-1", "fsftpd-2"]
    slices = [_slice_of_pod(e) for e in envs]
    assert [len(s) for s in slices] == [10, 10, 10]
    assert slices == [list(range(30000 + 10 * i, 30010 + 10 * i)) for i in range(3)]
    assert len(set().union(*map(set, slices))) == 30  # no port in two slices
    for i, svc in services.items():
        ports = service_ports(svc)
        # exactly its slice, plus the control port; every port goes to the same pod port
        assert sorted(p for n, p in ports.items() if n != "ftp") == slices[i]
        assert ports["ftp"] == 21
        for p in svc["spec"]["ports"]:
            assert p["protocol"] == "TCP"
            assert p["targetPort"] == ("ftp" if p["name"] == "ftp" else p["port"])
        assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"fsftpd-{i}"
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["spec"]["externalTrafficPolicy"] == "Local"
        assert (
            svc["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"]
            == f"ftp-{i}.example.com"
        )
        # the selector picks pods of this release only
        assert svc["spec"]["selector"].items() >= sts["spec"]["selector"]["matchLabels"].items()
    # the pod template declares every served port, so a Service never targets a missing one
    declared = {p["containerPort"] for p in container(objects)["ports"]}
    assert set().union(*map(set, slices)) <= declared
    # each pod announces its own name
    assert [e["FSFTPD_PASSIVE_ADDRESS"].replace("{index}", str(i)) for i, e in enumerate(envs)] == [
        "ftp-0.example.com",
        "ftp-1.example.com",
        "ftp-2.example.com",
    ]


@pytest.mark.parametrize(
    "replicas,low,high",
    [
        (1, 30000, 30009),
        (3, 30000, 30009),
        (4, 31000, 31001 + 12),
        (7, 30000, 30006),
        (2, 30000, 30000 + 200),
    ],
)
def test_slices_match_the_contract_for_uneven_splits(replicas: int, low: int, high: int) -> None:
    objects = render({"replicaCount": replicas, "passive": {"minPort": low, "maxPort": high}})
    services = _pod_services(objects)
    assert sorted(services) == list(range(replicas))
    served: set[int] = set()
    for i in range(replicas):
        expected = _slice_of_pod(pod_env(objects, i))
        assert expected, "every pod has at least one port"
        got = sorted(p for n, p in service_ports(services[i]).items() if n != "ftp")
        assert got == expected
        assert served.isdisjoint(got)
        served |= set(got)


def test_too_small_range_fails_to_render() -> None:
    with pytest.raises(helm_python.HelmError) as err:
        render({"replicaCount": 3, "passive": {"minPort": 30000, "maxPort": 30001}})
    message = str(err.value)
    assert "the passive range 30000-30001 has 2 ports, fewer than replicaCount=3" in message
    assert "widen passive.minPort/passive.maxPort to at least 3 ports" in message
    # the smallest range that works: one port each
    objects = render({"replicaCount": 3, "passive": {"minPort": 30000, "maxPort": 30002}})
    assert [sorted(service_ports(s).values()) for s in _pod_services(objects).values()] == [
        [21, 30000],
        [21, 30001],
        [21, 30002],
    ]


def test_every_worker_needs_a_port() -> None:
    """The appliance splits a pod's slice again between its worker processes."""
    with pytest.raises(helm_python.HelmError) as err:
        render({"replicaCount": 3, "passive": {"maxPort": 30008}, "config": {"workers": 4}})
    assert "gives each of the 3 replica(s) 3 port(s), fewer than config.workers=4" in str(err.value)
    assert "at least 12 ports" in str(err.value)
    render({"replicaCount": 3, "passive": {"maxPort": 30011}, "config": {"workers": 4}})


def test_inverted_range_fails_to_render() -> None:
    with pytest.raises(
        helm_python.HelmError, match=r"passive.maxPort \(30000\) is below passive.minPort \(30009\)"
    ):
        render({"passive": {"minPort": 30009, "maxPort": 30000}})


def test_load_balancer_needs_an_address() -> None:
    with pytest.raises(
        helm_python.HelmError, match=re.escape("passive.service.type=LoadBalancer needs passive.address")
    ):
        render({"passive": {"service": {"type": "LoadBalancer"}}})


def test_cluster_ip_announces_each_pods_own_service() -> None:
    objects = render({"replicaCount": 2})
    for i in range(2):
        address = pod_env(objects, i)["FSFTPD_PASSIVE_ADDRESS"].replace("{index}", str(i))
        name, namespace = address.split(".")[:2]
        assert address == f"{name}.{namespace}.svc.cluster.local"
        assert _pod_services(objects)[i]["metadata"] == {
            **_pod_services(objects)[i]["metadata"],
            "name": name,
            "namespace": namespace,
        }


def test_per_pod_ip_addresses_through_host_aliases() -> None:
    values = ci_values("addresses")
    objects = render(values)
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    hosts = {h: a["ip"] for a in pod["hostAliases"] for h in a["hostnames"]}
    for i, ip in enumerate(values["passive"]["addresses"]):
        announced = pod_env(objects, i)["FSFTPD_PASSIVE_ADDRESS"].replace("{index}", str(i))
        assert hosts[announced] == ip  # pod i resolves the name it announces to its own IP
        svc = _pod_services(objects)[i]
        assert svc["spec"]["loadBalancerIP"] == ip
        assert svc["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    with pytest.raises(
        helm_python.HelmError, match=re.escape("passive.addresses has 1 entries but replicaCount is 2")
    ):
        render({**values, "passive": {**values["passive"], "addresses": ["203.0.113.10"]}})


def test_host_port_announces_the_node() -> None:
    objects = render(ci_values("hostport"))
    assert _pod_services(objects) == {}
    ports = container(objects)["ports"]
    passive = [p for p in ports if p["name"].startswith("pasv-")]
    assert [p["containerPort"] for p in passive] == list(range(40000, 40020))
    assert all(p["hostPort"] == p["containerPort"] for p in passive)
    assert {p["name"]: p.get("hostPort") for p in ports}["ftp"] == 2121
    env = pod_env(objects, 1, host_ip="198.51.100.7")
    assert env["FSFTPD_PASSIVE_ADDRESS"] == "198.51.100.7"
    assert _slice_of_pod(env) == list(range(40010, 40020))
    svc = only(objects, "Service", "fsftpd")
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["externalTrafficPolicy"] == "Local"


def test_host_network() -> None:
    objects = render({"passive": {"expose": "hostNetwork"}})
    pod = only(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod_env(objects, 0, host_ip="198.51.100.8")["FSFTPD_PASSIVE_ADDRESS"] == "198.51.100.8"


def test_node_port_publishes_each_passive_port_as_itself() -> None:
    objects = render({"replicaCount": 2, "passive": {"service": {"type": "NodePort"}}})
    for i, svc in _pod_services(objects).items():
        for p in svc["spec"]["ports"]:
            if p["name"] != "ftp":
                assert p["nodePort"] == p["port"]
        assert pod_env(objects, i, host_ip="192.0.2.33")["FSFTPD_PASSIVE_ADDRESS"] == "192.0.2.33"
    with pytest.raises(helm_python.HelmError, match="NodePort range 30000-32767"):
        render({"passive": {"minPort": 20000, "maxPort": 20009, "service": {"type": "NodePort"}}})
