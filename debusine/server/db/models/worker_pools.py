"""
Dynamic worker pools: where their instances come from, their limits, and what they cost.

A `WorkerPool` names a provider account (a `debusine:cloud-provider-account` asset), the
provider's launch specifications and its limits (validated by
`debusine.server.db.worker_pool_specs`). Its workers are ordinary `Worker` rows with
`worker_pool` set; the rows are reused from one instance to the next. A
`WorkerPoolStatistics` row is written each time an instance ends: its runtime, for the
monthly budgets and the statistics, and why it ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models import Sum
from django.utils import timezone

from debusine.protocol.work_requests import WorkRequestStatus
from debusine.server.db.models.assets import Asset, AssetCategory
from debusine.server.db.worker_pool_specs import (
    AwsSpecification,
    HetznerSpecification,
    LocalSpecification,
    PoolLimits,
    SpecificationError,
    parse_account,
    parse_limits,
    parse_specifications,
)


def month_start(at: datetime) -> datetime:
    """Midnight UTC on the first day of `at`'s month."""
    at = at.astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class WorkerPool(models.Model):
    """A set of workers the provisioner launches and terminates on a cloud provider."""

    name = models.SlugField(max_length=100, unique=True)
    provider_account = models.ForeignKey(
        Asset, on_delete=models.PROTECT, related_name="worker_pools"
    )
    enabled = models.BooleanField(default=True)
    #: Architectures its workers run (`system:architectures`); work requests for others
    #: never make it grow.
    architectures = models.JSONField(default=list)
    #: Tags its workers carry (static metadata `worker_pool:tags`).
    tags = models.JSONField(default=list, blank=True)
    specifications = models.JSONField(default=dict)
    #: None: instance-wide (any scope's work); else only that scope's work requests.
    scope = models.ForeignKey(
        "db.Scope", null=True, blank=True, on_delete=models.PROTECT, related_name="worker_pools"
    )
    #: Pools with a higher priority take pending work first.
    priority = models.IntegerField(default=0)
    #: One work request per instance.
    ephemeral = models.BooleanField(default=False)
    limits = models.JSONField(default=dict, blank=True)
    registered_at = models.DateTimeField(default=timezone.now)
    #: Launches that failed (provider error, or never registered) since the last success.
    consecutive_launch_failures = models.PositiveIntegerField(default=0)
    #: No launch before this (back-off after failures).
    launch_backoff_until = models.DateTimeField(null=True, blank=True)
    last_launch_failure_at = models.DateTimeField(null=True, blank=True)
    #: Counters since creation: launches, launch failures, terminations by reason.
    counters = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse bad specifications and limits, naming the field and the reason."""
        errors: dict[str, str] = {}
        try:
            specification = parse_specifications(self.specifications)
        except SpecificationError as error:
            errors["specifications"] = str(error)
            specification = None
        try:
            parse_limits(self.limits)
        except SpecificationError as error:
            errors["limits"] = str(error)
        if not isinstance(self.architectures, list) or not all(
            isinstance(item, str) and item for item in self.architectures
        ):
            errors["architectures"] = "must be a list of architecture names"
        elif not self.architectures:
            errors["architectures"] = "name at least one architecture"
        if not isinstance(self.tags, list) or not all(isinstance(t, str) for t in self.tags):
            errors["tags"] = "must be a list of strings"
        if self.provider_account_id is not None:
            account = self.provider_account
            if account.category != AssetCategory.CLOUD_PROVIDER_ACCOUNT:
                errors["provider_account"] = f"asset {account.pk} is not a cloud provider account"
            elif specification is not None:
                provider = account.data.get("provider_type")
                if provider != specification.provider_type:
                    errors["specifications"] = (
                        f"provider_type {specification.provider_type!r} does not match the "
                        f"account's {provider!r}"
                    )
        if errors:
            raise ValidationError(errors)

    # --- Typed views of the JSON fields --------------------------------------------------------

    def parsed_limits(self) -> PoolLimits:
        return parse_limits(self.limits)

    def parsed_specifications(
        self,
    ) -> LocalSpecification | AwsSpecification | HetznerSpecification:
        return parse_specifications(self.specifications)

    def account(self) -> Any:
        return parse_account(self.provider_account.data)

    # --- Counters and runtime ------------------------------------------------------------------

    def count(self, counter: str, increment: int = 1) -> None:
        """Add to a counter (the caller saves)."""
        self.counters[counter] = int(self.counters.get(counter, 0)) + increment

    def runtime_this_month(self, now: datetime | None = None) -> float:
        """Instance-seconds used this calendar month: ended instances plus live ones."""
        now = now or timezone.now()
        start = month_start(now)
        past = (
            WorkerPoolStatistics.objects.filter(worker_pool=self, ended_at__gte=start).aggregate(
                total=Sum("runtime_seconds")
            )["total"]
            or 0.0
        )
        # Ended this month but started last month: only this month's part counts.
        overlap = sum(
            (start - stat.started_at).total_seconds()
            for stat in WorkerPoolStatistics.objects.filter(
                worker_pool=self, ended_at__gte=start, started_at__lt=start
            )
        )
        live = 0.0
        for created in self.workers.filter(instance_created_at__isnull=False).values_list(
            "instance_created_at", flat=True
        ):
            if created is not None:
                live += (now - max(created, start)).total_seconds()
        return float(past) - overlap + live


class TerminationReason(models.TextChoices):
    """Why an instance ended."""

    IDLE = "idle", "Idle longer than max_idle_seconds"
    SCALE_IN = "scale-in", "More instances than needed"
    EPHEMERAL = "ephemeral", "Ephemeral instance ran its work request"
    DRAINED = "drained", "Drained"
    RECYCLED = "recycled", "Recycled (work request count or age)"
    NEVER_REGISTERED = "never-registered", "Never registered"
    INTERRUPTED = "interrupted", "Provider interruption (spot)"
    LEAKED = "leaked", "Leaked instance swept"
    GONE = "gone", "Instance disappeared at the provider"
    ADMIN = "admin", "Terminated by an administrator"
    POOL_DISABLED = "pool-disabled", "Pool disabled or deleted"


class WorkerPoolStatistics(models.Model):
    """One instance lifetime of a pool worker: its runtime and why it ended."""

    worker_pool = models.ForeignKey(
        WorkerPool, on_delete=models.CASCADE, related_name="statistics"
    )
    worker = models.ForeignKey(
        "db.Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    instance_id = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    runtime_seconds = models.FloatField()
    reason = models.CharField(max_length=32, choices=TerminationReason.choices)
    #: Seconds from launch to the worker's registration (None: it never registered).
    boot_seconds = models.FloatField(null=True, blank=True)
    work_requests = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["worker_pool", "ended_at"], name="db_wpstats_pool_end")]

    def __str__(self) -> str:
        return f"{self.worker_pool_id}: {self.instance_id} {self.runtime_seconds:.0f} s"


def record_runtime(
    pool: WorkerPool,
    *,
    worker: Any,
    instance_id: str,
    started_at: datetime,
    reason: str,
    boot_seconds: float | None,
    work_requests: int,
    now: datetime | None = None,
) -> WorkerPoolStatistics:
    now = now or timezone.now()
    return WorkerPoolStatistics.objects.create(
        worker_pool=pool,
        worker=worker,
        instance_id=instance_id,
        started_at=started_at,
        ended_at=now,
        runtime_seconds=max(0.0, (now - started_at).total_seconds()),
        reason=reason,
        boot_seconds=boot_seconds,
        work_requests=work_requests,
    )


class ScopeWorkerPoolLimits(models.Model):
    """
    A scope's monthly budget across every pool: the runtime of the instances of its own pools
    plus the time its work requests ran on instance-wide pools' workers.
    """

    scope = models.OneToOneField(
        "db.Scope", on_delete=models.CASCADE, related_name="worker_pool_limits"
    )
    #: Instance-seconds per calendar month (UTC).
    target_max_seconds_per_month = models.PositiveBigIntegerField()

    def __str__(self) -> str:
        return f"{self.scope_id}: {self.target_max_seconds_per_month} s/month"


RUNNING = f"'{WorkRequestStatus.RUNNING.value}'"

# What each scope with a budget used this calendar month: its pools' ended instances (only
# this month's part) and live ones, and its work requests' time on instance-wide pools.
SCOPE_USAGE_SQL = f"""
SELECT l.scope_id, l.target_max_seconds_per_month,
  COALESCE((SELECT sum(extract(epoch FROM s.ended_at - greatest(s.started_at, %(month)s)))
            FROM db_workerpoolstatistics s JOIN db_workerpool p ON p.id = s.worker_pool_id
            WHERE p.scope_id = l.scope_id AND s.ended_at >= %(month)s), 0)
  + COALESCE((SELECT sum(extract(epoch FROM %(now)s - greatest(w.instance_created_at,
                                                                %(month)s)))
              FROM db_worker w JOIN db_workerpool p ON p.id = w.worker_pool_id
              WHERE p.scope_id = l.scope_id AND w.instance_created_at IS NOT NULL), 0)
  + COALESCE((SELECT sum(extract(epoch FROM
                           least(coalesce(wr.completed_at, %(now)s), %(now)s)
                           - greatest(wr.started_at, %(month)s)))
              FROM db_workrequest wr
              JOIN db_workspace ws ON ws.id = wr.workspace_id
              JOIN db_worker w ON w.id = wr.worker_id
              JOIN db_workerpool p ON p.id = w.worker_pool_id
              WHERE ws.scope_id = l.scope_id AND p.scope_id IS NULL
                AND wr.started_at IS NOT NULL
                AND (wr.completed_at >= %(month)s
                     OR (wr.completed_at IS NULL AND wr.status = {RUNNING}))), 0)
FROM db_scopeworkerpoollimits l
"""  # noqa: S608 (statuses from the enumerations)


@dataclass(frozen=True)
class ScopeBudget:
    """A scope's monthly budget and what it used this month."""

    scope_id: int
    budget_seconds: int
    used_seconds: float

    @property
    def exhausted(self) -> bool:
        return self.used_seconds >= self.budget_seconds

    def describe(self, scope_name: str) -> str:
        return (
            f"scope {scope_name}'s monthly budget is used up: {self.used_seconds:.0f} of "
            f"{self.budget_seconds} s (worker_pool scope_budget)"
        )


def scope_budgets(now: datetime | None = None) -> dict[int, ScopeBudget]:
    """Every scope with a budget, by scope id (one query)."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(SCOPE_USAGE_SQL, {"now": now, "month": month_start(now)})
        return {
            scope_id: ScopeBudget(scope_id, budget, float(used))
            for scope_id, budget, used in cursor.fetchall()
        }


#: Grace before a launched-but-unregistered worker counts as failed, when the pool says none.
DEFAULT_REGISTER_TIMEOUT = timedelta(minutes=10)
