"""docs/metrics.md and the Grafana dashboard against a real scrape: every documented metric
exists with the documented type and labels, every scraped metric is documented, and
every metric name the dashboard's PromQL uses appears in the scrape."""

from __future__ import annotations

import ftplib
import io
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fsftpd
from tests.appliance.metrics_helpers import http_get, raw_metrics, sidecar_server

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "fsftpd.json"
DOC = REPO / "docs" / "metrics.md"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def full_scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scrape after a session that gives every metric at least one sample: transfers
    both ways and a listing, a throttled download, failed logins, a refusal, and a
    storage error (an S3 home whose endpoint is a closed port, probed by /readyz)."""
    root = tmp_path_factory.mktemp("docs")
    s3_options = {"key": "k", "secret": "s", "endpoint_url": f"http://127.0.0.1:{closed_port()}",
                  "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    users = [
        fsftpd.User("alice", "pw", base_path=str(root), write_speed_limit=4_000_000),
        fsftpd.User("gone", "pw", base_path="s3://nowhere/home/", storage_options=s3_options),
    ]
    with sidecar_server(users, failed_login_delay=0) as srv:
        ftp = srv.ftp("alice", "pw")
        ftp.storbinary("STOR a", io.BytesIO(os.urandom(400_000)))
        ftp.retrbinary("RETR a", lambda b: None)
        ftp.nlst()
        with pytest.raises(ftplib.error_perm):
            ftp.sendcmd("XYZZY")
        srv.call(lambda s: s.set_limits(maximum_connections=1))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as refused:
            assert refused.recv(100).startswith(b"421")
        srv.call(lambda s: s.set_limits(maximum_connections=None))
        bad = srv.ftp()
        with pytest.raises(ftplib.error_perm):
            bad.login("nobody", "x")
        bad.close()
        status, body, _ = http_get(srv.http_port, "/readyz")
        assert status == 503 and "s3://nowhere" in body, body
        yield raw_metrics(srv.http_port)
        ftp.quit()


def documented() -> dict[str, tuple[str, set[str]]]:
    """{metric: (type, labels)} from the table in docs/metrics.md."""
    rows = re.findall(r"^\| `(fsftpd_\w+)` \| (\w+) \|\s*([\w, ]*?)\s*\|", DOC.read_text(), re.MULTILINE)
    assert len(rows) >= 10
    return {name: (kind, {x.strip() for x in labels.split(",") if x.strip()}) for name, kind, labels in rows}


def scraped(text: str) -> dict[str, tuple[str, set[str]]]:
    """{metric as a user queries it: (type, label names)} of an exposition."""
    out: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        kind = family.type
        if kind == "info":  # OpenMetrics
            name += "_info"
        elif name.endswith("_info") and kind == "gauge":  # the text format shows an info as a gauge
            kind = "info"
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        out[name] = (kind, labels)
    return out


def test_every_metric_is_documented_and_exists(full_scrape: str) -> None:
    docs = documented()
    real = scraped(full_scrape)
    assert sorted(docs) == sorted(real), "docs/metrics.md and the scrape list different metrics"
    for name, (kind, labels) in docs.items():
        assert real[name] == (kind, labels), name


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in matchers and by/without lists), strings or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        rest = expr[match.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        if word in {"by", "without", "bool", "and", "or", "unless", "offset", "on", "ignoring"}:
            continue
        if word.startswith("$") or expr[match.start() - 1 : match.start()] == "$":
            continue
        names.add(word)
    return names


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict]) -> None:  # type: ignore[type-arg]
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(board["panels"])
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable["type"] == "query" and query:
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query))
    return exprs


def test_promql_name_extraction() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, backend) (rate(fsftpd_x_bucket{a=~"b|c"}[$__rate_interval])))'
    ) == {"fsftpd_x_bucket"}
    assert promql_metric_names("sum(rate(a_total[5m])) + sum(b)") == {"a_total", "b"}


def test_dashboard_uses_only_real_metrics(full_scrape: str) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    samples = {s.name for f in text_string_to_metric_families(full_scrape) for s in f.samples}
    used = set().union(*(promql_metric_names(q) for q in queries))
    assert used, queries
    missing = sorted(used - samples)
    assert not missing, f"the dashboard queries metrics no scrape has: {missing}"
    # and it covers what the issue asks to see
    for name in ("fsftpd_active_sessions", "fsftpd_sent_bytes_total", "fsftpd_received_bytes_total",
                 "fsftpd_transfers_total", "fsftpd_connections_refused_total",
                 "fsftpd_storage_operation_duration_seconds_bucket"):
        assert name in used, name
