"""
Every value of task data has a bound, checked at creation by the same models the worker uses.

The walk goes through every registered task's data and dynamic data models, field by field and
into nested models, lists, mappings and unions: a number needs a lower and an upper bound, a
string, list or mapping a maximum length, and a free-form value (`Any`) a maximum JSON size.
Enumerations, literals, booleans and dates are bounded by their type.
"""

from __future__ import annotations

import datetime
import enum
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any

import annotated_types
import pydantic
import pytest

import debusine.tasks  # noqa: F401 (registers every task)
from debusine.tasks.base import BUILTIN_TASKS, BaseTask, TaskDataError, validate_task_data
from debusine.tasks.models import MAX_SECONDS, MaxJsonSize

BOUNDED_BY_TYPE = (bool, enum.Enum, datetime.datetime, datetime.date, type(None))


def _has(metadata: list[Any], *kinds: type) -> bool:
    return any(isinstance(item, kinds) for item in metadata)


def _has_max_length(metadata: list[Any]) -> bool:
    return any(
        isinstance(item, annotated_types.MaxLen)
        or (isinstance(item, annotated_types.Len) and item.max_length is not None)
        for item in metadata
    )


def _has_number_bounds(metadata: list[Any]) -> bool:
    lower = _has(metadata, annotated_types.Ge, annotated_types.Gt)
    upper = _has(metadata, annotated_types.Le, annotated_types.Lt)
    intervals = [item for item in metadata if isinstance(item, annotated_types.Interval)]
    lower = lower or any(i.ge is not None or i.gt is not None for i in intervals)
    upper = upper or any(i.le is not None or i.lt is not None for i in intervals)
    return lower and upper


def unbounded(annotation: Any, metadata: list[Any], where: str, seen: set[type]) -> Iterator[str]:
    """Describe each place under `annotation` (at `where`) that has no bound."""
    if typing.get_origin(annotation) is Annotated:
        inner, *extra = typing.get_args(annotation)
        yield from unbounded(inner, [*metadata, *extra], where, seen)
        return
    if _has(metadata, MaxJsonSize):
        return  # The whole value is bounded by its serialised size.
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(annotation)
        real = [arm for arm in arms if arm is not type(None)]
        for arm in real:
            # pydantic applies a field's constraints to the arm of an Optional, not of a union.
            yield from unbounded(arm, metadata if len(real) == 1 else [], where, seen)
        return
    if origin is typing.Literal:
        return
    if origin in (list, set, frozenset, tuple):
        if not _has_max_length(metadata):
            yield f"{where}: a {origin.__name__} without a maximum length"
        for argument in typing.get_args(annotation):
            if argument is not Ellipsis:
                yield from unbounded(argument, [], f"{where}[]", seen)
        return
    if origin is dict:
        if not _has_max_length(metadata):
            yield f"{where}: a mapping without a maximum length"
        key, value = typing.get_args(annotation)
        yield from unbounded(key, [], f"{where}{{key}}", seen)
        yield from unbounded(value, [], f"{where}{{}}", seen)
        return
    if annotation is Any:
        yield f"{where}: a free-form value without a maximum JSON size"
        return
    if isinstance(annotation, type):
        if issubclass(annotation, BOUNDED_BY_TYPE):
            return
        if issubclass(annotation, pydantic.BaseModel):
            if annotation not in seen:
                seen.add(annotation)
                yield from unbounded_fields(annotation, where, seen)
            return
        if issubclass(annotation, (int, float)):
            if not _has_number_bounds(metadata):
                yield f"{where}: a number without a lower and an upper bound"
            return
        if issubclass(annotation, (str, bytes)):
            if not _has_max_length(metadata):
                yield f"{where}: a string without a maximum length"
            return
    yield f"{where}: {annotation!r}, a type this walk does not know"


def unbounded_fields(
    model: type[pydantic.BaseModel], where: str, seen: set[type]
) -> Iterator[str]:
    for name, field in model.model_fields.items():
        yield from unbounded(field.annotation, list(field.metadata), f"{where}.{name}", seen)


def registered_models() -> list[tuple[str, type[pydantic.BaseModel]]]:
    """
    Every built-in task's models: from `BUILTIN_TASKS` (task modules load lazily), not from
    the registry, which also holds the tasks other tests define.
    """
    models: list[tuple[str, type[pydantic.BaseModel]]] = []
    for task_type, name in sorted(BUILTIN_TASKS):
        task_class = BaseTask.class_from_name(task_type, name)
        models.append((f"{task_type}/{name}", task_class.TASK_DATA_MODEL))
        models.append((f"{task_type}/{name} dynamic", task_class.TASK_DYNAMIC_DATA_MODEL))
    return models


def test_every_registered_task_model_bounds_every_value() -> None:
    models = registered_models()
    # noop, sleep, sbuild, lintian, autopkgtest, piuparts, mmdebstrap and the 4 signing tasks
    assert len(models) >= 22
    problems = [
        problem
        for label, model in models
        for problem in unbounded_fields(model, f"{label}: {model.__name__}", set())
    ]
    assert problems == []


class Unbounded(pydantic.BaseModel):
    """What the walk must refuse: one of each kind of unbounded value."""

    number: int = pydantic.Field(ge=0)
    text: str
    names: list[Annotated[str, annotated_types.MaxLen(3)]]
    mapping: Annotated[dict[str, Any], annotated_types.MaxLen(3)]
    either: int | Annotated[str, annotated_types.MaxLen(3)]


def test_the_walk_finds_each_kind_of_unbounded_value() -> None:
    assert sorted(unbounded_fields(Unbounded, "U", set())) == [
        "U.either: a number without a lower and an upper bound",
        "U.mapping{key}: a string without a maximum length",
        "U.mapping{}: a free-form value without a maximum JSON size",
        "U.names: a list without a maximum length",
        "U.number: a number without a lower and an upper bound",
        "U.text: a string without a maximum length",
    ]


@pytest.mark.parametrize(
    ("task_name", "task_data", "reason"),
    [
        ("sleep", {"seconds": 10**30}, "seconds: Input should be less than or equal to"),
        ("sleep", {"seconds": MAX_SECONDS + 1}, "seconds: Input should be less than or equal to"),
        ("sleep", {"seconds": -1}, "seconds: Input should be greater than or equal to 0"),
        ("noop", {"task_configuration": "x" * 5000}, "at most 4096 characters"),
        ("noop", {"task_configuration": 0}, "greater than or equal to 1"),
        (
            "lintian",
            {"input": {"source_artifact": 1}, "environment": 1, "include_tags": ["t"] * 1001},
            "include_tags: List should have at most 1000 items",
        ),
        (
            "lintian",
            {"input": {"binary_artifacts": {"lookup": "x" * 70_000}}, "environment": 1},
            "bytes as JSON; at most 65536 are allowed",
        ),
    ],
)
def test_values_out_of_bounds_are_refused_with_the_reason(
    task_name: str, task_data: dict[str, Any], reason: str
) -> None:
    with pytest.raises(TaskDataError) as raised:
        validate_task_data("Worker", task_name, task_data)
    assert reason in str(raised.value)


def test_values_within_bounds_are_accepted() -> None:
    assert validate_task_data("Worker", "sleep", {"seconds": MAX_SECONDS}) == {
        "seconds": MAX_SECONDS
    }
