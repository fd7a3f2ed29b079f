"""Tests of scheduling passes against PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks

from debusine.server.db.models import Token, User, WorkRequest
from debusine.server.scheduler.passes import run_scheduling_pass
from debusine.server.work_requests import transitions
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(playground: Playground) -> User:
    return playground.create_user("alice")


def test_highest_priority_then_oldest_first(playground: Playground, user: User) -> None:
    old = playground.create_work_request(created_by=user)
    urgent = playground.create_work_request(created_by=user, priority_base=5)
    playground.create_work_request(created_by=user)
    worker = playground.create_connected_worker("one")
    playground.create_connected_worker("two")

    result = run_scheduling_pass()

    assert sorted(wr for wr, _ in result.assigned) == sorted([urgent.pk, old.pk])
    urgent.refresh_from_db()
    old.refresh_from_db()
    # The earliest connected worker takes the first work request of the queue.
    assert urgent.worker == worker
    assert old.worker is not None and old.worker != worker


def test_priority_adjustment_counts(playground: Playground, user: User) -> None:
    playground.create_work_request(created_by=user, priority_base=3)
    raised = playground.create_work_request(created_by=user, priority_base=0)
    transitions.set_priority_adjustment(raised, 10)
    playground.create_connected_worker()

    assert [wr for wr, _ in run_scheduling_pass().assigned] == [raised.pk]


def test_only_connected_enabled_living_workers_get_work(
    playground: Playground, user: User
) -> None:
    work_request = playground.create_work_request(created_by=user)
    disconnected = playground.create_connected_worker("disconnected")
    disconnected.connected_at = None
    disconnected.save()
    disabled = playground.create_connected_worker("disabled")
    assert disabled.token is not None
    disabled.token.disable()
    stale = playground.create_connected_worker("stale")
    assert stale.token_id is not None
    Token.objects.filter(pk=stale.token_id).update(
        last_seen_at=timezone.now() - timedelta(seconds=3600)
    )

    assert run_scheduling_pass().assigned == []

    fresh = playground.create_connected_worker("fresh")
    assert run_scheduling_pass().assigned == [(work_request.pk, fresh.pk)]


def test_concurrency_counts_assigned_and_running_work(playground: Playground, user: User) -> None:
    worker = playground.create_connected_worker(concurrency=2)
    playground.create_work_request(created_by=user, worker=worker, status="running")
    waiting = [playground.create_work_request(created_by=user) for _ in range(2)]

    assert run_scheduling_pass().assigned == [(waiting[0].pk, worker.pk)]
    assert run_scheduling_pass().assigned == []


def test_workers_get_only_what_they_can_run(playground: Playground, user: User) -> None:
    sleep = playground.create_work_request(
        created_by=user, task_name="sleep", task_data={"seconds": 1}
    )
    noop = playground.create_work_request(created_by=user)
    playground.create_connected_worker(
        "no-sleep", metadata={"noop:version": 1, "sleep:version": 1, "tasks_denylist": ["noop"]}
    )
    old_noop = playground.create_connected_worker("old", metadata={"noop:version": 0})

    assigned = dict(run_scheduling_pass().assigned)

    assert set(assigned) == {sleep.pk}
    assert noop.pk not in assigned
    assert old_noop.pk not in assigned.values()


def test_static_metadata_overrides_dynamic(playground: Playground, user: User) -> None:
    work_request = playground.create_work_request(created_by=user)
    worker = playground.create_connected_worker()
    worker.set_static_metadata({"tasks_allowlist": ["sleep"]})

    assert run_scheduling_pass().assigned == []

    worker.set_static_metadata({})
    assert run_scheduling_pass().assigned == [(work_request.pk, worker.pk)]


def test_unrunnable_requests_do_not_starve_runnable_ones(
    playground: Playground, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("debusine.server.scheduler.passes.CANDIDATE_PAGE_SIZE", 3)
    for _ in range(7):
        playground.create_work_request(
            created_by=user, task_data={"host_architecture": "arm64"}, priority_base=1
        )
    runnable = playground.create_work_request(created_by=user)
    worker = playground.create_connected_worker(
        metadata={"noop:version": 1, "system:architectures": ["amd64"]}
    )

    result = run_scheduling_pass()

    assert result.assigned == [(runnable.pk, worker.pk)]
    assert result.candidates_seen == 8


def test_tasks_no_idle_worker_runs_are_not_read(playground: Playground, user: User) -> None:
    for _ in range(5):
        playground.create_work_request(
            created_by=user, task_name="sleep", task_data={"seconds": 1}, priority_base=1
        )
    runnable = playground.create_work_request(created_by=user)
    noop_only = playground.create_connected_worker(metadata={"noop:version": 1})

    result = run_scheduling_pass()

    assert result.assigned == [(runnable.pk, noop_only.pk)]
    assert result.candidates_seen == 1
    # Its slot is taken: the next pass reads nothing at all.
    assert run_scheduling_pass().candidates_seen == 0


def test_empty_queue_costs_one_query_whatever_the_idle_workers(
    playground: Playground, user: User
) -> None:
    for index in range(20):
        playground.create_connected_worker(f"idle-{index}")
    # Assigned already: not in the queue any more.
    playground.create_work_request(created_by=user, worker=playground.create_connected_worker())

    with CaptureQueriesContext(connection) as queries:
        result = run_scheduling_pass()
        for_worker = run_scheduling_pass(for_worker=1)

    # Each: the advisory lock, then the idle workers' query, which reads none of them.
    assert len([query for query in queries if "SAVEPOINT" not in query["sql"]]) == 4
    assert (result.idle_workers, result.assigned) == (0, [])
    assert (for_worker.idle_workers, for_worker.assigned) == (0, [])
    # As soon as something waits, a pass reads the workers again and assigns it.
    waiting = playground.create_work_request(created_by=user)
    result = run_scheduling_pass()
    assert result.idle_workers == 20
    assert [work_request for work_request, _worker in result.assigned] == [waiting.pk]


def test_workers_are_notified_after_commit(
    playground: Playground,
    user: User,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    playground.create_work_request(created_by=user)
    worker = playground.create_connected_worker()

    with django_capture_on_commit_callbacks() as callbacks:
        result = run_scheduling_pass()

    assert result.notified_workers == {worker.pk}
    assert len(callbacks) == 1


def test_fallback_pass_renotifies_unfetched_work(playground: Playground, user: User) -> None:
    worker = playground.create_connected_worker()
    playground.create_work_request(created_by=user, worker=worker)

    assert run_scheduling_pass().notified_workers == set()
    assert run_scheduling_pass(renotify=True).notified_workers == {worker.pk}


@pytest.mark.django_db(transaction=True)
def test_concurrent_passes_never_assign_twice(playground: Playground) -> None:
    user = playground.create_user("bob")
    work_requests = [playground.create_work_request(created_by=user) for _ in range(30)]
    for index in range(20):
        playground.create_connected_worker(f"w{index}")
    results: list[list[tuple[int, int]]] = []
    errors: list[BaseException] = []

    def one_pass() -> None:
        try:
            results.append(run_scheduling_pass().assigned)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assigned = [wr for result in results for wr, _ in result]
    assert len(assigned) == 20
    assert len(set(assigned)) == 20
    workers = [worker for result in results for _, worker in result]
    assert len(set(workers)) == 20
    in_database = WorkRequest.objects.filter(
        pk__in=[wr.pk for wr in work_requests], worker__isnull=False
    )
    assert in_database.count() == 20
