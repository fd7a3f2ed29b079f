"""The systemd units under deploy/ pass `systemd-analyze verify` (when systemd is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).resolve().parents[1] / "deploy" / "systemd").glob("*.*"))
# What a checkout cannot satisfy: the packaged commands and our other units are not installed.
NOT_INSTALLED = re.compile(
    r"is not executable: No such file or directory"
    r"|Unit (debusine-[a-z-]+|postgresql|redis-server)\.service not found"
)


def test_there_are_units() -> None:
    names = {unit.name for unit in UNITS}
    assert {
        "debusine-server.service",
        "debusine-server-migrate.service",
        "debusine-server-scheduler.service",
        "debusine-server-celery.service",
        "debusine-server-periodic-tasks.service",
        "debusine-server-provisioner.service",
        "debusine-worker.service",
        "debusine-signing.service",
        "debusine-signing-migrate.service",
    } <= names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_unit_verifies(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not NOT_INSTALLED.search(line)
    ]
    assert problems == []


def test_the_celery_unit_runs_workflow_orchestrators() -> None:
    unit = Path(__file__).parents[1] / "deploy" / "systemd" / "debusine-server-celery.service"
    assert "--queues celery,workflows " in unit.read_text()
