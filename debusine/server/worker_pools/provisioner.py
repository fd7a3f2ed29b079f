"""
One provisioner pass: for every pool, launch what the waiting work needs and terminate what
is no longer needed, within the pool's limits. Every decision is logged with its reason.

The allocation rule, per pool, pools taken by descending priority (a pool only counts the
pending work that pools before it do not already cover):

- the work it can serve: pending, unassigned Worker work requests whose host architecture
  is one of the pool's (or none), of the pool's scope (any scope for an instance-wide pool),
  that workers with the pool's tags could run (`matching`);
- each work request is expected to last the average duration of its task over the last
  `DURATION_WINDOW` (DEFAULT_DURATION when never seen);
- instances wanted for the queue: one per work request (ephemeral pools, or no
  `target_latency_seconds`), else ceil(expected seconds of the queue / target latency), never
  more than the number of work requests; idle and booting instances count against it;
- desired = busy instances + instances wanted for the queue + `idle_count`, clamped to
  [`min_active_instances`, `max_active_instances`] (the minimum and `idle_count` of the
  limits' schedule that is on, if any: `schedules`);
- launches: desired - active, none while the pool backs off after failed launches or when
  its monthly budget (`target_max_seconds_per_month`) or its scope's
  (`ScopeWorkerPoolLimits`) is used up; the pending work of a scope whose budget is used up
  counts for no pool;
- terminations: idle instances above `desired` once idle for `max_idle_seconds`; drained,
  recycled and ephemeral instances once idle; instances that never registered within
  `register_timeout_seconds` (a failed launch: the pool backs off); instances whose provider
  announced an interruption (their work is retried elsewhere at once); instances carrying
  the pool's tag that the database does not know (leaked). A busy instance is never
  terminated, except on an interruption.

A pass holds a PostgreSQL advisory lock (session level, across its transactions): any
number of provisioners may run, one pass at a time, each seeing what the previous launched.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from debusine.server.db.models import Scope, TerminationReason, Worker, WorkerPool
from debusine.server.db.models.worker_pools import ScopeBudget, scope_budgets
from debusine.server.work_requests import sql
from debusine.server.worker_pools import instances
from debusine.server.worker_pools.matching import PoolCapabilities
from debusine.server.worker_pools.providers.base import Provider, ProviderError

logger = logging.getLogger("debusine.server.worker_pools")

#: Key of the advisory lock that serialises provisioner passes.
PROVISIONER_LOCK_KEY = 0x64627076  # "dbpv"
#: How far back task durations are averaged.
DURATION_WINDOW = timedelta(days=7)
#: The dynamic metadata key a worker sets when its instance announces an interruption.
INTERRUPTION_NOTICE_KEY = "system:interruption_notice"
#: Expected duration of a task never seen completing.
DEFAULT_DURATION = 600.0

# Pending work waiting for a worker, by what decides which pools may serve it.
DEMAND_SQL = f"""
SELECT ws.scope_id, wr.task_data->>'host_architecture', wr.task_name,
       wr.task_data->>'backend', count(*)
FROM db_workrequest wr JOIN db_workspace ws ON ws.id = wr.workspace_id
WHERE wr.status = {sql.PENDING} AND wr.worker_id IS NULL AND wr.task_type = 'Worker'
GROUP BY 1, 2, 3, 4
"""  # noqa: S608 (statuses from the enumerations)

DURATIONS_SQL = """
SELECT task_name, avg(extract(epoch FROM completed_at - started_at))
FROM db_workrequest
WHERE task_type = 'Worker' AND completed_at >= %s AND started_at IS NOT NULL
GROUP BY task_name
"""

# Every pool worker with a live instance, with what the pass decides from: is it busy, when
# did it last finish work, how many work requests did this instance take, did it report an
# interruption notice. One query, plain rows (no model instances: a pass reads a thousand;
# times as seconds since the epoch: parsing thousands of timestamps costs more than the query).
INSTANCES_SQL = f"""
SELECT w.id, w.name, w.worker_pool_id, extract(epoch FROM w.instance_created_at)::float8,
       extract(epoch FROM w.registered_at)::float8,
       w.token_id, w.activation_token_id, w.worker_pool_data->>'instance_id',
       w.worker_pool_data ? 'recycle', w.draining_at IS NOT NULL, w.max_work_requests,
       coalesce(s.busy, false), extract(epoch FROM s.last_completed_at)::float8,
       coalesce(s.work_requests, 0),
       w.dynamic_metadata ? %s
FROM db_worker w
LEFT JOIN LATERAL (
    SELECT bool_or(wr.status IN {sql.HELD}) AS busy,
           max(wr.completed_at) FILTER (WHERE wr.completed_at >= w.instance_created_at)
               AS last_completed_at,
           count(*) FILTER (WHERE wr.status IN {sql.HELD}
                            OR wr.started_at >= w.instance_created_at) AS work_requests
    FROM db_workrequest wr
    WHERE wr.worker_id = w.id
      AND (wr.status IN {sql.HELD} OR wr.started_at >= w.instance_created_at
           OR wr.completed_at >= w.instance_created_at)
) s ON true
WHERE w.worker_pool_id = ANY(%s) AND w.instance_created_at IS NOT NULL
ORDER BY w.name
"""  # noqa: S608 (statuses from the enumerations)


@dataclass
class Demand:
    """Pending work requests of one (scope, architecture, task) not yet covered by a pool."""

    scope_id: int
    architecture: str | None
    task_name: str
    #: The executor backend its task data asks for (None: the task's default, or none).
    backend: str | None
    count: int
    seconds_each: float


@dataclass
class PoolInstance:
    """A pool worker with a live instance, as the pass reads it (`INSTANCES_SQL`)."""

    pk: int
    name: str
    worker_pool_id: int
    #: Times in seconds since the epoch.
    instance_created_at: float
    registered_at: float | None
    token_id: int | None
    activation_token_id: int | None
    instance_id: str | None
    #: Drained to be replaced (work request count or age), not for scale-in.
    recycle: bool
    draining: bool
    max_work_requests: int | None
    busy: bool
    last_completed_at: float | None
    #: Work requests this instance took (held or started since its launch).
    work_requests: int
    #: The worker reported its instance's interruption notice (instance metadata).
    interruption_notice: bool

    @property
    def registered(self) -> bool:
        """Whether the current instance's worker used its activation token."""
        return self.activation_token_id is None and self.token_id is not None


@dataclass
class PoolReport:
    """What the pass decided for one pool."""

    pool: str
    decisions: list[str] = field(default_factory=list)
    launched: int = 0
    terminated: dict[str, int] = field(default_factory=dict)
    desired: int = 0
    active: int = 0


@dataclass
class PassReport:
    pools: list[PoolReport] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"pool {report.pool}: {line}" for report in self.pools for line in report.decisions
        ]


@contextmanager
def provisioner_lock() -> Iterator[None]:
    """Hold the provisioner's session-level advisory lock (waiting for another pass)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [PROVISIONER_LOCK_KEY])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PROVISIONER_LOCK_KEY])


def load_demand(now: datetime) -> list[Demand]:
    with connection.cursor() as cursor:
        cursor.execute(DURATIONS_SQL, [now - DURATION_WINDOW])
        durations = {name: float(seconds) for name, seconds in cursor.fetchall() if seconds}
        cursor.execute(DEMAND_SQL)
        rows = cursor.fetchall()
    return [
        Demand(scope, architecture, name, backend, count, durations.get(name, DEFAULT_DURATION))
        for scope, architecture, name, backend, count in rows
    ]


def load_instances(pool_ids: list[int]) -> dict[int, list[PoolInstance]]:
    """Every live instance of the pools, by pool id."""
    found: dict[int, list[PoolInstance]] = {pool_id: [] for pool_id in pool_ids}
    with connection.cursor() as cursor:
        cursor.execute(INSTANCES_SQL, [INTERRUPTION_NOTICE_KEY, pool_ids])
        for row in cursor.fetchall():
            found[row[2]].append(PoolInstance(*row))
    return found


def serves(pool: WorkerPool, demand: Demand) -> bool:
    if pool.scope_id is not None and demand.scope_id != pool.scope_id:
        return False
    return demand.architecture is None or demand.architecture in pool.architectures


ProviderFactory = Callable[[WorkerPool], Provider]


class PoolProvisioner:
    """Decides and acts for one pool within a pass."""

    def __init__(
        self,
        pool: WorkerPool,
        provider: Provider,
        now: datetime,
        exhausted_scopes: dict[int, tuple[str, ScopeBudget]] | None = None,
    ) -> None:
        self.pool = pool
        #: Scopes whose monthly budget is used up, by id: (name, budget).
        self.exhausted_scopes = exhausted_scopes or {}
        self.provider = provider
        self.now = now
        self.now_epoch = now.timestamp()
        self.limits = pool.parsed_limits()
        self.report = PoolReport(pool.name)
        #: Work requests retried in this pass after an interruption (not in the demand yet).
        self.retried_after_interruption = 0

    def decide(self, text: str) -> None:
        self.report.decisions.append(text)
        logger.info("pool %s: %s", self.pool.name, text)

    @staticmethod
    def model(worker: PoolInstance) -> Worker:
        """The worker's row, to act on it (the pass reads plain rows)."""
        return Worker.objects.select_related("token", "activation_token").get(pk=worker.pk)

    def terminate(self, worker: PoolInstance, reason: str, why: str) -> None:
        try:
            instances.terminate_worker(self.pool, self.model(worker), reason, self.provider)
        except ProviderError as error:
            self.decide(f"could not terminate {worker.name} ({why}): {error}")
            return
        self.report.terminated[reason] = self.report.terminated.get(reason, 0) + 1
        self.decide(f"terminated {worker.name}: {why}")

    def idle_seconds(self, worker: PoolInstance) -> float:
        since = max(
            value
            for value in (
                worker.instance_created_at,
                worker.registered_at,
                worker.last_completed_at,
            )
            if value is not None
        )
        return self.now_epoch - since

    def sweep(self, workers: list[PoolInstance]) -> list[PoolInstance]:
        """Match what the provider runs with the database; return the workers still there."""
        running = {item.instance_id: item for item in self.provider.list_running(self.pool.name)}
        known = {str(w.instance_id): w for w in workers}
        for instance_id, item in running.items():
            if instance_id not in known:
                try:
                    self.provider.terminate(instance_id)
                except ProviderError as error:
                    self.decide(f"could not sweep leaked instance {instance_id}: {error}")
                    continue
                self.pool.count(f"terminated:{TerminationReason.LEAKED}")
                self.pool.save(update_fields=["counters"])
                self.report.terminated["leaked"] = self.report.terminated.get("leaked", 0) + 1
                self.decide(
                    f"swept leaked instance {instance_id} (worker {item.worker_name}): it "
                    "carries the pool's tag but no worker of the pool runs on it"
                )
        remaining = []
        for worker in workers:
            if worker.instance_id is None:
                remaining.append(worker)  # being launched by nobody: handled by the timeout
                continue
            instance_id = worker.instance_id
            seen = running.get(instance_id)
            if seen is None:
                registered = worker.registered
                instances.forget_instance(self.pool, self.model(worker), TerminationReason.GONE)
                self.report.terminated["gone"] = self.report.terminated.get("gone", 0) + 1
                if registered:
                    self.decide(f"{worker.name}: its instance {instance_id} is gone; work retried")
                else:
                    # It died before registering: a failed launch (a broken image or config).
                    self.decide(
                        f"{worker.name}: its instance {instance_id} ended before registering"
                    )
                    instances.back_off(
                        self.pool, f"{worker.name} ended before registering", self.now
                    )
                continue
            if seen.interruption_notice or worker.interruption_notice:
                instances.drain_worker(self.model(worker), "interruption notice")
                self.terminate(
                    worker,
                    TerminationReason.INTERRUPTED,
                    "the provider announced an interruption: its work is retried elsewhere",
                )
                if worker.busy:
                    self.retried_after_interruption += 1
                continue
            remaining.append(worker)
        return remaining

    def retire(self, workers: list[PoolInstance]) -> list[PoolInstance]:
        """Terminate what must go whatever the demand; return the rest."""
        remaining = []
        for worker in workers:
            state = worker
            age = self.now_epoch - worker.instance_created_at
            if not worker.registered:
                if age > self.limits.register_timeout_seconds:
                    self.terminate(
                        worker,
                        TerminationReason.NEVER_REGISTERED,
                        f"not registered {age:.0f} s after its launch "
                        f"(register_timeout_seconds {self.limits.register_timeout_seconds})",
                    )
                    instances.back_off(self.pool, f"{worker.name} never registered", self.now)
                    continue
                remaining.append(worker)
                continue
            if worker.registered_at is not None and (
                self.pool.last_launch_failure_at is None
                or worker.registered_at > self.pool.last_launch_failure_at.timestamp()
            ):
                instances.launch_succeeded(self.pool)
            if worker.max_work_requests and state.work_requests >= worker.max_work_requests:
                if state.busy:
                    remaining.append(worker)
                    continue
                reason = (
                    TerminationReason.EPHEMERAL
                    if self.pool.ephemeral
                    else TerminationReason.RECYCLED
                )
                self.terminate(
                    worker, reason, f"took its {state.work_requests} work request(s) and is idle"
                )
                continue
            if (
                self.limits.max_age_seconds is not None
                and age > self.limits.max_age_seconds
                and not worker.draining
            ):
                model = self.model(worker)
                model.worker_pool_data["recycle"] = True
                model.save(update_fields=["worker_pool_data"])
                instances.drain_worker(model, f"older than max_age_seconds ({age:.0f} s)")
                worker.draining = True
                worker.recycle = True
            if worker.draining and not state.busy:
                recycled = worker.recycle
                self.terminate(
                    worker,
                    TerminationReason.RECYCLED if recycled else TerminationReason.DRAINED,
                    "drained and idle",
                )
                continue
            remaining.append(worker)
        return remaining

    def run(self, demand: list[Demand], workers: list[PoolInstance]) -> PoolReport:
        pool = self.pool
        try:
            workers = self.sweep(workers)
        except ProviderError as error:
            self.decide(f"cannot list the provider's instances: {error}; nothing done")
            return self.report
        workers = self.retire(workers)
        if not pool.enabled:
            for worker in workers:
                if not worker.busy:
                    self.terminate(worker, TerminationReason.POOL_DISABLED, "the pool is disabled")
            return self.report

        busy = [w for w in workers if w.busy]
        booting = [w for w in workers if not w.registered]
        not_idle = {w.pk for w in busy} | {w.pk for w in booting}
        idle = [w for w in workers if w.pk not in not_idle and not w.draining]
        draining = [w for w in workers if w.draining and not w.busy]

        served = [item for item in demand if item.count > 0 and serves(pool, item)]
        capabilities = PoolCapabilities(pool.tags)
        if capabilities.restricts:
            unfit: dict[str, int] = {}
            runnable = []
            for item in served:
                missing = capabilities.missing(item.task_name, item.backend)
                if missing is None:
                    runnable.append(item)
                else:
                    unfit[missing] = unfit.get(missing, 0) + item.count
            if unfit:
                self.decide(
                    f"does not count {sum(unfit.values())} pending work request(s) its "
                    "workers' tags cannot run ("
                    + "; ".join(f"{count} x {why}" for why, count in sorted(unfit.items()))
                    + ")"
                )
            served = runnable
        withheld = [item for item in served if item.scope_id in self.exhausted_scopes]
        if withheld:
            served = [item for item in served if item.scope_id not in self.exhausted_scopes]
            reasons = sorted(
                {
                    budget.describe(name)
                    for name, budget in (self.exhausted_scopes[item.scope_id] for item in withheld)
                }
            )
            self.decide(
                f"does not count {sum(item.count for item in withheld)} pending work "
                f"request(s): {'; '.join(reasons)}"
            )
        # The work requests retried after an interruption in this pass are pending now.
        pending = sum(item.count for item in served) + self.retried_after_interruption
        if pool.ephemeral or self.limits.target_latency_seconds is None:
            for_queue = pending
        else:
            seconds = sum(item.count * item.seconds_each for item in served) + (
                self.retried_after_interruption * DEFAULT_DURATION
            )
            for_queue = min(pending, math.ceil(seconds / self.limits.target_latency_seconds))
        effective = self.limits.effective_at(self.now)
        desired = len(busy) + for_queue + effective.idle_count
        clamped = max(
            effective.min_active_instances, min(self.limits.max_active_instances, desired)
        )
        active = len(workers) - len(draining)
        self.report.desired, self.report.active = clamped, active

        # The work this pool's capacity covers is not left for lower-priority pools.
        covering = max(0, clamped - len(busy))
        for item in served:
            taken = min(item.count, covering)
            item.count -= taken
            covering -= taken

        to_launch = clamped - active
        why = (
            f"{pending} pending work request(s) it can run, {len(busy)} busy, "
            f"{len(idle)} idle, {len(booting)} booting: wants {desired}, "
            f"limits [{effective.min_active_instances}, {self.limits.max_active_instances}]"
        )
        if effective.schedule is not None:
            why += f", idle_count {effective.idle_count} from {effective.schedule}"
        if to_launch > 0:
            self.launch(to_launch, why)
        elif to_launch < 0:
            self.scale_in(idle, -to_launch, why)
        elif pending:
            self.decide(f"no change: {why}")
        return self.report

    def launch(self, count: int, why: str) -> None:
        pool = self.pool
        if pool.launch_backoff_until is not None and pool.launch_backoff_until > self.now:
            self.decide(
                f"would launch {count} ({why}) but backs off until "
                f"{pool.launch_backoff_until.isoformat()} after "
                f"{pool.consecutive_launch_failures} failed launch(es)"
            )
            return
        exhausted_scope = self.exhausted_scopes.get(pool.scope_id or 0)
        if exhausted_scope is not None:
            name, scope_budget = exhausted_scope
            self.decide(f"would launch {count} ({why}) but the {scope_budget.describe(name)}")
            pool.count("launches_refused_budget")
            pool.save(update_fields=["counters"])
            return
        budget = self.limits.target_max_seconds_per_month
        if budget is not None:
            used = pool.runtime_this_month(self.now)
            if used >= budget:
                self.decide(
                    f"would launch {count} ({why}) but the monthly budget is used up: "
                    f"{used:.0f} of {budget} s (target_max_seconds_per_month)"
                )
                pool.count("launches_refused_budget")
                pool.save(update_fields=["counters"])
                return
        on_demand = 0
        specification = pool.parsed_specifications()
        if self.retried_after_interruption and getattr(
            specification, "on_demand_after_interruption", False
        ):
            on_demand = min(count, self.retried_after_interruption)
        outcome = instances.launch_workers(pool, count, why, self.provider, on_demand=on_demand)
        self.report.launched += len(outcome.launched)
        names = ", ".join(worker.name for worker in outcome.launched) or "none"
        if on_demand:
            why += (
                f"; {on_demand} on on-demand capacity for the work retried after a spot "
                "interruption"
            )
        self.decide(f"launched {len(outcome.launched)} of {count} ({names}): {why}")
        if outcome.error is not None:
            self.decide(f"launch failed, backing off: {outcome.error}")

    def scale_in(self, idle: list[PoolInstance], surplus: int, why: str) -> None:
        max_idle = self.limits.max_idle_seconds
        candidates = sorted(
            idle,
            key=lambda w: -self.idle_seconds(w),
        )
        for worker in candidates[:surplus]:
            idle_for = self.idle_seconds(worker)
            if idle_for < max_idle:
                self.decide(
                    f"keeps {worker.name}: idle {idle_for:.0f} s < max_idle_seconds {max_idle} "
                    f"({why})"
                )
                continue
            self.terminate(
                worker,
                TerminationReason.IDLE,
                f"idle {idle_for:.0f} s >= max_idle_seconds {max_idle} ({why})",
            )


def run_provisioner_pass(
    *, provider_factory: ProviderFactory | None = None, now: datetime | None = None
) -> PassReport:
    """One pass over every pool (see the module's docstring)."""
    started = time.perf_counter()
    report = PassReport()
    factory = provider_factory or instances.provider_for
    with provisioner_lock():
        now = now or timezone.now()
        pools = list(
            WorkerPool.objects.select_related("provider_account").order_by("-priority", "name")
        )
        instances.record_ready_instances()
        demand = load_demand(now)
        exhausted = {
            scope_id: budget for scope_id, budget in scope_budgets(now).items() if budget.exhausted
        }
        scope_names = (
            dict(Scope.objects.filter(pk__in=exhausted).values_list("pk", "name"))
            if exhausted
            else {}
        )
        exhausted_scopes = {
            scope_id: (scope_names.get(scope_id, str(scope_id)), budget)
            for scope_id, budget in exhausted.items()
        }
        # Every pool's live instances in one query (a pass must not cost a query per pool).
        workers = load_instances([pool.pk for pool in pools])
        for pool in pools:
            try:
                provider = factory(pool)
            except (ProviderError, ValueError) as error:
                pool_report = PoolReport(pool.name, [f"no provider: {error}"])
                logger.error("pool %s: no provider: %s", pool.name, error)
                report.pools.append(pool_report)
                continue
            report.pools.append(
                PoolProvisioner(pool, provider, now, exhausted_scopes).run(
                    demand, workers[pool.pk]
                )
            )
    report.seconds = time.perf_counter() - started
    return report


def terminate_by_admin(worker: Worker) -> None:
    """`worker_pool terminate`: end the worker's instance now, whatever it runs."""
    assert worker.worker_pool is not None
    with provisioner_lock():
        instances.terminate_worker(worker.worker_pool, worker, TerminationReason.ADMIN)


def launch_by_admin(pool: WorkerPool, count: int) -> instances.LaunchOutcome:
    with provisioner_lock():
        return instances.launch_workers(pool, count, "asked by an administrator")
