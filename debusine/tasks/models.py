"""
Task data models: what each task accepts as `task_data`, as strict pydantic models.

Unknown keys are rejected (`extra="forbid"`), so a typo in task data is an error at creation
time rather than a silently ignored parameter. No Django here: workers import these models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from annotated_types import Ge, Le, MaxLen
from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

# Re-exported for the tasks: the one definition is the wire protocol's.
from debusine.protocol.work_requests import TaskType as TaskType

# --- Bounds ----------------------------------------------------------------------------------
# Every number, string, list and free-form value of task data has a bound, checked when the work
# request is created (the reason goes back in the 400) and again by the worker, with the same
# models: a value the worker could not use (a sleep of 10**30 seconds overflows its clock) never
# reaches it. The bounds are generous for real use; a test walks every registered task's models
# and fails on a field without one.

#: Architectures, suites, components, package, tag and test names, variable names.
MAX_NAME_LENGTH = 255
#: URLs, lookup strings, one-line texts (a changelog line, resolver criteria).
MAX_TEXT_LENGTH = 4096
#: Whole documents: a customization script, an armoured OpenPGP key.
MAX_DOCUMENT_LENGTH = 256 * 1024
#: Items of a list or a mapping given in task data.
MAX_ITEMS = 1000
#: Artifact IDs the server resolves a lookup to (a collection may hold many).
MAX_RESOLVED_ITEMS = 100_000
#: Free-form JSON (a dictionary lookup), once serialised.
MAX_JSON_BYTES = 64 * 1024
#: Database IDs (PostgreSQL bigint).
MAX_ID = 2**63 - 1
#: Durations in seconds: a week.
MAX_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class MaxJsonSize:
    """Bound of a free-form value (`Any`): its size once serialised as JSON."""

    max_bytes: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
        if size > self.max_bytes:
            raise ValueError(f"is {size} bytes as JSON; at most {self.max_bytes} are allowed")
        return value


#: A name: architecture, suite, component, package, tag, test or variable name.
Name = Annotated[str, MaxLen(MAX_NAME_LENGTH)]
#: A URL, a lookup string or a line of text.
Text = Annotated[str, MaxLen(MAX_TEXT_LENGTH)]
#: A whole document (script, key).
Document = Annotated[str, MaxLen(MAX_DOCUMENT_LENGTH)]
#: The ID of a database row (artifact, collection...).
DatabaseId = Annotated[int, Ge(1), Le(MAX_ID)]
#: A duration in seconds.
Seconds = Annotated[int, Ge(0), Le(MAX_SECONDS)]
#: A list of names.
Names = Annotated[list[Name], MaxLen(MAX_ITEMS)]
#: IDs the server resolved a multiple lookup to.
ResolvedIds = Annotated[list[DatabaseId], MaxLen(MAX_RESOLVED_ITEMS)]
#: A dictionary lookup (reference §14): free-form, bounded by size.
LookupDict = Annotated[dict[Name, Any], MaxLen(MAX_ITEMS), MaxJsonSize(MAX_JSON_BYTES)]

#: Lookup of one artifact or collection in task data: an ID or a lookup string (reference §14).
LookupSingle = DatabaseId | Text
#: A lookup in any of its forms: an ID, a lookup string or a dictionary lookup.
LookupAny = DatabaseId | Text | LookupDict
#: Lookup of several: a dictionary lookup or a list of lookups (their union, in order).
LookupMultiple = LookupDict | Annotated[list[LookupAny], MaxLen(MAX_ITEMS)]
#: A multiplier of timeouts.
MAX_TIMEOUT_FACTOR = 100


class BaseTaskData(BaseModel):
    """Base of every task data model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NoopData(BaseTaskData):
    """Data of the `noop` task."""

    #: What the task returns: true counts as success, false as failure.
    result: bool = True
    #: Lookup of the task configuration collection to apply (ignored when it does not exist).
    task_configuration: LookupSingle | None = "default@debusine:task-configuration"


class SleepData(BaseTaskData):
    """Data of the `sleep` task."""

    #: How long to sleep, in seconds.
    seconds: Seconds


class BaseDynamicTaskData(BaseModel):
    """
    Data the server computes for a work request when it is assigned (`dynamic_task_data`).

    Unknown keys are errors here too: a server that sends keys this worker's models lack is
    running task code of another version, and the task must not run half-configured.
    """

    model_config = ConfigDict(extra="forbid")

    #: One line describing the parameters, for listings.
    parameter_summary: Text | None = None
    #: What the task works on (e.g. a source package name), for grouping results.
    subject: Text | None = None
    #: Context the result depends on (e.g. a suite), for comparing results.
    runtime_context: Text | None = None
    #: ID of the task configuration collection that was applied.
    task_configuration_id: DatabaseId | None = None
    #: Context used to select task configuration items.
    configuration_context: Text | None = None


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
    task_configuration: LookupSingle | None = "default@debusine:task-configuration"
    #: Executor backend; `auto` lets the task choose (unshare).
    backend: BackendType = BackendType.AUTO
    #: Lookup of the environment (default category `debian:environments`), e.g.
    #: `debian/match:codename=bookworm`; the server completes it with the architecture,
    #: format and backend, and resolves it into `dynamic_task_data.environment_id`.
    environment: LookupAny | None = None


class BaseDynamicTaskDataWithExecutor(BaseDynamicTaskData):
    """Dynamic data of tasks that run inside an environment."""

    #: ID of the `debian:system-tarball` artifact the environment lookup resolved to.
    environment_id: DatabaseId | None = None


_SUITE_RE = re.compile(r"(\w|[./ -])+")
_COMPONENT_RE = re.compile(r"(\w|-)+")


class ExtraRepository(BaseModel):
    """An APT repository to add to the environment of a task."""

    model_config = ConfigDict(extra="forbid")

    #: Base URL of the repository.
    url: Text
    #: Suite name; one ending in `/` is the path of a flat repository (no components).
    suite: Name
    #: Components (required for a non-flat repository; none for a flat one).
    components: Names | None = None
    #: ASCII-armoured OpenPGP public key the repository is signed with (None: trusted as is).
    signing_key: Document | None = None

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


#: Extra APT repositories of a task.
ExtraRepositories = Annotated[list[ExtraRepository], MaxLen(MAX_ITEMS)]
