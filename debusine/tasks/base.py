"""
The task framework's core: the `BaseTask` class, its registry, and task data validation.

Every concrete task is declared in its class statement:
`class Noop(BaseTask[NoopData], task_type=TaskType.WORKER, name="noop", version=1)` sets
`TASK_TYPE`, `TASK_NAME`, `TASK_VERSION` and, from the type argument, `TASK_DATA_MODEL` (a
`BaseDynamicTaskData` argument, as `ExecutorTask` takes, sets `TASK_DYNAMIC_DATA_MODEL`);
defining the class registers it under (task type, task name). The server
validates task data with `validate_task_data()` before it stores a work request; the worker
builds the same class and calls `execute()`, which runs the stages of a task in order (fetch
input, configure, prepare, run, check, upload artifacts, clean up) and logs each one to the
`stages.log` debug file.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Generic,
    NamedTuple,
    Protocol,
    TextIO,
    TypeVar,
    cast,
    get_args,
)

import pydantic

from debusine.tasks.execution import (
    CONSISTENCY_LOG,
    STAGES_LOG,
    DebugLogs,
    TaskContext,
    no_space_error,
)
from debusine.tasks.models import BaseDynamicTaskData, BaseTaskData, TaskType

TaskData = TypeVar("TaskData", bound=BaseTaskData)
StageResult = TypeVar("StageResult")
DynamicData = TypeVar("DynamicData", bound=BaseDynamicTaskData)


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


class DynamicTaskDataError(TaskDataError):
    """`dynamic_task_data` does not match the task's dynamic data model."""

    def __init__(self, task_type: str, task_name: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(task_type, task_name, problems)
        listed = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems)
        self.args = (f"invalid dynamic task data for {task_type} task {task_name!r}: {listed}",)


class LookupFailedError(TaskError):
    """A lookup in the task data matched nothing, or not what the task needs."""


class LookupResult(NamedTuple):
    """What one lookup resolved to (the fields of protocol.md's lookup response)."""

    #: "b" (bare data), "a" (artifact) or "c" (collection).
    result_type: str
    collection_item: int | None = None
    artifact: int | None = None
    collection: int | None = None


#: A lookup as task data may hold it: an ID, a lookup string, or a dictionary lookup.
Lookup = int | str | dict[str, Any]


class LookupResolver(Protocol):
    """
    Resolves lookups for one work request (its workspace and creator); given by the server to
    `BaseTask.compute_dynamic_data`. Both methods raise LookupFailedError with a message a user can
    act on.
    """

    def lookup_single(
        self, lookup: Lookup, *, expect_type: str, default_category: str | None = None
    ) -> LookupResult:
        """
        Exactly one match of `lookup`; `expect_type` is "bare", "artifact", "collection",
        "artifact-or-promise" or "any".
        """
        ...

    def lookup_multiple(
        self,
        lookup: Lookup | list[Lookup],
        *,
        expect_type: str,
        default_category: str | None = None,
    ) -> list[LookupResult]:
        """Every match of `lookup` (a list lookup is the union of its items, in order)."""
        ...


class _StageError(Exception):
    """A stage raised; its traceback is already in `stages.log`."""


def _problems_of(error: pydantic.ValidationError) -> list[tuple[str, str]]:
    return [
        (".".join(str(part) for part in detail["loc"]), detail["msg"]) for detail in error.errors()
    ]


def _dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class BaseTask(Generic[TaskData]):
    """
    A kind of work a work request can ask for.

    Subclasses declare the class attributes below with keywords of their class statement
    (`task_type=`, `name=`, `version=`) and their type arguments (the data models); setting
    the attributes in the class body works too. Abstract intermediate classes pass
    `abstract=True` and are not registered.
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
    #: Model that `dynamic_task_data` (computed by the server) must match.
    TASK_DYNAMIC_DATA_MODEL: ClassVar[type[BaseDynamicTaskData]] = BaseDynamicTaskData

    #: task type -> task name -> class.
    _registry: ClassVar[dict[TaskType, dict[str, type[BaseTask[Any]]]]] = {}

    def __init_subclass__(
        cls,
        abstract: bool = False,
        task_type: TaskType | None = None,
        name: str | None = None,
        version: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if task_type is not None:
            cls.TASK_TYPE = TaskType(task_type)
        if name is not None:
            cls.TASK_NAME = name
        if version is not None:
            cls.TASK_VERSION = version
        cls._take_data_models_from_type_arguments()
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
        builtin = BUILTIN_TASKS.get((TaskType(cls.TASK_TYPE), cls.TASK_NAME))
        if builtin is not None and builtin.replace(":", ".") != _dotted_name(cls):
            # Not imported yet, but the name is taken all the same.
            raise TypeError(
                f"{cls.TASK_TYPE} task {cls.TASK_NAME!r} is already defined by "
                f"{builtin.replace(':', '.')}"
            )
        by_name[cls.TASK_NAME] = cls

    @classmethod
    def _take_data_models_from_type_arguments(cls) -> None:
        """
        Set the data models from the class's type arguments (`BaseTask[NoopData]`,
        `ExecutorTask[SbuildData, SbuildDynamicData]`), unless its body sets them: the type a
        task is generic in and the model its data is validated with are one declaration.
        """
        for base in cls.__dict__.get("__orig_bases__", ()):
            for argument in get_args(base):
                if not isinstance(argument, type):
                    continue  # a type variable: a generic intermediate class
                if issubclass(argument, BaseTaskData) and "TASK_DATA_MODEL" not in cls.__dict__:
                    cls.TASK_DATA_MODEL = argument
                elif (
                    issubclass(argument, BaseDynamicTaskData)
                    and "TASK_DYNAMIC_DATA_MODEL" not in cls.__dict__
                ):
                    cls.TASK_DYNAMIC_DATA_MODEL = argument

    def __init__(
        self,
        task_data: Mapping[str, Any],
        dynamic_task_data: Mapping[str, Any] | None = None,
    ) -> None:
        """
        Build the task for `task_data` and the server's `dynamic_task_data`.

        `dynamic_task_data` None means "not computed yet": the server builds tasks that way to
        compute it, and `dynamic_data` is then None. A worker always passes what it was given
        (`{}` for none), which must validate. Raise TaskDataError (or its subclass
        DynamicTaskDataError) if either does not validate.
        """
        self.data = cast(TaskData, self.parse_task_data(task_data))
        self.dynamic_data: BaseDynamicTaskData | None = (
            None if dynamic_task_data is None else self.parse_dynamic_task_data(dynamic_task_data)
        )

    # --- Registry ------------------------------------------------------------------------

    @staticmethod
    def class_from_name(task_type: str, task_name: str) -> type[BaseTask[Any]]:
        """Return the class registered as (task_type, task_name); raise UnknownTaskError."""
        try:
            key = (TaskType(task_type), task_name)
        except ValueError:
            raise UnknownTaskError(task_type, task_name) from None
        found = BaseTask._registry.get(key[0], {}).get(task_name)
        if found is None and key in BUILTIN_TASKS:
            found = _load_builtin_task(key)
        if found is None:
            raise UnknownTaskError(task_type, task_name)
        return found

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
        load_builtin_tasks()
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

    @classmethod
    def parse_dynamic_task_data(cls, dynamic_task_data: Any) -> BaseDynamicTaskData:
        """Validate `dynamic_task_data`; raise DynamicTaskDataError listing problems."""
        try:
            return cls.TASK_DYNAMIC_DATA_MODEL.model_validate(dynamic_task_data)
        except pydantic.ValidationError as error:
            raise DynamicTaskDataError(cls.TASK_TYPE, cls.TASK_NAME, _problems_of(error)) from None

    def computed_dynamic_data(self, model: type[DynamicData]) -> DynamicData:
        """The dynamic data the server computed, as `model`; TaskError if there are none."""
        if not isinstance(self.dynamic_data, model):
            raise TaskError(f"the server computed no dynamic data for this {self.TASK_NAME} task")
        return self.dynamic_data

    # --- Server side --------------------------------------------------------------------------

    def compute_dynamic_data(self, resolver: LookupResolver) -> BaseDynamicTaskData | None:
        """
        The work request's `dynamic_task_data`, computed by the server before it is assigned:
        lookups resolved to IDs. None (the default) means the task has none. Raise
        LookupFailedError when a lookup cannot be resolved: the work request then ends as an error.
        """
        return None

    def can_run_on(self, worker_metadata: Mapping[str, Any]) -> bool:
        """
        Whether a worker with this (merged static and dynamic) metadata can run this task,
        beyond the checks the scheduler makes for every task (worker type, task version,
        allow and deny lists, host architecture). The default: yes.
        """
        return True

    @classmethod
    def analyze_worker(cls) -> dict[str, Any]:
        """
        Metadata a worker reports for this task besides `<task>:version`: whether the tools
        it needs are installed (e.g. `sbuild:available`). Runs on the worker.
        """
        return {}

    # --- Execution on a worker -------------------------------------------------------------
    #
    # `execute()` runs the stages below in order. Each stage may be overridden; the defaults
    # do nothing and succeed, except `run`, which every executable task must define.

    def fetch_input(self, destination: Path) -> bool:
        """Download the input artifacts into `destination`; False if that failed."""
        return True

    def configure_for_execution(self, download_directory: Path) -> bool:
        """Check the downloaded input and prepare the task's settings; False if unusable."""
        return True

    def prepare_to_run(self, download_directory: Path, execute_directory: Path) -> None:
        """Set up `execute_directory` (copy or unpack input, write configuration)."""

    def run(self, execute_directory: Path) -> bool:
        """Do the task's work; True if it succeeded, False if it failed."""
        raise NotImplementedError(f"{type(self).__qualname__} cannot run on a worker")

    def check_directory_for_consistency_errors(self, build_directory: Path) -> list[str]:
        """Problems found in the results (each makes the task fail); empty if none."""
        return []

    def upload_artifacts(self, directory: Path, *, execution_success: bool) -> None:
        """Upload the output artifacts found in `directory` (called on failure too)."""

    def cleanup(self) -> None:
        """Release what the earlier stages acquired (always called, even after a failure)."""

    def open_debug_log_file(self, name: str) -> TextIO:
        """
        The debug log file `name` of the current run, opened for appending.

        Files still present when the run ends are uploaded with the work request's debug logs.
        """
        return self.debug_logs.open(name)

    def execute(self, context: TaskContext) -> bool:
        """
        Run every stage for `context`; True if the task succeeded.

        A stage that raises makes the task fail (its traceback goes to `stages.log`) rather
        than escape: only problems of the framework itself propagate. On success `stages.log`
        is removed, so a successful task leaves only the debug logs it wrote on purpose.
        """
        self.context = context
        self.debug_logs = DebugLogs(context.debug_log_directory)
        self._stages_log = self.debug_logs.open(STAGES_LOG)
        try:
            success = self._run_stages(context)
            self._log_stage_line(f"result: {'success' if success else 'failure'}")
        finally:
            self.debug_logs.close_all()
        if success:
            self.debug_logs.remove(STAGES_LOG)
        return success

    def _run_stages(self, context: TaskContext) -> bool:
        success = False
        try:
            success = self._stage(
                "fetch_input", self.fetch_input, context.input_directory
            ) and self._stage(
                "configure_for_execution", self.configure_for_execution, context.input_directory
            )
            if success:
                self._stage(
                    "prepare_to_run",
                    self.prepare_to_run,
                    context.input_directory,
                    context.execute_directory,
                )
                success = self._stage("run", self.run, context.execute_directory)
                problems = self._stage(
                    "check_directory_for_consistency_errors",
                    self.check_directory_for_consistency_errors,
                    context.execute_directory,
                )
                if problems:
                    consistency_log = self.open_debug_log_file(CONSISTENCY_LOG)
                    consistency_log.writelines(f"{problem}\n" for problem in problems)
                    success = False
                self._stage(
                    "upload_artifacts",
                    lambda: self.upload_artifacts(
                        context.execute_directory, execution_success=success
                    ),
                )
        except _StageError:
            success = False
        finally:
            try:
                self._stage("cleanup", self.cleanup)
            except _StageError:
                success = False
        return bool(success)

    def _stage(self, name: str, function: Callable[..., StageResult], *args: Any) -> StageResult:
        """Run one stage, logging its start and end (or traceback) to `stages.log`."""
        self._log_stage_line(f"{name}: started")
        try:
            result = function(*args)
        except Exception as error:
            self._log_stage_line(f"{name}: failed\n{traceback.format_exc().rstrip()}")
            if no_space_error(error) is not None:
                # Not the task's failure but the machine's: the worker reports it as such.
                raise
            raise _StageError(name) from None
        if result is None:
            self._log_stage_line(f"{name}: finished")
        else:
            self._log_stage_line(f"{name}: finished, returned {result!r}")
        return result

    def _log_stage_line(self, message: str) -> None:
        timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._stages_log.write(f"{timestamp} {message}\n")


def task_version_metadata() -> dict[str, int]:
    """
    The `<task>:version` keys a worker reports in its dynamic metadata, for every registered
    task: Worker tasks unprefixed (`noop:version`), others prefixed with their lowercased type
    (`signing:noop:version`), as Debusine workers report them.
    """
    load_builtin_tasks()
    metadata: dict[str, int] = {}
    for task_type, by_name in sorted(BaseTask._registry.items()):
        prefix = "" if task_type == TaskType.WORKER else f"{task_type.value.lower()}:"
        for name, task_class in sorted(by_name.items()):
            metadata[f"{prefix}{name}:version"] = task_class.TASK_VERSION
    return metadata


def task_availability_metadata() -> dict[str, Any]:
    """What every registered Worker task's `analyze_worker()` reports, merged."""
    load_builtin_tasks()
    metadata: dict[str, Any] = {}
    for _name, task_class in sorted(BaseTask._registry.get(TaskType.WORKER, {}).items()):
        metadata.update(task_class.analyze_worker())
    return metadata


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


#: Where this package's tasks are defined, as "module:class". A task's module is imported the
#: first time the task is asked for by name, so that a process pays (in memory and start-up
#: time) only for the tasks it meets: a server that only ever sees noops never imports the
#: executor tasks and the HTTP client they use. Listing every task (`task_names()`, the
#: metadata functions) imports them all. debusine/tasks/tests checks that this is complete.
BUILTIN_TASKS: dict[tuple[TaskType, str], str] = {
    (TaskType.WORKER, "autopkgtest"): "debusine.tasks.autopkgtest:Autopkgtest",
    (TaskType.WORKER, "lintian"): "debusine.tasks.lintian:Lintian",
    (TaskType.WORKER, "mmdebstrap"): "debusine.tasks.mmdebstrap:MmDebstrap",
    (TaskType.WORKER, "noop"): "debusine.tasks.noop:Noop",
    (TaskType.WORKER, "piuparts"): "debusine.tasks.piuparts:Piuparts",
    (TaskType.WORKER, "sbuild"): "debusine.tasks.sbuild:Sbuild",
    (TaskType.WORKER, "sleep"): "debusine.tasks.sleep:Sleep",
    (TaskType.SIGNING, "debsign"): "debusine.tasks.signing:Debsign",
    (TaskType.SIGNING, "generatekey"): "debusine.tasks.signing:GenerateKey",
    (TaskType.SIGNING, "sign"): "debusine.tasks.signing:Sign",
    (TaskType.SIGNING, "signrepositoryindex"): "debusine.tasks.signing:SignRepositoryIndex",
}


def _load_builtin_task(key: tuple[TaskType, str]) -> type[BaseTask[Any]]:
    """Import the module of a task of `BUILTIN_TASKS`; (re-)register and return its class."""
    module_name, class_name = BUILTIN_TASKS[key].split(":")
    task_class: type[BaseTask[Any]] = getattr(importlib.import_module(module_name), class_name)
    # Registered by its definition, unless a test emptied the registry since the import.
    BaseTask._registry.setdefault(key[0], {}).setdefault(key[1], task_class)
    return task_class


def load_builtin_tasks() -> None:
    """Import (and register) every task of this package."""
    for task_type, task_name in BUILTIN_TASKS:
        if task_name not in BaseTask._registry.get(task_type, {}):
            _load_builtin_task((task_type, task_name))
