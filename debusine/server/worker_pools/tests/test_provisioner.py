"""The provisioner's allocation rules, pass by pass, on an in-memory cloud."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from debusine.server.db.models import (
    ScopeWorkerPoolLimits,
    Token,
    User,
    Worker,
    WorkerPool,
    WorkerPoolStatistics,
    WorkRequest,
    WorkRequestStatus,
)
from debusine.server.db.models.worker_pools import scope_budgets
from debusine.server.scheduler.passes import run_scheduling_pass
from debusine.server.worker_pools.provisioner import PassReport, run_provisioner_pass
from debusine.server.worker_pools.tests.cloud import CloudDouble
from debusine.testing.playground import Playground

MakePool = Callable[..., WorkerPool]


def provision(cloud: CloudDouble, **kwargs: Any) -> PassReport:
    return run_provisioner_pass(provider_factory=lambda _pool: cloud, **kwargs)


def burst(
    playground: Playground, count: int, task_data: dict[str, Any] | None = None
) -> list[WorkRequest]:
    user = User.objects.filter(username="submitter").first() or playground.create_user("submitter")
    return [
        playground.create_work_request(
            created_by=user, task_name="sleep", task_data=task_data or {"seconds": 1}
        )
        for _ in range(count)
    ]


def register(worker: Worker, *, connected: bool = True) -> Worker:
    """What the worker's first contact does: its own token, the activation token used."""
    worker.refresh_from_db()
    token, _key = Token.objects.create_with_key(enabled=True)
    activation = worker.activation_token
    worker.token = token
    worker.activation_token = None
    worker.registered_at = timezone.now()
    worker.dynamic_metadata = {"sleep:version": 1, "noop:version": 1}
    worker.connected_at = timezone.now() if connected else None
    worker.save()
    worker.renew_lease()
    if activation is not None:
        activation.delete()
    return worker


def pool_workers(pool: WorkerPool) -> list[Worker]:
    return list(pool.workers.filter(instance_created_at__isnull=False).order_by("name"))


def start(work_request: WorkRequest, worker: Worker) -> None:
    work_request.worker = worker
    work_request.status = WorkRequestStatus.RUNNING
    work_request.started_at = timezone.now()
    work_request.save()


def finish(work_request: WorkRequest) -> None:
    work_request.status = WorkRequestStatus.COMPLETED
    work_request.result = "success"
    work_request.completed_at = timezone.now()
    work_request.save()


def test_burst_scales_to_the_maximum_and_not_beyond(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=4)
    burst(playground, 20)

    report = provision(cloud)

    assert len(cloud.launches) == 4
    assert [w.name for w in pool_workers(pool)] == [f"pool-00{n}" for n in range(1, 5)]
    assert "20 pending work request(s)" in report.lines()[0]
    # Booting instances count: the next pass launches nothing more.
    provision(cloud)
    assert len(cloud.launches) == 4


def test_launch_rotates_the_activation_token_and_reuses_worker_rows(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=1, max_idle_seconds=0)
    [work_request] = burst(playground, 1)
    provision(cloud)
    [worker] = pool_workers(pool)
    first_key = cloud.launches[0].activation_token
    assert Token.objects.get_by_key(first_key) == Worker.objects.get(pk=worker.pk).activation_token
    worker = register(worker)
    old_token = worker.token
    start(work_request, worker)
    finish(work_request)

    provision(cloud)  # idle with max_idle_seconds 0: terminated
    assert pool_workers(pool) == []
    assert old_token is not None
    old_token.refresh_from_db()
    assert not old_token.enabled

    burst(playground, 1)
    provision(cloud)
    [again] = pool_workers(pool)
    assert again.pk == worker.pk  # the row is reused
    assert cloud.launches[1].activation_token != first_key
    assert Token.objects.get_by_key(first_key) is None


def test_idle_workers_go_back_to_the_minimum_after_max_idle_seconds(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=3, min_active_instances=1, max_idle_seconds=600)
    work_requests = burst(playground, 3)
    provision(cloud)
    workers = [register(worker) for worker in pool_workers(pool)]
    for work_request, worker in zip(work_requests, workers, strict=True):
        start(work_request, worker)
        finish(work_request)

    report = provision(cloud)
    assert len(pool_workers(pool)) == 3
    assert any("keeps pool-001: idle" in line for line in report.lines())

    later = timezone.now() + timedelta(seconds=601)
    report = provision(cloud, now=later)
    assert len(pool_workers(pool)) == 1
    assert sum("max_idle_seconds 600" in line for line in report.lines()) == 2
    assert set(WorkerPoolStatistics.objects.values_list("reason", flat=True)) == {"idle"}


def test_exhausted_budget_launches_nothing_and_says_why(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=4, target_max_seconds_per_month=3600)
    now = timezone.now()
    WorkerPoolStatistics.objects.create(
        worker_pool=pool,
        started_at=now - timedelta(hours=1, seconds=1),
        ended_at=now,
        runtime_seconds=3601,
        reason="idle",
    )
    burst(playground, 5)

    report = provision(cloud)

    assert cloud.launches == []
    [line] = report.lines()
    assert "monthly budget is used up: 3601 of 3600 s" in line


def test_target_latency_uses_observed_durations(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    make_pool(max_active_instances=10, target_latency_seconds=300)
    user = playground.create_user("history")
    now = timezone.now()
    for _ in range(3):
        playground.create_work_request(
            created_by=user,
            task_name="sleep",
            task_data={"seconds": 1},
            status=WorkRequestStatus.COMPLETED,
            started_at=now - timedelta(seconds=120),
            completed_at=now,
        )
    burst(playground, 10)  # 10 x 120 s expected = 1200 s: 4 instances for 300 s of latency

    provision(cloud)

    assert len(cloud.launches) == 4


def test_ephemeral_workers_take_one_work_request_and_are_terminated(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=1, ephemeral=True)
    first, second = burst(playground, 2)
    provision(cloud)
    [worker] = pool_workers(pool)
    register(worker)

    run_scheduling_pass()
    first.refresh_from_db()
    assert first.worker_id == worker.pk
    start(first, worker)
    finish(first)
    # The scheduler gives it nothing more, however idle it is.
    run_scheduling_pass()
    second.refresh_from_db()
    assert second.worker_id is None

    report = provision(cloud)
    assert any("terminated pool-001: took its 1 work request(s)" in x for x in report.lines())
    assert WorkerPoolStatistics.objects.get().reason == "ephemeral"
    # ... and a new instance takes the second one.
    [replacement] = pool_workers(pool)
    assert replacement.worker_pool_data["instance_id"] != worker.worker_pool_data["instance_id"]


def test_never_registered_instance_triggers_back_off_not_a_loop(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=2, register_timeout_seconds=60)
    burst(playground, 2)
    provision(cloud)
    assert len(cloud.launches) == 2

    later = timezone.now() + timedelta(seconds=61)
    report = provision(cloud, now=later)

    assert len(cloud.terminated) == 2
    assert any("backs off until" in line for line in report.lines())
    for minutes in (2, 3):
        provision(cloud, now=later + timedelta(seconds=minutes))
    assert len(cloud.launches) == 2  # no launch while backing off
    pool.refresh_from_db()
    assert pool.consecutive_launch_failures == 2
    assert pool.counters["launch_failures"] == 2


def test_capacity_error_backs_off_and_retries_later(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=2)
    burst(playground, 2)
    cloud.out_of_capacity = True

    report = provision(cloud)

    assert any("launch failed, backing off: no capacity" in line for line in report.lines())
    assert not pool_workers(pool)
    pool.refresh_from_db()
    assert pool.launch_backoff_until is not None
    cloud.out_of_capacity = False
    provision(cloud, now=pool.launch_backoff_until + timedelta(seconds=1))
    assert len(cloud.launches) == 2


def test_interruption_retries_the_work_elsewhere_at_once(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=2)
    [work_request] = burst(playground, 1)
    provision(cloud)
    [worker] = pool_workers(pool)
    register(worker)
    start(work_request, worker)
    cloud.interrupt(str(worker.worker_pool_data["instance_id"]))

    report = provision(cloud)

    work_request.refresh_from_db()
    assert work_request.status == WorkRequestStatus.ABORTED
    retry = WorkRequest.objects.get(supersedes=work_request)
    assert retry.status == WorkRequestStatus.PENDING
    assert any("announced an interruption" in line for line in report.lines())
    # The same pass launches an instance for the retried work request (a local pool has no
    # on-demand capacity to ask for).
    [replacement] = pool_workers(pool)
    assert replacement.worker_pool_data["instance_id"] != worker.worker_pool_data["instance_id"]
    assert [request.on_demand for request in cloud.launches] == [False, False]
    assert WorkerPoolStatistics.objects.get().reason == "interrupted"
    provision(cloud)
    assert pool_workers(pool) == [replacement]


def test_drained_worker_finishes_its_work_then_is_terminated(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=1)
    first, second = burst(playground, 2)
    provision(cloud)
    [worker] = pool_workers(pool)
    register(worker)
    start(first, worker)
    worker.draining_at = timezone.now()
    worker.save()

    provision(cloud)
    assert pool_workers(pool) == [worker]  # busy: never terminated
    finish(first)
    run_scheduling_pass()
    second.refresh_from_db()
    assert second.worker_id is None  # a draining worker takes no new work

    provision(cloud)
    assert WorkerPoolStatistics.objects.get().reason == "drained"


def test_leaked_instance_carrying_the_pool_tag_is_swept(
    make_pool: MakePool, cloud: CloudDouble
) -> None:
    make_pool()
    other = make_pool("other")
    leaked = cloud.leak("pool")
    not_ours = cloud.leak("unrelated")

    report = provision(cloud)

    assert cloud.terminated == [leaked]
    assert not_ours in cloud.running
    assert any(f"swept leaked instance {leaked}" in line for line in report.lines())
    assert other.workers.count() == 0


def test_higher_priority_pool_takes_the_work_first(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    cheap = make_pool("cheap", max_active_instances=2)
    cheap.priority = 10
    cheap.save()
    costly = make_pool("costly", max_active_instances=5)
    burst(playground, 3)
    burst(playground, 2, task_data={"seconds": 1, "host_architecture": "arm64"})

    provision(cloud)

    assert len(pool_workers(cheap)) == 2
    assert len(pool_workers(costly)) == 1  # the third amd64 one; arm64 fits neither


def test_disabled_pool_terminates_its_idle_instances(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(max_active_instances=1, min_active_instances=1)
    provision(cloud)
    register(pool_workers(pool)[0])
    pool.enabled = False
    pool.save()

    provision(cloud)

    assert pool_workers(pool) == []
    assert WorkerPoolStatistics.objects.get().reason == "pool-disabled"


def test_a_schedule_raises_the_minimum_and_spare_instances_while_it_is_on(
    make_pool: MakePool, cloud: CloudDouble
) -> None:
    pool = make_pool(
        max_active_instances=5,
        schedules=[
            {
                "cron": "0 8 * * 1-5",
                "timezone": "Europe/Paris",
                "duration_seconds": 36000,
                "min_active_instances": 2,
                "idle_count": 3,
            }
        ],
    )
    saturday = datetime(2026, 3, 28, 9, 0, tzinfo=UTC)
    assert provision(cloud, now=saturday).lines() == []
    assert cloud.launches == []

    monday = datetime(2026, 3, 30, 6, 30, tzinfo=UTC)  # 08:30 in Paris, summer time
    [line] = provision(cloud, now=monday).lines()

    assert len(pool_workers(pool)) == 3
    assert "wants 3, limits [2, 5]" in line
    assert (
        "idle_count 3 from schedules[0] ('0 8 * * 1-5' Europe/Paris) since 2026-03-30T06:00"
        in line
    )


def test_a_scope_budget_used_up_stops_its_pools_and_its_share_of_shared_pools(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    scoped = make_pool("scoped", max_active_instances=3, min_active_instances=1)
    scoped.scope = playground.scope
    scoped.save()
    shared = make_pool("shared", max_active_instances=3)
    ScopeWorkerPoolLimits.objects.create(scope=playground.scope, target_max_seconds_per_month=3600)
    now = timezone.now()
    # An hour of the scope's own pool ended this month: the budget is used up.
    WorkerPoolStatistics.objects.create(
        worker_pool=scoped,
        started_at=now - timedelta(hours=1),
        ended_at=now,
        runtime_seconds=3600,
        reason="idle",
    )
    burst(playground, 2)

    lines = provision(cloud).lines()

    assert cloud.launches == []
    budget = (
        f"scope {playground.scope.name}'s monthly budget is used up: 3600 of 3600 s "
        "(worker_pool scope_budget)"
    )
    assert f"pool scoped: does not count 2 pending work request(s): {budget}" in lines
    assert any(
        line.startswith("pool scoped: would launch 1") and line.endswith(f"but the {budget}")
        for line in lines
    ), lines
    assert f"pool shared: does not count 2 pending work request(s): {budget}" in lines
    scoped.refresh_from_db()
    assert scoped.counters["launches_refused_budget"] == 1

    # Raised: both come back (the scope's pool first, by its priority and name order).
    ScopeWorkerPoolLimits.objects.filter(scope=playground.scope).update(
        target_max_seconds_per_month=100000
    )
    provision(cloud)
    assert len(pool_workers(scoped)) == 2
    assert len(pool_workers(shared)) == 0


def test_time_on_shared_pools_counts_against_the_scope_budget(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    shared = make_pool("shared", max_active_instances=3)
    ScopeWorkerPoolLimits.objects.create(scope=playground.scope, target_max_seconds_per_month=60)
    first, _second = burst(playground, 2)
    provision(cloud)
    worker = register(pool_workers(shared)[0])
    start(first, worker)
    WorkRequest.objects.filter(pk=first.pk).update(
        started_at=timezone.now() - timedelta(seconds=61)
    )

    lines = provision(cloud).lines()

    assert any("does not count 1 pending work request(s)" in line for line in lines), lines
    budgets = scope_budgets()
    assert budgets[playground.scope.pk].used_seconds >= 61


def test_demand_counts_only_work_the_pool_tags_can_run(
    playground: Playground, make_pool: MakePool, cloud: CloudDouble
) -> None:
    noop_pool = make_pool("noop-only", max_active_instances=5)
    noop_pool.tags = ["worker:task:worker:noop:version:1", "fast"]
    noop_pool.priority = 10
    noop_pool.save()
    general = make_pool("general", max_active_instances=5)
    burst(playground, 3)  # sleep work requests

    lines = provision(cloud).lines()

    assert pool_workers(noop_pool) == []
    assert len(pool_workers(general)) == 3
    assert (
        "pool noop-only: does not count 3 pending work request(s) its workers' tags cannot "
        "run (3 x sleep: no worker:task:worker:sleep:version:1 tag)"
    ) in lines
    # Its workers carry the pool's tags.
    noop_pool.tags = ["worker:task:worker:sleep:version:1"]
    noop_pool.save()
    burst(playground, 2)
    provision(cloud)
    worker = pool_workers(noop_pool)[0]
    assert worker.static_metadata["worker_pool:tags"] == ["worker:task:worker:sleep:version:1"]
