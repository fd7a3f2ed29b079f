"""
The `sbuild` task: build a source package into binary packages in an environment.

The worker runs `sbuild --chroot-mode=unshare` itself, as its unprivileged user (sbuild
refuses unshare mode as root), with the environment's tarball from the worker's cache as the
chroot: sbuild unpacks it into a throwaway user namespace for each build. The results are
uploaded as Debusine does: the build log (`debian:package-build-log`), one
`debian:binary-package` per .deb, one `debian:binary-packages` per architecture, and the
`debian:upload` (.changes, .buildinfo and the packages), related to each other and to the
input artifacts. A failed build still uploads its build log.
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from debian import deb822
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from debusine.artifacts import (
    ArtifactCategory,
    LocalArtifact,
    binary_package_from_deb,
    binary_packages_from_debs,
    package_build_log,
    upload_from_changes,
)
from debusine.tasks.base import LookupFailedError, LookupResolver
from debusine.tasks.executor_task import ExecutorTask
from debusine.tasks.models import (
    MAX_ITEMS,
    BaseDynamicTaskDataWithExecutor,
    BaseTaskDataWithExecutor,
    DatabaseId,
    ExtraRepositories,
    LookupMultiple,
    LookupSingle,
    Name,
    Names,
    ResolvedIds,
    Text,
)

#: Author of binNMU changelog entries when neither the task data nor the server names one.
DEFAULT_BINNMU_MAINTAINER = "Debusine <noreply@debusine.invalid>"

#: Categories `input.extra_binary_artifacts` may hold.
EXTRA_BINARY_CATEGORIES = (
    ArtifactCategory.BINARY_PACKAGE,
    ArtifactCategory.BINARY_PACKAGES,
    ArtifactCategory.UPLOAD,
)

#: Build profiles that also go into DEB_BUILD_OPTIONS (as Debusine does).
BUILD_OPTION_PROFILES = ("nocheck", "nodoc")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SbuildInput(_Strict):
    """What to build."""

    #: A `debian:source-package` artifact.
    source_artifact: LookupSingle
    #: `debian:binary-package(s)` or `debian:upload` artifacts whose .debs are made available
    #: to apt when installing the build dependencies.
    extra_binary_artifacts: LookupMultiple = Field(default_factory=list)


class SbuildBinNMU(_Strict):
    """A binary-only rebuild (binNMU)."""

    #: One line for the changelog entry (`--make-binNMU`).
    changelog: Text
    #: Appended to the binary packages' version, e.g. `+b1` (`--append-to-version`).
    suffix: Name
    #: Date of the changelog entry (default: now).
    timestamp: datetime | None = None
    #: Author of the changelog entry, `Name <address>` (default: the server's).
    maintainer: Text | None = None

    @field_validator("maintainer")
    @classmethod
    def _check_maintainer(cls, maintainer: str | None) -> str | None:
        if maintainer is None:
            return None
        name, address = email.utils.parseaddr(maintainer)
        if not name or "@" not in address or "<" not in maintainer:
            raise ValueError(f"maintainer {maintainer!r} is not of the form 'Name <address>'")
        return maintainer


class SbuildBuildComponent(StrEnum):
    """Parts of a build (`dpkg-buildpackage --build=`)."""

    ANY = "any"
    ALL = "all"
    SOURCE = "source"


class SbuildBuildDepResolver(StrEnum):
    """sbuild's `--build-dep-resolver` values Debusine accepts."""

    APT = "apt"
    APTITUDE = "aptitude"
    ASPCUD = "aspcud"
    XAPT = "xapt"


class SbuildData(BaseTaskDataWithExecutor):
    """Data of the `sbuild` task."""

    input: SbuildInput
    #: Architecture the binary packages are built for.
    host_architecture: Name
    #: Required here (optional in the base model).
    environment: LookupSingle
    build_components: list[SbuildBuildComponent] = Field(
        default_factory=lambda: [SbuildBuildComponent.ANY], max_length=MAX_ITEMS
    )
    binnmu: SbuildBinNMU | None = None
    build_profiles: Names | None = None
    extra_repositories: ExtraRepositories | None = None
    #: None: sbuild's default (apt).
    build_dep_resolver: SbuildBuildDepResolver | None = None
    #: Optimization criteria for the aspcud resolver.
    aspcud_criteria: Text | None = None

    @model_validator(mode="after")
    def _binnmu_is_arch_specific(self) -> SbuildData:
        if self.binnmu is not None and SbuildBuildComponent.ALL in self.build_components:
            raise ValueError("Cannot build architecture-independent packages in a binNMU")
        return self


class SbuildDynamicData(BaseDynamicTaskDataWithExecutor):
    """What the server resolved for an `sbuild` work request."""

    input_source_artifact_id: DatabaseId
    input_extra_binary_artifacts_ids: ResolvedIds = Field(default_factory=list)
    binnmu_maintainer: Text | None = None


def build_log_status(build_log: Path) -> str | None:
    """The last `Status:` sbuild wrote in its build log (`successful`, `failed`, `skipped`...)."""
    status = None
    with build_log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("Status: "):
                status = line.removeprefix("Status: ").strip()
    return status


class Sbuild(
    ExecutorTask[SbuildData, SbuildDynamicData],
    name="sbuild",
    version=1,
    tools=("sbuild",),
):
    """Build a Debian source package with sbuild."""

    #: Debug log with sbuild's command line and its console output.
    LOG_NAME = "sbuild.log"
    #: Debug log of problems with the input artifacts.
    INPUT_LOG_NAME = "fetch_input.log"

    def __init__(
        self,
        task_data: Mapping[str, Any],
        dynamic_task_data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(task_data, dynamic_task_data)
        self.dsc: Path | None = None
        self.extra_packages: list[Path] = []
        self.extra_repository_sources: list[Path] = []
        #: The environment's tarball and codename (set by `fetch_input`).
        self.chroot_tarball: Path | None = None
        self.codename: str | None = None

    # --- Server side ----------------------------------------------------------------

    def compute_dynamic_data(self, resolver: LookupResolver) -> SbuildDynamicData:
        source = resolver.lookup_single(self.data.input.source_artifact, expect_type="artifact")
        if source.artifact is None:
            raise LookupFailedError(
                f"input.source_artifact {self.data.input.source_artifact!r} is not an artifact"
            )
        extra_ids: list[int] = []
        if self.data.input.extra_binary_artifacts:
            for result in resolver.lookup_multiple(
                self.data.input.extra_binary_artifacts, expect_type="artifact"
            ):
                if result.artifact is None:
                    raise LookupFailedError(
                        "input.extra_binary_artifacts matches something that is not an artifact"
                    )
                extra_ids.append(result.artifact)
        environment_id = self.resolve_environment(resolver)
        binnmu_maintainer = None
        if self.data.binnmu is not None and self.data.binnmu.maintainer is None:
            binnmu_maintainer = DEFAULT_BINNMU_MAINTAINER
        runtime_context = None
        if not self.build_options():
            # Statistics only compare standard builds; the build architecture is the host's.
            components = "+".join(sorted(self.data.build_components))
            architecture = self.data.host_architecture
            runtime_context = f"{components}:{architecture}:{architecture}"
        return SbuildDynamicData(
            environment_id=environment_id,
            input_source_artifact_id=source.artifact,
            input_extra_binary_artifacts_ids=extra_ids,
            binnmu_maintainer=binnmu_maintainer,
            runtime_context=runtime_context,
        )

    # --- Worker side ----------------------------------------------------------------

    def build_options(self) -> list[str]:
        """The build profiles that go into DEB_BUILD_OPTIONS too."""
        return [p for p in self.data.build_profiles or [] if p in BUILD_OPTION_PROFILES]

    def input_artifact_ids(self) -> list[int]:
        """The artifacts the build used: environment, source, extra binaries."""
        ids = [self.computed.input_source_artifact_id]
        if self.computed.environment_id is not None:
            ids.insert(0, self.computed.environment_id)
        return ids + list(self.computed.input_extra_binary_artifacts_ids)

    def _input_problem(self, message: str) -> bool:
        self.open_debug_log_file(self.INPUT_LOG_NAME).write(message + "\n")
        return False

    def fetch_input(self, destination: Path) -> bool:
        """Download the source package, the extra binary packages and the environment."""
        source_id = self.computed.input_source_artifact_id
        source = self.fetch_artifact(source_id, destination / "source")
        if source.category != ArtifactCategory.SOURCE_PACKAGE:
            return self._input_problem(
                f"input.source_artifact is artifact {source_id}, a {source.category}, "
                f"not a {ArtifactCategory.SOURCE_PACKAGE}"
            )
        dscs = sorted(name for name in source.files if name.endswith(".dsc"))
        if len(dscs) != 1:
            return self._input_problem(f"source artifact {source_id} has {len(dscs)} .dsc files")
        self.dsc = destination / "source" / dscs[0]

        for artifact_id in self.computed.input_extra_binary_artifacts_ids:
            artifact = self.fetch_artifact(artifact_id, destination / f"extra-{artifact_id}")
            if artifact.category not in EXTRA_BINARY_CATEGORIES:
                return self._input_problem(
                    f"input.extra_binary_artifacts includes artifact {artifact_id}, a "
                    f"{artifact.category}, not one of "
                    + ", ".join(str(category) for category in EXTRA_BINARY_CATEGORIES)
                )
            self.extra_packages += [
                destination / f"extra-{artifact_id}" / name
                for name in sorted(artifact.files)
                if name.endswith((".deb", ".udeb"))
            ]

        environment = self.get_environment()
        self.chroot_tarball = environment.tarball
        codename = environment.data.get("codename")
        if not isinstance(codename, str) or not codename:
            return self._input_problem(
                f"environment {environment.artifact_id} has no codename in its data"
            )
        self.codename = codename
        return True

    def configure_for_execution(self, download_directory: Path) -> bool:
        """Check the input and write the extra repositories' APT sources."""
        if self.dsc is None or not self.dsc.is_file():
            return self._input_problem("the input source package has no .dsc file")
        self.extra_repository_sources = []
        for index, repository in enumerate(self.data.extra_repositories or []):
            path = download_directory / f"extra_repository_{index}.sources"
            path.write_text(repository.as_deb822(), encoding="utf-8")
            self.extra_repository_sources.append(path)
        return True

    def command_line(self) -> list[str]:
        """sbuild's command line (after `fetch_input` and `configure_for_execution`)."""
        if self.dsc is None or self.chroot_tarball is None or self.codename is None:
            raise RuntimeError("fetch_input() has not run")
        components = self.data.build_components
        command = [
            "sbuild",
            "--chroot-mode=unshare",
            f"--chroot={self.chroot_tarball}",
            f"--dist={self.codename}",
            f"--arch={self.data.host_architecture}",
            "--no-clean-source",
            # The unshare chroot is thrown away after the build anyway.
            "--purge-deps=never",
            # Other tasks (lintian, piuparts, autopkgtest) check the results.
            "--no-run-lintian",
            "--no-run-piuparts",
            "--no-run-autopkgtest",
            "--arch-any" if SbuildBuildComponent.ANY in components else "--no-arch-any",
            "--arch-all" if SbuildBuildComponent.ALL in components else "--no-arch-all",
            "--source" if SbuildBuildComponent.SOURCE in components else "--no-source",
            "--bd-uninstallable-explainer=apt",
        ]
        # sbuild cannot read deb822 sources: put each file in the chroot before apt runs.
        for path in self.extra_repository_sources:
            command.append(
                f"--pre-build-commands=cat {path} | %SBUILD_CHROOT_EXEC sh -c "
                f"'cat > /etc/apt/sources.list.d/{path.name}'"
            )
        if self.data.binnmu is not None:
            binnmu = self.data.binnmu
            command += [
                f"--make-binNMU={binnmu.changelog}",
                f"--append-to-version={binnmu.suffix}",
                "--binNMU=0",
            ]
            if binnmu.timestamp is not None:
                command.append(
                    f"--binNMU-timestamp={email.utils.format_datetime(binnmu.timestamp)}"
                )
            maintainer = binnmu.maintainer or self.computed.binnmu_maintainer
            command.append(f"--maintainer={maintainer or DEFAULT_BINNMU_MAINTAINER}")
        if self.data.build_profiles:
            command.append(f"--profiles={','.join(self.data.build_profiles)}")
        if self.data.build_dep_resolver is not None:
            command.append(f"--build-dep-resolver={self.data.build_dep_resolver.value}")
        if self.data.aspcud_criteria is not None:
            command.append(f"--aspcud-criteria={self.data.aspcud_criteria}")
        command += [f"--extra-package={package}" for package in self.extra_packages]
        command.append(str(self.dsc))
        return command

    def command_environment(self) -> dict[str, str]:
        """Variables added to the worker's environment for sbuild."""
        if not (options := self.build_options()):
            return {}
        existing = os.environ.get("DEB_BUILD_OPTIONS", "").split()
        return {"DEB_BUILD_OPTIONS": " ".join(existing + options)}

    def run(self, execute_directory: Path) -> bool:
        """Run sbuild in `execute_directory`; success: exit status 0, a .changes, `successful`."""
        returncode = self.run_logged(
            self.command_line(),
            self.LOG_NAME,
            cwd=execute_directory,
            env=self.command_environment(),
        )
        if returncode != 0 or not list(execute_directory.glob("*.changes")):
            return False
        build_log = self.find_build_log(execute_directory)
        # sbuild exits with 0 when it skips a package not meant for the architecture.
        return build_log is not None and build_log_status(build_log) == "successful"

    @staticmethod
    def find_build_log(directory: Path) -> Path | None:
        """
        sbuild's build log in `directory`: `<source>_<version>_<arch>.build`, a link to the
        timestamped file, when present, else the newest `.build` file.
        """
        logs = sorted(directory.glob("*.build"), key=lambda path: path.stat().st_mtime)
        for log in logs:
            if log.is_symlink() and log.is_file():
                return log
        return logs[-1] if logs else None

    def source_name_and_version(self) -> tuple[str, str]:
        assert self.dsc is not None
        with self.dsc.open("rb") as contents:
            fields = deb822.Dsc(contents)
        return str(fields["Source"]), str(fields["Version"])

    def output_artifacts(
        self, directory: Path, *, execution_success: bool
    ) -> tuple[LocalArtifact | None, list[LocalArtifact], LocalArtifact | None]:
        """
        What a build in `directory` produced: its build log (if any), the binary packages
        (one per .deb, then one set per architecture) and the upload; only the log after a
        failure.
        """
        source, version = self.source_name_and_version()
        log_path = self.find_build_log(directory)
        log = (
            package_build_log(
                log_path, source=source, version=version, architecture=self.data.host_architecture
            )
            if log_path is not None
            else None
        )
        if not execution_success:
            return log, [], None
        binaries: list[LocalArtifact] = []
        architectures: list[str] = []
        if SbuildBuildComponent.ANY in self.data.build_components:
            architectures.append(self.data.host_architecture)
        if SbuildBuildComponent.ALL in self.data.build_components:
            architectures.append("all")
        for architecture in architectures:
            debs = sorted(
                path
                for suffix in (".deb", ".udeb")
                for path in directory.glob(f"*_{architecture}{suffix}")
            )
            if not debs:
                continue
            packages = [binary_package_from_deb(deb) for deb in debs]
            binaries += packages
            binaries.append(
                binary_packages_from_debs(
                    debs,
                    srcpkg_name=source,
                    srcpkg_version=version,
                    version=str(packages[0].data_json()["deb_fields"]["Version"]),
                    architecture=architecture,
                )
            )
        changes = sorted(directory.glob("*.changes"))
        upload = upload_from_changes(changes[0]) if changes else None
        return log, binaries, upload

    def upload_artifacts(self, directory: Path, *, execution_success: bool) -> None:
        """
        Upload the build log (related to the inputs), and after a success the binary packages
        (built using the inputs; the log relates to them) and the upload (which extends and
        relates to them).
        """
        if self.dsc is None:
            return
        log, binaries, upload = self.output_artifacts(
            directory, execution_success=execution_success
        )
        inputs = self.input_artifact_ids()
        log_id = None
        if log is not None:
            log_id = self.upload_artifact(log, relations=[(i, "relates-to") for i in inputs])
        binary_ids = [
            self.upload_artifact(binary, relations=[(i, "built-using") for i in inputs])
            for binary in binaries
        ]
        if log_id is not None:
            for binary_id in binary_ids:
                self.relate(log_id, binary_id, "relates-to")
        if upload is not None:
            relations = [(b, kind) for b in binary_ids for kind in ("extends", "relates-to")]
            self.upload_artifact(upload, relations=relations)
