"""
Launching and terminating a pool's instances, with what the database must remember of them.

A launch reuses a stopped `Worker` row of the pool (or creates `<pool>-NNN`), gives it a fresh
activation token (the previous tokens are disabled), commits, and only then asks the provider:
the worker may register as soon as it boots. A termination asks the provider, records the
instance's runtime (`WorkerPoolStatistics`), takes its work away (retried elsewhere at once)
and disables its tokens. The caller holds the provisioner's lock (see `provisioner`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from debusine.server.db.models import (
    Token,
    Worker,
    WorkerPool,
    WorkerType,
    WorkRequest,
)
from debusine.server.db.models.worker_pools import record_runtime
from debusine.server.metrics import families
from debusine.server.work_requests import transitions
from debusine.server.worker_pools.providers import get_provider
from debusine.server.worker_pools.providers.base import (
    LaunchRequest,
    Provider,
    ProviderError,
)

logger = logging.getLogger("debusine.server.worker_pools")

#: Longest back-off after failed launches.
MAX_BACKOFF = timedelta(hours=1)
#: First back-off; doubled by every further consecutive failure.
FIRST_BACKOFF = timedelta(seconds=30)


def provider_for(pool: WorkerPool) -> Provider:
    return get_provider(
        pool.account(), pool.parsed_specifications(), data_dir=str(settings.DEBUSINE_DATA_DIR)
    )


def active_workers(pool: WorkerPool) -> list[Worker]:
    """The pool's workers with a live instance (launched, booting or running)."""
    return list(
        pool.workers.filter(instance_created_at__isnull=False)
        .select_related("token", "activation_token")
        .order_by("name")
    )


def has_registered(worker: Worker) -> bool:
    """Whether the current instance's worker used its activation token."""
    return worker.activation_token_id is None and worker.token_id is not None


def work_requests_this_instance(worker: Worker) -> int:
    """Work requests the worker took since its instance started (held or started)."""
    if worker.instance_created_at is None:
        return 0
    return WorkRequest.objects.filter(
        Q(status__in=transitions.HELD) | Q(started_at__gte=worker.instance_created_at),
        worker=worker,
    ).count()


def next_worker_name(pool: WorkerPool) -> str:
    taken = set(
        Worker.objects.filter(name__startswith=f"{pool.name}-").values_list("name", flat=True)
    )
    number = 1
    while f"{pool.name}-{number:03d}" in taken:
        number += 1
    return f"{pool.name}-{number:03d}"


def back_off(pool: WorkerPool, why: str, now: datetime | None = None) -> None:
    """Count a failed launch and hold further launches for an exponentially longer time."""
    now = now or timezone.now()
    pool.consecutive_launch_failures += 1
    pool.count("launch_failures")
    delay = min(MAX_BACKOFF, FIRST_BACKOFF * (2 ** (pool.consecutive_launch_failures - 1)))
    pool.launch_backoff_until = now + delay
    pool.last_launch_failure_at = now
    pool.save(
        update_fields=[
            "consecutive_launch_failures",
            "launch_backoff_until",
            "last_launch_failure_at",
            "counters",
        ]
    )
    logger.warning(
        "pool %s: launch failed (%s); %d in a row, no launch for %d s",
        pool.name,
        why,
        pool.consecutive_launch_failures,
        delay.total_seconds(),
    )


# Once per instance (the flag `ready_at` in worker_pool_data), for every pool at once: the
# boot-to-ready time of each instance whose worker registered joins its pool's histogram
# (`debusine_worker_pool_boot_seconds`, kept in the metric counts with the other histograms).
RECORD_READY_SQL = """
WITH marked AS (
    UPDATE db_worker w SET worker_pool_data = w.worker_pool_data || jsonb_build_object(
        'ready_at', to_jsonb(w.registered_at))
    FROM db_workerpool p
    WHERE p.id = w.worker_pool_id AND w.instance_created_at IS NOT NULL
      AND w.activation_token_id IS NULL AND w.token_id IS NOT NULL
      AND w.registered_at >= w.instance_created_at AND NOT w.worker_pool_data ? 'ready_at'
    RETURNING p.name AS pool, coalesce(p.architectures->>0, '') AS architecture,
              greatest(extract(epoch FROM w.registered_at - w.instance_created_at)::float8, 0)
                  AS seconds
)
INSERT INTO db_metriccountdelta (family, key, count, total)
SELECT 'worker_pool_boot_seconds',
       jsonb_build_object('worker_pool', pool, 'architecture', architecture,
                          'le', db_metric_bucket(seconds, %s::float8[])),
       count(*), sum(seconds)
FROM marked GROUP BY 2
"""


def record_ready_instances() -> None:
    """Record the boot-to-ready time of every instance that registered since the last call."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(RECORD_READY_SQL, [list(families.POOL_SECONDS_BUCKETS)])


def launch_succeeded(pool: WorkerPool) -> None:
    """A worker registered: the pool's launches work again."""
    if pool.consecutive_launch_failures or pool.launch_backoff_until:
        pool.consecutive_launch_failures = 0
        pool.launch_backoff_until = None
        pool.save(update_fields=["consecutive_launch_failures", "launch_backoff_until"])


@transaction.atomic
def _prepare_worker(pool: WorkerPool) -> tuple[Worker, str]:
    """A stopped worker row of the pool (or a new one) with a fresh activation token."""
    limits = pool.parsed_limits()
    worker = (
        pool.workers.select_for_update()
        .filter(instance_created_at__isnull=True)
        .order_by("name")
        .first()
    )
    if worker is None:
        worker = Worker.objects.create(
            name=next_worker_name(pool), worker_type=WorkerType.EXTERNAL, worker_pool=pool
        )
    for old in (worker.token, worker.activation_token):
        if old is not None and old.enabled:
            old.disable()
    activation, key = Token.objects.create_with_key(
        enabled=True,
        expire_at=timezone.now() + timedelta(seconds=limits.register_timeout_seconds),
        comment=f"Activation token for pool worker {worker.name}",
    )
    previous_activation = worker.activation_token
    worker.activation_token = activation
    worker.instance_created_at = timezone.now()
    worker.worker_pool_data = {"state": "launching"}
    worker.draining_at = None
    worker.connected_at = None
    worker.max_work_requests = 1 if pool.ephemeral else limits.recycle_after_work_requests
    worker.static_metadata = {**worker.static_metadata, "worker_pool:tags": list(pool.tags)}
    # What the previous instance reported (an interruption notice, say) is not this one's.
    worker.dynamic_metadata = {}
    worker.save()
    if previous_activation is not None:
        previous_activation.delete()
    return worker, key


@dataclass
class LaunchOutcome:
    launched: list[Worker]
    error: str | None = None


def launch_workers(
    pool: WorkerPool,
    count: int,
    reason: str,
    provider: Provider | None = None,
    *,
    on_demand: int = 0,
) -> LaunchOutcome:
    """
    Launch `count` instances (stopping at the first failure, which backs the pool off), the
    first `on_demand` of them on on-demand capacity. Each launch commits on its own: the
    worker may register while the next one starts.
    """
    provider = provider or provider_for(pool)
    outcome = LaunchOutcome(launched=[])
    for index in range(count):
        worker, key = _prepare_worker(pool)
        try:
            instance = provider.launch(
                LaunchRequest(
                    pool_name=pool.name,
                    worker_name=worker.name,
                    activation_token=key,
                    on_demand=index < on_demand,
                )
            )
        except ProviderError as error:
            with transaction.atomic():
                Worker.objects.filter(pk=worker.pk).update(
                    instance_created_at=None, worker_pool_data={}
                )
                if worker.activation_token is not None:
                    worker.activation_token.disable()
                back_off(pool, str(error))
            outcome.error = str(error)
            return outcome
        with transaction.atomic():
            worker.worker_pool_data = {"instance_id": instance.instance_id, **instance.data}
            worker.save(update_fields=["worker_pool_data"])
            pool.count("launches")
            pool.save(update_fields=["counters"])
        logger.info(
            "pool %s: launched %s as %s (%s)", pool.name, worker.name, instance.instance_id, reason
        )
        outcome.launched.append(worker)
    return outcome


def forget_instance(
    pool: WorkerPool, worker: Worker, reason: str, now: datetime | None = None
) -> None:
    """
    The instance is gone (terminated, or vanished at the provider): record its runtime, take
    its work away (retried elsewhere at once), disable its tokens, and free the row.
    """
    now = now or timezone.now()
    with transaction.atomic():
        worker = (
            Worker.objects.select_for_update(of=("self",))
            .select_related("token", "activation_token")
            .get(pk=worker.pk)
        )
        if worker.instance_created_at is None:
            return
        boot_seconds = None
        if has_registered(worker) and worker.registered_at >= worker.instance_created_at:
            boot_seconds = (worker.registered_at - worker.instance_created_at).total_seconds()
        record_runtime(
            pool,
            worker=worker,
            instance_id=str(worker.worker_pool_data.get("instance_id", "")),
            started_at=worker.instance_created_at,
            reason=reason,
            boot_seconds=boot_seconds,
            work_requests=work_requests_this_instance(worker),
            now=now,
        )
        transitions.take_work_from_workers(
            [worker.pk], lambda _id: f"instance of worker {worker.name} ended: {reason}"
        )
        for token in (worker.token, worker.activation_token):
            if token is not None and token.enabled:
                token.disable()
        worker.instance_created_at = None
        worker.worker_pool_data = {}
        worker.draining_at = None
        worker.connected_at = None
        worker.save(
            update_fields=[
                "instance_created_at",
                "worker_pool_data",
                "draining_at",
                "connected_at",
            ]
        )
        pool.count(f"terminated:{reason}")
        pool.save(update_fields=["counters"])


def terminate_worker(
    pool: WorkerPool, worker: Worker, reason: str, provider: Provider | None = None
) -> None:
    """Terminate the worker's instance at the provider, then forget it."""
    provider = provider or provider_for(pool)
    instance_id = worker.worker_pool_data.get("instance_id")
    if instance_id:
        provider.terminate(str(instance_id))
    forget_instance(pool, worker, reason)
    logger.info("pool %s: terminated %s (%s)", pool.name, worker.name, reason)


def drain_worker(worker: Worker, why: str) -> None:
    """No new work for the worker; the provisioner terminates it once idle."""
    if worker.draining_at is None:
        worker.draining_at = timezone.now()
        worker.save(update_fields=["draining_at"])
        logger.info("worker %s: draining (%s)", worker.name, why)
