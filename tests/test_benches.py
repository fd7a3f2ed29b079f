"""
The benchmarks that build their own history with SQL still run: each is started at a tiny size
and must print its table. They insert rows behind the models' backs (generate_series), so a new
NOT NULL column or a renamed table breaks them silently unless something runs them; these run
in parallel, in subprocesses, against the PostgreSQL the suite uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each bench at its smallest useful size, and a line its output must contain.
BENCHES: dict[str, tuple[list[str], str]] = {
    "webui": (["--work-requests", "300", "--children", "5", "--renders", "2"], "workers"),
    "metrics": (["--work-requests", "1000", "--scrapes", "2", "--updates", "10"], "baseline"),
    "schedule": (["--pending", "50", "--workers", "10"], "pass 1"),
    "provisioner": (["--pools", "2", "--instances-per-pool", "2", "--pending", "20"], "pass 1"),
}


@pytest.mark.slow
def test_the_sql_built_benches_run_at_a_tiny_size() -> None:
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"bench.{name}", *arguments],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (arguments, _) in BENCHES.items()
    }
    failures = []
    for name, process in started.items():
        output, _ = process.communicate(timeout=300)
        expected = BENCHES[name][1]
        if process.returncode != 0 or expected not in output:
            failures.append(f"bench.{name} (exit {process.returncode}):\n{output[-3000:]}")
    assert not failures, "\n\n".join(failures)
