"""Tests of the piuparts task: task data, command line, and a real piuparts run."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from debusine.tasks import BaseTask, TaskDataError, validate_task_data
from debusine.tasks.piuparts import Piuparts, decompressor_for, make_base_tgz
from debusine.tasks.tests.packages import make_worker_directory
from debusine.tasks.tests.qa_helpers import (
    BOOKWORM_TARBALL,
    WORKER_PREFIX,
    StagesRunner,
    TableResolver,
    build_test_packages,
    tools_available,
)

MINIMAL: dict[str, Any] = {
    "input": {"binary_artifacts": [2]},
    "host_architecture": "amd64",
    "environment": "debian/match:codename=bookworm",
    "base_tgz": "debian/match:codename=bookworm",
}


def test_registered_and_reports_availability() -> None:
    assert BaseTask.class_from_name("Worker", "piuparts") is Piuparts
    assert Piuparts.TASK_VERSION == 1
    assert Piuparts.analyze_worker() == {
        "piuparts:available": shutil.which("piuparts") is not None
    }
    task = Piuparts(MINIMAL)
    assert task.can_run_on({"executor:unshare:available": True, "piuparts:available": True})
    assert not task.can_run_on({"executor:unshare:available": True})


def test_data_validation() -> None:
    full = {
        **MINIMAL,
        "backend": "unshare",
        "extra_repositories": [
            {
                "url": "http://deb.debian.org/debian",
                "suite": "bookworm-backports",
                "components": ["main", "contrib"],
            }
        ],
    }
    assert validate_task_data("Worker", "piuparts", full) == full
    for missing in ("host_architecture", "environment", "base_tgz", "input"):
        data = {key: value for key, value in MINIMAL.items() if key != missing}
        with pytest.raises(TaskDataError) as caught:
            validate_task_data("Worker", "piuparts", data)
        assert caught.value.problems[0][0] == missing
    with pytest.raises(TaskDataError):
        validate_task_data("Worker", "piuparts", {**MINIMAL, "input": {}})
    with pytest.raises(TaskDataError):
        validate_task_data("Worker", "piuparts", {**MINIMAL, "base_tgz": {"a": 1}})


def test_compute_dynamic_data() -> None:
    task = Piuparts(MINIMAL)
    environment = task.environment_lookup_variants()[0]
    base = "debian/match:codename=bookworm:architecture=amd64:format=tarball:backend=unshare"
    resolver = TableResolver({2: [20, 21], environment: 30, base: 40})
    dynamic = task.compute_dynamic_data(resolver)
    assert dynamic.input_binary_artifacts_ids == [20, 21]
    assert dynamic.environment_id == 30
    assert dynamic.base_tgz_id == 40
    Piuparts(MINIMAL, dynamic.model_dump())


def test_make_base_tgz_drops_device_nodes(tmp_path: Path) -> None:
    source = tmp_path / "tree"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "hostname").write_text("x\n")
    tarball = tmp_path / "base.tar.xz"
    with tarfile.open(tarball, "w:xz") as archive:
        archive.add(source, arcname=".")
        device = tarfile.TarInfo("./dev/null")
        device.type = tarfile.CHRTYPE
        device.devmajor, device.devminor = 1, 3
        archive.addfile(device)
    assert decompressor_for(tarball)[0] == "xz"
    output = tmp_path / "base.tgz"
    make_base_tgz(tarball, output)
    with gzip.open(output) as stream:
        assert stream.read(1)  # gzip indeed
    with tarfile.open(output) as archive:
        names = archive.getnames()
    assert "./etc/hostname" in names and "./dev/null" not in names


needs_piuparts = pytest.mark.skipif(
    not tools_available("piuparts", "mmtarfilter", "zstd"),
    reason="piuparts, mmdebstrap (mmtarfilter) or zstd is not installed",
)


def _run_piuparts(debs: list[Path]) -> tuple[bool, str]:
    task = Piuparts(
        MINIMAL, {"environment_id": 1, "input_binary_artifacts_ids": [2], "base_tgz_id": 3}
    )
    task.host_command_prefix = WORKER_PREFIX
    runner = StagesRunner(task)
    try:
        runner.add_input(*debs)
        task.use_base_tarball(BOOKWORM_TARBALL)
        assert task.configure_for_execution(runner.input_directory)
        success = task.run(runner.execute_directory)
        return success, runner.debug_log("piuparts.log")
    finally:
        runner.close()


@needs_piuparts
@pytest.mark.usefixtures("buildd_tarball")
def test_real_run_failing_package(tmp_path: Path) -> None:
    """A package whose postinst fails does not pass piuparts (about 20 s)."""
    root = tmp_path / "broken"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: broken-postinst\nVersion: 1\nArchitecture: all\n"
        "Maintainer: Tests <tests@example.org>\nDescription: fails to configure\n"
    )
    postinst = root / "DEBIAN" / "postinst"
    postinst.write_text("#!/bin/sh\necho 'this postinst fails on purpose' >&2\nexit 1\n")
    postinst.chmod(0o755)
    deb = tmp_path / "broken-postinst_1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    success, log = _run_piuparts([deb])
    assert success is False
    assert "this postinst fails on purpose" in log
    assert "piuparts exit status: 0" not in log


@needs_piuparts
@pytest.mark.usefixtures("buildd_tarball")
def test_real_run() -> None:
    """piuparts of the test package's binaries in bookworm, as the worker user (about 25 s)."""
    directory = make_worker_directory("debusine-piuparts-packages-")
    try:
        packages = build_test_packages(directory)
        success, log = _run_piuparts([packages["any"], packages["all"]])
    finally:
        shutil.rmtree(directory)
    assert success is True, log[-3000:]
    assert "PASS: All tests." in log
    assert "piuparts exit status: 0" in log
