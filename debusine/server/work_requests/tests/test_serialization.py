"""Tests of the one WorkRequest serializer: every source of rows gives the same object."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection

from debusine.protocol.work_requests import (
    WorkRequestPage,
    WorkRequestResponse,
    WorkRequestResult,
    WorkRequestStatus,
)
from debusine.server.db.models import User, WorkRequest
from debusine.server.work_requests import serialization, transitions
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db

ROW_SQL = " ".join(
    [
        "SELECT",
        serialization.sql_columns("wr", "ws", "sc"),
        "FROM db_workrequest wr JOIN db_workspace ws ON ws.id = wr.workspace_id",
        "JOIN db_scope sc ON sc.id = ws.scope_id WHERE wr.id = %s",
    ]
)


def sql_row(work_request_id: int) -> serialization.WorkRequestRow:
    with connection.cursor() as cursor:
        cursor.execute(ROW_SQL, [work_request_id])
        values = cursor.fetchone()
    assert values is not None
    return serialization.row_from_sql(values)


@pytest.fixture
def finished(playground: Playground, user: User) -> WorkRequest:
    """A completed work request with artifacts, output data and event reactions."""
    work_request = playground.create_work_request(
        created_by=user,
        task_data={"result": False},
        configured_task_data={"result": True},
        dynamic_task_data={"some": "thing"},
        workflow_data_json={"retry_count": 1},
        event_reactions_json={"on_failure": []},
    )
    transitions.complete(work_request, WorkRequestResult.FAILURE, {"errors": []})
    assert work_request.completed_at is not None
    work_request.started_at = work_request.completed_at - timedelta(seconds=2.5)
    work_request.save()
    for _ in range(3):
        playground.create_artifact(created_by_work_request=work_request)
    return work_request


def test_every_source_of_rows_serialises_alike(finished: WorkRequest) -> None:
    instance = WorkRequest.objects.select_related("workspace__scope").get(pk=finished.pk)
    from_instance = serialization.serialize(serialization.row_of(instance))
    (listed,) = serialization.rows(WorkRequest.objects.filter(pk=finished.pk))
    from_rows = serialization.serialize(listed)
    from_sql = serialization.serialize(sql_row(finished.pk))

    assert from_instance == from_rows == from_sql
    body = json.loads(from_instance.model_dump_json())
    assert body["status"] == "completed"
    assert body["result"] == "failure"
    assert body["duration"] == 2.5
    assert body["task_data"] == {"result": False}
    assert body["dynamic_task_data"] == {"some": "thing"}
    assert body["output_data"] == {"errors": []}
    assert body["workflow_data"] == {"retry_count": 1}
    assert body["event_reactions"] == {"on_failure": []}
    assert body["artifacts"] == sorted(body["artifacts"]) and len(body["artifacts"]) == 3
    assert body["url"] == f"/{body['scope']}/{body['workspace']}/work-request/{finished.pk}/"
    assert body["created_at"].endswith("Z") and body["completed_at"].endswith("Z")
    # What the wire protocol's model reads back is what was sent.
    assert WorkRequestResponse.model_validate(body) == from_instance


def test_handed_to_a_worker_it_looks_as_before_it_started(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    work_request = playground.create_work_request(
        created_by=user, task_data={"result": False}, configured_task_data={"result": True}
    )
    started = start_work_request(work_request)
    assert started.status == WorkRequestStatus.RUNNING

    handed = serialization.serialize(sql_row(started.pk), handed_to_worker=True)

    assert handed.status == WorkRequestStatus.PENDING
    assert handed.started_at is None and handed.completed_at is None
    assert handed.duration is None
    # The task data with task configuration applied.
    assert handed.task_data == {"result": True}
    assert handed.worker == started.worker_id
    # Shown to users, it is running and carries what the user sent.
    shown = serialization.serialize(sql_row(started.pk))
    assert shown.status == WorkRequestStatus.RUNNING
    assert shown.task_data == {"result": False}


def test_a_page_is_the_protocol_page(playground: Playground, user: User) -> None:
    created = [playground.create_work_request(created_by=user) for _ in range(2)]
    rows = serialization.rows(WorkRequest.objects.order_by("-pk"))

    page = serialization.page(rows, "http://next/", None)

    body = json.loads(serialization.json_response(page).content)
    assert WorkRequestPage.model_validate(body) == page
    assert [item["id"] for item in body["results"]] == [wr.pk for wr in reversed(created)]
    assert body["next"] == "http://next/"
    assert body["previous"] is None


def test_rows_cost_one_query(
    playground: Playground, user: User, django_assert_num_queries: Callable[..., object]
) -> None:
    for _ in range(5):
        work_request = playground.create_work_request(created_by=user)
        playground.create_artifact(created_by_work_request=work_request)
    queryset = WorkRequest.objects.order_by("pk")
    with django_assert_num_queries(1):  # type: ignore[attr-defined]
        rows = serialization.rows(queryset)
    assert [len(row.artifacts) for row in rows] == [1] * 5
