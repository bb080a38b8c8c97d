"""Turn a results JSON into the tables of ``docs/benchmarks.md`` and ``docs/benchmarks.png``.

    .venv/bin/python -m bench.report bench/results/<file>.json

Only the part between the ``<!-- bench:begin -->`` / ``<!-- bench:end -->`` markers is
rewritten; the hand-written analysis around it stays.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
PEERS = ("pyftpdlib", "aioftp", "vsftpd")
ORDER = ("fsftpd", "fsftpd-metrics", "pyftpdlib", "aioftp", "vsftpd")

Medians = dict[str, dict[str, dict[str, float]]]


def _get(med: Medians, key: str, server: str, metric: str) -> float | None:
    value = med.get(key, {}).get(server, {}).get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def _servers(med: Medians) -> list[str]:
    present = {s for per in med.values() for s in per}
    return [s for s in ORDER if s in present]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


LOAD_COLUMNS = [
    "server",
    "transfers/s",
    "p50 ms",
    "p99 ms",
    "server CPU ms/transfer",
    "server core busy ms/transfer",
    "client CPU ms/transfer",
    "fsftpd CPU / this",
]


def _load_row(med: Medians, key: str, s: str, first: str) -> list[str]:
    cpu = _get(med, key, s, "server_cpu_per_op_ms")
    return [
        first,
        s,
        _fmt(_get(med, key, s, "ops_per_s")),
        _fmt(_get(med, key, s, "p50_ms")),
        _fmt(_get(med, key, s, "p99_ms")),
        _fmt(cpu),
        _fmt(_get(med, key, s, "server_core_per_op_ms")),
        _fmt(_get(med, key, s, "client_cpu_per_op_ms")),
        _ratio(_get(med, key, "fsftpd", "server_cpu_per_op_ms"), cpu),
    ]


def markdown(result: dict[str, Any]) -> str:
    med: Medians = result["medians"]
    servers = _servers(med)
    lines: list[str] = []
    m = result["machine"]
    prof = result["profile"]
    lines.append(
        f"Run of {result['started']} ({prof['name']} profile, {prof['reps']} repetition(s), "
        f"{result['seconds']:.0f} s); medians of the repetitions."
    )
    lines.append("")
    lines.append(
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}."
    )
    lines.append(
        f"- Server pinned to core(s) {result['server_cores']}, load client to core(s) "
        f"{result['client_cores']}; fsftpd worker processes: {result['fsftpd_workers']}."
    )
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    lines.append(f"- Versions: {versions}.")
    lines.append("")

    # (g) limits
    dl = med.get("limit_download", {}).get("limit")
    ul = med.get("limit_upload", {}).get("limit")
    if dl or ul:
        lines.append("### (g) Physical limits (loopback, one core each side)")
        lines.append("")
        rows = []
        if dl:
            rows.append(
                ["sendfile -> recv_into (download)", _fmt(dl["gib_per_s"]), _fmt(dl["server_cpu_per_gib"])]
            )
        if ul:
            rows.append(
                ["recv_into -> write (upload)", _fmt(ul["gib_per_s"]), _fmt(ul["server_cpu_per_gib"])]
            )
        us = med.get("limit_upload_splice", {}).get("limit")
        if us:
            rows.append(
                ["splice socket -> pipe -> file (upload, not used by fsftpd)", _fmt(us["gib_per_s"]),
                 _fmt(us["server_cpu_per_gib"])]
            )
        lines += _table(["path", "GiB/s", "sender/receiver CPU s per GiB"], rows)
        lines.append("")

    # (a) big file
    if "retr_big" in med or "stor_big" in med:
        size = prof["big_size"] / 2**20
        lines.append(f"### (a) One {size:,.0f} MiB file, single stream")
        lines.append("")
        rows = []
        for s in servers:
            r_rate = _get(med, "retr_big", s, "gib_per_s")
            s_rate = _get(med, "stor_big", s, "gib_per_s")
            rows.append(
                [
                    s,
                    _fmt(r_rate),
                    _pct(r_rate, dl["gib_per_s"] if dl else None),
                    _fmt(_get(med, "retr_big", s, "server_cpu_per_gib")),
                    _fmt(s_rate),
                    _pct(s_rate, ul["gib_per_s"] if ul else None),
                    _fmt(_get(med, "stor_big", s, "server_cpu_per_gib")),
                    _ratio(_get(med, "retr_big", "fsftpd", "gib_per_s"), r_rate),
                    _ratio(_get(med, "stor_big", "fsftpd", "gib_per_s"), s_rate),
                ]
            )
        lines += _table(
            [
                "server",
                "RETR GiB/s",
                "% of limit",
                "server CPU s/GiB",
                "STOR GiB/s",
                "% of limit",
                "server CPU s/GiB",
                "fsftpd RETR speed / this",
                "fsftpd STOR speed / this",
            ],
            rows,
        )
        lines.append("")

    # (b)/(c) small transfers
    small = sorted((k for k in med if k.startswith("small_")), key=lambda k: int(k.split("_")[1]))
    if small:
        lines.append(
            f"### (b)/(c) Concurrent clients doing RETR+STOR of {prof['small_size'] // 1024} KiB files "
            f"({prof['load_seconds']:g} s each)"
        )
        lines.append("")
        rows = [_load_row(med, key, s, key.split("_")[1]) for key in small for s in servers]
        lines += _table(["clients", *LOAD_COLUMNS], rows)
        lines.append("")

    if "sustained" in med:
        warm, secs = prof.get("sustained_warmup", 0), prof.get("sustained_seconds", 0)
        lines.append(
            f"### (h) Sustained load: {prof['main_clients']} clients doing (b) for {warm + secs:g} s, "
            f"the last {secs:g} s measured ({prof.get('sustained_reps', 1)} run per server)"
        )
        lines.append("")
        rows = [_load_row(med, "sustained", s, str(prof["main_clients"])) for s in servers]
        lines += _table(["clients", *LOAD_COLUMNS], rows)
        lines.append("")

    if "churn" in med:
        lines.append(f"### (d) Session churn: connect + login + QUIT, {prof['churn_workers']} workers")
        lines.append("")
        rows = []
        for s in servers:
            cpu = _get(med, "churn", s, "server_cpu_per_op_ms")
            rows.append(
                [
                    s,
                    _fmt(_get(med, "churn", s, "ops_per_s")),
                    _fmt(_get(med, "churn", s, "p50_ms")),
                    _fmt(cpu),
                    _fmt(_get(med, "churn", s, "server_core_per_op_ms")),
                    _fmt(_get(med, "churn", s, "client_cpu_per_op_ms")),
                    _ratio(_get(med, "churn", "fsftpd", "server_cpu_per_op_ms"), cpu),
                    _ratio(
                        _get(med, "churn", "fsftpd", "server_core_per_op_ms"),
                        _get(med, "churn", s, "server_core_per_op_ms"),
                    ),
                ]
            )
        lines += _table(
            [
                "server",
                "sessions/s",
                "p50 ms",
                "server CPU ms/session",
                "server core busy ms/session",
                "client CPU ms/session",
                "fsftpd CPU / this",
                "same, core busy",
            ],
            rows,
        )
        lines.append("")

    if "list" in med or "mlsd" in med:
        lines.append(f"### (e) LIST and MLSD of a {prof['many']:,}-entry directory")
        lines.append("")
        rows = []
        for s in servers:
            lt, mt = _get(med, "list", s, "seconds"), _get(med, "mlsd", s, "seconds")
            rows.append(
                [
                    s,
                    _fmt(lt and lt * 1e3),
                    _fmt(_get(med, "list", s, "server_cpu_ms")),
                    _fmt(mt and mt * 1e3),
                    _fmt(_get(med, "mlsd", s, "server_cpu_ms")),
                    _ratio(lt, _get(med, "list", "fsftpd", "seconds")),
                    _ratio(mt, _get(med, "mlsd", "fsftpd", "seconds")),
                ]
            )
        lines += _table(
            [
                "server",
                "LIST ms",
                "LIST server CPU ms",
                "MLSD ms",
                "MLSD server CPU ms",
                "LIST: this / fsftpd time",
                "MLSD: this / fsftpd time",
            ],
            rows,
        )
        lines.append("")

    if "memory" in med:
        low, high = prof["memory_sessions"]
        lines.append(f"### (f) Memory per idle logged-in session (PSS slope, {low} -> {high} sessions)")
        lines.append("")
        rows = []
        for s in servers:
            kib = _get(med, "memory", s, "kib_per_session")
            rows.append(
                [
                    s,
                    _fmt(_get(med, "memory", s, "pss_base_mib")),
                    _fmt(kib),
                    _ratio(_get(med, "memory", "fsftpd", "kib_per_session"), kib),
                ]
            )
        lines += _table(["server", "PSS at start MiB", "KiB per session", "fsftpd / this"], rows)
        lines.append("")

    lines += targets(result)
    return "\n".join(lines)


def _pct(value: float | None, limit: float | None) -> str:
    if value is None or not limit:
        return "n/a"
    return f"{100 * value / limit:.0f}%"


def targets(result: dict[str, Any]) -> list[str]:
    med: Medians = result["medians"]
    rows: list[list[str]] = []

    def check(name: str, measured: float | None, goal: float, *, at_most: bool, unit: str = "") -> None:
        if measured is None:
            rows.append([name, "n/a", f"{'<=' if at_most else '>='} {goal:g}{unit}", "not measured"])
            return
        ok = measured <= goal if at_most else measured >= goal
        rows.append(
            [
                name,
                f"{measured:.3g}{unit}",
                f"{'<=' if at_most else '>='} {goal:g}{unit}",
                "met" if ok else "**missed**",
            ]
        )

    def ratio(key: str, metric: str, peer: str, *, inverse: bool = False) -> float | None:
        a, b = _get(med, key, "fsftpd", metric), _get(med, key, peer, metric)
        if a is None or b is None or a == 0 or b == 0:
            return None
        return b / a if inverse else a / b

    dl = _get(med, "limit_download", "limit", "gib_per_s")
    ul = _get(med, "limit_upload", "limit", "gib_per_s")
    r = _get(med, "retr_big", "fsftpd", "gib_per_s")
    s = _get(med, "stor_big", "fsftpd", "gib_per_s")
    check("(a) RETR / download limit", r / dl if r and dl else None, 0.95, at_most=False)
    check(
        "(a) RETR server CPU s/GiB", _get(med, "retr_big", "fsftpd", "server_cpu_per_gib"), 0.1, at_most=True
    )
    check("(a) STOR / upload limit", s / ul if s and ul else None, 0.8, at_most=False)
    for key in sorted((k for k in med if k.startswith("small_")), key=lambda k: int(k.split("_")[1])):
        n = key.split("_")[1]
        check(
            f"({'b' if n == '100' else 'c'}) {n} clients: CPU/transfer vs pyftpdlib",
            ratio(key, "server_cpu_per_op_ms", "pyftpdlib"),
            0.6,
            at_most=True,
            unit="x",
        )
        check(
            f"({'b' if n == '100' else 'c'}) {n} clients: CPU/transfer vs aioftp",
            ratio(key, "server_cpu_per_op_ms", "aioftp"),
            0.3,
            at_most=True,
            unit="x",
        )
    if "sustained" in med:
        for peer, goal in (("pyftpdlib", 0.6), ("aioftp", 0.3)):
            check(
                f"(h) sustained: CPU/transfer vs {peer}",
                ratio("sustained", "server_cpu_per_op_ms", peer),
                goal,
                at_most=True,
                unit="x",
            )
    check(
        "(d) CPU/session vs pyftpdlib",
        ratio("churn", "server_cpu_per_op_ms", "pyftpdlib"),
        0.8,
        at_most=True,
        unit="x",
    )
    check(
        "(e) LIST speed vs vsftpd",
        ratio("list", "seconds", "vsftpd", inverse=True),
        1.0,
        at_most=False,
        unit="x",
    )
    check(
        "(e) LIST speed vs pyftpdlib",
        ratio("list", "seconds", "pyftpdlib", inverse=True),
        2.5,
        at_most=False,
        unit="x",
    )
    check(
        "(e) MLSD speed vs pyftpdlib",
        ratio("mlsd", "seconds", "pyftpdlib", inverse=True),
        2.5,
        at_most=False,
        unit="x",
    )
    check(
        "(f) idle memory vs pyftpdlib",
        ratio("memory", "kib_per_session", "pyftpdlib"),
        1.0,
        at_most=True,
        unit="x",
    )
    out = ["### Targets (fsftpd, this run)", ""]
    out += _table(["target", "measured", "goal", ""], rows)
    out.append("")
    return out


def chart(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med: Medians = result["medians"]
    servers = _servers(med)
    colors = {"fsftpd": "#2b7bba", "fsftpd-metrics": "#7fb3dd", "pyftpdlib": "#e08a2c", "aioftp": "#6a9f3a",
              "vsftpd": "#888888"}
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.2))
    panels = [
        (
            "(a) 1 file, GiB/s (higher is better)",
            [("RETR", "retr_big", "gib_per_s"), ("STOR", "stor_big", "gib_per_s")],
        ),
        (
            "(b)/(c) server CPU ms per transfer",
            [
                (k.split("_")[1] + " cl.", k, "server_cpu_per_op_ms")
                for k in sorted(
                    (k for k in med if k.startswith("small_")), key=lambda k: int(k.split("_")[1])
                )
            ],
        ),
        (
            "(b)/(c) transfers/s",
            [
                (k.split("_")[1] + " cl.", k, "ops_per_s")
                for k in sorted(
                    (k for k in med if k.startswith("small_")), key=lambda k: int(k.split("_")[1])
                )
            ],
        ),
        ("(d) server CPU ms per session (log)", [("churn", "churn", "server_cpu_per_op_ms")]),
        ("(e) listing of 10k entries, ms", [("LIST", "list", "seconds"), ("MLSD", "mlsd", "seconds")]),
        ("(f) KiB per idle session (log)", [("idle", "memory", "kib_per_session")]),
    ]
    for ax, (title, groups) in zip(axes.flat, panels, strict=False):
        width = 0.8 / max(1, len(servers))
        for i, s in enumerate(servers):
            values = []
            for _, key, metric in groups:
                v = _get(med, key, s, metric)
                if v is not None and metric == "seconds":
                    v *= 1e3
                values.append(v if v is not None else 0.0)
            xs = [g + i * width for g in range(len(groups))]
            ax.bar(xs, values, width, label=s, color=colors.get(s))
        ax.set_xticks([g + width * (len(servers) - 1) / 2 for g in range(len(groups))])
        ax.set_xticklabels([g[0] for g in groups], fontsize=8)
        ax.set_title(title, fontsize=9)
        if title.startswith(("(d)", "(f)")) and any(p.get_height() > 0 for p in ax.patches):
            ax.set_yscale("log")  # vsftpd's process per session is two orders of magnitude up
        ax.tick_params(axis="y", labelsize=7)
        if title.startswith("(a)"):
            for value, style in (
                (_get(med, "limit_download", "limit", "gib_per_s"), "--"),
                (_get(med, "limit_upload", "limit", "gib_per_s"), ":"),
            ):
                if value:
                    ax.axhline(value, color="black", linestyle=style, linewidth=0.8)
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"fsftpd vs peers ({result['machine']['cores']} cores, server and client pinned to one core each)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def write(result: dict[str, Any], docs: str = DOCS) -> None:
    os.makedirs(docs, exist_ok=True)
    md_path = os.path.join(docs, "benchmarks.md")
    generated = f"{BEGIN}\n{markdown(result)}\n{END}"
    if os.path.exists(md_path):
        with open(md_path) as f:
            text = f.read()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            text = head + generated + tail
        else:
            text = text.rstrip() + "\n\n" + generated + "\n"
    else:
        text = "# Benchmarks\n\n" + generated + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    chart(result, os.path.join(docs, "benchmarks.png"))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0]) as f:
        result = json.load(f)
    if len(args) > 1 and args[1] == "--print":
        print(markdown(result))
        return
    write(result)


if __name__ == "__main__":
    main()
