"""
Task data models: what each task accepts as `task_data`, as strict pydantic models.

Unknown keys are rejected (`extra="forbid"`), so a typo in task data is an error at creation
time rather than a silently ignored parameter. No Django here: workers import these models.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class TaskType(StrEnum):
    """Where a task runs (the values are those of the wire protocol's `task_type`)."""

    WORKER = "Worker"
    SERVER = "Server"
    INTERNAL = "Internal"
    WORKFLOW = "Workflow"
    SIGNING = "Signing"
    WAIT = "Wait"


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
