"""
Messages from the server's synchronous code (views, Celery jobs) to connected workers.

Every worker websocket joins the Channels group `worker_group(worker_id)`; these functions send
to those groups through the channel layer (Redis). They are called after the transaction that
made the change has committed, and they never raise: a lost message is recovered from
PostgreSQL state (the scheduler's fallback pass re-sends `work_request_available`, lease expiry
handles a worker that never heard of an abort).

Sync callers have no event loop of their own (Celery) or must not block the server's (views run
in threads), so the sends run on one background event loop per process.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Iterable
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

#: How long a process about to exit waits for the messages it sent to reach Redis.
SEND_TIMEOUT = 5.0

#: Channel layer message types, handled by the worker websocket consumer.
MESSAGE_WORK_REQUEST_ASSIGNED = "work_request.assigned"
MESSAGE_WORK_REQUEST_ABORTED = "work_request.aborted"
MESSAGE_WORKER_DISABLED = "worker.disabled"


def worker_group(worker_id: int) -> str:
    """The Channels group of every open websocket of one worker."""
    return f"worker.{worker_id}"


class _BackgroundLoop:
    """An event loop in a daemon thread, started on first use (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        # A short-lived process (debusine-admin) must not exit before its messages are out.
        atexit.register(self.flush)

    def flush(self, timeout: float = SEND_TIMEOUT) -> None:
        """Wait (at most `timeout` seconds) for the messages submitted so far to go out."""
        concurrent.futures.wait(list(self._pending), timeout=timeout)

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="debusine-notifications", daemon=True
                )
                thread.start()
                self._loop = loop
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, None], what: str) -> None:
        """Run `coroutine` without waiting for it; log its failure as about `what`."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        self._pending.add(future)

        def report(done: concurrent.futures.Future[None]) -> None:
            self._pending.discard(done)
            error = done.exception()
            if error is not None:
                logger.warning("could not notify %s: %s", what, error)

        future.add_done_callback(report)


_background = _BackgroundLoop()


#: Seconds before the one retry of a message whose first send failed (Redis restarted: the
#: layer reconnects on its next command).
RETRY_DELAY = 0.2


async def _group_send_all(messages: list[tuple[str, dict[str, Any]]], delay: float = 0.0) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    if delay > 0:
        await asyncio.sleep(delay)

    async def send(group: str, message: dict[str, Any]) -> None:
        try:
            await layer.group_send(group, message)
        except Exception:
            await asyncio.sleep(RETRY_DELAY)
            await layer.group_send(group, message)

    await asyncio.gather(*(send(group, message) for group, message in messages))


def send_to_workers(messages: Iterable[tuple[int, dict[str, Any]]], delay: float = 0.0) -> None:
    """
    Send each (worker id, channel layer message), without waiting: the caller (a view, the
    scheduler) goes on while the messages go out, `delay` seconds from now; a failure is logged.
    """
    batch = [(worker_group(worker_id), message) for worker_id, message in messages]
    if batch:
        _background.submit(_group_send_all(batch, delay), f"{len(batch)} worker(s)")


def notify_work_request_assigned(worker_ids: Iterable[int], delay: float = 0.0) -> None:
    """Tell workers that work is waiting for them (`work_request_available`), in `delay` s."""
    send_to_workers(
        ((worker_id, {"type": MESSAGE_WORK_REQUEST_ASSIGNED}) for worker_id in set(worker_ids)),
        delay,
    )


def notify_work_request_aborted(worker_id: int, work_request_id: int) -> None:
    """Tell a worker to stop running an aborted work request."""
    send_to_workers(
        [(worker_id, {"type": MESSAGE_WORK_REQUEST_ABORTED, "work_request_id": work_request_id})]
    )


def notify_worker_disabled(worker_id: int, token_hash: str) -> None:
    """Close the websockets of a worker whose token was just disabled."""
    send_to_workers([(worker_id, {"type": MESSAGE_WORKER_DISABLED, "token_hash": token_hash})])


#: Channel layer message type of a finished work request, handled by the completion websocket.
MESSAGE_WORK_REQUEST_COMPLETED = "work_request.completed"


def completed_work_requests_group(scope_id: int) -> str:
    """The Channels group of every `on-completed` websocket listening in one scope."""
    return f"work_request_completed.scope.{scope_id}"


def notify_work_request_completed(
    *, work_request_id: int, scope_id: int, workspace_id: int, completed_at: str, result: str
) -> None:
    """
    Tell `on-completed` websockets of the scope that a work request finished, without waiting
    (the completing request goes on; a failure is logged).

    Listeners filter by workspace and visibility themselves; a lost message is recovered by the
    client replaying from its last `completed_at` (PostgreSQL holds every completion).
    """
    message = {
        "type": MESSAGE_WORK_REQUEST_COMPLETED,
        "work_request_id": work_request_id,
        "workspace_id": workspace_id,
        "completed_at": completed_at,
        "result": result,
    }
    _background.submit(
        _group_send_all([(completed_work_requests_group(scope_id), message)]),
        f"the completion of work request {work_request_id}",
    )
