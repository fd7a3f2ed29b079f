"""Tests of `GET /api/1.0/service-status/`: protocol.md's shape, the right counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from debusine.protocol.monitoring import ServiceStatus
from debusine.protocol.work_requests import TaskType
from debusine.server.db.models import User, WorkRequest
from debusine.tasks import BaseTask
from debusine.testing.playground import Playground, api_client

pytestmark = pytest.mark.django_db

URL = "/api/1.0/service-status/"


def test_shape_with_nothing_to_count() -> None:
    response = api_client().get(URL)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "tasks",
        "workers",
        "worker_tasks",
        "external_workers_arch",
        "external_workers_host_arch",
        "worker_tasks_arch",
    }
    assert body["tasks"]["Worker"] == {"pending": 0, "running": 0}
    assert set(body["tasks"]) == {task_type.value for task_type in TaskType}
    assert body["workers"]["external"] == {"registered": 0, "connected": 0, "idle": 0, "busy": 0}
    assert set(body["workers"]) == {"external", "celery", "signing"}
    assert set(body["worker_tasks"]) == set(BaseTask.task_names(TaskType.WORKER))
    ServiceStatus.model_validate(body)


def test_counts(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    amd64 = {"system:host_architecture": "amd64", "system:architectures": ["amd64", "i386"]}
    playground.create_connected_worker("idle", metadata=amd64)
    busy = playground.create_connected_worker("busy", metadata=amd64)
    playground.create_worker("not-connected")
    playground.create_connected_worker("celery", worker_type="celery", metadata={})
    start_work_request(playground.create_work_request(created_by=user), busy)
    playground.create_work_request(created_by=user)
    playground.create_work_request(
        created_by=user, task_data={"result": True, "host_architecture": "i386"}
    )
    playground.create_work_request(created_by=user, task_type="Server", task_name="noop")

    body = api_client().get(URL).json()

    assert body["tasks"]["Worker"] == {"pending": 2, "running": 1}
    assert body["tasks"]["Server"] == {"pending": 1, "running": 0}
    assert body["worker_tasks"]["noop"] == {"pending": 2, "running": 1}
    assert body["worker_tasks"]["sbuild"] == {"pending": 0, "running": 0}
    assert body["worker_tasks_arch"] == {
        "i386": {"pending": 1, "running": 0},
        "none": {"pending": 1, "running": 1},
    }
    assert body["workers"]["external"] == {"registered": 3, "connected": 2, "idle": 1, "busy": 1}
    assert body["workers"]["celery"] == {"registered": 1, "connected": 1, "idle": 1, "busy": 0}
    assert body["external_workers_host_arch"] == {
        "amd64": {"registered": 2, "connected": 2, "idle": 1, "busy": 1},
        "none": {"registered": 1, "connected": 0, "idle": 0, "busy": 0},
    }
    assert body["external_workers_arch"]["i386"] == {
        "registered": 2,
        "connected": 2,
        "idle": 1,
        "busy": 1,
    }


def test_queries_do_not_grow_with_the_data(playground: Playground, user: User) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api_client().get(URL).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for index in range(10):
        playground.create_worker(f"worker-{index}")
        playground.create_work_request(created_by=user)

    assert queries() == few <= 4
