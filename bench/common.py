"""What the benchmarks share: measuring a server's process tree through Linux /proc."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the gunicorn arbiter and its workers)."""
    pids = [pid]
    for parent in pids:
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                pids.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants (the gunicorn workers)."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its descendants, in MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def pss_mib(pid: int) -> float:
    """
    Proportional memory of `pid` and its descendants, in MiB: each shared page counts once in
    all (RSS counts it in every process that maps it, e.g. code preloaded before a fork).
    """
    total = 0
    for member in process_tree(pid):
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def memory_mib(pid: int) -> tuple[float, float]:
    """
    (RSS, PSS) of `pid` and its descendants in MiB, from /proc/PID/smaps_rollup: both read in
    one pass over the same pages, so they describe the same moment.
    """
    rss = pss = 0
    for member in process_tree(pid):
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def memory_by_role(roles: dict[str, list[int]]) -> dict[str, tuple[float, float]]:
    """(RSS, PSS) in MiB of each role: the sum over its processes and their descendants."""
    result = {}
    for role, pids in roles.items():
        measured = [memory_mib(pid) for pid in pids]
        result[role] = (sum(rss for rss, _ in measured), sum(pss for _, pss in measured))
    return result


def format_memory(by_role: dict[str, tuple[float, float]]) -> str:
    """One line: the total, then each role, RSS / PSS in MiB."""
    rss = sum(value[0] for value in by_role.values())
    pss = sum(value[1] for value in by_role.values())
    parts = ", ".join(
        f"{role} {role_rss:.0f}/{role_pss:.0f}" for role, (role_rss, role_pss) in by_role.items()
    )
    return f"RSS/PSS {rss:.0f}/{pss:.0f} MiB ({parts})"
