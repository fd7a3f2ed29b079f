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

from debusine.server.db.models import Worker
from debusine.server.scheduler.passes import lease_grace, lease_grace_seconds, lock_scheduler
from debusine.server.work_requests import sql, transitions

logger = logging.getLogger(__name__)

EXPIRED_WORKERS_SQL = f"""
SELECT DISTINCT w.id FROM db_worker w
JOIN db_workrequest wr ON wr.worker_id = w.id AND wr.status IN {sql.HELD}
LEFT JOIN db_token t ON t.id = w.token_id
WHERE w.worker_type IN ('external', 'signing')
  AND (t.id IS NULL OR t.last_seen_at IS NULL OR t.last_seen_at < now() - %s * interval '1 second')
"""  # noqa: S608 (statuses from the enumerations, values as parameters)


@dataclass
class LeaseExpiry:
    """What one expiry run did."""

    workers: list[int] = field(default_factory=list)
    retried: list[tuple[int, int]] = field(default_factory=list)  # (old, new work request)
    not_retried: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)


def expire_leases() -> LeaseExpiry:
    """Take work away from workers whose lease expired; see the module docstring."""
    outcome = LeaseExpiry()
    with transaction.atomic():
        lock_scheduler()
        with connection.cursor() as cursor:
            cursor.execute(EXPIRED_WORKERS_SQL, [lease_grace_seconds()])
            outcome.workers = [row[0] for row in cursor.fetchall()]
        if not outcome.workers:
            return outcome
        Worker.objects.filter(pk__in=outcome.workers).update(connected_at=None)
        grace = int(lease_grace().total_seconds())
        taken = transitions.take_work_from_workers(
            outcome.workers,
            lambda worker_id: (
                f"worker {worker_id} lost its lease (out of touch for more than {grace} s)"
            ),
        )
        outcome.retried, outcome.not_retried = taken.retried, taken.not_retried
        outcome.requeued = taken.requeued
    logger.warning(
        "leases expired for worker(s) %s: retried %s, not retried (limit) %s, requeued %s",
        outcome.workers,
        outcome.retried,
        outcome.not_retried,
        outcome.requeued,
    )
    return outcome
