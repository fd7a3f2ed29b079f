"""Tests of the task registry and task data validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from debusine.tasks import (
    BaseTask,
    BaseTaskData,
    Noop,
    NoopData,
    Sleep,
    TaskDataError,
    TaskType,
    UnknownTaskError,
    validate_task_data,
)


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


def test_incomplete_task_class_is_refused(isolated_registry: None) -> None:
    with pytest.raises(TypeError, match="must define TASK_VERSION"):

        class Broken(BaseTask[EchoData]):
            TASK_TYPE = TaskType.WORKER
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
