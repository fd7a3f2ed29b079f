"""Tests of `debusine-admin work_request create|list`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pytest_django import DjangoAssertNumQueries

from debusine.server.db.models import Scope, WorkRequest, WorkRequestStatus
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


def test_create_with_defaults(playground: Playground) -> None:
    out = run("work_request", "create", "Worker", "noop")

    work_request = WorkRequest.objects.get()
    assert out == f"{work_request.pk}\n"
    assert work_request.workspace == playground.workspace
    assert work_request.created_by.username == "_system"
    assert (work_request.task_type, work_request.task_name) == ("Worker", "noop")
    assert work_request.status == WorkRequestStatus.PENDING


def test_create_with_data_from_file_in_another_workspace(
    playground: Playground, tmp_path: Path
) -> None:
    user = playground.create_user("carol")
    workspace = playground.create_workspace("team", scope=Scope.objects.create(name="other"))
    data = tmp_path / "data.yaml"
    data.write_text("result: false\n")

    out = run(
        "work_request",
        "create",
        "Worker",
        "noop",
        "--created-by",
        "carol",
        "--workspace",
        "other/team",
        "--data",
        str(data),
    )

    work_request = WorkRequest.objects.get(pk=int(out))
    assert (work_request.workspace, work_request.created_by) == (workspace, user)
    assert work_request.task_data["result"] is False


def test_create_with_data_from_stdin(playground: Playground) -> None:
    out = run("work_request", "create", "Worker", "sleep", "--data", "-", stdin="seconds: 5\n")

    assert WorkRequest.objects.get(pk=int(out)).task_data["seconds"] == 5


def test_empty_event_reactions_are_accepted(playground: Playground, tmp_path: Path) -> None:
    reactions = tmp_path / "reactions.yaml"
    reactions.write_text("on_success: []\n")

    out = run("work_request", "create", "Worker", "noop", "--event-reactions", str(reactions))

    assert WorkRequest.objects.filter(pk=int(out)).exists()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["Nonsense", "noop"], None, "unknown task type 'Nonsense': expected one of "),
        (["Worker", "no-such-task"], None, "Cannot create work request: "),
        (["Worker", "sleep"], None, "Cannot create work request: "),
        (["Worker", "noop", "--data", "-"], "result: [1", "invalid YAML in -: "),
        (["Worker", "noop", "--data", "-"], "- 1\n", "--data - must contain a YAML mapping"),
        (
            ["Worker", "noop", "--data", "-"],
            "result: 2024-01-01\n",
            "--data - must hold plain JSON-compatible data",
        ),
        (["Worker", "noop", "--data", "-"], "unexpected: 1\n", "Cannot create work request: "),
        (
            ["Worker", "noop", "--event-reactions", "-"],
            "on_success:\n- action: send-notification\n  channel: nowhere\n",
            "Cannot create work request: ",
        ),
        (["Worker", "noop", "--created-by", "ghost"], None, "user 'ghost' does not exist"),
        (
            ["Worker", "noop", "--workspace", "nope"],
            None,
            "workspace 'nope' does not exist in scope 'debusine'",
        ),
        (
            ["Worker", "noop", "--data", "-", "--event-reactions", "-"],
            None,
            "--data and --event-reactions cannot both read stdin",
        ),
    ],
)
def test_create_errors_store_nothing(
    playground: Playground, args: list[str], stdin: str | None, message: str
) -> None:
    assert run_fails("work_request", "create", *args, stdin=stdin).startswith(message)
    assert not WorkRequest.objects.exists()


def test_create_usage_error(db: None) -> None:
    run_usage_error("work_request", "create", "Worker")


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
        lines = run("work_request", "list").splitlines()

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

    limited = yaml.safe_load(run("work_request", "list", "--limit", "2", "--yaml"))
    assert [item["id"] for item in limited] == [third.pk, second.pk]

    running = yaml.safe_load(run("work_request", "list", "--status", "running", "--yaml"))
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
    assert run("work_request", "list", "--yaml") == "[]\n"
    assert run("work_request", "list").split() == [
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
    run_usage_error("work_request", "list", "--status", "sleeping")
    run_usage_error("work_request", "list", "--limit", "-3")
