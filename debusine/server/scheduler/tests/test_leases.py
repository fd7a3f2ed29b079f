"""Tests of lease expiry: the work of a worker out of touch goes elsewhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from debusine.server.db.models import Token, Worker, WorkRequest
from debusine.server.scheduler.leases import expire_leases
from debusine.server.work_requests.transitions import MAX_AUTOMATIC_RETRIES
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db


def lose_touch(worker: Worker, seconds: int = 3600) -> None:
    assert worker.token_id is not None
    Token.objects.filter(pk=worker.token_id).update(
        last_seen_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_expired_lease_retries_running_and_requeues_pending(playground: Playground) -> None:
    user = playground.create_user()
    worker = playground.create_connected_worker()
    running = playground.create_work_request(created_by=user, worker=worker, status="running")
    pending = playground.create_work_request(created_by=user, worker=worker)
    lose_touch(worker)

    outcome = expire_leases()

    running.refresh_from_db()
    pending.refresh_from_db()
    worker.refresh_from_db()
    assert outcome.workers == [worker.pk]
    assert running.status == "aborted"
    assert running.output_data_json is not None
    assert running.output_data_json["errors"][0]["code"] == "worker-failed"
    retry = running.superseded_by
    assert outcome.retried == [(running.pk, retry.pk)]
    assert (retry.status, retry.worker, retry.task_data) == ("pending", None, running.task_data)
    assert retry.workflow_data_json["retry_count"] == 1
    assert (pending.status, pending.worker) == ("pending", None)
    assert worker.connected_at is None


def test_living_workers_keep_their_work(playground: Playground) -> None:
    user = playground.create_user()
    worker = playground.create_connected_worker()
    running = playground.create_work_request(created_by=user, worker=worker, status="running")
    lose_touch(worker, seconds=10)  # within the 60 s grace

    assert expire_leases().workers == []
    running.refresh_from_db()
    assert (running.status, running.worker) == ("running", worker)


def test_automatic_retries_are_capped(playground: Playground) -> None:
    user = playground.create_user()
    work_request = playground.create_work_request(created_by=user)
    for attempt in range(MAX_AUTOMATIC_RETRIES + 1):
        worker = playground.create_connected_worker(f"w{attempt}")
        WorkRequest.objects.filter(pk=work_request.pk).update(worker=worker, status="running")
        lose_touch(worker)
        outcome = expire_leases()
        if attempt < MAX_AUTOMATIC_RETRIES:
            [(_old, new_id)] = outcome.retried
            work_request = WorkRequest.objects.get(pk=new_id)
        else:
            assert outcome.retried == []
            assert outcome.not_retried == [work_request.pk]
    work_request.refresh_from_db()
    assert work_request.status == "aborted"
    assert not hasattr(work_request, "superseded_by")
