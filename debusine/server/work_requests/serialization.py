"""
The one serialisation of the WorkRequest wire object (protocol.md §2.9).

Every answer that carries a work request (the API's list, detail, retry and abort views, and
get-next for workers) goes through `serialize()`, which builds the protocol's
`WorkRequestResponse` from a `WorkRequestRow`: the columns it needs, in one fixed order. Rows
come from three places, all defined here:

- `rows()`: a queryset read as rows (`values_list`, no model instances), for pages;
- `row_of()`: a model instance the view already holds;
- `row_from_sql()`: a statement's `RETURNING` list built by `sql_columns()`, for the worker's
  hot path (`transitions.start_next`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import models
from django.http import HttpResponse

from debusine.protocol.work_requests import (
    WorkRequestPage,
    WorkRequestResponse,
    WorkRequestResult,
    WorkRequestStatus,
)
from debusine.server.db.models import WorkRequest

if TYPE_CHECKING:
    from pydantic import BaseModel

    from debusine.server.db.models.work_requests import WorkRequestQuerySet


class WorkRequestRow(NamedTuple):
    """What the WorkRequest object is made of, in the order of `ORM_FIELDS`."""

    id: int
    task_name: str
    created_at: datetime
    created_by_id: int
    aborted_by_id: int | None
    started_at: datetime | None
    completed_at: datetime | None
    worker_id: int | None
    task_type: str
    task_data: dict[str, Any]
    configured_task_data: dict[str, Any] | None
    dynamic_task_data: dict[str, Any] | None
    output_data: dict[str, Any] | None
    priority_base: int
    priority_adjustment: int
    workflow_data: dict[str, Any]
    event_reactions: dict[str, Any]
    #: The workflow it is a step of.
    parent_id: int | None
    status: str
    result: str
    scope: str
    workspace: str
    #: Ids of the artifacts the work request created (any order).
    artifacts: list[int]


#: `WorkRequestRow`'s columns as `values_list` fields; `artifact_ids` is the annotation of
#: `WorkRequestQuerySet.with_artifact_ids()`.
ORM_FIELDS = (
    "id",
    "task_name",
    "created_at",
    "created_by_id",
    "aborted_by_id",
    "started_at",
    "completed_at",
    "worker_id",
    "task_type",
    "task_data",
    "configured_task_data",
    "dynamic_task_data",
    "output_data_json",
    "priority_base",
    "priority_adjustment",
    "workflow_data_json",
    "event_reactions_json",
    "parent_id",
    "status",
    "result",
    "workspace__scope__name",
    "workspace__name",
    "artifact_ids",
)

#: The first ORM_FIELDS are columns of `db_workrequest` itself; the last three are joined.
_OWN_FIELDS = [WorkRequest._meta.get_field(name) for name in ORM_FIELDS[:-3]]
#: Their column names, for statements over the table.
_SQL_OWN_COLUMNS = tuple(field.column for field in _OWN_FIELDS)  # type: ignore[union-attr]
#: Positions of the JSON columns, which raw SQL hands over as text.
_JSON_COLUMNS = tuple(
    index for index, field in enumerate(_OWN_FIELDS) if isinstance(field, models.JSONField)
)
_SQL_ARTIFACT_IDS = (
    "ARRAY(SELECT a.id FROM db_artifact a WHERE a.created_by_work_request_id = WR.id)"
)


def sql_columns(work_request: str, workspace: str, scope: str) -> str:
    """
    `WorkRequestRow`'s columns as an SQL select list, for a statement over `db_workrequest`
    aliased `work_request` joined to its workspace and scope under the given aliases.
    """
    return ", ".join(
        [
            *(f"{work_request}.{column}" for column in _SQL_OWN_COLUMNS),
            f"{scope}.name",
            f"{workspace}.name",
            _SQL_ARTIFACT_IDS.replace("WR.", f"{work_request}."),
        ]
    )


def row_from_sql(values: tuple[Any, ...]) -> WorkRequestRow:
    """A row read with `sql_columns()` (Django has psycopg hand JSON over as text)."""
    decoded = list(values)
    for index in _JSON_COLUMNS:
        if isinstance(decoded[index], str):
            decoded[index] = json.loads(decoded[index])
    return WorkRequestRow._make(decoded)


def rows(queryset: WorkRequestQuerySet) -> list[WorkRequestRow]:
    """The work requests of `queryset` as rows, in its order, in one query."""
    return [
        WorkRequestRow._make(values)
        for values in queryset.with_artifact_ids().values_list(*ORM_FIELDS)
    ]


def row_of(work_request: WorkRequest) -> WorkRequestRow:
    """
    The row of a work request held as a model instance. Its workspace and scope are read
    through the instance (load them with `select_related("workspace__scope")`); its artifact
    ids from the `artifact_ids` annotation when it has one, else with one query.
    """
    artifact_ids = getattr(work_request, "artifact_ids", None)
    if artifact_ids is None:
        artifact_ids = list(work_request.created_artifacts.values_list("id", flat=True))
    workspace = work_request.workspace
    return WorkRequestRow(
        id=work_request.pk,
        task_name=work_request.task_name,
        created_at=work_request.created_at,
        created_by_id=work_request.created_by_id,
        aborted_by_id=work_request.aborted_by_id,
        started_at=work_request.started_at,
        completed_at=work_request.completed_at,
        worker_id=work_request.worker_id,
        task_type=work_request.task_type,
        task_data=work_request.task_data,
        configured_task_data=work_request.configured_task_data,
        dynamic_task_data=work_request.dynamic_task_data,
        output_data=work_request.output_data_json,
        priority_base=work_request.priority_base,
        priority_adjustment=work_request.priority_adjustment,
        workflow_data=work_request.workflow_data_json,
        event_reactions=work_request.event_reactions_json,
        parent_id=work_request.parent_id,
        status=work_request.status,
        result=work_request.result,
        scope=workspace.scope.name,
        workspace=workspace.name,
        artifacts=artifact_ids,
    )


def serialize(row: WorkRequestRow, *, handed_to_worker: bool = False) -> WorkRequestResponse:
    """
    The WorkRequest object of `row`.

    `handed_to_worker`: as get-next hands it to its worker, as it was just before it started
    (`status: pending`, no `started_at`, as Debusine does) and with the task data that has task
    configuration applied, when that has been computed.
    """
    task_data = row.task_data
    status, started_at, completed_at = row.status, row.started_at, row.completed_at
    if handed_to_worker:
        task_data = row.configured_task_data or task_data
        status, started_at, completed_at = WorkRequestStatus.PENDING, None, None
    duration = (
        (completed_at - started_at).total_seconds()
        if started_at is not None and completed_at is not None
        else None
    )
    scope = row.scope
    url = f"/{scope}/{row.workspace}/work-request/{row.id}/"
    return WorkRequestResponse(
        id=row.id,
        url=url,
        links={"webui_self": url},
        task_name=row.task_name,
        created_at=row.created_at,
        created_by=row.created_by_id,
        aborted_by=row.aborted_by_id,
        started_at=started_at,
        completed_at=completed_at,
        duration=duration,
        worker=row.worker_id,
        task_type=row.task_type,  # type: ignore[arg-type]  # validated into the enum
        task_data=task_data or {},
        dynamic_task_data=row.dynamic_task_data,
        output_data=row.output_data,
        priority_base=row.priority_base,
        priority_adjustment=row.priority_adjustment,
        workflow_data=row.workflow_data or {},
        event_reactions=row.event_reactions or {},
        parent=row.parent_id,
        status=status,  # type: ignore[arg-type]
        result=WorkRequestResult.NONE if handed_to_worker else row.result,  # type: ignore[arg-type]
        artifacts=sorted(row.artifacts),
        scope=scope,
        workspace=row.workspace,
    )


def json_response(model: BaseModel, status: int = 200) -> HttpResponse:
    """An `application/json` answer with the model's JSON (compact, as DRF writes it)."""
    return HttpResponse(model.model_dump_json(), status=status, content_type="application/json")


def work_request_response(work_request: WorkRequest, status: int = 200) -> HttpResponse:
    """The answer carrying one work request held as a model instance."""
    return json_response(serialize(row_of(work_request)), status)


def page(
    work_requests: list[WorkRequestRow], next_url: str | None, previous_url: str | None
) -> WorkRequestPage:
    """One page of `GET /1.0/work-request/`."""
    return WorkRequestPage(
        next=next_url,
        previous=previous_url,
        results=[serialize(row) for row in work_requests],
    )
