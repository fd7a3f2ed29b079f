"""Tests of `GET /api/1.0/open-metrics/`: the format, the values, the cost of a scrape."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import yaml
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from debusine.protocol.work_requests import WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import Collection, User, WorkRequest
from debusine.server.metrics import events, families
from debusine.server.work_requests import transitions
from debusine.testing.playground import Playground

pytestmark = pytest.mark.django_db

URL = "/api/1.0/open-metrics/"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def redis_prefix(settings: Any) -> Iterator[str]:
    """Events of each test in keys of their own, removed afterwards."""
    prefix = f"test-metrics-{uuid.uuid4().hex[:12]}"
    settings.DEBUSINE_REDIS_KEY_PREFIX = prefix
    yield prefix
    events.flush()
    client = events.redis_client()
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def scrape() -> Samples:
    response = Client().get(URL)
    assert response.status_code == 200, response.content
    samples: Samples = {}
    for family in parse_prometheus(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, /, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def matching(
    samples: Samples, name: str, **labels: str
) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return {
        sample_labels: sample_value
        for (sample_name, sample_labels), sample_value in samples.items()
        if sample_name == name and wanted <= sample_labels
    }


def work_requests(
    samples: Samples, status: str, task_name: str = "noop", arch: str = "none"
) -> float:
    return value(
        samples,
        families.WORK_REQUESTS,
        task_type="Worker",
        task_name=task_name,
        host_architecture=arch,
        status=status,
        scope="debusine",
    )


def test_prometheus_text_by_default_and_openmetrics_when_asked() -> None:
    plain = Client().get(URL)
    assert plain.status_code == 200
    assert plain["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in parse_prometheus(plain.content.decode())}
    assert {families.WORK_REQUESTS, families.WORKERS, families.HTTP_REQUEST_SECONDS} <= names

    openmetrics = Client().get(URL, HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert openmetrics.status_code == 200
    assert openmetrics["Content-Type"].startswith("application/openmetrics-text")
    text = openmetrics.content.decode()
    assert text.endswith("# EOF\n")
    parsed = {family.name: family for family in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    # Counters are counters: OpenMetrics names the family without `_total`.
    assert parsed[families.UPLOAD_BYTES].type == "counter"
    assert parsed[families.WORK_REQUEST_QUEUE_SECONDS].type == "histogram"


def test_every_name_is_prefixed_and_no_label_is_an_id() -> None:
    for family in parse_prometheus(Client().get(URL).content.decode()):
        assert family.name.startswith("debusine_")
        for sample in family.samples:
            assert not any(label.endswith("id") for label in sample.labels)
            assert not any(label.startswith("architecture_") for label in sample.labels)


def test_work_requests_by_status_task_and_architecture(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    for _ in range(3):
        playground.create_work_request(created_by=user)
    running = start_work_request(playground.create_work_request(created_by=user))
    done = start_work_request(playground.create_work_request(created_by=user))
    transitions.complete(done, WorkRequestResult.SUCCESS)
    playground.create_work_request(
        created_by=user, task_data={"result": True, "host_architecture": "arm64"}
    )
    playground.create_work_request(
        created_by=user, task_data={"result": True, "host_architecture": "not-an-arch"}
    )

    samples = scrape()

    assert work_requests(samples, "pending") == 3
    assert work_requests(samples, "running") == 1
    assert work_requests(samples, "completed") == 1
    # Every status is present, with 0 when nothing matches.
    assert work_requests(samples, "blocked") == 0
    assert work_requests(samples, "aborted") == 0
    assert work_requests(samples, "pending", arch="arm64") == 1
    assert work_requests(samples, "pending", arch="other") == 1
    # Every registered task is present, even one never used.
    assert work_requests(samples, "pending", task_name="sbuild") == 0

    transitions.complete(running, WorkRequestResult.FAILURE)
    samples = scrape()
    assert work_requests(samples, "running") == 0
    assert work_requests(samples, "completed") == 2


def test_counts_survive_the_fold_and_follow_deletions(playground: Playground, user: User) -> None:
    created = [playground.create_work_request(created_by=user) for _ in range(4)]
    assert work_requests(scrape(), "pending") == 4  # folds the deltas into the totals
    WorkRequest.objects.filter(pk__in=[created[0].pk, created[1].pk]).delete()
    WorkRequest.objects.filter(pk=created[2].pk).update(status=WorkRequestStatus.BLOCKED)

    samples = scrape()

    assert work_requests(samples, "pending") == 1
    assert work_requests(samples, "blocked") == 1
    assert (
        work_requests(samples, "pending")
        == WorkRequest.objects.filter(status=WorkRequestStatus.PENDING, task_name="noop").count()
    )


def test_queue_and_run_time_histograms(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    playground.create_work_request(
        created_by=user, task_data={"result": True, "host_architecture": "arm64"}
    )
    work_request = playground.create_work_request(
        created_by=user,
        task_data={"result": True, "host_architecture": "amd64"},
        created_at=timezone.now() - timedelta(seconds=100),
    )
    work_request = start_work_request(work_request)
    assert work_request.started_at is not None
    queued = (work_request.started_at - work_request.created_at).total_seconds()
    WorkRequest.objects.filter(pk=work_request.pk).update(
        started_at=timezone.now() - timedelta(seconds=4000)
    )
    work_request.refresh_from_db()
    transitions.complete(work_request, WorkRequestResult.SUCCESS)

    samples = scrape()
    labels = {"task_type": "Worker", "task_name": "noop", "host_architecture": "amd64"}
    queue = families.WORK_REQUEST_QUEUE_SECONDS
    assert value(samples, f"{queue}_bucket", **labels, le="60.0") == 0
    assert value(samples, f"{queue}_bucket", **labels, le="120.0") == 1
    assert value(samples, f"{queue}_bucket", **labels, le="+Inf") == 1
    assert value(samples, f"{queue}_count", **labels) == 1
    assert value(samples, f"{queue}_sum", **labels) == pytest.approx(queued, abs=1e-3)
    run = families.WORK_REQUEST_RUN_SECONDS
    assert value(samples, f"{run}_bucket", **labels, le="3600.0") == 0
    assert value(samples, f"{run}_bucket", **labels, le="7200.0") == 1
    assert value(samples, f"{run}_count", **labels) == 1
    work_request.refresh_from_db()
    assert work_request.started_at is not None and work_request.completed_at is not None
    ran = (work_request.completed_at - work_request.started_at).total_seconds()
    assert value(samples, f"{run}_sum", **labels) == pytest.approx(ran, abs=1e-3)
    # Tasks and architectures of existing work requests are present before they ran, with 0.
    assert value(samples, f"{run}_count", **{**labels, "host_architecture": "arm64"}) == 0
    assert (
        value(samples, f"{queue}_bucket", **{**labels, "host_architecture": "arm64"}, le="+Inf")
        == 0
    )


@pytest.mark.parametrize(
    ("seconds", "bucket"), [(60, "60.0"), (60.5, "120.0"), (0, "1.0"), (100000, "+Inf")]
)
def test_database_buckets_match_the_exported_bounds(
    playground: Playground, user: User, seconds: float, bucket: str
) -> None:
    work_request = playground.create_work_request(created_by=user)
    WorkRequest.objects.filter(pk=work_request.pk).update(
        status=WorkRequestStatus.RUNNING,
        started_at=work_request.created_at + timedelta(seconds=seconds),
    )

    samples = scrape()

    queue = matching(samples, f"{families.WORK_REQUEST_QUEUE_SECONDS}_bucket", task_name="noop")
    reached = [dict(labels)["le"] for labels, count in queue.items() if count == 1]
    assert min(reached, key=lambda le: float("inf") if le == "+Inf" else float(le)) == bucket
    # The events recorded in Redis use the same buckets.
    assert events.bucket_of(seconds, families.QUEUE_SECONDS_BUCKETS) == bucket


def test_workers_by_state_type_and_architecture(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    metadata = {"system:host_architecture": "amd64", "system:architectures": ["amd64", "i386"]}
    playground.create_connected_worker("idle", metadata=metadata, concurrency=2)
    busy = playground.create_connected_worker("busy", metadata=metadata)
    start_work_request(playground.create_work_request(created_by=user), busy)
    playground.create_worker("disabled", enabled=False)
    playground.create_worker("disconnected")
    playground.create_connected_worker("celery", worker_type="celery", metadata={})

    samples = scrape()

    def workers(state: str, host: str = "amd64", worker_type: str = "external") -> float:
        return value(
            samples,
            families.WORKERS,
            worker_type=worker_type,
            worker_pool="none",
            host_architecture=host,
            state=state,
        )

    assert workers("idle") == 1
    assert workers("busy") == 1
    assert workers("disabled") == 0
    assert workers("disabled", host="none") == 1
    assert workers("disconnected", host="none") == 1
    assert workers("idle", host="none", worker_type="celery") == 1
    assert workers("idle", worker_type="signing") == 0
    arches = families.WORKER_ARCHITECTURES
    assert value(samples, arches, architecture="i386", worker_type="external", state="idle") == 1
    assert value(samples, arches, architecture="i386", worker_type="external", state="busy") == 1
    slots = families.WORKER_SLOTS
    assert value(samples, slots, worker_type="external", worker_pool="none", state="used") == 1
    assert value(samples, slots, worker_type="external", worker_pool="none", state="free") == 2


def test_artifacts_collections_stores_users_tokens_workspaces(
    playground: Playground, user: User, user_token: str
) -> None:
    playground.create_artifact(category="debian:source-package")
    playground.create_artifact(category="debian:source-package")
    playground.create_artifact(category="debian:upload")
    Collection.objects.create(
        name="bookworm", category="debian:suite", workspace=playground.workspace
    )
    playground.create_workspace("secret")
    playground.create_user("bob", is_active=False)
    playground.create_file_store("memory", max_size=1000)

    samples = scrape()

    artifacts = families.ARTIFACTS
    assert value(samples, artifacts, category="debian:source-package", scope="debusine") == 2
    assert value(samples, artifacts, category="debian:upload", scope="debusine") == 1
    assert value(samples, families.COLLECTIONS, category="debian:suite", scope="debusine") >= 1
    assert value(samples, families.FILE_STORE_MAX_SIZE, backend="Memory", name="memory") == 1000
    assert value(samples, families.FILE_STORE_SIZE, backend="Memory", name="memory") == 0
    assert (
        value(samples, families.USERS, active="false")
        == User.objects.filter(is_active=False).count()
    )
    assert (
        value(samples, families.USERS, active="true")
        == User.objects.filter(is_active=True).count()
    )
    assert value(samples, families.TOKENS, kind="user", enabled="true") == 1
    assert value(samples, families.TOKENS, kind="worker", enabled="false") == 0
    assert value(samples, families.WORKSPACES, scope="debusine", private="true") >= 1


def test_request_latency_and_upload_events_are_recorded() -> None:
    client = Client()
    for _ in range(3):
        assert client.get("/api/1.0/whoami/").status_code == 200
    events.bytes_uploaded(1234)

    samples = scrape()

    requests = f"{families.HTTP_REQUEST_SECONDS}_count"
    assert value(samples, requests, endpoint="api-whoami", method="GET") == 3
    # Known routes and their methods are present before anyone calls them.
    assert value(samples, requests, endpoint="api-work-requests", method="POST") == 0
    assert value(samples, f"{families.UPLOAD_BYTES}_total") == 1234
    for queue in families.CELERY_QUEUES:
        assert value(samples, families.CELERY_QUEUE_LENGTH, queue=queue) == 0


def test_celery_queue_length_counts_waiting_messages(redis_prefix: str) -> None:
    client = events.redis_client()
    client.rpush(f"{redis_prefix}:celery:scheduler", "a", "b")
    client.rpush(f"{redis_prefix}:celery:celery\x06\x163", "c")

    samples = scrape()

    assert value(samples, families.CELERY_QUEUE_LENGTH, queue="scheduler") == 2
    assert value(samples, families.CELERY_QUEUE_LENGTH, queue="celery") == 1


def test_scrape_queries_do_not_grow_with_the_data(
    playground: Playground, user: User, start_work_request: Callable[..., WorkRequest]
) -> None:
    def queries_of_one_scrape() -> int:
        with CaptureQueriesContext(connection) as queries:
            scrape()
        return len([q for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]])

    few = queries_of_one_scrape()
    for index in range(20):
        playground.create_worker(f"worker-{index}")
        work_request = playground.create_work_request(created_by=user)
        if index % 2:
            start_work_request(work_request)
        playground.create_artifact(category=f"test:category-{index % 3}")
        playground.create_workspace(f"workspace-{index}")
    many = queries_of_one_scrape()

    assert many == few
    assert many <= 7  # 6, plus one for the dynamic worker pools (issue 17)


def test_metrics_token_when_configured(settings: Any) -> None:
    settings.DEBUSINE_METRICS_TOKEN = "s3cret"

    refused = Client().get(URL)
    wrong = Client().get(URL, HTTP_AUTHORIZATION="Bearer nope")
    accepted = Client().get(URL, HTTP_AUTHORIZATION="Bearer s3cret")

    assert refused.status_code == 401
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["title"] == "Metrics token required"
    assert wrong.status_code == 401
    assert accepted.status_code == 200


def test_only_safe_methods() -> None:
    assert Client().post(URL).status_code == 405


def test_worker_pools(playground: Playground) -> None:
    from debusine.server.db.models import (
        Asset,
        AssetCategory,
        WorkerPool,
        WorkerPoolStatistics,
    )

    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={"provider_type": "local", "name": "here", "configuration": {}, "credentials": {}},
    )
    pool = WorkerPool.objects.create(
        name="spare",
        provider_account=account,
        architectures=["amd64"],
        specifications={"provider_type": "local", "api_url": "http://127.0.0.1:1/api"},
        limits={"max_active_instances": 3},
        counters={"launches": 4, "launch_failures": 1, "terminated:idle": 2},
    )
    now = timezone.now()
    worker = playground.create_connected_worker("spare-001")
    worker.worker_pool = pool
    worker.instance_created_at = now - timedelta(seconds=100)
    worker.save()
    WorkerPoolStatistics.objects.create(
        worker_pool=pool,
        started_at=now - timedelta(seconds=60),
        ended_at=now - timedelta(seconds=10),
        runtime_seconds=50,
        reason="idle",
    )

    samples = scrape()

    instances = families.WORKER_POOL_INSTANCES
    assert value(samples, instances, worker_pool="spare", state="running") == 1
    assert value(samples, instances, worker_pool="spare", state="booting") == 0
    assert value(samples, families.WORKER_POOL_MAX_INSTANCES, worker_pool="spare") == 3
    runtime = value(samples, families.WORKER_POOL_RUNTIME_SECONDS, worker_pool="spare")
    if now.day != 1 or now.hour != 0:  # the live instance started this month
        # 50 s ended + about 100 s live (the database's now() is the transaction's start).
        assert 140 <= runtime < 200
    assert value(samples, families.WORKER_POOL_LAUNCHES + "_total", worker_pool="spare") == 4
    assert (
        value(samples, families.WORKER_POOL_LAUNCH_FAILURES + "_total", worker_pool="spare") == 1
    )
    terminations = families.WORKER_POOL_TERMINATIONS + "_total"
    assert value(samples, terminations, worker_pool="spare", reason="idle") == 2
    assert value(samples, terminations, worker_pool="spare", reason="leaked") == 0
    assert (
        value(
            samples,
            families.WORKERS,
            worker_type="external",
            worker_pool="spare",
            host_architecture="none",
            state="idle",
        )
        == 1
    )


def test_worker_pool_boot_and_queue_histograms(playground: Playground) -> None:
    from debusine.server.db.models import Asset, AssetCategory, WorkerPool
    from debusine.server.management.tests.helpers import run
    from debusine.server.worker_pools.provisioner import run_provisioner_pass
    from debusine.server.worker_pools.tests.cloud import CloudDouble
    from debusine.server.worker_pools.tests.test_provisioner import burst, register, start

    account = Asset.objects.create(
        category=AssetCategory.CLOUD_PROVIDER_ACCOUNT,
        data={"provider_type": "local", "name": "here", "configuration": {}, "credentials": {}},
    )
    pool = WorkerPool.objects.create(
        name="burst",
        provider_account=account,
        architectures=["arm64", "amd64"],
        specifications={"provider_type": "local", "api_url": "http://127.0.0.1:1/api"},
        limits={"max_active_instances": 1},
    )
    cloud = CloudDouble()
    [work_request] = burst(playground, 1)
    run_provisioner_pass(provider_factory=lambda _pool: cloud)
    worker = pool.workers.get()
    # It booted in 45 s.
    worker.instance_created_at = timezone.now() - timedelta(seconds=45)
    worker.save()
    register(worker)
    for _ in range(2):  # counted once, however many passes see it
        run_provisioner_pass(provider_factory=lambda _pool: cloud)
    WorkRequest.objects.filter(pk=work_request.pk).update(
        created_at=timezone.now() - timedelta(seconds=200)
    )
    work_request.refresh_from_db()
    start(work_request, worker)

    samples = scrape()

    boot = families.WORKER_POOL_BOOT_SECONDS
    assert value(samples, boot + "_count", worker_pool="burst", architecture="arm64") == 1
    assert (
        value(samples, boot + "_bucket", worker_pool="burst", architecture="arm64", le="30.0") == 0
    )
    assert (
        value(samples, boot + "_bucket", worker_pool="burst", architecture="arm64", le="60.0") == 1
    )
    assert 45 <= value(samples, boot + "_sum", worker_pool="burst", architecture="arm64") < 50
    assert value(samples, boot + "_count", worker_pool="burst", architecture="amd64") == 0
    queue = families.WORKER_POOL_QUEUE_SECONDS
    # The work request has no host architecture.
    assert value(samples, queue + "_count", worker_pool="burst", architecture="none") == 1
    assert (
        value(samples, queue + "_bucket", worker_pool="burst", architecture="none", le="120.0")
        == 0
    )
    assert (
        value(samples, queue + "_bucket", worker_pool="burst", architecture="none", le="300.0")
        == 1
    )

    shown = yaml.safe_load(run("worker_pool", "show", "burst", "--yaml"))
    assert shown["boot_to_ready_seconds"]["count"] == 1
    assert shown["boot_to_ready_seconds"]["p50"] == "<= 60"
    assert shown["queue_to_start_seconds"]["count"] == 1
    assert shown["queue_to_start_seconds"]["p90"] == "<= 300"
