"""Tests of `debusine-admin create_work_request`."""

from __future__ import annotations

from pathlib import Path

import pytest

from debusine.server.db.models import Scope, WorkRequest, WorkRequestStatus
from debusine.server.management.tests.helpers import run, run_fails, run_usage_error
from debusine.testing.playground import Playground


def test_create_with_defaults(playground: Playground) -> None:
    out = run("create_work_request", "Worker", "noop")

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
        "create_work_request",
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
    out = run("create_work_request", "Worker", "sleep", "--data", "-", stdin="seconds: 5\n")

    assert WorkRequest.objects.get(pk=int(out)).task_data["seconds"] == 5


def test_empty_event_reactions_are_accepted(playground: Playground, tmp_path: Path) -> None:
    reactions = tmp_path / "reactions.yaml"
    reactions.write_text("on_success: []\n")

    out = run("create_work_request", "Worker", "noop", "--event-reactions", str(reactions))

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
    assert run_fails("create_work_request", *args, stdin=stdin).startswith(message)
    assert not WorkRequest.objects.exists()


def test_create_usage_error(db: None) -> None:
    run_usage_error("create_work_request", "Worker")
