"""
Where a scheduling pass starts: the one decision, and the hooks that carry it out.

A pass starts in exactly three cases:

1. **A worker known to be idle**, because it asks for work with none assigned (get-next) or has
   just completed a work request, gets a pass for itself alone, in the transaction of its own
   request: the answer (or the notification after the commit) already carries its next work
   request. (`SchedulerTriggers.worker_idle`)
2. **Any other change that may let work start** (a work request created, unblocked, requeued,
   re-prioritised, or aborted while running; a worker connected, enabled or reporting new
   metadata) asks for a pass once per transaction, after the commit. It runs in the process that
   made the change when no other pass is running (DEBUSINE_SCHEDULER_PASS_IN_PROCESS), otherwise
   one Celery job is queued for the scheduler process, coalescing the requests that arrive while
   a pass is already queued (a Redis flag the pass clears as it starts), so a burst of changes
   costs one pass, not one per change. (`SchedulerTriggers.pass_requested`)
3. **Beat's periodic fallback pass** in the scheduler process, which also re-tells workers about
   work they have not fetched (a lost notification). (`jobs.schedule_work_requests`)

Nothing else starts a pass. The work request's transitions ask for cases 1 and 2 through
`debusine.server.work_requests.effects`; `install()` (called when the server application
starts) registers the hooks there. Failures to queue are logged and left to the fallback pass.
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings

from debusine.server.metrics import events as metrics_events
from debusine.server.project.celery import app
from debusine.server.redis_clients import shared_client
from debusine.server.scheduler.passes import run_scheduling_pass, try_scheduling_pass
from debusine.server.work_requests import effects

logger = logging.getLogger(__name__)

#: Celery names of the scheduler's jobs (see `jobs.py`).
SCHEDULE_JOB = "debusine.scheduler.schedule"
EXPIRE_LEASES_JOB = "debusine.scheduler.expire_leases"

#: Seconds after which a "pass queued" flag whose job was lost stops suppressing new requests.
PASS_QUEUED_TTL = 10


def redis_client() -> redis.Redis:
    return shared_client(timeout=5)


def pass_queued_key() -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:scheduler:pass-queued"


def enqueue_scheduling_pass() -> None:
    """
    Queue a pass unless one is queued and has not started yet.

    Tried twice: the first command after Redis restarted fails on the connection it had, the
    second reconnects. If both fail, the periodic fallback pass catches up.
    """
    for attempt in (1, 2):
        try:
            # The flag holds when the pass was asked for: the pass logs how long it waited.
            if not redis_client().set(
                pass_queued_key(), repr(time.time()), nx=True, ex=PASS_QUEUED_TTL
            ):
                return
            app.send_task(SCHEDULE_JOB)
            return
        except Exception as error:
            if attempt == 2:
                logger.warning("could not queue a scheduling pass: %s", error)


def clear_pass_queued() -> float | None:
    """
    Called by a pass as it starts: later requests must queue another pass. Return how many
    seconds ago the pass was asked for, when that is known.
    """
    try:
        queued_at = redis_client().getdel(pass_queued_key())
    except redis.RedisError as error:
        logger.warning("could not clear the scheduling flag: %s", error)
        return None
    try:
        return time.time() - float(queued_at) if queued_at is not None else None
    except ValueError:
        return None


def run_or_enqueue_scheduling_pass() -> None:
    """
    Run a pass here and now when no other pass is running (DEBUSINE_SCHEDULER_PASS_IN_PROCESS),
    otherwise queue one for the scheduler.

    Running it in the process that made the change saves the round trip through Redis and the
    scheduler process (a few milliseconds between a work request's creation and its worker
    hearing of it); a pass already running (elsewhere, holding the lock) means the system is
    busy, and the scheduler process takes the request, coalesced with others.
    """
    if settings.DEBUSINE_SCHEDULER_PASS_IN_PROCESS:
        try:
            result = try_scheduling_pass()
            if result is not None:
                # Asked for by this very change: the pass's own duration is the latency.
                metrics_events.work_dispatched("change", result.seconds)
                return
        except Exception:
            # The change itself has committed: its request must not fail now. The scheduler
            # process gets the pass instead.
            logger.exception("scheduling pass failed, queueing one for the scheduler")
    enqueue_scheduling_pass()


class SchedulerTriggers:
    """The scheduler's side of `effects.SchedulerHooks`: cases 1 and 2 above."""

    def pass_requested(self) -> None:
        run_or_enqueue_scheduling_pass()

    def worker_idle(self, worker_id: int, *, notify: bool) -> bool:
        result = run_scheduling_pass(for_worker=worker_id, notify=notify)
        metrics_events.work_dispatched("worker", result.seconds)
        return bool(result.assigned)

    def check_leases_in(self, seconds: float) -> None:
        try:
            app.send_task(EXPIRE_LEASES_JOB, countdown=seconds)
        except Exception as error:  # beat's periodic check covers it
            logger.warning("could not queue a lease check: %s", error)


def install() -> None:
    """Register the scheduler's hooks for the work request's transitions."""
    effects.install_scheduler(SchedulerTriggers())
