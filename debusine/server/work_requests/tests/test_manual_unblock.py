"""
Tests of the manual unblock: a reviewer's notes and decision on a blocked manual-unblock work
request (`transitions.manual_unblock`), and what accepting and rejecting set off.
"""

from __future__ import annotations

from typing import Any

import pytest

from debusine.protocol.work_requests import (
    ManualUnblockAction,
    TaskType,
    WorkRequestResult,
    WorkRequestStatus,
)
from debusine.server.db.models import User, WorkRequest
from debusine.server.db.models.work_requests import UnblockStrategy
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import WorkRequestError
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


def review_step(playground: Playground, user: User, **options: Any) -> WorkRequest:
    """A manual-unblock work request, created as workflows create theirs."""
    return transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type=TaskType.WORKER,
        task_name="noop",
        task_data={"result": True},
        unblock_strategy=UnblockStrategy.MANUAL,
        **options,
    )


def test_a_manual_unblock_work_request_waits_for_its_reviewer(
    playground: Playground, user: User
) -> None:
    alone = review_step(playground, user)
    dependency = playground.create_work_request(created_by=user)
    after = review_step(playground, user, dependencies=[dependency])

    transitions.complete(dependency, WorkRequestResult.SUCCESS)

    for work_request in (alone, after):
        work_request.refresh_from_db()
        assert work_request.status == WorkRequestStatus.BLOCKED
        assert transitions.awaits_manual_unblock(work_request)


def test_notes_alone_are_logged_and_change_nothing_else(
    playground: Playground, user: User
) -> None:
    step = review_step(playground, user)

    transitions.manual_unblock(step, user, notes="looks fine so far")
    transitions.manual_unblock(step, user, notes="second look")

    step.refresh_from_db()
    assert step.status == WorkRequestStatus.BLOCKED
    log = transitions.manual_unblock_log(step)
    assert [(entry["notes"], entry["action"], entry["user_id"]) for entry in log] == [
        ("looks fine so far", None, user.pk),
        ("second look", None, user.pk),
    ]
    assert all(entry["timestamp"] for entry in log)


def test_accept_makes_it_pending_and_its_dependants_wait_for_it(
    playground: Playground, user: User
) -> None:
    step = review_step(playground, user, workflow_data={"display_name": "approve"})
    dependant = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    dependant.dependencies.add(step)

    transitions.manual_unblock(step, user, notes="ship it", action=ManualUnblockAction.ACCEPT)

    step.refresh_from_db()
    assert step.status == WorkRequestStatus.PENDING
    assert step.workflow_data_json["display_name"] == "approve"  # kept beside the log
    assert [entry["action"] for entry in transitions.manual_unblock_log(step)] == ["accept"]
    transitions.complete(step, WorkRequestResult.SUCCESS)
    dependant.refresh_from_db()
    assert dependant.status == WorkRequestStatus.PENDING


def test_accept_needs_every_dependency_finished_well(playground: Playground, user: User) -> None:
    running = playground.create_work_request(created_by=user)
    step = review_step(playground, user, dependencies=[running])

    with pytest.raises(WorkRequestError, match=f"dependencies {running.pk} have not finished"):
        transitions.manual_unblock(step, user, action=ManualUnblockAction.ACCEPT)

    step.refresh_from_db()
    assert step.status == WorkRequestStatus.BLOCKED
    assert transitions.manual_unblock_log(step) == []


def test_reject_aborts_it_and_its_dependants(playground: Playground, user: User) -> None:
    step = review_step(playground, user)
    dependant = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    dependant.dependencies.add(step)

    transitions.manual_unblock(step, user, notes="no", action=ManualUnblockAction.REJECT)

    step.refresh_from_db()
    dependant.refresh_from_db()
    assert step.status == WorkRequestStatus.ABORTED
    assert step.aborted_by == user
    assert step.completed_at is not None
    assert [entry["action"] for entry in transitions.manual_unblock_log(step)] == ["reject"]
    assert dependant.status == WorkRequestStatus.ABORTED


def test_only_blocked_manual_unblock_work_requests_are_reviewed(
    playground: Playground, user: User
) -> None:
    ordinary = playground.create_work_request(created_by=user, status=WorkRequestStatus.BLOCKED)
    with pytest.raises(WorkRequestError, match="not a manual-unblock work request"):
        transitions.manual_unblock(ordinary, user, notes="x")
    step = review_step(playground, user)
    transitions.manual_unblock(step, user, action=ManualUnblockAction.REJECT)
    for action in (None, ManualUnblockAction.ACCEPT, ManualUnblockAction.REJECT):
        with pytest.raises(WorkRequestError, match="is aborted: only blocked"):
            transitions.manual_unblock(step, user, notes="late", action=action)
    step.refresh_from_db()
    assert len(transitions.manual_unblock_log(step)) == 1
    assert transitions.manual_unblock_log(ordinary) == []
