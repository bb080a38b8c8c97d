"""CPU time and memory of a process tree, read from /proc.

CPU: for every live process of the tree, its threads' run time (``schedstat``, in ns) plus
``cutime + cstime`` (children it reaped). A child that exited and was reaped is in its
reaper's ``cutime``/``cstime``; so every process that ran is counted once, and the
difference of two snapshots is the tree's CPU time between them (vsftpd forks per
session, the Python servers run worker threads: both are covered). The harness keeps the
sessions open until the second snapshot is taken.
"""

from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        out.setdefault(int(fields[1]), []).append(int(name))
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _cpu_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rfind(b")") + 2 :].split()
    # fields[0] is state (field 3); utime..cstime are fields 14..17
    return sum(int(x) for x in fields[11:15]) / TICK


def _runtime_of(pid: int) -> float:
    """CPU seconds of a live process's threads, in nanoseconds from schedstat (precise:
    /proc/PID/stat rounds each process down to 10 ms ticks, which loses most of the time
    of a thousand small vsftpd session processes), plus its reaped children (ticks)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return total / 1e9
    fields = data[data.rfind(b")") + 2 :].split()
    return total / 1e9 + (int(fields[13]) + int(fields[14])) / TICK


def tree_cpu(pid: int) -> float:
    """Seconds of CPU used so far by ``pid``'s tree (see module docstring)."""
    return sum(_runtime_of(p) for p in tree(pid))


def _pss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_pss(pid: int) -> int:
    """Proportional set size of the tree, in bytes (shared pages divided among sharers)."""
    return sum(_pss_of(p) for p in tree(pid))


def cores_busy(cores: set[int]) -> float:
    """Seconds the given CPUs spent not idle (user, system, irq, softirq...), from /proc/stat.
    With the server alone on its cores this counts everything the server costs, including
    children that were reaped without a ``wait`` (their times never reach a parent)."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
                continue
            ticks = [int(v) for v in values[:8]]
            busy += sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return busy / TICK


def self_cpu() -> float:
    """CPU seconds of this process (all threads)."""
    t = os.times()
    return t.user + t.system
