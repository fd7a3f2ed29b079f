"""
Tests of the transitions that have two implementations (the ORM's and the hot path's SQL):
both make the same change. Most transitions are tested through their callers (the API, the
scheduler, leases, admin commands); these pin down what the fast paths promise.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import debusine
from debusine.protocol.work_requests import WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import User, WorkRequest
from debusine.server.work_requests import transitions
from debusine.server.work_requests.worker_tokens import WorkerCaller
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db

COMPARED_FIELDS = ("status", "result", "worker_id", "output_data_json", "aborted_by_id")


def state(work_request: WorkRequest) -> dict[str, object]:
    work_request.refresh_from_db()
    values: dict[str, object] = {name: getattr(work_request, name) for name in COMPARED_FIELDS}
    values["has started_at"] = work_request.started_at is not None
    values["has completed_at"] = work_request.completed_at is not None
    return values


@pytest.mark.parametrize("result", ["success", "failure", "error", "skipped"])
def test_both_completions_make_the_same_change(
    playground: Playground,
    user: User,
    start_work_request: Callable[..., WorkRequest],
    result: str,
) -> None:
    worker, _key = playground.create_worker()
    worker.concurrency = 2
    worker.save()
    by_orm = start_work_request(playground.create_work_request(created_by=user), worker)
    by_sql = start_work_request(playground.create_work_request(created_by=user), worker)
    output = {"runtime_statistics": {"duration": 3}}

    assert transitions.complete(by_orm, result, output)
    outcome = transitions.complete_from_worker(worker.pk, by_sql.pk, result, output)

    assert outcome is transitions.Completion.RECORDED
    assert state(by_orm) == state(by_sql)
    assert state(by_sql)["status"] == WorkRequestStatus.COMPLETED
    # Neither records a second outcome.
    assert not transitions.complete(by_orm, WorkRequestResult.ERROR)
    again = transitions.complete_from_worker(worker.pk, by_sql.pk, "error", None)
    assert again is transitions.Completion.STALE
    assert state(by_orm)["result"] == state(by_sql)["result"] == result


def test_both_completions_unblock_dependants_alike(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    worker, _key = playground.create_worker()
    dependants = []
    for complete in ("orm", "sql"):
        work_request = start_work_request(playground.create_work_request(created_by=user), worker)
        dependant = playground.create_work_request(
            created_by=user, status=WorkRequestStatus.BLOCKED
        )
        dependant.dependencies.add(work_request)
        if complete == "orm":
            transitions.complete(work_request, "success")
        else:
            transitions.complete_from_worker(worker.pk, work_request.pk, "success", None)
        dependant.refresh_from_db()
        dependants.append(dependant.status)
    assert dependants == [WorkRequestStatus.PENDING, WorkRequestStatus.PENDING]


def test_completion_reports_of_others_change_nothing(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    worker, _key = playground.create_worker("one")
    other, _key = playground.create_worker("two")
    work_request = start_work_request(playground.create_work_request(created_by=user), worker)

    assert (
        transitions.complete_from_worker(other.pk, work_request.pk, "success", None)
        is transitions.Completion.NOT_ASSIGNED
    )
    assert (
        transitions.complete_from_worker(worker.pk, work_request.pk + 1000, "success", None)
        is transitions.Completion.NOT_FOUND
    )
    assert state(work_request)["status"] == WorkRequestStatus.RUNNING


def test_start_next_restarts_the_lost_work_of_a_restarted_worker(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    worker, _key = playground.create_worker()
    lost = start_work_request(playground.create_work_request(created_by=user), worker)
    caller = WorkerCaller(worker.pk, worker.name, worker.concurrency)

    # Asking for work while running as much as it may: it restarted.
    transitions.start_next(caller)

    lost.refresh_from_db()
    assert lost.status == WorkRequestStatus.ABORTED
    assert lost.output_data_json is not None
    assert lost.output_data_json["errors"][0]["code"] == "worker-failed"
    assert lost.superseded_by.status == WorkRequestStatus.PENDING


def test_take_work_from_workers(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    worker, _key = playground.create_worker()
    running = start_work_request(playground.create_work_request(created_by=user), worker)
    pending = playground.create_work_request(created_by=user)
    transitions.assign([(pending.pk, worker.pk)])

    taken = transitions.take_work_from_workers([worker.pk], lambda w: f"worker {w} is gone")

    assert taken.requeued == [pending.pk]
    assert [old for old, _new in taken.retried] == [running.pk]
    running.refresh_from_db()
    assert running.output_data_json is not None
    assert running.output_data_json["errors"] == [
        {"code": "worker-failed", "message": f"worker {worker.pk} is gone"}
    ]
    pending.refresh_from_db()
    assert pending.worker_id is None and pending.status == WorkRequestStatus.PENDING


# Server code names work request statuses and results through the enumerations: string
# literals of them appear only in migrations (and tests, which check the wire's values).
STATUS_LITERAL = re.compile(
    r"""['"](pending|running|completed|aborted|blocked|success|failure)['"]"""
)
#: Lines naming other vocabularies that share those words (not work request statuses).
OTHER_VOCABULARIES = {
    "metrics/families.py": "WORKER_POOL_INSTANCE_STATES",  # a pool instance's state
    "worker_pools/providers/aws.py": "instance-state-name",  # EC2's instance states
}


def node_line(node: ast.AST) -> int:
    return int(getattr(node, "lineno", 1))


def test_server_code_names_statuses_through_the_enumerations() -> None:
    root = Path(debusine.__file__).parent / "server"
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if {"tests", "migrations"} & set(path.relative_to(root).parts):
            continue
        source = path.read_text()
        lines = source.splitlines()
        marker = OTHER_VOCABULARIES.get(str(path.relative_to(root)))
        for node in ast.walk(ast.parse(source)):
            if marker is not None and marker in lines[node_line(node) - 1]:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in STATUS_LITERAL.finditer(repr(node.value)):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: {match.group()}")
                if node.value in {"pending", "running", "completed", "aborted", "blocked"}:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    assert offenders == []
