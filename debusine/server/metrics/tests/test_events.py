"""Events recorded in Redis by the scheduler and the middleware, and what a Redis outage does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from debusine.server.db.models import User
from debusine.server.metrics import events, families
from debusine.server.scheduler.passes import run_scheduling_pass
from debusine.server.scheduler.triggers import SchedulerTriggers
from debusine.testing.playground import Playground
from debusine.testing.processes import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def redis_prefix(settings: Any) -> Iterator[str]:
    prefix = f"test-events-{uuid.uuid4().hex[:12]}"
    settings.DEBUSINE_REDIS_KEY_PREFIX = prefix
    yield prefix
    events.flush()
    client = events.redis_client()
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def histogram_counts(family: str) -> dict[tuple[str, ...], float]:
    events.flush()
    (raw,) = events.read_families([family])
    data = events.read_histogram(raw)
    return {labels: sum(buckets.values()) for labels, buckets in data.buckets.items()}


def test_scheduling_passes_are_timed_by_kind(playground: Playground, user: User) -> None:
    worker = playground.create_connected_worker()
    playground.create_work_request(created_by=user)

    run_scheduling_pass()
    run_scheduling_pass(renotify=True)
    assert SchedulerTriggers().worker_idle(worker.pk, notify=False) is False  # already given

    passes = histogram_counts(families.SCHEDULER_PASS_SECONDS)
    assert passes == {("change",): 1, ("fallback",): 1, ("worker",): 1}
    assert histogram_counts(families.DISPATCH_LATENCY_SECONDS) == {("worker",): 1}


def test_values_land_in_the_bucket_of_their_upper_bound() -> None:
    events.observe("debusine_test_seconds", (0.1, 1.0), ("x",), 0.1)
    events.observe("debusine_test_seconds", (0.1, 1.0), ("x",), 0.5)
    events.observe("debusine_test_seconds", (0.1, 1.0), ("x",), 7)
    events.flush()

    (raw,) = events.read_families(["debusine_test_seconds"])
    data = events.read_histogram(raw)
    assert data.buckets == {("x",): {"0.1": 1, "1.0": 1, "+Inf": 1}}
    assert data.sums == {("x",): 7.6}


def test_a_redis_outage_drops_events_without_failing_requests(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(events, "_suspended_until", 0.0)
    monkeypatch.setattr(events, "_last_warning", 0.0)
    events.flush()
    original_url = settings.DEBUSINE_REDIS_URL
    settings.DEBUSINE_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens
    try:
        from django.test import Client

        assert Client().get("/api/1.0/whoami/").status_code == 200
        events.flush()  # fails: the observations are dropped, recording is suspended
        assert "metrics: could not record an event in Redis" in caplog.text
        assert events._suspended_until > time.monotonic()
        assert Client().get("/api/1.0/open-metrics/").status_code == 200
    finally:
        settings.DEBUSINE_REDIS_URL = original_url
    monkeypatch.setattr(events, "_suspended_until", 0.0)
    events.flush()
    (raw,) = events.read_families([families.HTTP_REQUEST_SECONDS])
    # The whoami request's observation was dropped with the failed flush.
    assert not [name for name in raw if b"api-whoami" in name]


def test_observations_are_written_by_the_flush_thread() -> None:
    events.bytes_uploaded(42)
    deadline = time.monotonic() + 10 * events.FLUSH_INTERVAL
    while time.monotonic() < deadline:
        (raw,) = events.read_families([families.UPLOAD_BYTES])
        if raw:
            break
        time.sleep(0.1)
    assert events.read_counter(raw) == {(): 42}


def test_the_periodic_fold_moves_deltas_into_totals(playground: Playground, user: User) -> None:
    from debusine.server.db.models import MetricCount, MetricCountDelta
    from debusine.server.maintenance.jobs import fold_metric_counts

    playground.create_work_request(created_by=user)
    assert MetricCountDelta.objects.exists()

    fold_metric_counts()

    assert not MetricCountDelta.objects.exists()
    pending = MetricCount.objects.get(
        family="work_requests",
        key__task_name="noop",
        key__status="pending",
        key__workspace=playground.workspace.pk,
    )
    assert pending.count == 1
