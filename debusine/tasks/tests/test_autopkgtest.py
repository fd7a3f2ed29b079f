"""Tests of the autopkgtest task: task data, summary parsing, and real autopkgtest runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debusine.artifacts import ArtifactCategory
from debusine.artifacts.models import DebianAutopkgtestResult
from debusine.tasks import BaseTask, TaskDataError, validate_task_data
from debusine.tasks.autopkgtest import (
    Autopkgtest,
    AutopkgtestFailOn,
    parse_summary,
    task_succeeded,
)
from debusine.tasks.tests.packages import make_worker_directory
from debusine.tasks.tests.qa_helpers import (
    BOOKWORM_DATA,
    BOOKWORM_TARBALL,
    WORKER_PREFIX,
    StagesRunner,
    TableResolver,
    build_test_packages,
    tools_available,
)

MINIMAL: dict[str, Any] = {
    "input": {"source_artifact": 1, "binary_artifacts": [2]},
    "host_architecture": "amd64",
    "environment": "debian/match:codename=bookworm",
}


def test_registered_and_reports_availability() -> None:
    assert BaseTask.class_from_name("Worker", "autopkgtest") is Autopkgtest
    assert Autopkgtest.TASK_VERSION == 1
    metadata = Autopkgtest.analyze_worker()
    assert metadata == {"autopkgtest:available": shutil.which("autopkgtest") is not None}


def test_defaults() -> None:
    data = Autopkgtest(MINIMAL).data
    assert data.input.context_artifacts == []
    assert (data.include_tests, data.exclude_tests, data.debug_level) == ([], [], 0)
    assert data.needs_internet == "run"
    assert data.fail_on.model_dump() == {
        "failed_test": True,
        "flaky_test": False,
        "skipped_test": False,
    }
    assert data.timeout is None and data.extra_repositories is None
    assert data.use_packages_from_base_repository is False
    assert data.extra_environment == {}


def test_full_data_round_trips() -> None:
    data = {
        **MINIMAL,
        "input": {
            "source_artifact": "internal@collections/name:source",
            "binary_artifacts": {"collection": "internal@collections"},
            "context_artifacts": [5, 6],
        },
        "backend": "unshare",
        "include_tests": ["smoke"],
        "exclude_tests": ["slow"],
        "debug_level": 3,
        "use_packages_from_base_repository": True,
        "extra_environment": {"FOO": "bar"},
        "needs_internet": "skip",
        "fail_on": {"failed_test": False, "flaky_test": True, "skipped_test": True},
        "timeout": {"global": 600, "factor": 2, "short": 10, "install": 60, "test": 30, "copy": 5},
        "extra_repositories": [
            {
                "url": "http://deb.debian.org/debian",
                "suite": "bookworm-backports",
                "components": ["main"],
            }
        ],
    }
    assert validate_task_data("Worker", "autopkgtest", data) == data


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"host_architecture": None}, "host_architecture"),
        ({"environment": None}, "environment"),
        ({"debug_level": 4}, "debug_level"),
        ({"debug_level": -1}, "debug_level"),
        ({"needs_internet": "maybe"}, "needs_internet"),
        ({"fail_on": {"failed": True}}, "fail_on.failed"),
        ({"timeout": {"global": -1}}, "timeout.global"),
        ({"timeout": {"total": 5}}, "timeout.total"),
        ({"extra_environment": {"A": 1}}, "extra_environment.A"),
        ({"input": {"source_artifact": 1}}, "input.binary_artifacts"),
        ({"extra_repositories": [{"url": "http://x", "suite": "s"}]}, "extra_repositories.0"),
        ({"pin_packages": {}}, "pin_packages"),
    ],
)
def test_bad_data_is_rejected(change: dict[str, Any], location: str) -> None:
    data = {**MINIMAL, **change}
    for key, value in change.items():
        if value is None:
            del data[key]
    with pytest.raises(TaskDataError) as caught:
        validate_task_data("Worker", "autopkgtest", data)
    assert any(loc.startswith(location) for loc, _ in caught.value.problems), caught.value


def test_compute_dynamic_data() -> None:
    task = Autopkgtest({**MINIMAL, "input": {**MINIMAL["input"], "context_artifacts": ["ctx"]}})
    environment_lookup = task.environment_lookup_variants()[0]
    resolver = TableResolver({1: 10, 2: [20, 21], "ctx": 30, environment_lookup: 99})
    dynamic = task.compute_dynamic_data(resolver)
    assert dynamic.environment_id == 99
    assert dynamic.input_source_artifact_id == 10
    assert dynamic.input_binary_artifacts_ids == [20, 21]
    assert dynamic.input_context_artifacts_ids == [30]
    assert dynamic.runtime_context == "amd64:unshare"
    # The worker accepts what the server computed.
    Autopkgtest(MINIMAL, dynamic.model_dump())
    with pytest.raises(TaskDataError):
        Autopkgtest(MINIMAL, {"input_source_artifact_id": 1, "unknown": []})


def test_can_run_on() -> None:
    task = Autopkgtest(MINIMAL)
    assert task.can_run_on({"executor:unshare:available": True, "autopkgtest:available": True})
    assert not task.can_run_on({"executor:unshare:available": True})
    assert not task.can_run_on({"autopkgtest:available": True})


#: A summary file written by autopkgtest 5.28 (plus the other kinds of lines it writes).
SUMMARY = """\
fail                 FAIL non-zero exit status 1
pass                 PASS (superficial)
flaky                FLAKY non-zero exit status 1
skipped              SKIP Test needs to be skipped
blame: arg:hello.dsc
badpkg: Test dependencies are unsatisfiable.
"""


def test_parse_summary() -> None:
    results = parse_summary(SUMMARY)
    assert {name: (r.status, r.details) for name, r in results.items()} == {
        "fail": ("FAIL", "non-zero exit status 1"),
        "pass": ("PASS", "(superficial)"),
        "flaky": ("FLAKY", "non-zero exit status 1"),
        "skipped": ("SKIP", "Test needs to be skipped"),
    }
    assert parse_summary("smoke PASS\n") == {"smoke": DebianAutopkgtestResult(status="PASS")}
    assert parse_summary("") == {}
    with pytest.raises(ValueError, match="cannot parse"):
        parse_summary("smoke WEIRD\n")


@pytest.mark.parametrize(
    ("statuses", "returncode", "fail_on", "expected"),
    [
        (["PASS"], 0, {}, True),
        (["PASS", "FAIL"], 4, {}, False),
        (["PASS", "FAIL"], 4, {"failed_test": False}, True),
        (["FLAKY"], 2, {}, True),
        (["FLAKY"], 2, {"flaky_test": True}, False),
        (["SKIP"], 8, {}, True),
        (["SKIP"], 8, {"skipped_test": True}, False),
        ([], 8, {"skipped_test": True}, False),
        (["FAIL", "SKIP"], 6, {"failed_test": False}, True),  # flags combine: 4 | 2
        (["FAIL", "SKIP"], 6, {}, False),
        (["PASS", "SKIP"], 2, {"skipped_test": True}, False),
        ([], 12, {}, False),  # erroneous package
        ([], 14, {"failed_test": False}, False),
        ([], 16, {}, False),  # testbed failure
    ],
)
def test_task_succeeded(
    statuses: list[str], returncode: int, fail_on: dict[str, bool], expected: bool
) -> None:
    results = {
        f"t{i}": DebianAutopkgtestResult(status=status)  # type: ignore[arg-type]
        for i, status in enumerate(statuses)
    }
    assert task_succeeded(results, returncode, AutopkgtestFailOn(**fail_on)) is expected


def test_command_line(tmp_path: Path) -> None:
    task = Autopkgtest(
        {
            **MINIMAL,
            "include_tests": ["smoke"],
            "exclude_tests": ["slow"],
            "debug_level": 2,
            "extra_environment": {"FOO": "bar baz"},
            "needs_internet": "try",
            "use_packages_from_base_repository": True,
            "timeout": {"global": 600, "copy": 5},
            "extra_repositories": [
                {"url": "http://example.org/repo", "suite": "./"},
            ],
        }
    )
    (tmp_path / "hello_1.dsc").write_text("Source: hello\nVersion: 1\n")
    (tmp_path / "hello_1_all.deb").write_bytes(b"")
    runner = StagesRunner(task)
    try:
        assert task.configure_for_execution(tmp_path)
        task.use_environment(Path("/envs/bookworm.tar.zst"), BOOKWORM_DATA)
        argv = task.command()
    finally:
        runner.close()
    assert argv[:5] == [
        "autopkgtest",
        "--apt-upgrade",
        "--output-dir=artifact-dir",
        "--summary=artifact-dir/summary",
        "--no-built-binaries",
    ]
    for option in (
        "--test-name=smoke",
        "--skip-test=slow",
        "-dd",
        f"--copy={tmp_path}/extra-repository-0.sources:"
        "/etc/apt/sources.list.d/extra-repository-0.sources",
        "--apt-default-release=bookworm",
        "--env=FOO=bar baz",
        "--needs-internet=try",
        "--timeout-global=600",
        "--timeout-copy=5",
        "--setup-commands=apt-get update",
    ):
        assert option in argv
    assert not any(arg.startswith("--timeout-factor") for arg in argv)
    assert argv[-8:] == [
        f"{tmp_path}/hello_1_all.deb",
        f"{tmp_path}/hello_1.dsc",
        "--",
        "unshare",
        "--tarball",
        "/envs/bookworm.tar.zst",
        "--arch",
        "amd64",
    ]
    assert "URIs: http://example.org/repo" in (tmp_path / "extra-repository-0.sources").read_text()


# --- Real runs (about 20 s each) ----------------------------------------------------------

needs_autopkgtest = pytest.mark.skipif(
    not tools_available("autopkgtest", "dpkg-buildpackage"),
    reason="autopkgtest or dpkg-dev is not installed",
)


@pytest.fixture(scope="module")
def package_directory() -> Iterator[Path]:
    directory = make_worker_directory("debusine-autopkgtest-packages-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def _run_real(directory: Path, *, fail: bool) -> tuple[bool, Autopkgtest, StagesRunner]:
    packages = build_test_packages(directory, fail_autopkgtest=fail)
    task = Autopkgtest(
        MINIMAL,
        {"environment_id": 1, "input_source_artifact_id": 1, "input_binary_artifacts_ids": [2]},
    )
    task.host_command_prefix = WORKER_PREFIX
    runner = StagesRunner(task)
    dsc = packages["dsc"]
    runner.add_input(
        dsc,
        dsc.parent / "hello-debusine_1.0.orig.tar.gz",
        next(dsc.parent.glob("hello-debusine_1.0-1.debian.tar.*")),
        packages["any"],
        packages["all"],
    )
    assert task.configure_for_execution(runner.input_directory)
    task.use_environment(BOOKWORM_TARBALL, BOOKWORM_DATA)
    return task.run(runner.execute_directory), task, runner


@needs_autopkgtest
@pytest.mark.usefixtures("buildd_tarball")
def test_real_run_passing(package_directory: Path) -> None:
    success, task, runner = _run_real(package_directory / "pass", fail=False)
    try:
        assert success is True, runner.debug_log("autopkgtest.log")[-3000:]
        assert task.check_directory_for_consistency_errors(runner.execute_directory) == []
        artifact = task.output_artifact(runner.execute_directory)
        assert artifact.category == ArtifactCategory.AUTOPKGTEST
        data = artifact.data_json()
        assert data["results"] == {"smoke": {"status": "PASS", "details": "(superficial)"}}
        assert data["source_package"]["name"] == "hello-debusine"
        assert data["source_package"]["version"] == "1.0-1"
        assert data["architecture"] == "amd64"
        assert data["distribution"] == "debian:bookworm"
        assert data["cmdline"].startswith("autopkgtest --apt-upgrade")
        assert {"summary", "log", "smoke-stdout"} <= set(artifact.files)
        assert "running the smoke test" in artifact.files["smoke-stdout"].read_text()
    finally:
        runner.close()


@needs_autopkgtest
@pytest.mark.usefixtures("buildd_tarball")
def test_real_run_failing(package_directory: Path) -> None:
    success, task, runner = _run_real(package_directory / "fail", fail=True)
    try:
        assert success is False
        data = task.output_artifact(runner.execute_directory).data_json()
        assert data["results"]["smoke"]["status"] == "FAIL"
        assert "autopkgtest exit status: 4" in runner.debug_log("autopkgtest.log")
    finally:
        runner.close()
