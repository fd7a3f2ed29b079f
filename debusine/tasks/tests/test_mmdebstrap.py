"""Tests of the `mmdebstrap` task: task data, command line, and a real bootstrap."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debusine.artifacts import ArtifactCategory, DebianSystemTarball
from debusine.tasks import BaseTask, TaskContext, TaskDataError, validate_task_data
from debusine.tasks.base import LookupResult
from debusine.tasks.mmdebstrap import (
    FALLBACK_MIRROR,
    OUTPUT_FILENAME,
    MmDebstrap,
    default_mirror,
    read_os_release,
)
from debusine.tasks.tests.packages import (
    as_worker_user,
    make_worker_directory,
    worker_user_available,
)

MIRROR = "http://deb.debian.org/debian"
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def task_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "bootstrap_options": {"architecture": "amd64", "variant": "minbase"},
        "bootstrap_repositories": [
            {"mirror": MIRROR, "suite": "bookworm", "components": ["main"]}
        ],
    }
    data.update(overrides)
    return data


class NoLookups:
    """A resolver for tasks that must not look anything up."""

    def lookup_single(self, lookup: Any, **kwargs: Any) -> LookupResult:
        raise AssertionError(f"unexpected lookup {lookup!r}")

    def lookup_multiple(self, lookup: Any, **kwargs: Any) -> list[LookupResult]:
        raise AssertionError(f"unexpected lookup {lookup!r}")


@pytest.fixture
def context(tmp_path: Path) -> TaskContext:
    return TaskContext.create(1, "System", tmp_path)


def prepared(task: MmDebstrap, context: TaskContext) -> MmDebstrap:
    """Run the stages before `run` (as `execute()` would), without a server."""
    from debusine.tasks.execution import DebugLogs

    task.context = context
    task.debug_logs = DebugLogs(context.debug_log_directory)
    assert task.configure_for_execution(context.input_directory)
    task.debug_logs.close_all()
    return task


# --- Task data ----------------------------------------------------------------------------


def test_registered_as_worker_task() -> None:
    assert BaseTask.class_from_name("Worker", "mmdebstrap") is MmDebstrap
    assert MmDebstrap.TASK_VERSION == 1


def test_minimal_task_data_gets_the_reference_defaults() -> None:
    task = MmDebstrap(
        {
            "bootstrap_options": {"architecture": "arm64"},
            "bootstrap_repositories": [{"mirror": MIRROR, "suite": "trixie"}],
        }
    )
    assert task.data.bootstrap_options.variant is None
    assert task.data.bootstrap_options.extra_packages == []
    assert task.data.bootstrap_options.use_signed_by is True
    repository = task.data.bootstrap_repositories[0]
    assert repository.types == ["deb"]
    assert repository.components is None
    assert repository.check_signature_with == "system"
    assert repository.keyring_package is None and repository.keyring is None
    assert task.data.customization_script is None
    assert task.data.task_configuration == "default@debusine:task-configuration"


def test_full_task_data_is_accepted() -> None:
    data = task_data(
        bootstrap_options={
            "architecture": "amd64",
            "variant": "buildd",
            "extra_packages": ["eatmydata", "ccache"],
            "use_signed_by": False,
        },
        bootstrap_repositories=[
            {
                "mirror": MIRROR,
                "suite": "bookworm",
                "types": ["deb", "deb-src"],
                "components": ["main", "contrib"],
                "check_signature_with": "external",
                "keyring_package": "debian-archive-keyring",
                "keyring": {
                    "url": f"file://{ARCHIVE_KEYRING}",
                    "sha256sum": "00" * 32,
                    "install": True,
                },
            },
            {
                "mirror": "https://example.org/debian",
                "suite": "x",
                "check_signature_with": "no-check",
            },
        ],
        customization_script="#!/bin/sh\ntrue\n",
    )
    assert validate_task_data("Worker", "mmdebstrap", data) == data


@pytest.mark.parametrize(
    ("data", "location"),
    [
        ({"bootstrap_repositories": [{"mirror": MIRROR, "suite": "s"}]}, "bootstrap_options"),
        (task_data(bootstrap_options={"variant": "buildd"}), "bootstrap_options.architecture"),
        (task_data(bootstrap_repositories=[]), "bootstrap_repositories"),
        (task_data(bootstrap_repositories=[{"mirror": MIRROR}]), "bootstrap_repositories.0.suite"),
        (
            task_data(bootstrap_options={"architecture": "amd64", "variant": "huge"}),
            "bootstrap_options.variant",
        ),
        (
            task_data(
                bootstrap_repositories=[
                    {"mirror": MIRROR, "suite": "s", "check_signature_with": "external"}
                ]
            ),
            "bootstrap_repositories.0",
        ),
        (
            task_data(
                bootstrap_repositories=[
                    {
                        "mirror": MIRROR,
                        "suite": "s",
                        "check_signature_with": "external",
                        "keyring": {"url": "file:///etc/shadow"},
                    }
                ]
            ),
            "bootstrap_repositories.0.keyring.url",
        ),
        (
            task_data(
                bootstrap_repositories=[
                    {"mirror": MIRROR, "suite": "s", "keyring": {"url": "ftp://example.org/k"}}
                ]
            ),
            "bootstrap_repositories.0.keyring.url",
        ),
        (
            task_data(bootstrap_repositories=[{"mirror": MIRROR, "suite": "s", "types": []}]),
            "bootstrap_repositories.0.types",
        ),
        (
            task_data(
                bootstrap_repositories=[{"mirror": MIRROR, "suite": "s", "types": ["deb", "deb"]}]
            ),
            "bootstrap_repositories.0.types",
        ),
        (
            task_data(bootstrap_repositories=[{"mirror": MIRROR, "suite": "s", "types": ["rpm"]}]),
            "bootstrap_repositories.0.types.0",
        ),
        (task_data(unknown_key=1), "unknown_key"),
    ],
)
def test_invalid_task_data_is_rejected(data: dict[str, Any], location: str) -> None:
    with pytest.raises(TaskDataError) as raised:
        validate_task_data("Worker", "mmdebstrap", data)
    assert location in [loc for loc, _ in raised.value.problems]


def test_keyring_file_url_may_not_escape_the_keyring_directories() -> None:
    with pytest.raises(TaskDataError, match="must be under /usr/share/keyrings"):
        MmDebstrap(
            task_data(
                bootstrap_repositories=[
                    {
                        "mirror": MIRROR,
                        "suite": "s",
                        "check_signature_with": "external",
                        "keyring": {"url": "file:///usr/share/keyrings/../../../etc/passwd"},
                    }
                ]
            )
        )


# --- Scheduling ---------------------------------------------------------------------------


def test_analyze_worker_reports_whether_mmdebstrap_is_installed() -> None:
    assert MmDebstrap.analyze_worker() == {
        "mmdebstrap:available": shutil.which("mmdebstrap") is not None
    }


def test_can_run_on_needs_mmdebstrap_and_the_architecture() -> None:
    task = MmDebstrap(task_data(bootstrap_options={"architecture": "arm64"}))
    assert task.can_run_on({"mmdebstrap:available": True, "system:architectures": ["arm64"]})
    assert not task.can_run_on({"mmdebstrap:available": True, "system:architectures": ["amd64"]})
    assert not task.can_run_on({"mmdebstrap:available": False, "system:architectures": ["arm64"]})
    assert not task.can_run_on({"system:architectures": ["arm64"]})


def test_dynamic_data_describes_the_bootstrap() -> None:
    task = MmDebstrap(
        task_data(
            bootstrap_options={
                "architecture": "amd64",
                "variant": "buildd",
                "extra_packages": ["zsh", "ccache"],
            }
        )
    )
    dynamic = task.compute_dynamic_data(NoLookups())
    assert dynamic.subject == "bookworm"
    assert dynamic.runtime_context == "amd64:buildd:ccache,zsh"
    assert dynamic.configuration_context == "amd64"
    # The server stores it; it must validate as this task's dynamic data.
    MmDebstrap(task_data(), dynamic.model_dump(mode="json"))
    # No variant: an empty field, not "None".
    no_variant = task_data(bootstrap_options={"architecture": "amd64"})
    assert MmDebstrap(no_variant).compute_dynamic_data(NoLookups()).runtime_context == "amd64::"


# --- Configuration and command line -------------------------------------------------------


def test_sources_and_command_line(context: TaskContext) -> None:
    task = prepared(
        MmDebstrap(
            task_data(
                bootstrap_options={
                    "architecture": "amd64",
                    "variant": "buildd",
                    "extra_packages": ["eatmydata"],
                },
                bootstrap_repositories=[
                    {"mirror": MIRROR, "suite": "bookworm", "components": ["main", "contrib"]},
                    {
                        "mirror": "http://example.org/extra",
                        "suite": "stable",
                        "types": ["deb", "deb-src"],
                        "components": ["main"],
                        "check_signature_with": "no-check",
                        "keyring_package": "extra-keyring",
                    },
                ],
                customization_script="#!/bin/sh\necho customized\n",
            )
        ),
        context,
    )
    host_sources = context.input_directory / "host.sources"
    assert host_sources.read_text() == (
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main contrib\n"
        "\n"
        "Types: deb deb-src\nURIs: http://example.org/extra\nSuites: stable\n"
        "Components: main\nTrusted: yes\n"
    )
    # Without external keyrings, the system keeps the same sources.
    assert (context.input_directory / "chroot.sources").read_text() == host_sources.read_text()
    assert (context.input_directory / "customization_script").read_text().startswith("#!/bin/sh")
    # The sources are in the task's debug log.
    assert "Trusted: yes" in (context.debug_log_directory / "mmdebstrap.log").read_text()

    execute = context.execute_directory
    command = task.command_line(execute)
    assert command[:4] == ["mmdebstrap", "--mode=unshare", "--format=tar", "--architectures=amd64"]
    assert "--variant=buildd" in command
    assert "--include=extra-keyring,eatmydata" in command
    assert not any(argument.startswith("--keyring=") for argument in command)
    hooks = [
        a.removeprefix("--customize-hook=") for a in command if a.startswith("--customize-hook=")
    ]
    assert (
        f"upload {context.input_directory}/chroot.sources /etc/apt/sources.list.d/debian.sources"
        in hooks
    )
    assert f"upload {context.input_directory}/customization_script /debusine-customize" in hooks
    assert 'chroot "$1" /debusine-customize' in hooks
    assert f"download /etc/os-release {execute}/os-release" in hooks
    assert f"download /var/lib/dpkg/status {execute}/dpkg-status" in hooks
    # Suite and mirror come from the sources file; the output is an xz tarball.
    assert command[-4:] == ["", f"{execute}/{OUTPUT_FILENAME}", "", str(host_sources)]


def test_external_keyring_is_checked_passed_and_installed(context: TaskContext) -> None:
    digest = hashlib.sha256(ARCHIVE_KEYRING.read_bytes()).hexdigest()
    task = prepared(
        MmDebstrap(
            task_data(
                bootstrap_repositories=[
                    {
                        "mirror": MIRROR,
                        "suite": "bookworm",
                        "components": ["main"],
                        "check_signature_with": "external",
                        "keyring": {
                            "url": f"file://{ARCHIVE_KEYRING}",
                            "sha256sum": digest,
                            "install": True,
                        },
                    }
                ]
            )
        ),
        context,
    )
    keyring = context.input_directory / "keyrings" / "keyring-repository-0.gpg"
    assert keyring.read_bytes() == ARCHIVE_KEYRING.read_bytes()
    assert f"Signed-By: {keyring}\n" in (context.input_directory / "host.sources").read_text()
    assert (
        "Signed-By: /etc/apt/keyrings-debusine/keyring-repository-0.gpg\n"
        in (context.input_directory / "chroot.sources").read_text()
    )
    command = task.command_line(context.execute_directory)
    assert f"--keyring={keyring}" in command
    assert (
        f"--customize-hook=upload {keyring} /etc/apt/keyrings-debusine/keyring-repository-0.gpg"
        in command
    )


def test_keyring_with_the_wrong_checksum_is_refused(context: TaskContext) -> None:
    task = MmDebstrap(
        task_data(
            bootstrap_repositories=[
                {
                    "mirror": MIRROR,
                    "suite": "bookworm",
                    "components": ["main"],
                    "check_signature_with": "external",
                    "keyring": {"url": f"file://{ARCHIVE_KEYRING}", "sha256sum": "ab" * 32},
                }
            ]
        )
    )
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        prepared(task, context)


def test_components_default_to_those_of_the_release_file(context: TaskContext) -> None:
    """Reads the real Release file of the Debian mirror."""
    prepared(
        MmDebstrap(task_data(bootstrap_repositories=[{"mirror": MIRROR, "suite": "bookworm"}])),
        context,
    )
    sources = (context.input_directory / "host.sources").read_text()
    assert "Components: main contrib non-free-firmware non-free\n" in sources


def test_read_os_release_unquotes_values(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n# x\nVERSION_CODENAME=bookworm\n'
    )
    assert read_os_release(path) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "ID": "debian",
        "VERSION_CODENAME": "bookworm",
    }


# --- A real bootstrap ---------------------------------------------------------------------


class MmDebstrapAsWorkerUser(MmDebstrap, abstract=True):
    """The task, running mmdebstrap as the unprivileged test user (the tests run as root)."""

    def command_line(self, execute_directory: Path) -> list[str]:
        return as_worker_user(super().command_line(execute_directory))


@pytest.fixture
def worker_context() -> Iterator[TaskContext]:
    """A task context the unprivileged test user can write to."""
    parent = make_worker_directory()
    try:
        context = TaskContext.create(2, "System", parent)
        subprocess.run(["chown", "-R", "debusine-worker:", str(parent)], check=True)
        yield context
    finally:
        shutil.rmtree(parent)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed")
@pytest.mark.skipif(not worker_user_available(), reason="no unprivileged user to run it as")
def test_real_bootstrap_makes_a_system_tarball(worker_context: TaskContext) -> None:
    """mmdebstrap --variant=essential of bookworm from deb.debian.org (about 25 s)."""
    task = MmDebstrapAsWorkerUser(
        task_data(
            bootstrap_options={"architecture": "amd64", "variant": "essential"},
            customization_script="#!/bin/sh\nset -e\necho customized > /etc/debusine-test\n",
        )
    )
    prepared(task, worker_context)
    from debusine.tasks.execution import DebugLogs

    task.debug_logs = DebugLogs(worker_context.debug_log_directory)
    try:
        succeeded = task.run(worker_context.execute_directory)
    finally:
        task.debug_logs.close_all()
    log = (worker_context.debug_log_directory / "mmdebstrap.log").read_text()
    assert succeeded, log[-3000:]
    assert "$ runuser -u debusine-worker -- mmdebstrap --mode=unshare" in log

    artifact = task.system_tarball_artifact(worker_context.execute_directory)
    tarball = worker_context.execute_directory / OUTPUT_FILENAME
    assert artifact.category == ArtifactCategory.SYSTEM_TARBALL
    assert artifact.files == {OUTPUT_FILENAME: tarball}
    data = artifact.data
    assert isinstance(data, DebianSystemTarball)
    assert (data.filename, data.vendor, data.codename, data.mirror) == (
        OUTPUT_FILENAME,
        "debian",
        "bookworm",
        MIRROR,
    )
    assert (data.variant, data.architecture, data.with_dev, data.with_init) == (
        "essential",
        "amd64",
        True,
        False,
    )
    assert data.pkglist["dpkg"].startswith("1.21.")
    assert "base-files" in data.pkglist
    assert "apt" not in data.pkglist  # not in the essential set
    assert artifact.data_json()["pkglist"] == data.pkglist

    members = subprocess.run(
        ["tar", "--xz", "-tf", str(tarball)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert "./usr/bin/dpkg" in members
    assert "./etc/debusine-test" in members  # the customization script ran
    assert "./etc/apt/sources.list.d/debian.sources" in members
    assert "./debusine-customize" not in members
    assert "./debusine-with-init" not in members
    assert "./etc/hostname" not in members
    sources = subprocess.run(
        ["tar", "--xz", "-xOf", str(tarball), "./etc/apt/sources.list.d/debian.sources"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert sources == f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed")
@pytest.mark.skipif(not worker_user_available(), reason="no unprivileged user to run it as")
def test_bootstrap_of_a_missing_suite_fails(worker_context: TaskContext) -> None:
    task = MmDebstrapAsWorkerUser(
        task_data(
            bootstrap_repositories=[
                {"mirror": MIRROR, "suite": "no-such-suite", "components": ["main"]}
            ]
        )
    )
    prepared(task, worker_context)
    from debusine.tasks.execution import DebugLogs

    task.debug_logs = DebugLogs(worker_context.debug_log_directory)
    try:
        assert not task.run(worker_context.execute_directory)
    finally:
        task.debug_logs.close_all()
    log = (worker_context.debug_log_directory / "mmdebstrap.log").read_text()
    assert "no-such-suite" in log
    assert "# exit status 25" in log


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {
                "sources.list.d/debian.sources": "Types: deb\nURIs: http://one.example/debian\n"
                "Suites: bookworm\n",
                "sources.list": "deb http://two.example/debian bookworm main\n",
            },
            "http://one.example/debian",
        ),
        (
            {
                "sources.list": "# deb http://x\n"
                "deb [arch=amd64] http://two.example/debian sid main\n"
            },
            "http://two.example/debian",
        ),
        ({}, FALLBACK_MIRROR),
    ],
)
def test_default_mirror(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert default_mirror(tmp_path) == expected
