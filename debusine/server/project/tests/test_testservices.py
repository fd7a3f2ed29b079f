"""Tests of the `make test` bootstrap."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from debusine.server.project import testservices


def test_no_tests_collected_fails_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text('"""No tests here."""\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "debusine.server.project.testservices",
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
    assert result.returncode == testservices.PYTEST_NO_TESTS_COLLECTED
    assert "pytest collected no tests; that is a failure" in result.stderr


def test_required_tools_are_present_after_bootstrap() -> None:
    testservices.ensure_tools()
    assert all(shutil.which(tool) for tool in testservices.REQUIRED_TOOLS)
