"""
Task definitions: task data models, the task registry and TASK_VERSION. No Django here.

Importing this package registers every task, so `BaseTask.class_from_name()` and
`validate_task_data()` know them all.
"""

from debusine.tasks.base import (
    BaseTask,
    TaskDataError,
    TaskError,
    UnknownTaskError,
    validate_task_data,
)
from debusine.tasks.models import BaseTaskData, NoopData, SleepData, TaskType
from debusine.tasks.noop import Noop
from debusine.tasks.sleep import Sleep

__all__ = [
    "BaseTask",
    "BaseTaskData",
    "Noop",
    "NoopData",
    "Sleep",
    "SleepData",
    "TaskDataError",
    "TaskError",
    "TaskType",
    "UnknownTaskError",
    "validate_task_data",
]
