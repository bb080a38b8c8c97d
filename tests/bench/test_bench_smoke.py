"""The benchmark harness must keep working: run its tiny profile against fsftpd only and
check that every workload produced sane numbers. Speed is not asserted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("uvloop")

from bench import run


def test_tiny_benchmark_run(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    os.makedirs(tmp_path / "work")
    run.main(
        ["--tiny", "--servers", "fsftpd", "--workdir", str(tmp_path / "work"), "--out", str(out), "--no-docs"]
    )
    result = json.loads(out.read_text())
    med = result["medians"]
    for key in (
        "retr_big",
        "stor_big",
        "small_4",
        "churn",
        "list",
        "mlsd",
        "memory",
        "limit_download",
        "limit_upload",
        "limit_upload_splice",
        "sustained",
    ):
        assert key in med, key
    assert med["retr_big"]["fsftpd"]["gib_per_s"] > 0
    assert med["stor_big"]["fsftpd"]["gib_per_s"] > 0
    small = result["samples"]["small_4"]["fsftpd"][0]
    assert small["ops"] > 0 and small["errors"] == 0
    assert result["samples"]["churn"]["fsftpd"][0]["errors"] == 0
    sustained = result["samples"]["sustained"]["fsftpd"][0]
    assert sustained["ops"] > 0 and sustained["errors"] == 0
    assert med["list"]["fsftpd"]["bytes"] > 0
    assert med["memory"]["fsftpd"]["pss_high_mib"] > 0
    assert med["limit_upload_splice"]["limit"]["gib_per_s"] > 0


def test_report_renders(tmp_path: Path) -> None:
    from bench import report

    result = {
        "started": "2026-01-01T00:00:00+00:00",
        "seconds": 1.0,
        "profile": dict(vars(run.PROFILES["tiny"])),
        "machine": {"cpu": "x", "cores": 2, "memory_gib": 1, "kernel": "k", "python": "3", "platform": "p"},
        "server_cores": [0],
        "client_cores": [1],
        "fsftpd_workers": 1,
        "versions": {"fsftpd": "0"},
        "medians": {
            "small_4": {
                "fsftpd": {"ops_per_s": 10.0, "server_cpu_per_op_ms": 1.0},
                "pyftpdlib": {"ops_per_s": 5.0, "server_cpu_per_op_ms": 2.0},
            },
            "sustained": {
                "fsftpd": {"ops_per_s": 30.0, "server_cpu_per_op_ms": 1.0},
                "pyftpdlib": {"ops_per_s": 7.0, "server_cpu_per_op_ms": 4.0},
            },
        },
    }
    text = report.markdown(result)
    assert "| 4 | fsftpd | 10 |" in text
    assert "0.50x" in text  # fsftpd CPU / pyftpdlib CPU
    assert "| 4 | fsftpd | 30 |" in text and "0.25x" in text  # (h): clients column, then the ratio
    assert "| (h) sustained: CPU/transfer vs pyftpdlib | 0.25x | <= 0.6x | met |" in text
    report.write(result, str(tmp_path))
    assert (tmp_path / "benchmarks.png").stat().st_size > 1000
    assert report.BEGIN in (tmp_path / "benchmarks.md").read_text()
