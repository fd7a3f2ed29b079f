"""
Web pages of dynamic worker pools: the list (enabled, provider, architectures, instances by
state, limits, this month's runtime) and one pool's page (its workers with their state and
current work, its counters, terminations by reason and the most recent ones).

Visible to whoever may see the workers page (`debusine.server.web.workers`); the provider
account and the launch specifications are not shown: they are the administrators' business
(`debusine-admin worker_pool show`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Avg, Count, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from debusine.protocol.work_requests import WorkRequestStatus
from debusine.server.db.models import Worker, WorkRequest
from debusine.server.db.models.worker_pools import (
    TerminationReason,
    WorkerPool,
    WorkerPoolStatistics,
    month_start,
)
from debusine.server.db.worker_pool_specs import PoolLimits, SpecificationError, parse_limits
from debusine.server.web.workers import WORKER_LIMIT, current_work, worker_state
from debusine.server.work_requests import sql

#: A pool's page lists at most this many of its latest terminations.
RECENT_TERMINATIONS = 20

# Every pool (or one, by id) with its instances by state and its runtime this calendar month
# (ended instances' part in the month, plus the live ones'), in one statement. An instance is
# launching until its worker registers (uses its activation token); a registered one is
# draining, busy (holds work) or idle.
POOL_SUMMARY_SQL = f"""
WITH live AS (
    SELECT w.id, w.worker_pool_id, w.instance_created_at,
           w.activation_token_id IS NOT NULL AS launching,
           w.draining_at IS NOT NULL AS draining,
           EXISTS (SELECT 1 FROM db_workrequest wr
                   WHERE wr.worker_id = w.id AND wr.status IN {sql.HELD}) AS busy
    FROM db_worker w
    WHERE w.worker_pool_id IS NOT NULL AND w.instance_created_at IS NOT NULL
)
SELECT p.id, p.name, p.enabled, a.data ->> 'provider_type', p.architectures, p.limits,
       p.counters, s.name,
       count(l.id),
       count(l.id) FILTER (WHERE l.launching),
       count(l.id) FILTER (WHERE NOT l.launching AND NOT l.draining AND l.busy),
       count(l.id) FILTER (WHERE NOT l.launching AND NOT l.draining AND NOT l.busy),
       count(l.id) FILTER (WHERE l.draining),
       coalesce(sum(extract(epoch FROM %(now)s - greatest(l.instance_created_at,
                                                        %(month)s))), 0)
       + coalesce((SELECT sum(extract(epoch FROM st.ended_at - greatest(st.started_at,
                                                                        %(month)s)))
                   FROM db_workerpoolstatistics st
                   WHERE st.worker_pool_id = p.id AND st.ended_at >= %(month)s), 0)
FROM db_workerpool p
JOIN db_asset a ON a.id = p.provider_account_id
LEFT JOIN db_scope s ON s.id = p.scope_id
LEFT JOIN live l ON l.worker_pool_id = p.id
WHERE %(pool)s::bigint IS NULL OR p.id = %(pool)s::bigint
GROUP BY p.id, a.id, s.id
ORDER BY p.name
"""  # noqa: S608 (statuses from the enumerations, values as parameters)


@dataclass
class PoolSummary:
    """One pool as the list shows it."""

    id: int
    name: str
    enabled: bool
    provider_type: str
    architectures: list[str]
    limits: PoolLimits | None  # None: the stored limits do not parse
    counters: dict[str, Any]
    scope: str | None
    active: int
    launching: int
    busy: int
    idle: int
    draining: int
    runtime_seconds: float

    @property
    def budget_used(self) -> int | None:
        """Percent of the monthly runtime budget used, when there is a budget."""
        if self.limits is None or not self.limits.target_max_seconds_per_month:
            return None
        return round(100 * self.runtime_seconds / self.limits.target_max_seconds_per_month)


def _json(value: Any) -> Any:
    """A JSON column from a raw query: psycopg hands jsonb over as text here."""
    return json.loads(value) if isinstance(value, str) else value


def _limits(raw: Any) -> PoolLimits | None:
    try:
        return parse_limits(raw if isinstance(raw, dict) else {})
    except SpecificationError:
        return None


def pool_summaries(pool_id: int | None = None, now: datetime | None = None) -> list[PoolSummary]:
    """Every pool (or the one with `pool_id`), in one query."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(POOL_SUMMARY_SQL, {"now": now, "month": month_start(now), "pool": pool_id})
        rows = cursor.fetchall()
    return [
        PoolSummary(
            id=row[0],
            name=row[1],
            enabled=row[2],
            provider_type=row[3] or "",
            architectures=list(_json(row[4]) or []),
            limits=_limits(_json(row[5])),
            counters=_json(row[6]) or {},
            scope=row[7],
            active=row[8],
            launching=row[9],
            busy=row[10],
            idle=row[11],
            draining=row[12],
            runtime_seconds=float(row[13]),
        )
        for row in rows
    ]


@require_safe
def pool_list(request: HttpRequest) -> HttpResponse:
    """`GET /-/worker-pools/`: every dynamic worker pool and its instances."""
    return render(request, "web/worker_pools.html", {"pools": pool_summaries()})


def pool_worker_state(worker: Worker) -> str:
    """`stopped` (no instance), `launching`, `draining`, or the state of any worker."""
    if worker.instance_created_at is None:
        return "stopped"
    if worker.activation_token_id is not None:
        return "launching"
    if worker.draining_at is not None:
        return "draining"
    return worker_state(worker)


@dataclass
class PoolWorkerRow:
    worker: Worker
    state: str
    instance_id: str
    current: list[WorkRequest]


@dataclass
class ReasonRow:
    reason: str
    label: str
    recorded: int  # instances with a statistics row
    counted: int  # the pool's counter (kept even when statistics rows are deleted)
    runtime_seconds: float
    average_boot_seconds: float | None


@require_safe
def pool_detail(request: HttpRequest, name: str) -> HttpResponse:
    """`GET /-/worker-pools/<name>/`: one pool, its workers and its statistics."""
    pool = WorkerPool.objects.only("id").filter(name=name).first()
    if pool is None:
        raise Http404(f"No worker pool {name!r}")
    [summary] = pool_summaries(pool.pk)
    workers = list(
        Worker.objects.filter(worker_pool_id=pool.pk)
        .select_related("token")
        .annotate(
            running=Count(
                "assigned_work_requests",
                filter=Q(assigned_work_requests__status=WorkRequestStatus.RUNNING),
            )
        )
        .order_by("name")[:WORKER_LIMIT]
    )
    current = current_work(request, [worker.pk for worker in workers if worker.running])
    rows = [
        PoolWorkerRow(
            worker,
            pool_worker_state(worker),
            str((worker.worker_pool_data or {}).get("instance_id") or ""),
            current.get(worker.pk, []),
        )
        for worker in workers
    ]
    by_reason = {
        row["reason"]: row
        for row in WorkerPoolStatistics.objects.filter(worker_pool_id=pool.pk)
        .values("reason")
        .annotate(count=Count("id"), runtime=Sum("runtime_seconds"), boot=Avg("boot_seconds"))
        .order_by()
    }
    reasons = []
    for reason in TerminationReason:
        recorded: dict[str, Any] = dict(by_reason.get(reason.value, {}))
        counted = int(summary.counters.get(f"terminated:{reason.value}", 0))
        if recorded or counted:
            reasons.append(
                ReasonRow(
                    reason.value,
                    str(reason.label),
                    int(recorded.get("count", 0)),
                    counted,
                    float(recorded.get("runtime") or 0.0),
                    recorded.get("boot"),
                )
            )
    recent = list(
        WorkerPoolStatistics.objects.filter(worker_pool_id=pool.pk)
        .select_related("worker")
        .only(
            "instance_id",
            "started_at",
            "ended_at",
            "runtime_seconds",
            "reason",
            "boot_seconds",
            "work_requests",
            "worker__name",
        )
        .order_by("-ended_at", "-id")[:RECENT_TERMINATIONS]
    )
    return render(
        request,
        "web/worker_pool.html",
        {
            "pool": summary,
            "rows": rows,
            "reasons": reasons,
            "recent": recent,
            "launches": int(summary.counters.get("launches", 0)),
            "launch_failures": int(summary.counters.get("launch_failures", 0)),
        },
    )
