"""Tests of the task registry and task data validation."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import debusine.tasks as tasks_package
from debusine.tasks import (
    Autopkgtest,
    BaseDynamicTaskData,
    BaseDynamicTaskDataWithExecutor,
    BaseTask,
    BaseTaskData,
    BaseTaskDataWithExecutor,
    Lintian,
    MmDebstrap,
    Noop,
    NoopData,
    Piuparts,
    Sbuild,
    Sleep,
    SleepData,
    TaskDataError,
    TaskType,
    UnknownTaskError,
    validate_task_data,
)
from debusine.tasks.autopkgtest import AutopkgtestData, AutopkgtestDynamicData
from debusine.tasks.base import BUILTIN_TASKS
from debusine.tasks.executor_task import ExecutorTask
from debusine.tasks.lintian import LintianData, LintianDynamicData
from debusine.tasks.mmdebstrap import MmDebstrapData
from debusine.tasks.piuparts import PiupartsData, PiupartsDynamicData
from debusine.tasks.sbuild import SbuildData, SbuildDynamicData


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    """Let a test define tasks without leaving them registered for other tests."""
    saved = {task_type: dict(tasks) for task_type, tasks in BaseTask._registry.items()}
    yield
    BaseTask._registry.clear()
    BaseTask._registry.update(saved)


class EchoData(BaseTaskData):
    message: str


def test_builtin_tasks_are_registered_as_worker_tasks() -> None:
    assert BaseTask.class_from_name("Worker", "noop") is Noop
    assert BaseTask.class_from_name(TaskType.WORKER, "sleep") is Sleep
    names = BaseTask.task_names("Worker")
    assert names == sorted(names)
    assert {"noop", "sleep"} <= set(names)
    assert Noop.TASK_VERSION == 1
    assert Sleep.TASK_VERSION == 1


def test_unknown_task_name_or_type_is_reported() -> None:
    with pytest.raises(UnknownTaskError, match="task name is not registered") as caught:
        BaseTask.class_from_name("Worker", "nosuchtask")
    assert ", ".join(BaseTask.task_names("Worker")) in str(caught.value)
    assert "noop" in str(caught.value)
    assert caught.value.task_name == "nosuchtask"
    # Tasks are registered per type: noop is not a server task.
    assert not BaseTask.is_registered("Server", "noop")
    assert not BaseTask.is_registered("NoSuchType", "noop")
    assert BaseTask.task_names("NoSuchType") == []
    with pytest.raises(UnknownTaskError):
        validate_task_data("Signing", "noop", {})


def test_subclass_registers_under_its_type_and_lowercased_name(isolated_registry: None) -> None:
    class Echo(BaseTask[EchoData]):
        TASK_TYPE = TaskType.SERVER
        TASK_VERSION = 3
        TASK_DATA_MODEL = EchoData

    assert BaseTask.class_from_name("Server", "echo") is Echo
    assert not BaseTask.is_registered("Worker", "echo")
    assert Echo({"message": "hi"}).data.message == "hi"


def test_explicit_task_name_and_abstract_classes(isolated_registry: None) -> None:
    class ServerTask(BaseTask[EchoData], abstract=True):
        TASK_TYPE = TaskType.SERVER

    class Shout(ServerTask):
        TASK_NAME = "shout-it"
        TASK_VERSION = 1
        TASK_DATA_MODEL = EchoData

    assert BaseTask.task_names("Server") == ["shout-it"]
    assert BaseTask.class_from_name("Server", "shout-it") is Shout


def test_class_statement_declares_the_task(isolated_registry: None) -> None:
    class Echo(BaseTask[EchoData], task_type=TaskType.SERVER, name="echo-it", version=3):
        pass

    assert BaseTask.class_from_name("Server", "echo-it") is Echo
    assert (Echo.TASK_TYPE, Echo.TASK_NAME, Echo.TASK_VERSION) == (TaskType.SERVER, "echo-it", 3)
    # The type argument is the data model; no dynamic data model was given.
    assert Echo.TASK_DATA_MODEL is EchoData
    assert Echo.TASK_DYNAMIC_DATA_MODEL is BaseDynamicTaskData
    assert Echo({"message": "hi"}).data.message == "hi"
    with pytest.raises(TaskDataError, match="message"):
        Echo({})


def test_executor_task_takes_both_models_and_its_tools(isolated_registry: None) -> None:
    class ProbeData(BaseTaskDataWithExecutor):
        pass

    class ProbeDynamicData(BaseDynamicTaskDataWithExecutor):
        extra_id: int

    class Probe(
        ExecutorTask[ProbeData, ProbeDynamicData],
        name="probe",
        version=2,
        tools=("true", "no-such-program-here"),
    ):
        pass

    assert BaseTask.class_from_name("Worker", "probe") is Probe
    assert (ProbeData, ProbeDynamicData) == (Probe.TASK_DATA_MODEL, Probe.TASK_DYNAMIC_DATA_MODEL)
    assert Probe.REQUIRED_TOOLS_METADATA == ("true:available", "no-such-program-here:available")
    assert Probe.analyze_worker() == {
        "true:available": True,
        "no-such-program-here:available": False,
    }
    assert Probe({}, {"extra_id": 4}).computed.extra_id == 4
    assert Probe({}, {"extra_id": 4}).computed.environment_id is None


def test_class_body_attributes_win_over_type_arguments(isolated_registry: None) -> None:
    class Echo(BaseTask[EchoData], task_type=TaskType.SERVER, version=1):
        TASK_DATA_MODEL = NoopData

    assert Echo.TASK_DATA_MODEL is NoopData
    assert Echo.TASK_NAME == "echo"


@pytest.mark.parametrize(
    ("task", "name", "data_model", "dynamic_data_model", "tools"),
    [
        (Noop, "noop", NoopData, BaseDynamicTaskData, None),
        (Sleep, "sleep", SleepData, BaseDynamicTaskData, None),
        (MmDebstrap, "mmdebstrap", MmDebstrapData, BaseDynamicTaskData, None),
        (Sbuild, "sbuild", SbuildData, SbuildDynamicData, ("sbuild:available",)),
        (Lintian, "lintian", LintianData, LintianDynamicData, ()),
        (
            Autopkgtest,
            "autopkgtest",
            AutopkgtestData,
            AutopkgtestDynamicData,
            ("autopkgtest:available",),
        ),
        (Piuparts, "piuparts", PiupartsData, PiupartsDynamicData, ("piuparts:available",)),
    ],
)
def test_each_task_declares_what_it_always_did(
    task: type[BaseTask[Any]],
    name: str,
    data_model: type[BaseTaskData],
    dynamic_data_model: type[BaseDynamicTaskData],
    tools: tuple[str, ...] | None,
) -> None:
    """The registry, versions and models the workers and the scheduler rely on."""
    assert BaseTask.class_from_name("Worker", name) is task
    assert (TaskType.WORKER, name, 1) == (task.TASK_TYPE, task.TASK_NAME, task.TASK_VERSION)
    assert task.TASK_DATA_MODEL is data_model
    assert task.TASK_DYNAMIC_DATA_MODEL is dynamic_data_model
    if tools is not None:
        assert issubclass(task, ExecutorTask)
        assert tools == task.REQUIRED_TOOLS_METADATA
        # What the worker reports: the same keys as each task's own analyze_worker did.
        assert set(task.analyze_worker()) == {f"{name}:available"}


def test_incomplete_task_class_is_refused(isolated_registry: None) -> None:
    with pytest.raises(TypeError, match="must define TASK_VERSION"):

        class Broken(BaseTask[EchoData]):
            TASK_TYPE = TaskType.WORKER
            TASK_DATA_MODEL = EchoData


def test_builtin_tasks_lists_every_task_of_the_package() -> None:
    for module in pkgutil.iter_modules(tasks_package.__path__):
        if not module.ispkg:
            importlib.import_module(f"{tasks_package.__name__}.{module.name}")
    defined = {
        (task_type, name): f"{task_class.__module__}:{task_class.__qualname__}"
        for task_type, by_name in BaseTask._registry.items()
        for name, task_class in by_name.items()
        if task_class.__module__.startswith("debusine.tasks.")
        and ".tests." not in task_class.__module__
    }
    assert defined == BUILTIN_TASKS


def test_task_modules_are_imported_when_first_asked_for() -> None:
    code = (
        "import sys\n"
        "from debusine.tasks import BaseTask, validate_task_data\n"
        "validate_task_data('Worker', 'noop', {})\n"
        "print(sorted(m for m in ('debusine.tasks.noop', 'debusine.tasks.sbuild') "
        "if m in sys.modules))\n"
        "import debusine.tasks\n"
        "assert debusine.tasks.Sbuild is BaseTask.class_from_name('Worker', 'sbuild')\n"
        "print('debusine.tasks.sbuild' in sys.modules, len(BaseTask.task_names('Worker')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == [
        "['debusine.tasks.noop']",
        f"True {sum(1 for task_type, _name in BUILTIN_TASKS if task_type == 'Worker')}",
    ]


def test_a_registry_emptied_since_the_import_is_filled_again(isolated_registry: None) -> None:
    assert BaseTask.class_from_name("Worker", "sbuild") is Sbuild
    BaseTask._registry.clear()
    assert BaseTask.class_from_name("Worker", "sbuild") is Sbuild
    assert "sbuild" in BaseTask.task_names("Worker")


def test_a_builtin_name_is_taken_before_its_module_is_imported(isolated_registry: None) -> None:
    BaseTask._registry.clear()
    with pytest.raises(TypeError, match=r"already defined by debusine\.tasks\.lintian\.Lintian"):

        class Lintian(BaseTask[EchoData]):
            TASK_TYPE = TaskType.WORKER
            TASK_VERSION = 2
            TASK_DATA_MODEL = EchoData


def test_two_classes_cannot_claim_one_name(isolated_registry: None) -> None:
    with pytest.raises(TypeError, match=r"already defined by debusine\.tasks\.noop\.Noop"):

        class Noop(BaseTask[EchoData]):
            TASK_TYPE = TaskType.WORKER
            TASK_VERSION = 2
            TASK_DATA_MODEL = EchoData


@pytest.mark.parametrize(
    ("task_data", "normalised"),
    [
        ({}, {}),
        ({"result": False}, {"result": False}),
        ({"result": "true"}, {"result": True}),
        ({"task_configuration": None}, {"task_configuration": None}),
        ({"task_configuration": 12}, {"task_configuration": 12}),
        (
            {"task_configuration": "x@debusine:task-configuration"},
            {"task_configuration": "x@debusine:task-configuration"},
        ),
    ],
)
def test_noop_data_is_normalised_without_adding_defaults(
    task_data: dict[str, Any], normalised: dict[str, Any]
) -> None:
    assert validate_task_data("Worker", "noop", task_data) == normalised


def test_noop_defaults() -> None:
    data = NoopData()
    assert data.result is True
    assert data.task_configuration == "default@debusine:task-configuration"
    assert Noop({}).data == data


@pytest.mark.parametrize(
    ("task_data", "problems"),
    [
        ({"foo": "bar"}, [("foo", "Extra inputs are not permitted")]),
        (
            {"result": "maybe"},
            [("result", "Input should be a valid boolean, unable to interpret input")],
        ),
        ({"task_configuration": [1]}, None),
        ([], None),
        (None, None),
    ],
)
def test_invalid_noop_data_lists_every_problem(
    task_data: Any, problems: list[tuple[str, str]] | None
) -> None:
    with pytest.raises(TaskDataError) as caught:
        validate_task_data("Worker", "noop", task_data)
    error = caught.value
    assert error.problems
    if problems is not None:
        assert error.problems == problems
    assert str(error).startswith("invalid task data for Worker task 'noop': ")


def test_sleep_needs_non_negative_seconds() -> None:
    assert validate_task_data("Worker", "sleep", {"seconds": 0}) == {"seconds": 0}
    assert validate_task_data("Worker", "sleep", {"seconds": "5"}) == {"seconds": 5}
    with pytest.raises(TaskDataError) as caught:
        validate_task_data("Worker", "sleep", {"seconds": -1, "extra": 1})
    assert caught.value.validation_errors == {
        "task_data.seconds": ["Input should be greater than or equal to 0"],
        "task_data.extra": ["Extra inputs are not permitted"],
    }
    with pytest.raises(TaskDataError, match="seconds: Field required"):
        validate_task_data("Worker", "sleep", {})
    with pytest.raises(TaskDataError, match="seconds: Input should be a valid integer"):
        Sleep({"seconds": 1.5})


def test_whole_data_problem_is_reported_under_task_data() -> None:
    with pytest.raises(TaskDataError) as caught:
        validate_task_data("Worker", "sleep", "ten")
    assert list(caught.value.validation_errors) == ["task_data"]
