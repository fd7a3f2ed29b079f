"""
Celery entry points of the scheduler (queue `scheduler`, one process, concurrency 1).

Jobs take no state from their message: each re-reads PostgreSQL and acts on what it finds, so
a duplicated, late or replayed message does no harm.
"""

from __future__ import annotations

import logging

from debusine.server.metrics.events import work_dispatched
from debusine.server.project.celery import app
from debusine.server.scheduler.leases import expire_leases
from debusine.server.scheduler.passes import run_scheduling_pass
from debusine.server.scheduler.triggers import (
    EXPIRE_LEASES_JOB,
    SCHEDULE_JOB,
    clear_pass_queued,
)

#: The queue of these jobs (CELERY_TASK_ROUTES sends every `debusine.scheduler.*` job there).
SCHEDULER_QUEUE = "scheduler"

logger = logging.getLogger(__name__)


@app.task(name=SCHEDULE_JOB, ignore_result=True)
def schedule_work_requests(renotify: bool = False) -> int:
    """One scheduling pass; return how many work requests it assigned."""
    waited = clear_pass_queued()
    result = run_scheduling_pass(renotify=renotify)
    if waited is not None:
        # A change asked for this pass `waited` seconds before it started.
        work_dispatched("change", waited + result.seconds)
    if result.assigned and waited is not None:
        logger.debug(
            "pass asked for %.1f ms before it started; assigned %d in %.1f ms",
            waited * 1000,
            len(result.assigned),
            result.seconds * 1000,
        )
    return len(result.assigned)


@app.task(name=EXPIRE_LEASES_JOB, ignore_result=True)
def expire_worker_leases() -> int:
    """Retry the work of workers out of touch for too long; return how many were retried."""
    return len(expire_leases().retried)
