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
