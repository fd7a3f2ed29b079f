"""
One scheduling pass: assign pending work requests to idle workers, in bulk SQL.

A pass is one transaction holding a PostgreSQL advisory lock, so passes never overlap, even
across several scheduler processes; the assignment UPDATE only touches rows that are still
pending and unassigned, so a work request is never given to two workers. Workers are told after
the commit (`work_request_available`); a fallback pass also re-tells workers about work they
were given earlier and have not fetched (their message may have been lost).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from debusine.protocol.generations import legacy_view_of_metadata
from debusine.protocol.work_requests import TaskType, WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import WorkRequest
from debusine.server.lookups import ServerLookupResolver
from debusine.server.metrics import events as metrics_events
from debusine.server.scheduler.matching import (
    Candidate,
    IdleWorker,
    Matcher,
    needs_task_instance,
    overrides,
)
from debusine.server.signing_keys import SignerRoleError, check_signer_role
from debusine.server.work_requests import notifications, sql, transitions
from debusine.tasks import BaseTask, LookupFailedError, TaskDataError

logger = logging.getLogger(__name__)

#: Key of the advisory lock that serialises scheduling passes (and lease expiry).
SCHEDULER_LOCK_KEY = 0x64627573  # "dbus"

#: Most pending work requests read per query while looking for runnable ones. A page is
#: a few times the number of free slots: a worker that just finished reads a handful.
CANDIDATE_PAGE_SIZE = 500
CANDIDATES_PER_FREE_SLOT = 4
MIN_CANDIDATE_PAGE = 8


def lease_grace() -> timedelta:
    return timedelta(seconds=settings.DEBUSINE_WORKER_LEASE_GRACE)


def lease_grace_seconds() -> float:
    return float(settings.DEBUSINE_WORKER_LEASE_GRACE)


def lock_scheduler(*, wait: bool = True) -> bool:
    """
    Take the scheduler's advisory lock until the end of the current transaction. With
    `wait=False`, give up at once (return False) when another pass holds it.
    """
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEDULER_LOCK_KEY])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SCHEDULER_LOCK_KEY])
        row = cursor.fetchone()
        return bool(row and row[0])


# A worker is idle when it is connected, its token is enabled and alive (seen within the lease
# grace period: a server process that died cannot have cleared `connected_at`), and it holds
# fewer pending/running work requests than its concurrency.
IDLE_WORKERS_SQL = f"""
WITH idle AS (
    SELECT w.id, w.worker_type, w.connected_at,
           w.concurrency - (
               SELECT count(*) FROM db_workrequest wr
               WHERE wr.worker_id = w.id AND wr.status IN {sql.HELD}
           ) AS free_slots,
           w.dynamic_metadata || w.static_metadata AS metadata
    FROM db_worker w
    JOIN db_token t ON t.id = w.token_id
    WHERE w.connected_at IS NOT NULL
      AND t.enabled
      AND (t.expire_at IS NULL OR t.expire_at > now())
      AND t.last_seen_at >= now() - %s * interval '1 second'
      AND w.worker_type IN ('external', 'signing')
      -- A draining pool worker takes no new work; one with a per-instance cap (ephemeral
      -- pools: 1) takes no more once it has taken that many since its instance started.
      AND w.draining_at IS NULL
      AND (w.max_work_requests IS NULL OR (
          SELECT count(*) FROM db_workrequest wr
          WHERE wr.worker_id = w.id
            AND (wr.status IN {sql.HELD} OR wr.started_at >= w.instance_created_at)
      ) < w.max_work_requests)
      AND (%s::bigint IS NULL OR w.id = %s::bigint)
      -- Evaluated once (an InitPlan): with nothing waiting in the queue, no worker is read, so
      -- a worker connecting, reporting metadata or asking for work costs one index probe.
      AND EXISTS (
          SELECT 1 FROM db_workrequest q
          WHERE q.status = {sql.PENDING} AND q.worker_id IS NULL
            AND q.task_type IN {sql.literals(TaskType.WORKER, TaskType.SIGNING)}
      )
), signed AS (
    SELECT *, md5(worker_type || metadata::text) AS signature FROM idle WHERE free_slots > 0
)
-- Workers mostly share a few configurations: each distinct metadata travels once.
SELECT id, worker_type, free_slots, signature,
       CASE WHEN row_number() OVER (PARTITION BY signature ORDER BY connected_at, id) = 1
            THEN metadata END
FROM signed
ORDER BY connected_at, id
"""  # noqa: S608 (statuses from the enumerations, values as parameters)

# Pending unassigned work requests in queue order, one page after a keyset position; with
# their (configured) task data when their task needs building (`needs_task_instance`).
CANDIDATES_SQL = f"""
SELECT id, task_type, task_name, task_data->>'host_architecture',
       priority_base + priority_adjustment, created_at,
       CASE WHEN task_type || ':' || task_name = ANY(%(built)s)
            THEN COALESCE(NULLIF(configured_task_data, '{{}}'::jsonb), task_data) END
FROM db_workrequest
WHERE status = {sql.PENDING} AND worker_id IS NULL
  AND task_type IN {sql.literals(TaskType.WORKER, TaskType.SIGNING)}
  AND task_type || ':' || task_name = ANY(%(kinds)s)
  AND (%(first)s::boolean
       OR priority_base + priority_adjustment < %(priority)s::integer
       OR (priority_base + priority_adjustment = %(priority)s::integer
           AND (created_at, id) > (%(created_at)s::timestamptz, %(id)s::bigint)))
ORDER BY priority_base + priority_adjustment DESC, created_at, id
LIMIT %(limit)s
"""  # noqa: S608 (statuses from the enumerations, values as parameters)

# Workers holding pending work they have not fetched yet (for the fallback's re-notification).
UNFETCHED_SQL = f"""
SELECT DISTINCT wr.worker_id FROM db_workrequest wr
JOIN db_worker w ON w.id = wr.worker_id
WHERE wr.status = {sql.PENDING} AND wr.worker_id IS NOT NULL AND w.connected_at IS NOT NULL
"""  # noqa: S608 (statuses from the enumerations, values as parameters)


@dataclass
class PassResult:
    """What one pass did."""

    idle_workers: int = 0
    candidates_seen: int = 0
    assigned: list[tuple[int, int]] = field(default_factory=list)  # (work request, worker)
    notified_workers: set[int] = field(default_factory=set)
    seconds: float = 0.0
    #: Work requests that could not be configured: they ended as errors.
    failed: list[int] = field(default_factory=list)


@dataclass
class _Preparation:
    """What building tasks and computing dynamic data gave, while matching."""

    #: Work request id -> its dynamic task data, stored if the assignment happens.
    dynamic_data: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: (work request id, error code, message) of the work requests to end as errors.
    failures: list[tuple[int, str, str]] = field(default_factory=list)


def _prepare_candidate(
    matcher: Matcher, candidate: Candidate, task_data: Any, preparation: _Preparation
) -> Candidate | None:
    """
    Build the candidate's task and, when its class computes dynamic data and an idle worker
    would take it, compute that now (resolving its lookups). None when it cannot be assigned:
    a candidate that failed is recorded in `preparation.failures`.
    """
    task_class = BaseTask.class_from_name(candidate.task_type, candidate.task_name)
    data = task_data if isinstance(task_data, dict) else json.loads(task_data)
    try:
        task = task_class(data)
    except TaskDataError as error:
        preparation.failures.append((candidate.id, "configure-failed", str(error)))
        return None
    candidate = replace(candidate, task=task)
    signing = candidate.task_type == TaskType.SIGNING
    if not (signing or overrides(task_class, "compute_dynamic_data")) or not matcher.can_take(
        candidate
    ):
        return candidate
    work_request = WorkRequest.objects.select_related("workspace", "created_by").get(
        pk=candidate.id
    )
    if signing:
        # Checked at creation, and again now: a signer whose role was revoked while the work
        # request waited must not have it signed.
        try:
            check_signer_role(
                work_request.created_by,
                work_request.workspace,
                candidate.task_type,
                candidate.task_name,
                data,
            )
        except SignerRoleError as error:
            preparation.failures.append((candidate.id, "permission-denied", str(error)))
            return None
        if not overrides(task_class, "compute_dynamic_data"):
            return candidate
    try:
        dynamic = task.compute_dynamic_data(ServerLookupResolver(work_request))
    except (LookupFailedError, TaskDataError) as error:
        preparation.failures.append((candidate.id, "configure-failed", str(error)))
        return None
    except Exception as error:
        # A bug in one task must not stop the queue: that work request fails instead.
        logger.exception("computing the dynamic data of work request %s failed", candidate.id)
        preparation.failures.append(
            (candidate.id, "dynamic-data-failed", f"{type(error).__name__}: {error}")
        )
        return None
    if dynamic is not None:
        preparation.dynamic_data[candidate.id] = dynamic.model_dump(mode="json")
    return candidate


def load_idle_workers(only: int | None = None) -> list[IdleWorker]:
    with connection.cursor() as cursor:
        cursor.execute(IDLE_WORKERS_SQL, [lease_grace_seconds(), only, only])
        rows = cursor.fetchall()
    # Django has psycopg hand JSON columns over as text: decode each distinct one once.
    metadata = {row[3]: json.loads(row[4]) for row in rows if row[4] is not None}
    return [
        IdleWorker(
            id=row[0],
            worker_type=row[1],
            free_slots=row[2],
            # 0.16 workers report tags: matching reads them as the keys of 0.11/0.12.
            metadata=legacy_view_of_metadata(metadata[row[3]]),
            signature=row[3],
        )
        for row in rows
    ]


def match_candidates(
    matcher: Matcher, result: PassResult, preparation: _Preparation | None = None
) -> list[tuple[int, int]]:
    """Walk the queue page by page until every free slot is taken or the queue ends."""
    preparation = preparation if preparation is not None else _Preparation()
    assignments: list[tuple[int, int]] = []
    position: tuple[int, datetime | None, int] | None = None
    with connection.cursor() as cursor:
        while matcher.free_slots > 0:
            kinds = matcher.runnable_kinds()
            if not kinds:
                break
            first = position is None
            page_size = min(
                CANDIDATE_PAGE_SIZE,
                max(MIN_CANDIDATE_PAGE, matcher.free_slots * CANDIDATES_PER_FREE_SLOT),
            )
            priority, created_at, last_id = position or (0, None, 0)
            cursor.execute(
                CANDIDATES_SQL,
                {
                    "first": first,
                    "priority": priority,
                    "created_at": created_at,
                    "id": last_id,
                    "limit": page_size,
                    "kinds": kinds,
                    "built": [kind for kind in kinds if needs_task_instance(*kind.split(":", 1))],
                },
            )
            rows = cursor.fetchall()
            for row in rows:
                candidate: Candidate | None = Candidate(row[0], row[1], row[2], row[3])
                if row[6] is not None:
                    assert candidate is not None
                    candidate = _prepare_candidate(matcher, candidate, row[6], preparation)
                    if candidate is None:
                        continue
                assert candidate is not None
                worker_id = matcher.assign(candidate)
                if worker_id is not None:
                    assignments.append((row[0], worker_id))
                    if matcher.free_slots == 0:
                        break
            result.candidates_seen += len(rows)
            if len(rows) < page_size:
                break
            last = rows[-1]
            position = (last[4], last[5], last[0])
    return assignments


def fail_unconfigurable(failures: list[tuple[int, str, str]]) -> list[int]:
    """
    End as errors the work requests whose task could not be configured (invalid task data,
    a lookup that matched nothing), through the model so that dependants and listeners learn
    of it. Those taken meanwhile (assigned, aborted) are left alone.
    """
    failed: list[int] = []
    for work_request_id, code, message in failures:
        work_request = (
            WorkRequest.objects.select_for_update(skip_locked=True)
            .select_related("workspace")
            .filter(pk=work_request_id, status=WorkRequestStatus.PENDING, worker__isnull=True)
            .first()
        )
        if work_request is not None and transitions.complete(
            work_request,
            WorkRequestResult.ERROR,
            {"errors": [{"code": code, "message": message}]},
        ):
            failed.append(work_request_id)
    return failed


def workers_with_unfetched_work() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(UNFETCHED_SQL)
        return {row[0] for row in cursor.fetchall()}


def run_scheduling_pass(
    *, renotify: bool = False, for_worker: int | None = None, notify: bool = True
) -> PassResult:
    """
    Assign what can be assigned now, and notify the workers once the assignment commits.

    `renotify` (the periodic fallback) also notifies every connected worker that holds
    pending work it has not fetched. `for_worker` limits the pass to one worker (one that asks
    for work, or has just finished some). `notify=False` tells nobody: the worker asking for
    work is waiting for the answer. Waits for a pass that is running to end first.
    """
    result = _scheduling_pass(renotify=renotify, for_worker=for_worker, notify=notify, wait=True)
    assert result is not None
    return result


def try_scheduling_pass() -> PassResult | None:
    """A pass, unless another one is running: then None, at once, having done nothing."""
    return _scheduling_pass(renotify=False, for_worker=None, notify=True, wait=False)


def _scheduling_pass(
    *, renotify: bool, for_worker: int | None, notify: bool, wait: bool
) -> PassResult | None:
    started = time.perf_counter()
    result = PassResult()
    with transaction.atomic():
        if not lock_scheduler(wait=wait):
            return None
        workers = load_idle_workers(for_worker)
        result.idle_workers = len(workers)
        if workers:
            preparation = _Preparation()
            result.assigned = transitions.assign(
                match_candidates(Matcher(workers), result, preparation),
                preparation.dynamic_data,
            )
            if preparation.failures:
                result.failed = fail_unconfigurable(preparation.failures)
        if notify:
            result.notified_workers = {worker for _, worker in result.assigned}
        if renotify:
            result.notified_workers |= workers_with_unfetched_work()
        if result.notified_workers:
            to_notify = set(result.notified_workers)
            transaction.on_commit(lambda: notifications.notify_work_request_assigned(to_notify))
    result.seconds = time.perf_counter() - started
    kind = "worker" if for_worker is not None else "fallback" if renotify else "change"
    metrics_events.scheduling_pass_ran(kind, result.seconds)
    if result.assigned:
        logger.debug(
            "scheduling pass: %d assigned, %d idle workers, %d candidates read, %.1f ms",
            len(result.assigned),
            result.idle_workers,
            result.candidates_seen,
            result.seconds * 1000,
        )
    return result
