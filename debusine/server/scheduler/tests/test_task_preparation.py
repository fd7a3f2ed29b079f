"""
Tests of what a scheduling pass does for tasks that need building: `can_run_on` decides which
workers may take them, and dynamic data (lookups) is computed before they are assigned.

The tasks here are test-only classes (registered under names no real task uses).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from debusine.server.collections import CollectionManager
from debusine.server.db.models import Collection, User, WorkRequest
from debusine.server.scheduler.passes import run_scheduling_pass
from debusine.tasks import BaseDynamicTaskData, BaseTask, BaseTaskData, LookupResolver, TaskType
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


class EnvironmentLookupData(BaseTaskData):
    environment: str


class EnvironmentLookupDynamicData(BaseDynamicTaskData):
    environment_id: int | None = None


class SchedulerTestEnvironmentTask(BaseTask[EnvironmentLookupData]):
    """Resolves its environment at assignment, like the Debian tasks."""

    TASK_TYPE = TaskType.WORKER
    TASK_NAME = "scheduler_test_environment"
    TASK_VERSION = 1
    TASK_DATA_MODEL = EnvironmentLookupData
    TASK_DYNAMIC_DATA_MODEL = EnvironmentLookupDynamicData

    def compute_dynamic_data(self, resolver: LookupResolver) -> BaseDynamicTaskData | None:
        found = resolver.lookup_single(
            self.data.environment,
            expect_type="artifact",
            default_category="debian:environments",
        )
        return EnvironmentLookupDynamicData(environment_id=found.artifact)


class SchedulerTestToolTask(BaseTask[BaseTaskData]):
    """Runs only where the worker reports its tool."""

    TASK_TYPE = TaskType.WORKER
    TASK_NAME = "scheduler_test_tool"
    TASK_VERSION = 1
    TASK_DATA_MODEL = BaseTaskData

    def can_run_on(self, worker_metadata: Mapping[str, Any]) -> bool:
        return worker_metadata.get("scheduler_test_tool:available") is True


VERSIONS = {
    "noop:version": 1,
    "scheduler_test_environment:version": 1,
    "scheduler_test_tool:version": 1,
}


@pytest.fixture
def user(playground: Playground) -> User:
    return playground.create_user("alice")


def environment_request(playground: Playground, user: User, codename: str) -> WorkRequest:
    return playground.create_work_request(
        created_by=user,
        task_name="scheduler_test_environment",
        task_data={"environment": f"debian/match:codename={codename}"},
    )


def test_lookup_that_matches_nothing_ends_the_work_request_as_error(
    playground: Playground, user: User
) -> None:
    broken = environment_request(playground, user, "bookworm")
    after = playground.create_work_request(created_by=user)
    worker = playground.create_connected_worker(metadata=VERSIONS)

    result = run_scheduling_pass()

    broken.refresh_from_db()
    assert (broken.status, broken.result, broken.worker) == ("completed", "error", None)
    assert broken.output_data_json is not None
    [error] = broken.output_data_json["errors"]
    assert error["code"] == "configure-failed"
    assert "'debian/match:codename=bookworm' matched nothing" in error["message"]
    # The worker stayed free for the next work request.
    assert result.assigned == [(after.pk, worker.pk)]
    assert result.failed == [broken.pk]


def test_resolved_lookup_is_stored_as_dynamic_data(playground: Playground, user: User) -> None:
    collection = Collection.objects.create(
        name="debian", category="debian:environments", workspace=playground.workspace
    )
    tarball = playground.create_artifact(
        category="debian:system-tarball", data={"codename": "bookworm", "architecture": "amd64"}
    )
    CollectionManager.for_collection(collection).add_artifact(tarball)
    work_request = environment_request(playground, user, "bookworm")
    worker = playground.create_connected_worker(metadata=VERSIONS)

    assert run_scheduling_pass().assigned == [(work_request.pk, worker.pk)]

    work_request.refresh_from_db()
    assert work_request.dynamic_task_data is not None
    assert work_request.dynamic_task_data["environment_id"] == tarball.pk
    # What the worker gets validates against the task's dynamic data model.
    SchedulerTestEnvironmentTask(work_request.task_data, work_request.dynamic_task_data)


def test_lookups_wait_until_a_worker_can_take_the_work_request(
    playground: Playground, user: User
) -> None:
    work_request = environment_request(playground, user, "bookworm")
    playground.create_connected_worker(metadata={"noop:version": 1})

    run_scheduling_pass()

    work_request.refresh_from_db()
    assert (work_request.status, work_request.worker) == ("pending", None)


def test_invalid_task_data_ends_as_configure_failed(playground: Playground, user: User) -> None:
    # Stored directly: creation through the API would have refused it.
    work_request = playground.create_work_request(
        created_by=user, task_name="scheduler_test_environment", task_data={"environment": 3}
    )
    playground.create_connected_worker(metadata=VERSIONS)

    run_scheduling_pass()

    work_request.refresh_from_db()
    assert work_request.result == "error"
    assert work_request.output_data_json is not None
    assert work_request.output_data_json["errors"][0]["code"] == "configure-failed"


def test_can_run_on_picks_the_worker(playground: Playground, user: User) -> None:
    work_request = playground.create_work_request(
        created_by=user, task_name="scheduler_test_tool", task_data={}
    )
    playground.create_connected_worker("without", metadata=VERSIONS)

    assert run_scheduling_pass().assigned == []

    equipped = playground.create_connected_worker(
        "with", metadata={**VERSIONS, "scheduler_test_tool:available": True}
    )
    assert run_scheduling_pass().assigned == [(work_request.pk, equipped.pk)]


def test_noop_needs_no_extra_query(playground: Playground, user: User) -> None:
    work_request = playground.create_work_request(created_by=user)
    playground.create_connected_worker(metadata=VERSIONS)

    with CaptureQueriesContext(connection) as queries:
        assert len(run_scheduling_pass().assigned) == 1

    # Advisory lock, idle workers, one page of candidates, the assignment: nothing per task.
    statements = [query["sql"] for query in queries.captured_queries]
    assert len([sql for sql in statements if "SAVEPOINT" not in sql]) == 4, statements
    assert not any(f'"db_workrequest"."id" = {work_request.pk}' in sql for sql in statements)
