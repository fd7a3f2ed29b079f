"""Tests of `debusine-admin list_work_requests`."""

from __future__ import annotations

import yaml
from pytest_django import DjangoAssertNumQueries

from debusine.server.db.models import WorkRequestStatus
from debusine.server.management.tests.helpers import run, run_usage_error
from debusine.testing.playground import Playground


def test_list_newest_first_with_limit_and_status(
    playground: Playground, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    user = playground.create_user("carol")
    worker, _ = playground.create_worker("builder")
    first = playground.create_work_request(created_by=user)
    second = playground.create_work_request(
        created_by=user, task_name="sleep", worker=worker, status=WorkRequestStatus.RUNNING
    )
    third = playground.create_work_request(created_by=user)

    # One query whatever the number of rows (plus the command's savepoint and its release).
    with django_assert_max_num_queries(3):
        lines = run("list_work_requests").splitlines()

    assert lines[0].split()[:3] == ["ID", "WORKSPACE", "TASK"]
    assert [int(line.split()[0]) for line in lines[1:]] == [third.pk, second.pk, first.pk]
    assert lines[2].split()[1:7] == [
        "debusine/System",
        "Worker/sleep",
        "running",
        "-",
        "builder",
        "carol",
    ]

    limited = yaml.safe_load(run("list_work_requests", "--limit", "2", "--yaml"))
    assert [item["id"] for item in limited] == [third.pk, second.pk]

    running = yaml.safe_load(run("list_work_requests", "--status", "running", "--yaml"))
    assert running == [
        {
            "id": second.pk,
            "workspace": "debusine/System",
            "task_type": "Worker",
            "task_name": "sleep",
            "status": "running",
            "result": "",
            "worker": "builder",
            "created_by": "carol",
            "created_at": running[0]["created_at"],
            "started_at": None,
            "completed_at": None,
        }
    ]
    assert running[0]["created_at"].endswith("Z")


def test_list_nothing(db: None) -> None:
    assert run("list_work_requests", "--yaml") == "[]\n"
    assert run("list_work_requests").split() == [
        "ID",
        "WORKSPACE",
        "TASK",
        "STATUS",
        "RESULT",
        "WORKER",
        "CREATED",
        "BY",
        "CREATED",
    ]


def test_list_usage_errors(db: None) -> None:
    run_usage_error("list_work_requests", "--status", "sleeping")
    run_usage_error("list_work_requests", "--limit", "-3")
