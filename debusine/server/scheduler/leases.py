"""
Leases: a worker holds its running work requests only while it is alive.

A worker is alive while its token was seen within the lease grace period: any API call from it
renews it, and so does its open websocket (the server renews it periodically while connected).
When a worker has been out of touch for longer than the grace period, its running work
requests are aborted and retried (reason worker-failed, at most MAX_AUTOMATIC_RETRIES times),
its assigned pending ones go back to the queue, and it counts as disconnected. Its late
completion reports find aborted work requests and change nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import connection, transaction

from debusine.server.scheduler.passes import lease_grace, lease_grace_seconds, lock_scheduler

logger = logging.getLogger(__name__)

EXPIRED_WORKERS_SQL = """
SELECT DISTINCT w.id FROM db_worker w
JOIN db_workrequest wr ON wr.worker_id = w.id AND wr.status IN ('pending', 'running')
LEFT JOIN db_token t ON t.id = w.token_id
WHERE w.worker_type IN ('external', 'signing')
  AND (t.id IS NULL OR t.last_seen_at IS NULL OR t.last_seen_at < now() - %s * interval '1 second')
"""


@dataclass
class LeaseExpiry:
    """What one expiry run did."""

    workers: list[int] = field(default_factory=list)
    retried: list[tuple[int, int]] = field(default_factory=list)  # (old, new work request)
    not_retried: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)


def expire_leases() -> LeaseExpiry:
    """Take work away from workers whose lease expired; see the module docstring."""
    from debusine.server.db.models import Worker, WorkRequest

    outcome = LeaseExpiry()
    with transaction.atomic():
        lock_scheduler()
        with connection.cursor() as cursor:
            cursor.execute(EXPIRED_WORKERS_SQL, [lease_grace_seconds()])
            outcome.workers = [row[0] for row in cursor.fetchall()]
        if not outcome.workers:
            return outcome
        Worker.objects.filter(pk__in=outcome.workers).update(connected_at=None)
        for work_request in (
            WorkRequest.objects.select_for_update()
            .filter(worker_id__in=outcome.workers, status__in=["pending", "running"])
            .order_by("id")
        ):
            worker_id = work_request.worker_id
            assert worker_id is not None
            if work_request.status == "pending":
                work_request.de_assign_worker()
                outcome.requeued.append(work_request.pk)
                continue
            new = work_request.retry_after_worker_failure(
                f"worker {worker_id} lost its lease (out of touch for more than "
                f"{int(lease_grace().total_seconds())} s)"
            )
            if new is None:
                outcome.not_retried.append(work_request.pk)
            else:
                outcome.retried.append((work_request.pk, new.pk))
    logger.warning(
        "leases expired for worker(s) %s: retried %s, not retried (limit) %s, requeued %s",
        outcome.workers,
        outcome.retried,
        outcome.not_retried,
        outcome.requeued,
    )
    return outcome
