"""
The worker websocket, `/api/ws/1.0/worker/connect/` (protocol.md §3.1).

A worker authenticates with the `token` header of the upgrade request. A missing, unknown or
disabled token is accepted and then rejected with `connection_rejected` (TOKEN_DISABLED), which
makes Debusine workers retry. While the websocket is open the worker:
- counts as connected (it can be given work) and its lease is renewed periodically;
- is told `work_request_available` when the scheduler assigns it work (and on connection when
  it already has some), `work_request_aborted` (our extension) when its running work request is
  aborted, and `connection_closed` when an admin disables it;
- is asked for its dynamic metadata on connection and then every
  DEBUSINE_DYNAMIC_METADATA_INTERVAL seconds.
When it closes, the lease's grace period starts: a lease check is queued for when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from debusine.protocol.workers import (
    FRAME_CONNECTED,
    FRAME_REQUEST_DYNAMIC_METADATA,
    FRAME_WORK_REQUEST_ABORTED,
    FRAME_WORK_REQUEST_AVAILABLE,
    REASON_TOKEN_DISABLED,
    event_frame,
)
from debusine.server.db.models import Worker
from debusine.server.work_requests import transitions
from debusine.server.work_requests.notifications import worker_group
from debusine.server.work_requests.worker_tokens import resolve_worker_token

logger = logging.getLogger(__name__)

REJECTED_REASON = "No token header, token not associated to a worker or not enabled"


def lease_renewal_interval() -> float:
    """Renew often enough that a connected worker never gets near the end of its grace."""
    return float(min(20.0, max(0.5, settings.DEBUSINE_WORKER_LEASE_GRACE / 3)))


# These run in autocommit mode, one statement per transaction: holding the worker's row while
# waiting for its token's (or the reverse) in one transaction could deadlock with API calls.


def connect_worker(worker_id: int) -> bool:
    """Mark the worker connected; return whether it already holds unfinished work."""
    worker = Worker.objects.select_related("token").get(pk=worker_id)
    return transitions.worker_connected(worker)


def disconnect_worker(worker_id: int) -> None:
    """Mark the worker disconnected and check its lease once the grace period is over."""
    worker = Worker.objects.filter(pk=worker_id).first()
    if worker is not None:
        transitions.worker_disconnected(worker)


def renew_lease(worker_id: int) -> bool:
    """Renew the lease; return False when the worker may no longer be connected."""
    worker = Worker.objects.select_related("token").filter(pk=worker_id).first()
    if worker is None or worker.token is None or not worker.token.is_usable():
        return False
    worker.renew_lease()
    return True


SERVICE_UNAVAILABLE_REASON = "Service unavailable"


async def reject_without_channel_layer(receive: Any, send: Any) -> None:
    """Complete the handshake only to say that the service is unavailable, and close."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    frame = {"type": "connection_rejected", "reason": SERVICE_UNAVAILABLE_REASON}
    await send({"type": "websocket.send", "text": json.dumps(frame)})
    await send({"type": "websocket.close", "code": 1011})


class WorkerConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """One worker's websocket."""

    worker_id: int | None = None
    keep_alive: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as error:
            if getattr(self, "channel_name", None) is not None:
                raise
            # The channel layer (Redis) refused this consumer its channel, before anything was
            # said to the worker: Debusine workers log the reason and retry.
            logger.warning("worker websocket refused: channel layer unavailable: %s", error)
            await reject_without_channel_layer(receive, send)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame))

    async def reject(self, reason: str, reason_code: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "connection_rejected", "reason": reason}
        if reason_code is not None:
            frame["reason_code"] = reason_code
        await self.send_frame(frame)
        await self.close()

    async def connect(self) -> None:
        headers = dict(self.scope.get("headers", []))
        key = headers.get(b"token", b"").decode("latin-1") or None
        worker = await database_sync_to_async(resolve_worker_token)(key)
        await self.accept()
        if worker is None:
            await self.reject(REJECTED_REASON, REASON_TOKEN_DISABLED)
            return
        try:
            await self.channel_layer.group_add(worker_group(worker.id), self.channel_name)
        except Exception as error:  # the worker retries later
            logger.warning("worker %s refused: channel layer unavailable: %s", worker.name, error)
            await self.reject(SERVICE_UNAVAILABLE_REASON)
            return
        self.worker_id = worker.id
        has_work = await database_sync_to_async(connect_worker)(worker.id)
        await self.send_frame(event_frame(FRAME_CONNECTED))
        await self.send_frame(event_frame(FRAME_REQUEST_DYNAMIC_METADATA))
        if has_work:
            await self.send_frame(event_frame(FRAME_WORK_REQUEST_AVAILABLE))
        self.keep_alive = asyncio.create_task(self.keep_connection_alive(worker.id))

    async def keep_connection_alive(self, worker_id: int) -> None:
        """Renew the lease and the group membership; ask for metadata now and then."""
        loop = asyncio.get_running_loop()
        interval = lease_renewal_interval()
        next_metadata = loop.time() + settings.DEBUSINE_DYNAMIC_METADATA_INTERVAL
        while True:
            await asyncio.sleep(interval)
            try:
                if not await database_sync_to_async(renew_lease)(worker_id):
                    await self.close()
                    return
                # A restarted Redis forgets subscriptions: joining again is idempotent.
                await self.channel_layer.group_add(worker_group(worker_id), self.channel_name)
            except Exception as error:  # try again at the next interval
                logger.warning("could not renew the lease of worker %d: %s", worker_id, error)
            if loop.time() >= next_metadata:
                next_metadata = loop.time() + settings.DEBUSINE_DYNAMIC_METADATA_INTERVAL
                await self.send_frame(event_frame(FRAME_REQUEST_DYNAMIC_METADATA))

    async def disconnect(self, code: int) -> None:
        if self.keep_alive is not None:
            self.keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keep_alive
        if self.worker_id is None:
            return
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(worker_group(self.worker_id), self.channel_name)
        await database_sync_to_async(disconnect_worker)(self.worker_id)

    # --- Channel layer messages (see debusine.server.work_requests.notifications) --------------

    async def work_request_assigned(self, _message: dict[str, Any]) -> None:
        await self.send_frame(event_frame(FRAME_WORK_REQUEST_AVAILABLE))

    async def work_request_aborted(self, message: dict[str, Any]) -> None:
        await self.send_frame(
            event_frame(FRAME_WORK_REQUEST_ABORTED, work_request_id=message["work_request_id"])
        )

    async def worker_disabled(self, message: dict[str, Any]) -> None:
        await self.send_frame(
            {
                "type": "connection_closed",
                "reason": f'Token has been disabled (token hash: "{message["token_hash"]}")',
                "reason_code": REASON_TOKEN_DISABLED,
            }
        )
        await self.close()
