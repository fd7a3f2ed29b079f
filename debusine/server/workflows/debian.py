"""
Workflows that build and check Debian packages (reference §3.5): `sbuild`, `lintian`,
`autopkgtest`, `piuparts`, `qa` and `debian_pipeline`.

- `sbuild` builds a source package once per architecture: the requested architectures that the
  source's `Architecture` field allows, that `architectures_allowlist` names (when set) and
  `architectures_denylist` does not. Architecture-independent packages (`all`) are built on
  `arch_all_host_architecture` (together with its own packages when it is built too). Each
  build promises its `debian:upload` in the internal collection as `{prefix}build-{arch}`.
- `lintian`, `autopkgtest` and `piuparts` run their task per built architecture on the
  binaries `{prefix}build-{arch}` names (and `build-all`, when it was built apart), waiting for
  the builds that promised them.
- `qa` starts the sub-workflows its `enable_*` flags select; `debian_pipeline` starts `sbuild`
  and then `qa` (which waits for every build).

Environments are looked up as `{vendor}/match:codename={codename}` from `target_distribution`
(`vendor:codename`, e.g. `debian:bookworm`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from debusine.protocol.work_requests import WorkRequestStatus
from debusine.server.db.models import Artifact, WorkRequest
from debusine.server.lookups import ServerLookupResolver
from debusine.server.workflows.base import BaseWorkflowData, Workflow, WorkflowInputError
from debusine.tasks import LookupFailedError

SOURCE_PACKAGE = "debian:source-package"
UPLOAD = "debian:upload"
ARCH_ALL = "all"


class DebianWorkflowData(BaseWorkflowData):
    """What every Debian workflow shares."""

    #: Namespace of its names in the internal collection.
    prefix: str = ""
    #: `vendor:codename` of the environments tasks run in.
    target_distribution: str = "debian:bookworm"
    #: Executor backend of the tasks (`auto`, `unshare`...).
    backend: str = "auto"

    @field_validator("target_distribution")
    @classmethod
    def _vendor_and_codename(cls, value: str) -> str:
        vendor, colon, codename = value.partition(":")
        if not colon or not vendor or not codename:
            raise ValueError(f"{value!r} is not VENDOR:CODENAME (e.g. debian:bookworm)")
        return value

    def environment(self, architecture: str | None = None) -> str:
        vendor, _, codename = self.target_distribution.partition(":")
        lookup = f"{vendor}/match:codename={codename}"
        return lookup if architecture is None else f"{lookup}:architecture={architecture}"


class ArchitecturesData(DebianWorkflowData):
    """Data of workflows that work per architecture."""

    #: Architectures asked for (`all` for architecture-independent packages).
    architectures: list[str] = Field(min_length=1)
    #: When set, only these architectures.
    architectures_allowlist: list[str] | None = None
    #: Never these architectures.
    architectures_denylist: list[str] = []
    #: Where `all` packages are built (and checked).
    arch_all_host_architecture: str = "amd64"


def source_allows(source_architectures: list[str], architecture: str) -> bool:
    """Whether a source's `Architecture` field lets `architecture` be built."""
    for allowed in source_architectures:
        if allowed == architecture:
            return True
        if architecture != ARCH_ALL and (
            allowed in ("any", "linux-any") or allowed == f"any-{architecture}"
        ):
            return True
    return False


def effective_architectures(data: ArchitecturesData, source_architectures: list[str]) -> list[str]:
    """Requested ∩ the source's ∩ the allowlist minus the denylist, in the requested order."""
    chosen = []
    for architecture in data.architectures:
        if architecture in chosen or not source_allows(source_architectures, architecture):
            continue
        if (
            data.architectures_allowlist is not None
            and architecture not in data.architectures_allowlist
        ):
            continue
        if architecture in data.architectures_denylist:
            continue
        chosen.append(architecture)
    return chosen


def build_plan(data: ArchitecturesData, architectures: list[str]) -> dict[str, list[str]]:
    """Build name (an architecture, or `all` alone) -> its sbuild `build_components`."""
    binary = [arch for arch in architectures if arch != ARCH_ALL]
    plan = {arch: ["any"] for arch in binary}
    if ARCH_ALL in architectures:
        host = data.arch_all_host_architecture
        if host in plan:
            plan[host] = ["any", "all"]
        else:
            plan[ARCH_ALL] = ["all"]
    return plan


class DebianWorkflow(Workflow[Any]):
    """Helpers of the Debian workflows."""

    def resolve_artifact(self, lookup: Any, what: str) -> Artifact:
        try:
            found = ServerLookupResolver(self.work_request).lookup_single(
                lookup, expect_type="artifact"
            )
        except LookupFailedError as error:
            raise WorkflowInputError(f"{what}: {error}") from None
        assert found.artifact is not None
        return Artifact.objects.get(pk=found.artifact)

    def source_architectures(self, source_lookup: Any) -> list[str]:
        source = self.resolve_artifact(source_lookup, "source_artifact")
        if source.category != SOURCE_PACKAGE:
            raise WorkflowInputError(
                f"source_artifact: artifact {source.pk} is a {source.category} artifact, not "
                f"a {SOURCE_PACKAGE}"
            )
        field = str((source.data.get("dsc_fields") or {}).get("Architecture", ""))
        return field.split()

    def build_name(self, architecture: str) -> str:
        return f"build-{architecture}"

    def build_lookup(self, architecture: str, prefix: str | None = None) -> str:
        chosen = self.prefix if prefix is None else prefix
        return f"internal@collections/name:{chosen}{self.build_name(architecture)}"


class SbuildInputData(BaseWorkflowData):
    #: The `debian:source-package` to build.
    source_artifact: int | str


class SbuildWorkflowData(ArchitecturesData):
    """Task data of the `sbuild` workflow."""

    input: SbuildInputData
    #: Retry a build that failed after these delays (`30m`, `1h`, `2d`, `1w`), e.g. when it
    #: waits for build dependencies to reach the archive.
    retry_delays: list[str] = []
    build_profiles: list[str] | None = None


class SbuildWorkflow(DebianWorkflow, Workflow[SbuildWorkflowData], name="sbuild"):
    """One `sbuild` work request per architecture to build."""

    data: SbuildWorkflowData

    def architectures(self) -> list[str]:
        chosen = effective_architectures(
            self.data, self.source_architectures(self.data.input.source_artifact)
        )
        if not chosen:
            raise WorkflowInputError(
                f"no architecture to build: {self.data.architectures} requested, the source "
                f"allows {self.source_architectures(self.data.input.source_artifact)}"
            )
        return chosen

    def validate_input(self) -> None:
        self.architectures()

    def populate(self) -> None:
        plan = build_plan(self.data, self.architectures())
        for name, components in plan.items():
            host = self.data.arch_all_host_architecture if name == ARCH_ALL else name
            task_data: dict[str, Any] = {
                "input": {"source_artifact": self.data.input.source_artifact},
                "host_architecture": host,
                "environment": self.data.environment(),
                "backend": self.data.backend,
                "build_components": components,
            }
            if self.data.build_profiles:
                task_data["build_profiles"] = self.data.build_profiles
            reactions = (
                {"on_failure": [{"action": "retry-with-delays", "delays": self.data.retry_delays}]}
                if self.data.retry_delays
                else None
            )
            build = self.ensure_child(
                "sbuild",
                task_data,
                step=f"{self.prefix}build-{name}",
                display_name=f"build {name}",
                group="build",
                event_reactions=reactions,
            )
            self.provides_artifact(build, UPLOAD, self.build_name(name), {"architecture": name})


class QaTaskData(ArchitecturesData):
    """Task data of the `lintian`, `autopkgtest` and `piuparts` workflows."""

    #: The source package the binaries were built from.
    source_artifact: int | str
    #: Prefix of the builds' names in the internal collection (the `sbuild` workflow's).
    build_prefix: str = ""


class QaTaskWorkflow(DebianWorkflow):
    """One task per built architecture, on the binaries the builds promised."""

    data: QaTaskData

    def plan(self) -> dict[str, list[str]]:
        return build_plan(
            self.data,
            effective_architectures(
                self.data, self.source_architectures(self.data.source_artifact)
            ),
        )

    def validate_input(self) -> None:
        self.plan()

    def binaries(self, plan: dict[str, list[str]], architecture: str) -> list[str]:
        """Lookups of what `architecture`'s task checks: its build, and `all` built apart."""
        builds = [architecture] if architecture in plan else []
        if ARCH_ALL in plan and architecture != ARCH_ALL:
            builds.append(ARCH_ALL)
        return [self.build_lookup(build, self.data.build_prefix) for build in builds]

    def ensure_task(
        self, task_name: str, architecture: str, task_data: dict[str, Any], binaries: list[str]
    ) -> WorkRequest:
        child = self.ensure_child(
            task_name,
            task_data,
            step=f"{self.prefix}{task_name}-{architecture}",
            display_name=f"{task_name} {architecture}",
            group=task_name,
        )
        if child.status in (WorkRequestStatus.PENDING, WorkRequestStatus.BLOCKED):
            self.requires_artifact(child, binaries)
        return child


class LintianWorkflow(QaTaskWorkflow, Workflow[QaTaskData], name="lintian"):
    """Lintian on the source (once) and on each build's binaries."""

    def populate(self) -> None:
        plan = self.plan()
        for index, name in enumerate(plan):
            binaries = self.binaries(plan, name)
            host = self.data.arch_all_host_architecture if name == ARCH_ALL else name
            task_input: dict[str, Any] = {"binary_artifacts": binaries}
            if index == 0:
                task_input["source_artifact"] = self.data.source_artifact
            self.ensure_task(
                "lintian",
                name,
                {
                    "input": task_input,
                    "host_architecture": host,
                    "environment": self.data.environment(),
                    "backend": self.data.backend,
                    "target_distribution": self.data.target_distribution,
                },
                binaries,
            )


class AutopkgtestWorkflow(QaTaskWorkflow, Workflow[QaTaskData], name="autopkgtest"):
    """Autopkgtest on each architecture-dependent build (with the `all` packages)."""

    def populate(self) -> None:
        plan = self.plan()
        for name in plan:
            if name == ARCH_ALL:
                continue
            binaries = self.binaries(plan, name)
            self.ensure_task(
                "autopkgtest",
                name,
                {
                    "input": {
                        "source_artifact": self.data.source_artifact,
                        "binary_artifacts": binaries,
                    },
                    "host_architecture": name,
                    "environment": self.data.environment(),
                    "backend": self.data.backend,
                },
                binaries,
            )


class PiupartsWorkflow(QaTaskWorkflow, Workflow[QaTaskData], name="piuparts"):
    """Piuparts on each architecture-dependent build (with the `all` packages)."""

    def populate(self) -> None:
        plan = self.plan()
        for name in plan:
            if name == ARCH_ALL:
                continue
            binaries = self.binaries(plan, name)
            self.ensure_task(
                "piuparts",
                name,
                {
                    "input": {"binary_artifacts": binaries},
                    "host_architecture": name,
                    "environment": self.data.environment(),
                    "base_tgz": self.data.environment(name),
                    "backend": self.data.backend,
                },
                binaries,
            )


class QaWorkflowData(QaTaskData):
    """Task data of the `qa` workflow."""

    enable_lintian: bool = True
    enable_autopkgtest: bool = True
    enable_piuparts: bool = True


QA_WORKFLOWS = ("lintian", "autopkgtest", "piuparts")


def qa_task_data(data: QaTaskData, prefix: str) -> dict[str, Any]:
    """The data of a QA sub-workflow, from any data that has what it needs."""
    return {
        "prefix": prefix,
        "target_distribution": data.target_distribution,
        "backend": data.backend,
        "architectures": data.architectures,
        "architectures_allowlist": data.architectures_allowlist,
        "architectures_denylist": data.architectures_denylist,
        "arch_all_host_architecture": data.arch_all_host_architecture,
        "source_artifact": data.source_artifact,
        "build_prefix": data.build_prefix,
    }


class QaWorkflow(DebianWorkflow, Workflow[QaWorkflowData], name="qa"):
    """The QA sub-workflows its `enable_*` flags select."""

    data: QaWorkflowData

    def populate(self) -> None:
        for name in QA_WORKFLOWS:
            if getattr(self.data, f"enable_{name}"):
                self.ensure_sub_workflow(
                    name,
                    qa_task_data(self.data, f"{self.prefix}{name}|"),
                    step=f"{self.prefix}{name}",
                    group="qa",
                )


class DebianPipelineData(ArchitecturesData):
    """Task data of the `debian_pipeline` workflow."""

    input: SbuildInputData
    retry_delays: list[str] = []
    enable_lintian: bool = True
    enable_autopkgtest: bool = True
    enable_piuparts: bool = True
    #: Documented by Debusine but not implemented there either: refused when true.
    enable_check_installability: bool = False
    enable_confirmation: bool = False

    @field_validator("enable_check_installability", "enable_confirmation")
    @classmethod
    def _not_implemented(cls, value: bool) -> bool:
        if value:
            raise ValueError("not implemented (Debusine documents it but does not do it)")
        return value


class DebianPipelineWorkflow(DebianWorkflow, Workflow[DebianPipelineData], name="debian_pipeline"):
    """`sbuild`, then `qa` once every build has finished."""

    data: DebianPipelineData

    def validate_input(self) -> None:
        chosen = effective_architectures(
            self.data, self.source_architectures(self.data.input.source_artifact)
        )
        if not chosen:
            raise WorkflowInputError(f"no architecture to build among {self.data.architectures}")

    def populate(self) -> None:
        common = {
            "target_distribution": self.data.target_distribution,
            "backend": self.data.backend,
            "architectures": self.data.architectures,
            "architectures_allowlist": self.data.architectures_allowlist,
            "architectures_denylist": self.data.architectures_denylist,
            "arch_all_host_architecture": self.data.arch_all_host_architecture,
        }
        build_prefix = f"{self.prefix}sbuild|"
        sbuild = self.ensure_sub_workflow(
            "sbuild",
            {
                **common,
                "prefix": build_prefix,
                "input": {"source_artifact": self.data.input.source_artifact},
                "retry_delays": self.data.retry_delays,
            },
            step=f"{self.prefix}sbuild",
            group="build",
        )
        if not (
            self.data.enable_lintian or self.data.enable_autopkgtest or self.data.enable_piuparts
        ):
            return
        self.ensure_sub_workflow(
            "qa",
            {
                **common,
                "prefix": f"{self.prefix}qa|",
                "source_artifact": self.data.input.source_artifact,
                "build_prefix": build_prefix,
                "enable_lintian": self.data.enable_lintian,
                "enable_autopkgtest": self.data.enable_autopkgtest,
                "enable_piuparts": self.data.enable_piuparts,
            },
            step=f"{self.prefix}qa",
            group="qa",
            dependencies=[sbuild],
        )
