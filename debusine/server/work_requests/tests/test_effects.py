"""Tests of the effects of transitions: registered hooks, once per transaction, after commit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import transaction
from pytest_django import DjangoCaptureOnCommitCallbacks

from debusine.protocol.work_requests import WorkRequestStatus
from debusine.server.db.models import User
from debusine.server.scheduler import triggers
from debusine.server.work_requests import effects, transitions
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


class RecordingScheduler:
    """Stands in for the scheduler: records what the transitions asked of it."""

    def __init__(self) -> None:
        self.passes = 0
        self.idle: list[tuple[int, bool]] = []
        self.lease_checks: list[float] = []

    def pass_requested(self) -> None:
        self.passes += 1

    def worker_idle(self, worker_id: int, *, notify: bool) -> bool:
        self.idle.append((worker_id, notify))
        return False

    def check_leases_in(self, seconds: float) -> None:
        self.lease_checks.append(seconds)


@pytest.fixture
def recorder() -> Iterator[RecordingScheduler]:
    recorder = RecordingScheduler()
    previous = effects.install_scheduler(recorder)
    yield recorder
    effects.install_scheduler(previous)


def test_the_server_application_installs_the_scheduler() -> None:
    assert isinstance(effects.scheduler(), triggers.SchedulerTriggers)


def test_without_a_scheduler_a_transition_says_so() -> None:
    previous = effects.install_scheduler(None)
    try:
        with pytest.raises(effects.SchedulerNotInstalledError):
            effects.assign_next_work(1)
    finally:
        effects.install_scheduler(previous)


def test_a_pass_is_asked_for_once_per_transaction_after_the_commit(
    playground: Playground,
    user: User,
    recorder: RecordingScheduler,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for _ in range(3):
            transitions.create(
                workspace=playground.workspace,
                created_by=user,
                task_type="Worker",
                task_name="noop",
                task_data={},
            )
        assert recorder.passes == 0
    assert recorder.passes == 1


def test_a_completion_from_the_worker_frees_it_in_the_transaction(
    playground: Playground, user: User, recorder: RecordingScheduler
) -> None:
    worker = playground.create_connected_worker()
    work_request = playground.create_work_request(
        created_by=user, worker=worker, status=WorkRequestStatus.RUNNING
    )

    outcome = transitions.complete_from_worker(worker.pk, work_request.pk, "success", None)

    assert outcome is transitions.Completion.RECORDED
    assert recorder.idle == [(worker.pk, True)]


def test_a_disconnected_worker_running_work_gets_a_lease_check(
    playground: Playground, user: User, recorder: RecordingScheduler, settings: object
) -> None:
    worker = playground.create_connected_worker()
    idle = playground.create_connected_worker("idle")
    playground.create_work_request(
        created_by=user, worker=worker, status=WorkRequestStatus.RUNNING
    )

    transitions.worker_disconnected(worker)
    transitions.worker_disconnected(idle)

    grace = settings.DEBUSINE_WORKER_LEASE_GRACE  # type: ignore[attr-defined]
    assert recorder.lease_checks == [grace + 1]
