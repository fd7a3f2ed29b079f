"""The `retry-with-delays` event reaction: a failed work request is retried after a delay."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from debusine.protocol.work_requests import TaskType, WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import User, WorkRequest
from debusine.server.work_requests import transitions
from debusine.server.work_requests.transitions import InvalidWorkRequestError, parse_delay
from debusine.server.workflows import orchestration
from debusine.testing.playground import Playground

RETRY = {"on_failure": [{"action": "retry-with-delays", "delays": ["30m", "2d"]}]}


def create(playground: Playground, user: User, **fields: object) -> WorkRequest:
    return transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type=TaskType.WORKER,
        task_name="noop",
        task_data={},
        event_reactions=RETRY,
        allow_server_actions=True,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("delay", "seconds"), [("30m", 1800), ("1h", 3600), ("2d", 172800), ("1w", 604800)]
)
def test_delays(delay: str, seconds: int) -> None:
    assert parse_delay(delay) == timedelta(seconds=seconds)


def test_users_cannot_ask_for_it(playground: Playground, user: User) -> None:
    with pytest.raises(InvalidWorkRequestError, match="not allowed"):
        transitions.create(
            workspace=playground.workspace,
            created_by=user,
            task_type=TaskType.WORKER,
            task_name="noop",
            task_data={},
            event_reactions=RETRY,
        )


def test_bad_delays_are_refused(playground: Playground, user: User) -> None:
    with pytest.raises(InvalidWorkRequestError, match="delays"):
        transitions.create(
            workspace=playground.workspace,
            created_by=user,
            task_type=TaskType.WORKER,
            task_name="noop",
            task_data={},
            event_reactions={"on_failure": [{"action": "retry-with-delays", "delays": ["3x"]}]},
            allow_server_actions=True,
        )


def test_a_failure_is_retried_after_each_delay_then_stands(
    playground: Playground, user: User
) -> None:
    first = create(playground, user)
    before = timezone.now()

    assert transitions.complete(first, WorkRequestResult.FAILURE)

    second = WorkRequest.objects.get(supersedes=first)
    assert (second.status, second.workflow_data_json["retry_count"]) == (
        WorkRequestStatus.BLOCKED,
        1,
    )
    (wait,) = second.dependencies.all()
    assert (wait.task_type, wait.task_name, wait.status) == ("Wait", "delay", "pending")
    until = datetime.fromisoformat(wait.task_data["delay_until"])
    assert timedelta(minutes=30) <= until - before < timedelta(minutes=31)
    assert orchestration.process(wait.pk) == "waiting"

    # Its time comes: the retry becomes runnable; it fails again and waits 2 days.
    wait.task_data = {"delay_until": timezone.now().isoformat()}
    wait.save()
    assert orchestration.process(wait.pk) == "done"
    second.refresh_from_db()
    assert second.status == WorkRequestStatus.PENDING
    assert transitions.complete(second, WorkRequestResult.FAILURE)
    third = WorkRequest.objects.get(supersedes=second)
    assert third.workflow_data_json["retry_count"] == 2
    (wait,) = third.dependencies.all()
    until = datetime.fromisoformat(wait.task_data["delay_until"])
    assert until - timezone.now() > timedelta(days=1, hours=23)

    # Every delay used: the third failure stands.
    transitions.abort(wait)
    third.refresh_from_db()
    assert third.status == WorkRequestStatus.ABORTED
    assert not WorkRequest.objects.filter(supersedes=third).exists()


def test_a_success_is_not_retried(playground: Playground, user: User) -> None:
    work_request = create(playground, user)

    assert transitions.complete(work_request, WorkRequestResult.SUCCESS)

    assert not WorkRequest.objects.filter(supersedes=work_request).exists()


def test_dependants_wait_for_the_retry_instead_of_being_aborted(
    playground: Playground, user: User
) -> None:
    failing = create(playground, user)
    dependant = transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type=TaskType.WORKER,
        task_name="noop",
        task_data={},
        dependencies=[failing],
    )

    assert transitions.complete(failing, WorkRequestResult.ERROR)

    dependant.refresh_from_db()
    retry = WorkRequest.objects.get(supersedes=failing)
    assert dependant.status == WorkRequestStatus.BLOCKED
    assert list(dependant.dependencies.all()) == [retry]
