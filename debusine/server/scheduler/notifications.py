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
import logging
import threading
from collections.abc import Coroutine, Iterable
from typing import Any

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

#: How long a sync caller waits for its messages to reach Redis.
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

    def run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        future.result(timeout=SEND_TIMEOUT)


_background = _BackgroundLoop()


async def _group_send_all(messages: list[tuple[str, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    await asyncio.gather(*(layer.group_send(group, message) for group, message in messages))


def send_to_workers(messages: Iterable[tuple[int, dict[str, Any]]]) -> bool:
    """Send each (worker id, channel layer message); return False (and log) on failure."""
    batch = [(worker_group(worker_id), message) for worker_id, message in messages]
    if not batch:
        return True
    try:
        _background.run(_group_send_all(batch))
    except Exception as error:  # recovery is the fallback pass's job
        logger.warning("could not notify %d worker(s): %s", len(batch), error)
        return False
    return True


def notify_work_request_assigned(worker_ids: Iterable[int]) -> bool:
    """Tell workers that work is waiting for them (`work_request_available`)."""
    return send_to_workers(
        (worker_id, {"type": MESSAGE_WORK_REQUEST_ASSIGNED}) for worker_id in set(worker_ids)
    )


def notify_work_request_aborted(worker_id: int, work_request_id: int) -> bool:
    """Tell a worker to stop running an aborted work request."""
    return send_to_workers(
        [(worker_id, {"type": MESSAGE_WORK_REQUEST_ABORTED, "work_request_id": work_request_id})]
    )


def notify_worker_disabled(worker_id: int, token_hash: str) -> bool:
    """Close the websockets of a worker whose token was just disabled."""
    return send_to_workers(
        [(worker_id, {"type": MESSAGE_WORKER_DISABLED, "token_hash": token_hash})]
    )
