"""Tests of the `sbuild` task: task data, dynamic data, command line, and real builds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debusine.artifacts import ArtifactCategory
from debusine.tasks import (
    BaseTask,
    DynamicTaskDataError,
    TaskContext,
    TaskDataError,
    TaskError,
    validate_task_data,
)
from debusine.tasks.base import Lookup, LookupFailedError, LookupResult
from debusine.tasks.execution import DebugLogs
from debusine.tasks.sbuild import DEFAULT_BINNMU_MAINTAINER, Sbuild, build_log_status
from debusine.tasks.tests.packages import (
    as_worker_user,
    give_to_worker_user,
    make_source_package,
    make_worker_directory,
    worker_user_available,
)
from debusine.testing.environments import BUILDD_TARBALL

#: The environment the real builds use (the `buildd_tarball` fixture makes it when missing).
CACHED_TARBALL = BUILDD_TARBALL


def task_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "input": {"source_artifact": 12},
        "host_architecture": "amd64",
        "environment": "debian/match:codename=bookworm",
    }
    data.update(overrides)
    return data


def dynamic_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"input_source_artifact_id": 12, "environment_id": 3}
    data.update(overrides)
    return data


class TableResolver:
    """Resolves the lookups of a table (what the server's resolver would answer)."""

    def __init__(self, single: dict[Any, int], multiple: dict[Any, list[int]] | None = None):
        self.single = single
        self.multiple = multiple or {}
        self.asked: list[Lookup] = []

    def lookup_single(
        self, lookup: Lookup, *, expect_type: str, default_category: str | None = None
    ) -> LookupResult:
        assert expect_type == "artifact"
        self.asked.append(lookup)
        key = repr(lookup)
        if key not in self.single:
            raise LookupFailedError(f"{lookup!r} does not exist")
        return LookupResult("a", artifact=self.single[key])

    def lookup_multiple(
        self,
        lookup: Lookup | list[Lookup],
        *,
        expect_type: str,
        default_category: str | None = None,
    ) -> list[LookupResult]:
        assert expect_type == "artifact"
        return [LookupResult("a", artifact=i) for i in self.multiple[repr(lookup)]]


# --- Task data ----------------------------------------------------------------------------


def test_registered_as_worker_task() -> None:
    assert BaseTask.class_from_name("Worker", "sbuild") is Sbuild
    assert Sbuild.TASK_VERSION == 1


def test_minimal_task_data_gets_the_reference_defaults() -> None:
    task = Sbuild(task_data())
    assert task.data.build_components == ["any"]
    assert task.data.backend == "auto"
    assert task.data.binnmu is None
    assert task.data.build_profiles is None
    assert task.data.extra_repositories is None
    assert task.data.build_dep_resolver is None and task.data.aspcud_criteria is None
    assert task.data.input.extra_binary_artifacts == []
    assert task.data.task_configuration == "default@debusine:task-configuration"


def test_full_task_data_is_accepted() -> None:
    data = task_data(
        input={
            "source_artifact": "internal@collections/name:source",
            "extra_binary_artifacts": [5, "internal@collections/name:extra"],
        },
        backend="unshare",
        build_components=["any", "source"],
        binnmu={
            "changelog": "Rebuild against libfoo2",
            "suffix": "+b1",
            "timestamp": "2024-05-01T12:00:00Z",
            "maintainer": "Jane Doe <jane@example.org>",
        },
        build_profiles=["nocheck", "pkg.foo.nobar"],
        extra_repositories=[
            {"url": "http://example.org/debian", "suite": "bookworm", "components": ["main"]}
        ],
        build_dep_resolver="aspcud",
        aspcud_criteria="-removed,-changed,-new",
    )
    assert validate_task_data("Worker", "sbuild", data) == data


@pytest.mark.parametrize(
    ("data", "location"),
    [
        ({"input": {"source_artifact": 1}, "environment": "e"}, "host_architecture"),
        ({"input": {"source_artifact": 1}, "host_architecture": "amd64"}, "environment"),
        (task_data(input={}), "input.source_artifact"),
        (task_data(build_components=["any", "binary"]), "build_components.1"),
        (task_data(build_dep_resolver="dselect"), "build_dep_resolver"),
        (task_data(backend="chroot"), "backend"),
        (task_data(binnmu={"changelog": "x"}), "binnmu.suffix"),
        (
            task_data(binnmu={"changelog": "x", "suffix": "+b1", "maintainer": "nobody"}),
            "binnmu.maintainer",
        ),
        (
            task_data(extra_repositories=[{"url": "http://e.org", "suite": "s"}]),
            "extra_repositories.0",
        ),
        (task_data(unknown=True), "unknown"),
    ],
)
def test_invalid_task_data_is_rejected(data: dict[str, Any], location: str) -> None:
    with pytest.raises(TaskDataError) as raised:
        validate_task_data("Worker", "sbuild", data)
    assert location in [loc for loc, _ in raised.value.problems]


def test_binnmu_cannot_build_architecture_independent_packages() -> None:
    with pytest.raises(TaskDataError, match="Cannot build architecture-independent packages"):
        Sbuild(
            task_data(build_components=["any", "all"], binnmu={"changelog": "x", "suffix": "+b1"})
        )


def test_dynamic_data_requires_the_source_artifact() -> None:
    with pytest.raises(TaskDataError, match="input_source_artifact_id"):
        Sbuild(task_data(), {"environment_id": 3})
    # None at all: the server has not computed them yet.
    task = Sbuild(task_data())
    with pytest.raises(TaskError, match="no dynamic data"):
        task.input_artifact_ids()
    assert Sbuild(task_data(), dynamic_data()).input_artifact_ids() == [3, 12]


# --- Scheduling ---------------------------------------------------------------------------


def test_analyze_worker_reports_whether_sbuild_is_installed() -> None:
    assert Sbuild.analyze_worker() == {"sbuild:available": shutil.which("sbuild") is not None}


def test_can_run_on_needs_sbuild_and_the_unshare_executor() -> None:
    task = Sbuild(task_data())
    assert task.can_run_on({"sbuild:available": True, "executor:unshare:available": True})
    assert not task.can_run_on({"sbuild:available": False, "executor:unshare:available": True})
    assert not task.can_run_on({"executor:unshare:available": True})
    assert not task.can_run_on({"sbuild:available": True, "executor:unshare:available": False})


def test_compute_dynamic_data_resolves_inputs_and_environment() -> None:
    environment = (
        "debian/match:codename=bookworm:architecture=amd64:format=tarball:backend=unshare"
    )
    extra = ["internal@collections/name:a", 8]
    resolver = TableResolver(
        {
            repr("internal@collections/name:source"): 12,
            # Only the generic environment exists: the task's own variant is tried first.
            repr(f"{environment}:variant="): 3,
        },
        {repr(extra): [7, 8]},
    )
    task = Sbuild(
        task_data(
            input={
                "source_artifact": "internal@collections/name:source",
                "extra_binary_artifacts": extra,
            },
            build_components=["any", "all"],
        )
    )
    dynamic = task.compute_dynamic_data(resolver)
    assert resolver.asked[1:] == [f"{environment}:variant=sbuild", f"{environment}:variant="]
    assert dynamic.input_source_artifact_id == 12
    assert dynamic.input_extra_binary_artifacts_ids == [7, 8]
    assert dynamic.environment_id == 3
    assert dynamic.binnmu_maintainer is None
    assert dynamic.runtime_context == "all+any:amd64:amd64"
    # What the server stores validates as the task's dynamic data.
    Sbuild(task_data(), dynamic.model_dump(mode="json"))


def test_compute_dynamic_data_of_a_binnmu_names_a_maintainer() -> None:
    resolver = TableResolver({repr(12): 12, repr(99): 99})
    task = Sbuild(
        task_data(
            environment=99,
            binnmu={"changelog": "rebuild", "suffix": "+b1"},
            build_profiles=["nocheck"],
        )
    )
    dynamic = task.compute_dynamic_data(resolver)
    assert dynamic.binnmu_maintainer == DEFAULT_BINNMU_MAINTAINER
    assert dynamic.environment_id == 99
    # Builds with DEB_BUILD_OPTIONS are not compared in statistics.
    assert dynamic.runtime_context is None


def test_compute_dynamic_data_fails_for_a_missing_source() -> None:
    with pytest.raises(LookupFailedError, match="does not exist"):
        Sbuild(task_data()).compute_dynamic_data(TableResolver({}))


# --- Command line -------------------------------------------------------------------------


def configured(task: Sbuild, tmp_path: Path) -> Sbuild:
    """The task as `fetch_input` leaves it (without a server)."""
    task.dsc = tmp_path / "hello_1.0-1.dsc"
    task.chroot_tarball = CACHED_TARBALL
    task.codename = "bookworm"
    return task


def test_command_line_for_an_arch_any_build(tmp_path: Path) -> None:
    task = configured(Sbuild(task_data(), dynamic_data()), tmp_path)
    assert task.command_line() == [
        "sbuild",
        "--chroot-mode=unshare",
        f"--chroot={CACHED_TARBALL}",
        "--dist=bookworm",
        "--arch=amd64",
        "--no-clean-source",
        "--purge-deps=never",
        "--no-run-lintian",
        "--no-run-piuparts",
        "--no-run-autopkgtest",
        "--arch-any",
        "--no-arch-all",
        "--no-source",
        "--bd-uninstallable-explainer=apt",
        f"{tmp_path}/hello_1.0-1.dsc",
    ]
    assert task.command_environment() == {}


def test_command_line_with_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEB_BUILD_OPTIONS", "parallel=4")
    task = configured(
        Sbuild(
            task_data(
                host_architecture="arm64",
                build_components=["all", "source"],
                build_profiles=["nocheck", "nodoc", "stage1"],
                build_dep_resolver="aspcud",
                aspcud_criteria="-removed,-new",
                extra_repositories=[
                    {"url": "http://example.org/debian", "suite": "sid", "components": ["main"]}
                ],
            ),
            dynamic_data(),
        ),
        tmp_path,
    )
    task.extra_packages = [tmp_path / "extra-7" / "libfoo_1_arm64.deb"]
    task.debug_logs = DebugLogs(tmp_path / "debug-logs")
    assert task.configure_for_execution(tmp_path) is False  # no .dsc there yet
    task.debug_logs.close_all()
    assert (tmp_path / "debug-logs" / "fetch_input.log").read_text() == (
        "the input source package has no .dsc file\n"
    )
    task.dsc.write_text("Source: hello\n")  # type: ignore[union-attr]
    assert task.configure_for_execution(tmp_path)
    sources = tmp_path / "extra_repository_0.sources"
    assert sources.read_text() == (
        "Types: deb\nURIs: http://example.org/debian\nSuites: sid\nComponents: main\n"
    )
    command = task.command_line()
    assert "--arch=arm64" in command
    build_options = {"--arch-any", "--no-arch-any", "--arch-all", "--no-arch-all"}
    build_options |= {"--source", "--no-source"}
    assert [a for a in command if a in build_options] == [
        "--no-arch-any",
        "--arch-all",
        "--source",
    ]
    assert "--profiles=nocheck,nodoc,stage1" in command
    assert "--build-dep-resolver=aspcud" in command
    assert "--aspcud-criteria=-removed,-new" in command
    assert f"--extra-package={tmp_path}/extra-7/libfoo_1_arm64.deb" in command
    assert (
        f"--pre-build-commands=cat {sources} | %SBUILD_CHROOT_EXEC sh -c "
        "'cat > /etc/apt/sources.list.d/extra_repository_0.sources'"
    ) in command
    assert command[-1] == str(task.dsc)
    assert task.command_environment() == {"DEB_BUILD_OPTIONS": "parallel=4 nocheck nodoc"}


def test_command_line_of_a_binnmu(tmp_path: Path) -> None:
    binnmu = {"changelog": "Rebuild for libfoo2", "suffix": "+b2"}
    task = configured(
        Sbuild(
            task_data(binnmu={**binnmu, "timestamp": "2024-05-01T12:00:00+00:00"}),
            dynamic_data(binnmu_maintainer="Server <noreply@example.org>"),
        ),
        tmp_path,
    )
    command = task.command_line()
    assert command[-6:-1] == [
        "--make-binNMU=Rebuild for libfoo2",
        "--append-to-version=+b2",
        "--binNMU=0",
        "--binNMU-timestamp=Wed, 01 May 2024 12:00:00 +0000",
        "--maintainer=Server <noreply@example.org>",
    ]
    task = configured(
        Sbuild(
            task_data(binnmu={**binnmu, "maintainer": "Jane <jane@example.org>"}),
            dynamic_data(binnmu_maintainer="Server <noreply@example.org>"),
        ),
        tmp_path,
    )
    assert "--maintainer=Jane <jane@example.org>" in task.command_line()


def test_build_log_status_is_the_last_one(tmp_path: Path) -> None:
    log = tmp_path / "x.build"
    log.write_text("Status: nonsense in the build output\n...\nStatus: successful\n")
    assert build_log_status(log) == "successful"
    log.write_text("no status\n")
    assert build_log_status(log) is None


# --- Real builds --------------------------------------------------------------------------


class SbuildAsWorkerUser(Sbuild, abstract=True):
    """The task, running sbuild as the unprivileged test user (the tests run as root)."""

    home: Path

    def command_line(self) -> list[str]:
        command = super().command_line()
        return as_worker_user(["env", f"HOME={self.home}", *command])


@pytest.fixture
def build_context() -> Iterator[TaskContext]:
    """A task context owned by the unprivileged test user."""
    parent = make_worker_directory()
    try:
        context = TaskContext.create(3, "System", parent)
        give_to_worker_user(parent)
        yield context
    finally:
        shutil.rmtree(parent)


def build(
    context: TaskContext, *, fail_build: bool = False, debhelper: bool = True, **data: Any
) -> tuple[Sbuild, bool]:
    """Make a source package, build it with the task's `run()`; the task and its result."""
    dsc = make_source_package(
        context.input_directory / "source", fail_build=fail_build, debhelper=debhelper
    )
    give_to_worker_user(context.directory)
    task = SbuildAsWorkerUser(task_data(**data), dynamic_data())
    task.home = context.directory
    task.dsc = dsc
    task.chroot_tarball = CACHED_TARBALL
    task.codename = "bookworm"
    task.context = context
    task.debug_logs = DebugLogs(context.debug_log_directory)
    try:
        assert task.configure_for_execution(context.input_directory)
        succeeded = task.run(context.execute_directory)
    finally:
        task.debug_logs.close_all()
    return task, succeeded


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sbuild") is None, reason="sbuild is not installed")
@pytest.mark.skipif(not worker_user_available(), reason="no unprivileged user to run it as")
@pytest.mark.usefixtures("buildd_tarball")
def test_real_build_produces_packages_log_and_upload(build_context: TaskContext) -> None:
    """sbuild of a two-package debhelper source in the cached bookworm tarball (about 20 s)."""
    task, succeeded = build(build_context, build_components=["any", "all"])
    console = (build_context.debug_log_directory / "sbuild.log").read_text()
    assert succeeded, console[-3000:]
    assert "sbuild --chroot-mode=unshare" in console

    execute = build_context.execute_directory
    log, binaries, upload = task.output_artifacts(execute, execution_success=True)
    assert log is not None and upload is not None
    assert log.category == ArtifactCategory.PACKAGE_BUILD_LOG
    assert log.data_json() == {
        "source": "hello-debusine",
        "version": "1.0-1",
        "architecture": "amd64",
        "filename": "hello-debusine_1.0-1_amd64.build",
        "bd_uninstallable": None,
    }
    assert "Status: successful" in log.files["hello-debusine_1.0-1_amd64.build"].read_text()

    assert [(b.category, sorted(b.files)) for b in binaries] == [
        (ArtifactCategory.BINARY_PACKAGE, ["hello-debusine_1.0-1_amd64.deb"]),
        (ArtifactCategory.BINARY_PACKAGES, ["hello-debusine_1.0-1_amd64.deb"]),
        (ArtifactCategory.BINARY_PACKAGE, ["hello-debusine-data_1.0-1_all.deb"]),
        (ArtifactCategory.BINARY_PACKAGES, ["hello-debusine-data_1.0-1_all.deb"]),
    ]
    assert binaries[0].data_json()["srcpkg_name"] == "hello-debusine"
    assert binaries[1].data_json() == {
        "srcpkg_name": "hello-debusine",
        "srcpkg_version": "1.0-1",
        "version": "1.0-1",
        "architecture": "amd64",
        "packages": ["hello-debusine"],
    }
    assert binaries[3].data_json()["architecture"] == "all"

    assert upload.category == ArtifactCategory.UPLOAD
    assert sorted(upload.files) == [
        "hello-debusine-data_1.0-1_all.deb",
        "hello-debusine_1.0-1_amd64.buildinfo",
        "hello-debusine_1.0-1_amd64.changes",
        "hello-debusine_1.0-1_amd64.deb",
    ]
    assert upload.data_json()["changes_fields"]["Architecture"] == "all amd64"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sbuild") is None, reason="sbuild is not installed")
@pytest.mark.skipif(not worker_user_available(), reason="no unprivileged user to run it as")
@pytest.mark.usefixtures("buildd_tarball")
def test_real_failing_build_is_a_failure_with_a_build_log(build_context: TaskContext) -> None:
    # Without debhelper: no build dependencies to install, a quicker failure.
    task, succeeded = build(build_context, fail_build=True, debhelper=False)
    assert not succeeded
    execute = build_context.execute_directory
    log, binaries, upload = task.output_artifacts(execute, execution_success=False)
    assert binaries == [] and upload is None
    assert log is not None
    build_log = log.files["hello-debusine_1.0-1_amd64.build"]
    assert build_log_status(build_log) == "attempted"
    assert "this build fails on purpose" in build_log.read_text()
    assert not list(execute.glob("*.deb"))


def test_dynamic_data_not_computed_yet_or_missing() -> None:
    # The server builds the task without dynamic data to compute them.
    pending = Sbuild(task_data())
    assert pending.dynamic_data is None
    with pytest.raises(TaskError, match="computed no dynamic data"):
        _ = pending.computed
    # A worker given none (or incomplete ones) refuses the task: configure-failed.
    with pytest.raises(DynamicTaskDataError, match="input_source_artifact_id"):
        Sbuild(task_data(), {})
    with pytest.raises(DynamicTaskDataError, match="input_source_artifact_id"):
        Sbuild(task_data(), {"environment_id": 3})
    complete = Sbuild(task_data(), {"environment_id": 3, "input_source_artifact_id": 5})
    assert complete.computed.input_source_artifact_id == 5
