"""Tests of the `make test` bootstrap."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from debusine.testing import services


def test_no_tests_collected_fails_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text('"""No tests here."""\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "debusine.testing.services",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == services.PYTEST_NO_TESTS_COLLECTED
    assert "pytest collected no tests; that is a failure" in result.stderr


def test_required_tools_are_present_after_bootstrap() -> None:
    services.ensure_tools()
    assert all(shutil.which(tool) for tool in services.REQUIRED_TOOLS)
