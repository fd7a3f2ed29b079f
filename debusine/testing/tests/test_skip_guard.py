"""
Tests of the skip guard (`debusine.testing.skip_guard`): pytest runs in a subprocess on a tiny
test file written here, once through `make test`'s bootstrap with pytest-xdist as CI runs it,
and otherwise with the plugin alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from debusine.testing.skip_guard import AllowedSkip

TINY_TESTS = """
import pytest

def test_passes():
    pass

def test_skipped():
    pytest.skip("the frobnicator is missing")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False
"""


def write_tests(
    directory: Path, text: str = TINY_TESTS, *, allowed: list[str] | None = None
) -> Path:
    """`directory/test_tiny.py` with `text`, and a pytest.ini (with `allowed_skips` lines)."""
    ini = "[pytest]\n"
    if allowed is not None:
        ini += "allowed_skips =\n" + "".join(f"    {line}\n" for line in allowed)
    (directory / "pytest.ini").write_text(ini)
    path = directory / "test_tiny.py"
    path.write_text(text)
    return path


def run_pytest(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """pytest with the skip guard loaded, in `directory` (no conftest of this checkout)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "debusine.testing.skip_guard", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_make_test_fails_a_run_that_skips(tmp_path: Path) -> None:
    """Through testservices (`make test`, `.ci/run`), with two xdist workers."""
    write_tests(tmp_path)
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "debusine.testing.services",
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            "test_tiny.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env=environment,
        timeout=300,
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 passed, 1 skipped, 1 xfailed" in result.stdout
    assert "test_tiny.py::test_skipped: the frobnicator is missing [unexpected]" in result.stdout
    assert "1 unexpected skip(s): this run fails" in result.stdout
    assert "test_expected_failure" not in result.stdout.split("skips (1)")[1]


def test_a_run_without_skips_passes(tmp_path: Path) -> None:
    write_tests(tmp_path, "def test_passes():\n    pass\n")
    result = run_pytest(tmp_path, "--fail-on-skip")
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "skips (" not in result.stdout


def test_a_listed_skip_is_allowed(tmp_path: Path) -> None:
    write_tests(tmp_path, allowed=["test_tiny.py::test_skip* :: frobnicator is missing"])
    result = run_pytest(tmp_path, "--fail-on-skip")
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert (
        "test_tiny.py::test_skipped: the frobnicator is missing [allowed by "
        "`test_tiny.py::test_skip* :: frobnicator is missing`]"
    ) in result.stdout


def test_a_listed_test_skipped_for_another_reason_is_unexpected(tmp_path: Path) -> None:
    write_tests(tmp_path, allowed=["test_tiny.py::test_skipped :: needs a GPU"])
    result = run_pytest(tmp_path, "--fail-on-skip")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "[unexpected]" in result.stdout


def test_a_skipped_module_is_unexpected(tmp_path: Path) -> None:
    write_tests(
        tmp_path, "import pytest\npytest.skip('no module here', allow_module_level=True)\n"
    )
    (tmp_path / "test_other.py").write_text("def test_passes():\n    pass\n")
    result = run_pytest(tmp_path, "--fail-on-skip")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "test_tiny.py: no module here [unexpected]" in result.stdout


def test_without_the_option_skips_are_listed_but_pass(tmp_path: Path) -> None:
    write_tests(tmp_path)
    result = run_pytest(tmp_path)
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "test_tiny.py::test_skipped: the frobnicator is missing [unexpected]" in result.stdout
    assert "this run fails" not in result.stdout


def test_a_failing_run_keeps_its_status(tmp_path: Path) -> None:
    write_tests(tmp_path, TINY_TESTS + "\ndef test_fails():\n    assert False\n")
    result = run_pytest(tmp_path, "--fail-on-skip")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "1 failed" in result.stdout


def test_a_malformed_allowed_skip_is_a_usage_error(tmp_path: Path) -> None:
    write_tests(tmp_path, allowed=["test_tiny.py::test_skipped"])
    result = run_pytest(tmp_path, "--fail-on-skip")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "is not `NODE-ID-GLOB :: REASON-SUBSTRING`" in result.stderr


def test_allowed_skip_parsing() -> None:
    allowed = AllowedSkip.parse("tests/test_x.py::test_y[a] :: needs  a GPU ")
    assert allowed == AllowedSkip("tests/test_x.py::test_y[a]", "needs  a GPU")
    assert allowed.matches("tests/test_x.py::test_y[a]", "this test needs  a GPU here")
    assert not allowed.matches("tests/test_x.py::test_y[b]", "needs  a GPU")
    assert not allowed.matches("tests/test_x.py::test_ya", "needs  a GPU")
    assert AllowedSkip("a.py::*", "x").matches("a.py::test[1-2]", "x")
