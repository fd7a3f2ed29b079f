"""
The task framework's core: the `BaseTask` class, its registry, and task data validation.

Every concrete task subclasses `BaseTask[SomeData]` and sets `TASK_TYPE`, `TASK_VERSION` and
`TASK_DATA_MODEL`; defining the class registers it under (task type, task name). The server
validates task data with `validate_task_data()` before it stores a work request; the worker
builds the same class to run it (execution stages are added to `BaseTask` later).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast

import pydantic

from debusine.tasks.models import BaseTaskData, TaskType

TaskData = TypeVar("TaskData", bound=BaseTaskData)


class TaskError(Exception):
    """Base of the errors raised by the task framework."""


class UnknownTaskError(TaskError, LookupError):
    """No task of that type is registered under that name."""

    def __init__(self, task_type: str, task_name: str) -> None:
        self.task_type = task_type
        self.task_name = task_name
        known = ", ".join(BaseTask.task_names(task_type)) or "none"
        super().__init__(
            f"task name is not registered: {task_type} task {task_name!r} "
            f"(registered {task_type} tasks: {known})"
        )


class TaskDataError(TaskError, ValueError):
    """Task data does not match the task's data model; `problems` says why, one per line."""

    def __init__(self, task_type: str, task_name: str, problems: list[tuple[str, str]]) -> None:
        self.task_type = task_type
        self.task_name = task_name
        #: (location, message) pairs; the location is a dotted path inside task_data, or "".
        self.problems = problems
        listed = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems)
        super().__init__(f"invalid task data for {task_type} task {task_name!r}: {listed}")

    @property
    def validation_errors(self) -> dict[str, list[str]]:
        """The problems grouped by location (`"task_data"` for the data as a whole)."""
        grouped: dict[str, list[str]] = {}
        for loc, msg in self.problems:
            key = f"task_data.{loc}" if loc else "task_data"
            grouped.setdefault(key, []).append(msg)
        return grouped


def _problems_of(error: pydantic.ValidationError) -> list[tuple[str, str]]:
    return [
        (".".join(str(part) for part in detail["loc"]), detail["msg"]) for detail in error.errors()
    ]


def _dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class BaseTask(Generic[TaskData]):
    """
    A kind of work a work request can ask for.

    Subclasses set the class attributes below; abstract intermediate classes pass
    `abstract=True` in their class statement and are not registered.
    """

    #: Where the task runs.
    TASK_TYPE: ClassVar[TaskType]
    #: Name used in work requests; defaults to the lowercased class name.
    TASK_NAME: ClassVar[str]
    #: Version of the task's code: the scheduler only hands a task to a worker reporting the
    #: same `<task>:version` in its metadata.
    TASK_VERSION: ClassVar[int]
    #: Model that `task_data` must match.
    TASK_DATA_MODEL: ClassVar[type[BaseTaskData]]

    #: task type -> task name -> class.
    _registry: ClassVar[dict[TaskType, dict[str, type[BaseTask[Any]]]]] = {}

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        for attribute in ("TASK_TYPE", "TASK_VERSION", "TASK_DATA_MODEL"):
            if not hasattr(cls, attribute):
                raise TypeError(f"{cls.__qualname__} must define {attribute}")
        if "TASK_NAME" not in cls.__dict__:
            cls.TASK_NAME = cls.__name__.lower()
        by_name = BaseTask._registry.setdefault(TaskType(cls.TASK_TYPE), {})
        existing = by_name.get(cls.TASK_NAME)
        if existing is not None and _dotted_name(existing) != _dotted_name(cls):
            raise TypeError(
                f"{cls.TASK_TYPE} task {cls.TASK_NAME!r} is already defined by "
                f"{_dotted_name(existing)}"
            )
        by_name[cls.TASK_NAME] = cls

    def __init__(self, task_data: Mapping[str, Any]) -> None:
        """Build the task for `task_data`; raise TaskDataError if it does not validate."""
        self.data = cast(TaskData, self.parse_task_data(task_data))

    # --- Registry ------------------------------------------------------------------------

    @staticmethod
    def class_from_name(task_type: str, task_name: str) -> type[BaseTask[Any]]:
        """Return the class registered as (task_type, task_name); raise UnknownTaskError."""
        try:
            return BaseTask._registry[TaskType(task_type)][task_name]
        except (KeyError, ValueError):
            raise UnknownTaskError(task_type, task_name) from None

    @staticmethod
    def is_registered(task_type: str, task_name: str) -> bool:
        try:
            BaseTask.class_from_name(task_type, task_name)
        except UnknownTaskError:
            return False
        return True

    @staticmethod
    def task_names(task_type: str) -> list[str]:
        """The sorted names of the registered tasks of `task_type` (empty if it is unknown)."""
        try:
            return sorted(BaseTask._registry.get(TaskType(task_type), {}))
        except ValueError:
            return []

    # --- Task data -----------------------------------------------------------------------

    @classmethod
    def parse_task_data(cls, task_data: Any) -> BaseTaskData:
        """Validate `task_data` against TASK_DATA_MODEL; raise TaskDataError listing problems."""
        try:
            return cls.TASK_DATA_MODEL.model_validate(task_data)
        except pydantic.ValidationError as error:
            raise TaskDataError(cls.TASK_TYPE, cls.TASK_NAME, _problems_of(error)) from None


def validate_task_data(task_type: str, task_name: str, task_data: Any) -> dict[str, Any]:
    """
    Check `task_data` for the task registered as (task_type, task_name).

    Return it normalised: values coerced to their declared types, keys the caller did not give
    left out (defaults are the task's business, and leaving them out keeps the stored data what
    the user asked for). Raise UnknownTaskError or TaskDataError.
    """
    task_class = BaseTask.class_from_name(task_type, task_name)
    model = task_class.parse_task_data(task_data)
    return model.model_dump(mode="json", exclude_unset=True)
