"""
Task data models: what each task accepts as `task_data`, as strict pydantic models.

Unknown keys are rejected (`extra="forbid"`), so a typo in task data is an error at creation
time rather than a silently ignored parameter. No Django here: workers import these models.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Re-exported for the tasks: the one definition is the wire protocol's.
from debusine.protocol.work_requests import TaskType as TaskType

#: Lookup of one artifact or collection in task data: an ID or a lookup string (reference §14).
LookupSingle = int | str
#: Lookup of several: a dictionary lookup or a list of lookups (their union, in order).
LookupMultiple = dict[str, Any] | list[int | str | dict[str, Any]]


class BaseTaskData(BaseModel):
    """Base of every task data model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NoopData(BaseTaskData):
    """Data of the `noop` task."""

    #: What the task returns: true counts as success, false as failure.
    result: bool = True
    #: Lookup of the task configuration collection to apply (ignored when it does not exist).
    task_configuration: int | str | None = "default@debusine:task-configuration"


class SleepData(BaseTaskData):
    """Data of the `sleep` task."""

    #: How long to sleep, in seconds.
    seconds: int = Field(ge=0)


class BaseDynamicTaskData(BaseModel):
    """
    Data the server computes for a work request when it is assigned (`dynamic_task_data`).

    Unknown keys are errors here too: a server that sends keys this worker's models lack is
    running task code of another version, and the task must not run half-configured.
    """

    model_config = ConfigDict(extra="forbid")

    #: One line describing the parameters, for listings.
    parameter_summary: str | None = None
    #: What the task works on (e.g. a source package name), for grouping results.
    subject: str | None = None
    #: Context the result depends on (e.g. a suite), for comparing results.
    runtime_context: str | None = None
    #: ID of the task configuration collection that was applied.
    task_configuration_id: int | None = None
    #: Context used to select task configuration items.
    configuration_context: str | None = None


class BackendType(StrEnum):
    """Where a task with an environment runs its commands (`backend` in task data)."""

    AUTO = "auto"
    UNSHARE = "unshare"
    INCUS_LXC = "incus-lxc"
    INCUS_VM = "incus-vm"
    QEMU = "qemu"


class BaseTaskDataWithExecutor(BaseTaskData):
    """Base of the data of tasks that run inside an environment (a system tarball)."""

    #: Lookup of the task configuration collection to apply.
    task_configuration: int | str | None = "default@debusine:task-configuration"
    #: Executor backend; `auto` lets the task choose (unshare).
    backend: BackendType = BackendType.AUTO
    #: Lookup of the environment (default category `debian:environments`), e.g.
    #: `debian/match:codename=bookworm`; the server completes it with the architecture,
    #: format and backend, and resolves it into `dynamic_task_data.environment_id`.
    environment: int | str | dict[str, Any] | None = None


class BaseDynamicTaskDataWithExecutor(BaseDynamicTaskData):
    """Dynamic data of tasks that run inside an environment."""

    #: ID of the `debian:system-tarball` artifact the environment lookup resolved to.
    environment_id: int | None = None


_SUITE_RE = re.compile(r"(\w|[./ -])+")
_COMPONENT_RE = re.compile(r"(\w|-)+")


class ExtraRepository(BaseModel):
    """An APT repository to add to the environment of a task."""

    model_config = ConfigDict(extra="forbid")

    #: Base URL of the repository.
    url: str
    #: Suite name; one ending in `/` is the path of a flat repository (no components).
    suite: str
    #: Components (required for a non-flat repository; none for a flat one).
    components: list[str] | None = None
    #: ASCII-armoured OpenPGP public key the repository is signed with (None: trusted as is).
    signing_key: str | None = None

    @property
    def is_flat(self) -> bool:
        return self.suite.endswith("/")

    @field_validator("suite")
    @classmethod
    def _check_suite(cls, suite: str) -> str:
        if not _SUITE_RE.fullmatch(suite):
            raise ValueError(
                f"invalid suite {suite!r}: only letters, digits, '_', '.', '/', ' ' and '-'"
            )
        return suite

    @field_validator("components")
    @classmethod
    def _check_components(cls, components: list[str] | None) -> list[str] | None:
        if not components:
            return None
        for component in components:
            if not _COMPONENT_RE.fullmatch(component):
                raise ValueError(
                    f"invalid component {component!r}: only letters, digits, '_' and '-'"
                )
        return components

    @model_validator(mode="after")
    def _check_flat(self) -> ExtraRepository:
        if self.is_flat and self.components is not None:
            raise ValueError("a flat repository (suite ending in '/') has no components")
        if not self.is_flat and self.components is None:
            raise ValueError("components are required unless the suite ends in '/'")
        return self

    def as_deb822(self) -> str:
        """The repository as a deb822 `sources.list.d/*.sources` stanza (ends with a newline)."""
        lines = ["Types: deb", f"URIs: {self.url}", f"Suites: {self.suite}"]
        if self.components:
            lines.append(f"Components: {' '.join(self.components)}")
        if self.signing_key is not None:
            lines.append("Signed-By:")
            for key_line in self.signing_key.strip().splitlines():
                # deb822 continuation lines start with a space; an empty line is " .".
                lines.append(f" {key_line.rstrip()}" if key_line.strip() else " .")
        return "\n".join(lines) + "\n"
