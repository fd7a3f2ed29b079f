"""
Task definitions: task data models, the task registry and TASK_VERSION. No Django here.

Each task's module is imported when the task is first asked for (`BaseTask.class_from_name()`,
`validate_task_data()`, or an attribute of this package such as `debusine.tasks.Sbuild`): see
`BUILTIN_TASKS` in `debusine.tasks.base`.
"""

from typing import TYPE_CHECKING, Any

from debusine.tasks.base import (
    BUILTIN_TASKS,
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

if TYPE_CHECKING:
    from debusine.tasks.autopkgtest import Autopkgtest
    from debusine.tasks.lintian import Lintian
    from debusine.tasks.mmdebstrap import MmDebstrap
    from debusine.tasks.noop import Noop
    from debusine.tasks.piuparts import Piuparts
    from debusine.tasks.sbuild import Sbuild
    from debusine.tasks.signing import Debsign, GenerateKey, Sign, SignRepositoryIndex
    from debusine.tasks.sleep import Sleep

#: The task classes this package exports, by attribute name: imported on first access.
_LAZY_CLASSES = {
    target.split(":")[1]: (task_type, task_name)
    for (task_type, task_name), target in BUILTIN_TASKS.items()
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_CLASSES:
        return BaseTask.class_from_name(*_LAZY_CLASSES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
