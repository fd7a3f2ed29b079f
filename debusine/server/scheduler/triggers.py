"""
Asking for a scheduling pass when something changed that may let work start.

`request_scheduling_pass()` is called by the model action methods (a work request created,
completed, unblocked or given back; a worker connected, enabled or reporting metadata). Once
the transaction commits (at most once per transaction), it runs a pass in the same process if
no other pass is running, and otherwise enqueues one Celery job for the scheduler, coalescing
requests that arrive while a pass is already queued (a Redis flag the pass clears as it
starts), so a burst of changes costs one pass, not one per change. Failures are logged and
left to the periodic fallback pass.
"""

from __future__ import annotations

import logging
import time
from functools import cache

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

#: Seconds after which a "pass queued" flag whose job was lost stops suppressing new requests.
PASS_QUEUED_TTL = 10


@cache
def redis_client() -> redis.Redis:
    """One Redis client (with its connection pool) per process."""
    return redis.Redis.from_url(settings.DEBUSINE_REDIS_URL, socket_timeout=5)


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
            from debusine.server.scheduler.jobs import schedule_work_requests

            schedule_work_requests.apply_async()
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
        from debusine.server.scheduler.passes import try_scheduling_pass

        try:
            if try_scheduling_pass() is not None:
                return
        except Exception:
            # The change itself has committed: its request must not fail now. The scheduler
            # process gets the pass instead.
            logger.exception("scheduling pass failed, queueing one for the scheduler")
    enqueue_scheduling_pass()


def request_scheduling_pass() -> None:
    """Ask for a scheduling pass once the current transaction commits (once per transaction)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        callback is run_or_enqueue_scheduling_pass for _, callback, _ in connection.run_on_commit
    ):
        return
    transaction.on_commit(run_or_enqueue_scheduling_pass)
