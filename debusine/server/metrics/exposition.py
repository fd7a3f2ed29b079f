"""
One scrape of `GET /api/1.0/open-metrics/`: every family of `families`, from the database's
maintained counts, a few small tables, and the events in Redis.

Cost: a bounded number of queries whatever the size of the instance. Work requests, artifacts
and collections are never counted: their counts are kept by triggers (`MetricCount`) and read
in one query. Workers, file stores, users, tokens, workspaces and scopes are small tables read
whole (one query each).

Every known label combination is present, with 0 when nothing matches: every scope, status and
registered task (with the architectures seen in the counts or on workers), every worker type and
state, every HTTP route and the methods its view answers. No label takes unbounded values:
architectures outside Debian's list and the workers' are `other`, ids never appear.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.db import connection, transaction
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from debusine.protocol.work_requests import TaskType, WorkRequestStatus
from debusine.server.db.models import FileStore, TerminationReason
from debusine.server.db.models.metrics import current_metric_counts, fold_metric_deltas
from debusine.server.db.models.workers import WorkerType
from debusine.server.metrics import events, families
from debusine.tasks import BaseTask

Key = tuple[str, ...]

# Workers with their state: whether their token is enabled, whether they are connected, and
# how many work requests they hold (the worker/status index answers the subquery; only asked
# for connected workers, the only ones whose state it decides).
WORKERS_SQL = """
SELECT w.worker_type, w.concurrency, w.connected_at IS NOT NULL,
       coalesce(t.enabled, false),
       CASE WHEN w.connected_at IS NOT NULL THEN
           (SELECT count(*) FROM db_workrequest wr
            WHERE wr.worker_id = w.id AND wr.status = ANY(%s))
       ELSE 0 END,
       (w.dynamic_metadata || w.static_metadata) -> 'system:host_architecture',
       (w.dynamic_metadata || w.static_metadata) -> 'system:architectures',
       p.name
FROM db_worker w LEFT JOIN db_token t ON t.id = w.token_id
LEFT JOIN db_workerpool p ON p.id = w.worker_pool_id
"""

# Each dynamic pool: limits and counters, its instances by state, its runtime this month
# (ended instances' part in the month plus the live ones').
WORKER_POOLS_SQL = """
SELECT p.name, p.architectures, p.limits, p.counters,
       (SELECT count(*) FROM db_worker w
        WHERE w.worker_pool_id = p.id AND w.instance_created_at IS NOT NULL
          AND w.draining_at IS NULL AND w.activation_token_id IS NOT NULL),
       (SELECT count(*) FROM db_worker w
        WHERE w.worker_pool_id = p.id AND w.instance_created_at IS NOT NULL
          AND w.draining_at IS NULL AND w.activation_token_id IS NULL),
       (SELECT count(*) FROM db_worker w
        WHERE w.worker_pool_id = p.id AND w.instance_created_at IS NOT NULL
          AND w.draining_at IS NOT NULL),
       coalesce((SELECT sum(extract(epoch FROM s.ended_at - greatest(s.started_at, %(month)s)))
                 FROM db_workerpoolstatistics s
                 WHERE s.worker_pool_id = p.id AND s.ended_at >= %(month)s), 0)
       + coalesce((SELECT sum(extract(epoch FROM now() - greatest(w.instance_created_at,
                                                                  %(month)s)))
                   FROM db_worker w
                   WHERE w.worker_pool_id = p.id AND w.instance_created_at IS NOT NULL), 0)
FROM db_workerpool p ORDER BY p.name
"""


# Tokens by kind: a user's, a worker's, a pre-created worker's activation token, or none.
TOKENS_SQL = """
SELECT CASE WHEN t.user_id IS NOT NULL THEN 'user'
            WHEN EXISTS (SELECT 1 FROM db_worker w WHERE w.token_id = t.id) THEN 'worker'
            WHEN EXISTS (SELECT 1 FROM db_worker w WHERE w.activation_token_id = t.id)
                 THEN 'activation'
            ELSE 'none' END AS kind,
       t.enabled
FROM db_token t
"""


# Every scope, with its workspaces (none: NULL).
WORKSPACES_SQL = """
SELECT s.name, w.id, w.public FROM db_scope s LEFT JOIN db_workspace w ON w.scope_id = s.id
"""

# Users by whether they are active, and tokens by kind and whether they are enabled.
IDENTITIES_SQL = f"""
SELECT 'users', CASE WHEN is_active THEN 'true' ELSE 'false' END, '', count(*)
FROM db_user GROUP BY 2
UNION ALL
SELECT 'tokens', kind, CASE WHEN enabled THEN 'true' ELSE 'false' END, count(*)
FROM ({TOKENS_SQL}) AS tokens GROUP BY 2, 3
"""  # noqa: S608 (no values)


def _json(value: Any) -> Any:
    """Django hands raw-SQL JSON columns over as text."""
    return json.loads(value) if isinstance(value, str) else value


class Architectures:
    """The architectures labels may name: Debian's and the workers', others are `other`."""

    def __init__(self, extra: Iterable[str]) -> None:
        self.known = set(families.DEBIAN_ARCHITECTURES) | set(extra)

    def label(self, architecture: str | None) -> str:
        if not architecture:
            return families.NO_ARCHITECTURE
        return architecture if architecture in self.known else families.OTHER


def registered_tasks() -> list[tuple[str, str]]:
    return [
        (task_type.value, name)
        for task_type in TaskType
        for name in BaseTask.task_names(task_type)
    ]


def route_methods() -> list[tuple[str, list[str]]]:
    """
    Each named route of the URLconf and the HTTP methods its view answers (HEAD, answered
    wherever GET is, is left out; plain function views count as GET only).
    """
    routes: dict[str, set[str]] = {}

    def walk(patterns: Sequence[URLPattern | URLResolver]) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns)
            elif pattern.name:
                view = getattr(pattern.callback, "view_class", None) or getattr(
                    pattern.callback, "cls", None
                )
                methods = (
                    {"GET"}
                    if view is None
                    else {
                        method
                        for method in families.HTTP_METHODS
                        if method != "HEAD" and hasattr(view, method.lower())
                    }
                )
                routes.setdefault(pattern.name, set()).update(methods)

    walk(get_resolver().url_patterns)
    return sorted((name, sorted(methods)) for name, methods in routes.items())


def _histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    bounds: Sequence[float],
    known: Iterable[Key],
    buckets: dict[Key, dict[float, float]],
    sums: dict[Key, float],
) -> HistogramMetricFamily:
    """A histogram from non-cumulative bucket counts keyed by upper bound (inf for +Inf)."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for key in sorted(set(known) | set(buckets)):
        counts = buckets.get(key, {})
        cumulative = 0.0
        series = []
        for bound in [*bounds, float("inf")]:
            cumulative += counts.get(float(bound), 0.0)
            series.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family.add_metric(list(key), series, sums.get(key, 0.0))
    return family


def _bound(text: str) -> float:
    return float("inf") if text == "+Inf" else float(text)


class DebusineCollector(Collector):
    """Builds every family at each `collect()`."""

    def collect(self) -> Iterator[Metric]:
        with transaction.atomic():
            fold_metric_deltas()
        counts = current_metric_counts()
        workspaces: dict[int, tuple[str, bool]] = {}
        scope_names: set[str] = set()
        with connection.cursor() as cursor:
            cursor.execute(WORKSPACES_SQL)
            for scope, workspace_id, public in cursor.fetchall():
                scope_names.add(scope)
                if workspace_id is not None:
                    workspaces[workspace_id] = (scope, public)
        scopes = sorted(scope_names)
        workers = self.read_workers()
        architectures = Architectures(
            arch for worker in workers for arch in [worker[5], *worker[6]] if arch
        )
        yield from self.work_requests(counts, workspaces, scopes, architectures)
        yield from self.by_category(counts, workspaces, scopes)
        yield from self.workers(workers, architectures)
        yield from self.worker_pools(counts, architectures)
        yield from self.file_stores()
        yield from self.identities(workspaces, scopes)
        yield from self.event_families()

    # --- Work requests, artifacts, collections (maintained counts) -------------------------

    def work_requests(
        self,
        counts: list[tuple[str, dict[str, Any], int, float]],
        workspaces: dict[int, tuple[str, bool]],
        scopes: list[str],
        architectures: Architectures,
    ) -> Iterator[Metric]:
        totals: dict[Key, float] = defaultdict(float)
        queue: dict[Key, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        queue_sums: dict[Key, float] = defaultdict(float)
        run: dict[Key, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        run_sums: dict[Key, float] = defaultdict(float)
        registered = {
            (task_type, name, families.NO_ARCHITECTURE) for task_type, name in registered_tasks()
        }
        #: (task type, task name, architecture) of existing work requests or observations.
        tasks: set[Key] = set()
        for family, key, count, total in counts:
            if family == "work_requests":
                workspace = workspaces.get(key["workspace"])
                if workspace is None:
                    continue
                task = (
                    key["task_type"],
                    key["task_name"],
                    architectures.label(key["host_architecture"]),
                )
                tasks.add(task)
                totals[(*task, key["status"], workspace[0])] += count
            elif family in ("work_request_queue_seconds", "work_request_run_seconds"):
                task = (
                    key["task_type"],
                    key["task_name"],
                    architectures.label(key["host_architecture"]),
                )
                tasks.add(task)
                buckets, sums = (
                    (queue, queue_sums) if family.endswith("queue_seconds") else (run, run_sums)
                )
                buckets[task][_bound(key["le"])] += count
                sums[task] += total
        gauge = GaugeMetricFamily(
            families.WORK_REQUESTS,
            "Work requests by task, host architecture, status and scope",
            labels=["task_type", "task_name", "host_architecture", "status", "scope"],
        )
        known = {
            (*task, status.value, scope)
            for task in tasks | registered
            for status in WorkRequestStatus
            for scope in scopes
        }
        for series in sorted(known | set(totals)):
            gauge.add_metric(list(series), totals.get(series, 0))
        yield gauge
        labels = ["task_type", "task_name", "host_architecture"]
        yield _histogram(
            families.WORK_REQUEST_QUEUE_SECONDS,
            "Seconds from a work request's creation to its start, by task and host architecture",
            labels,
            families.QUEUE_SECONDS_BUCKETS,
            tasks,
            queue,
            queue_sums,
        )
        yield _histogram(
            families.WORK_REQUEST_RUN_SECONDS,
            "Seconds from a work request's start to its completion, by task and host architecture",
            labels,
            families.RUN_SECONDS_BUCKETS,
            tasks,
            run,
            run_sums,
        )

    def by_category(
        self,
        counts: list[tuple[str, dict[str, Any], int, float]],
        workspaces: dict[int, tuple[str, bool]],
        scopes: list[str],
    ) -> Iterator[Metric]:
        for family, name, documentation in (
            ("artifacts", families.ARTIFACTS, "Artifacts by category and scope"),
            ("collections", families.COLLECTIONS, "Collections by category and scope"),
        ):
            totals: dict[Key, float] = defaultdict(float)
            categories: set[str] = set()
            for counted, key, count, _total in counts:
                workspace = workspaces.get(key.get("workspace", -1))
                if counted != family or workspace is None:
                    continue
                categories.add(key["category"])
                totals[(key["category"], workspace[0])] += count
            gauge = GaugeMetricFamily(name, documentation, labels=["category", "scope"])
            known = {(category, scope) for category in categories for scope in scopes}
            for labels in sorted(known | set(totals)):
                gauge.add_metric(list(labels), totals.get(labels, 0))
            yield gauge

    # --- Workers ----------------------------------------------------------------------------

    @staticmethod
    def read_workers() -> list[tuple[str, int, bool, bool, int, str | None, list[str], str]]:
        held = [WorkRequestStatus.PENDING.value, WorkRequestStatus.RUNNING.value]
        with connection.cursor() as cursor:
            cursor.execute(WORKERS_SQL, [held])
            rows = cursor.fetchall()
        workers = []
        for worker_type, concurrency, connected, enabled, busy, host, arches, pool in rows:
            host_architecture = _json(host)
            architectures = _json(arches)
            workers.append(
                (
                    worker_type,
                    int(concurrency),
                    bool(connected),
                    bool(enabled),
                    int(busy),
                    host_architecture if isinstance(host_architecture, str) else None,
                    [a for a in architectures if isinstance(a, str)]
                    if isinstance(architectures, list)
                    else [],
                    pool or families.NO_POOL,
                )
            )
        return workers

    @staticmethod
    def worker_state(connected: bool, enabled: bool, busy: int) -> str:
        if not enabled:
            return "disabled"
        if not connected:
            return "disconnected"
        return "busy" if busy else "idle"

    def workers(
        self,
        workers: list[tuple[str, int, bool, bool, int, str | None, list[str], str]],
        architectures: Architectures,
    ) -> Iterator[Metric]:
        by_state: dict[Key, float] = defaultdict(float)
        by_architecture: dict[Key, float] = defaultdict(float)
        slots: dict[Key, float] = defaultdict(float)
        hosts = {families.NO_ARCHITECTURE}
        worker_arches: set[str] = set()
        for worker_type, concurrency, connected, enabled, busy, host, arches, pool in workers:
            state = self.worker_state(connected, enabled, busy)
            host_label = architectures.label(host)
            hosts.add(host_label)
            by_state[(worker_type, pool, host_label, state)] += 1
            for arch in {architectures.label(arch) for arch in arches}:
                worker_arches.add(arch)
                by_architecture[(arch, worker_type, state)] += 1
            if enabled and connected:
                used = min(busy, concurrency)
                slots[(worker_type, pool, "used")] += used
                slots[(worker_type, pool, "free")] += concurrency - used
        types = [worker_type.value for worker_type in WorkerType]
        gauge = GaugeMetricFamily(
            families.WORKERS,
            "Workers by type, pool, host architecture and state "
            "(disabled, disconnected, idle, busy)",
            labels=["worker_type", "worker_pool", "host_architecture", "state"],
        )
        known: set[Key] = {
            (worker_type, families.NO_POOL, host, state)
            for worker_type in types
            for host in hosts
            for state in families.WORKER_STATES
        }
        for key in sorted(known | set(by_state)):
            gauge.add_metric(list(key), by_state.get(key, 0))
        yield gauge
        gauge = GaugeMetricFamily(
            families.WORKER_ARCHITECTURES,
            "Workers able to run tasks of each architecture, by type and state",
            labels=["architecture", "worker_type", "state"],
        )
        known = {
            (arch, worker_type, state)
            for arch in worker_arches
            for worker_type in types
            for state in families.WORKER_STATES
        }
        for key in sorted(known | set(by_architecture)):
            gauge.add_metric(list(key), by_architecture.get(key, 0))
        yield gauge
        gauge = GaugeMetricFamily(
            families.WORKER_SLOTS,
            "Task slots (concurrency) of connected, enabled workers: used or free",
            labels=["worker_type", "worker_pool", "state"],
        )
        known = {
            (worker_type, families.NO_POOL, state)
            for worker_type in types
            for state in ("used", "free")
        }
        for key in sorted(known | set(slots)):
            gauge.add_metric(list(key), slots.get(key, 0))
        yield gauge

    # --- Dynamic worker pools ----------------------------------------------------------------

    @staticmethod
    def worker_pools(
        counts: list[tuple[str, dict[str, Any], int, float]], architectures: Architectures
    ) -> Iterator[Metric]:
        month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        with connection.cursor() as cursor:
            cursor.execute(WORKER_POOLS_SQL, {"month": month})
            rows = cursor.fetchall()
        instances = GaugeMetricFamily(
            families.WORKER_POOL_INSTANCES,
            "Instances of each dynamic worker pool: booting (launched, not registered yet), "
            "running, draining",
            labels=["worker_pool", "state"],
        )
        maximum = GaugeMetricFamily(
            families.WORKER_POOL_MAX_INSTANCES,
            "max_active_instances of each dynamic worker pool",
            labels=["worker_pool"],
        )
        runtime = GaugeMetricFamily(
            families.WORKER_POOL_RUNTIME_SECONDS,
            "Instance-seconds used this calendar month (UTC), ended and live instances",
            labels=["worker_pool"],
        )
        launches = CounterMetricFamily(
            families.WORKER_POOL_LAUNCHES, "Instances launched", labels=["worker_pool"]
        )
        failures = CounterMetricFamily(
            families.WORKER_POOL_LAUNCH_FAILURES,
            "Failed launches (provider errors, instances that never registered)",
            labels=["worker_pool"],
        )
        terminations = CounterMetricFamily(
            families.WORKER_POOL_TERMINATIONS,
            "Instances ended, by reason",
            labels=["worker_pool", "reason"],
        )
        reasons = [reason.value for reason in TerminationReason]
        #: (pool, architecture) of every pool, so that empty histograms are exported too.
        known: set[Key] = set()
        for name, arches, limits, counters, booting, running, draining, seconds in rows:
            known.update((name, architectures.label(arch)) for arch in _json(arches) or ())
            limits, counters = _json(limits) or {}, _json(counters) or {}
            for state, count in zip(
                families.WORKER_POOL_INSTANCE_STATES, (booting, running, draining), strict=True
            ):
                instances.add_metric([name, state], int(count))
            maximum.add_metric([name], int(limits.get("max_active_instances", 1)))
            runtime.add_metric([name], float(seconds))
            launches.add_metric([name], int(counters.get("launches", 0)))
            failures.add_metric([name], int(counters.get("launch_failures", 0)))
            for reason in reasons:
                terminations.add_metric(
                    [name, reason], int(counters.get(f"terminated:{reason}", 0))
                )
        yield from (instances, maximum, runtime, launches, failures, terminations)
        pools = {row[0] for row in rows}
        histograms: dict[str, tuple[dict[Key, dict[float, float]], dict[Key, float]]] = {
            family: (defaultdict(lambda: defaultdict(float)), defaultdict(float))
            for family in ("worker_pool_boot_seconds", "worker_pool_queue_seconds")
        }
        for family, key, count, total in counts:
            if family in histograms and key["worker_pool"] in pools:
                series = (key["worker_pool"], architectures.label(key["architecture"] or None))
                buckets, sums = histograms[family]
                buckets[series][_bound(key["le"])] += count
                sums[series] += total
        labels = ["worker_pool", "architecture"]
        yield _histogram(
            families.WORKER_POOL_BOOT_SECONDS,
            "Seconds from a pool instance's launch to its worker's registration, by pool and "
            "the pool's first architecture",
            labels,
            families.POOL_SECONDS_BUCKETS,
            known,
            *histograms["worker_pool_boot_seconds"],
        )
        yield _histogram(
            families.WORKER_POOL_QUEUE_SECONDS,
            "Seconds from a work request's creation to its start on a pool worker, by pool and "
            "the work request's host architecture",
            labels,
            families.POOL_SECONDS_BUCKETS,
            known,
            *histograms["worker_pool_queue_seconds"],
        )

    # --- Stores, identities -----------------------------------------------------------------

    def file_stores(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            families.FILE_STORE_SIZE,
            "Bytes of the files in each file store",
            labels=["backend", "name"],
        )
        max_size = GaugeMetricFamily(
            families.FILE_STORE_MAX_SIZE,
            "Hard size limit of each file store that has one, in bytes",
            labels=["backend", "name"],
        )
        for backend, name, total, limit in FileStore.objects.order_by("name").values_list(
            "backend", "name", "total_size", "max_size"
        ):
            size.add_metric([backend, name], total)
            if limit is not None:
                max_size.add_metric([backend, name], limit)
        yield size
        yield max_size

    def identities(
        self, workspaces: dict[int, tuple[str, bool]], scopes: list[str]
    ) -> Iterator[Metric]:
        users = GaugeMetricFamily(
            families.USERS, "User accounts, active or not", labels=["active"]
        )
        with connection.cursor() as cursor:
            cursor.execute(IDENTITIES_SQL)
            rows = cursor.fetchall()
        active = {value: count for family, value, _, count in rows if family == "users"}
        for value in ("true", "false"):
            users.add_metric([value], active.get(value, 0))
        yield users
        tokens = GaugeMetricFamily(
            families.TOKENS,
            "API tokens by kind (user, worker, activation, none) and whether they are enabled",
            labels=["kind", "enabled"],
        )
        token_counts = {
            (kind, enabled): count for family, kind, enabled, count in rows if family == "tokens"
        }
        for kind in ("user", "worker", "activation", "none"):
            for enabled in ("true", "false"):
                tokens.add_metric([kind, enabled], token_counts.get((kind, enabled), 0))
        yield tokens
        gauge = GaugeMetricFamily(
            families.WORKSPACES,
            "Workspaces by scope, private or public",
            labels=["scope", "private"],
        )
        by_scope: dict[Key, float] = defaultdict(float)
        for scope, public in workspaces.values():
            by_scope[(scope, _bool(not public))] += 1
        for scope in scopes:
            for private in ("true", "false"):
                gauge.add_metric([scope, private], by_scope.get((scope, private), 0))
        yield gauge
        gauge = GaugeMetricFamily(families.SCOPES, "Scopes")
        gauge.add_metric([], len(scopes))
        yield gauge

    # --- Events (Redis) ---------------------------------------------------------------------

    def event_families(self) -> Iterator[Metric]:
        names = [
            families.HTTP_REQUEST_SECONDS,
            families.SCHEDULER_PASS_SECONDS,
            families.DISPATCH_LATENCY_SECONDS,
            families.UPLOAD_BYTES,
        ]
        events.flush()  # this process's latest observations
        raw = dict(zip(names, events.read_families(names), strict=True))
        requests = events.read_histogram(raw[families.HTTP_REQUEST_SECONDS])
        routes: set[Key] = {
            (name, method) for name, methods in route_methods() for method in methods
        }
        yield self.event_histogram(
            families.HTTP_REQUEST_SECONDS,
            "Seconds to answer HTTP requests, by route name and method",
            ["endpoint", "method"],
            families.REQUEST_SECONDS_BUCKETS,
            routes,
            requests,
        )
        for name, documentation in (
            (families.SCHEDULER_PASS_SECONDS, "Seconds each scheduling pass took, by kind"),
            (
                families.DISPATCH_LATENCY_SECONDS,
                "Seconds from a change asking for a scheduling pass to the end of that pass",
            ),
        ):
            yield self.event_histogram(
                name,
                documentation,
                ["kind"],
                families.SCHEDULER_SECONDS_BUCKETS,
                {(kind,) for kind in families.PASS_KINDS},
                events.read_histogram(raw[name]),
            )
        uploaded = CounterMetricFamily(
            families.UPLOAD_BYTES, "Bytes of file content received by uploads", labels=[]
        )
        uploaded.add_metric([], events.read_counter(raw[families.UPLOAD_BYTES]).get((), 0.0))
        yield uploaded
        queues = GaugeMetricFamily(
            families.CELERY_QUEUE_LENGTH,
            "Messages waiting in each Celery queue",
            labels=["queue"],
        )
        lengths = events.celery_queue_lengths(families.CELERY_QUEUES)
        if lengths is not None:
            for queue, length in lengths.items():
                queues.add_metric([queue], length)
        yield queues

    @staticmethod
    def event_histogram(
        name: str,
        documentation: str,
        labels: list[str],
        bounds: Sequence[float],
        known: set[Key],
        data: events.HistogramData,
    ) -> HistogramMetricFamily:
        buckets = {
            key: {_bound(le): count for le, count in counts.items()}
            for key, counts in data.buckets.items()
            if len(key) == len(labels)
        }
        return _histogram(name, documentation, labels, bounds, known, buckets, data.sums)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def render(accept: str | None) -> tuple[bytes, str]:
    """One scrape, encoded as `accept` asks (OpenMetrics or the Prometheus text format)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DebusineCollector())
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
