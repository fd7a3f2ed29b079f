"""
Task definitions: task data models, the task registry and TASK_VERSION. No Django here.

Importing this package registers every task, so `BaseTask.class_from_name()` and
`validate_task_data()` know them all.
"""

from debusine.tasks.autopkgtest import Autopkgtest
from debusine.tasks.base import (
    BaseTask,
    DynamicTaskDataError,
    Lookup,
    LookupFailedError,
    LookupResolver,
    LookupResult,
    TaskDataError,
    TaskError,
    UnknownTaskError,
    task_availability_metadata,
    task_version_metadata,
    validate_task_data,
)
from debusine.tasks.execution import TaskContext
from debusine.tasks.lintian import Lintian
from debusine.tasks.mmdebstrap import MmDebstrap
from debusine.tasks.models import (
    BackendType,
    BaseDynamicTaskData,
    BaseDynamicTaskDataWithExecutor,
    BaseTaskData,
    BaseTaskDataWithExecutor,
    ExtraRepository,
    NoopData,
    SleepData,
    TaskType,
)
from debusine.tasks.noop import Noop
from debusine.tasks.piuparts import Piuparts
from debusine.tasks.sbuild import Sbuild
from debusine.tasks.signing import Debsign, GenerateKey, Sign, SignRepositoryIndex
from debusine.tasks.sleep import Sleep

__all__ = [
    "Autopkgtest",
    "BackendType",
    "BaseDynamicTaskData",
    "BaseDynamicTaskDataWithExecutor",
    "BaseTask",
    "BaseTaskData",
    "BaseTaskDataWithExecutor",
    "Debsign",
    "DynamicTaskDataError",
    "ExtraRepository",
    "GenerateKey",
    "Lintian",
    "Lookup",
    "LookupFailedError",
    "LookupResolver",
    "LookupResult",
    "MmDebstrap",
    "Noop",
    "NoopData",
    "Piuparts",
    "Sbuild",
    "Sign",
    "SignRepositoryIndex",
    "Sleep",
    "SleepData",
    "TaskContext",
    "TaskDataError",
    "TaskError",
    "TaskType",
    "UnknownTaskError",
    "task_availability_metadata",
    "task_version_metadata",
    "validate_task_data",
]
