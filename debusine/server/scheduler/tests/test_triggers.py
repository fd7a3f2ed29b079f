"""Tests of what asks for a scheduling pass, and where the pass runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection
from pytest_django import DjangoCaptureOnCommitCallbacks

from debusine.server.db.models import User, WorkRequest
from debusine.server.scheduler import triggers
from debusine.server.scheduler.passes import SCHEDULER_LOCK_KEY
from debusine.server.work_requests import effects, transitions
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_pass_queued(settings: object) -> Iterator[None]:
    """
    A "pass queued" flag of this test's own (parallel test processes share the run's Redis
    prefix), and no Celery message left behind (no scheduler reads this run's queue).
    """
    prefix = settings.DEBUSINE_REDIS_KEY_PREFIX  # type: ignore[attr-defined]
    settings.DEBUSINE_REDIS_KEY_PREFIX = f"{prefix}-{uuid.uuid4().hex}"  # type: ignore[attr-defined]
    keys = [triggers.pass_queued_key(), f"{prefix}:celery:scheduler"]
    yield
    triggers.redis_client().delete(*keys)


def create_noop(playground: Playground, user: User) -> WorkRequest:
    return transitions.create(
        workspace=playground.workspace,
        created_by=user,
        task_type="Worker",
        task_name="noop",
        task_data={},
    )


def test_a_creation_asks_once_per_transaction(
    playground: Playground,
    user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        for _ in range(3):
            create_noop(playground, user)

    assert callbacks == [effects.scheduling_pass_after_commit]


def test_the_pass_runs_in_process_when_no_other_pass_runs(
    playground: Playground,
    user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    no_pass_queued: None,
) -> None:
    worker = playground.create_connected_worker()

    with django_capture_on_commit_callbacks(execute=True):
        work_request = create_noop(playground, user)

    work_request.refresh_from_db()
    assert work_request.worker == worker
    # Nothing was queued for the scheduler process.
    assert triggers.redis_client().get(triggers.pass_queued_key()) is None


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_gets_the_pass_while_another_one_runs(
    playground: Playground, no_pass_queued: None
) -> None:
    user = playground.create_user("busy")
    playground.create_connected_worker()
    parameters = connection.get_connection_params()
    # Another process in the middle of a pass: it holds the scheduler's lock.
    with psycopg.connect(**parameters) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEDULER_LOCK_KEY])

        work_request = create_noop(playground, user)  # autocommit: its callback runs now

        work_request.refresh_from_db()
        assert work_request.worker is None
        assert triggers.redis_client().get(triggers.pass_queued_key()) is not None


def test_in_process_passes_can_be_turned_off(
    playground: Playground,
    user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    settings: object,
    no_pass_queued: None,
) -> None:
    settings.DEBUSINE_SCHEDULER_PASS_IN_PROCESS = False  # type: ignore[attr-defined]
    playground.create_connected_worker()

    with django_capture_on_commit_callbacks(execute=True):
        work_request = create_noop(playground, user)

    work_request.refresh_from_db()
    assert work_request.worker is None
    assert triggers.redis_client().get(triggers.pass_queued_key()) is not None
