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

Notifications reach a websocket through the channel layer (Redis). While Redis is down they are
lost: one `ChannelLayerWatch` per server process notices when Redis answers again (or answers
as a restarted server), tells each of the process's worker websockets whose worker holds work
`work_request_available` directly, and asks for a scheduling pass, so that nothing waits for
the periodic fallback pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import redis
import redis.asyncio
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
from debusine.server.api import token_failures
from debusine.server.db.models import Worker
from debusine.server.work_requests import effects, live_logs, transitions
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


def worker_holds_work(worker_id: int) -> bool:
    """Whether the worker has assigned work it has not finished."""
    worker = Worker.objects.filter(pk=worker_id).first()
    return worker is not None and transitions.worker_holds_work(worker)


def request_scheduling_pass() -> None:
    """Ask for a pass now (outside any transaction): work held back by Redis's absence."""
    effects.scheduler().pass_requested()


#: Seconds between two looks at Redis by a process's `ChannelLayerWatch`.
CHANNEL_LAYER_CHECK_INTERVAL = 1.0


class ChannelLayerWatch:
    """
    Notices Redis coming back, for the worker websockets of this process.

    Every CHANNEL_LAYER_CHECK_INTERVAL seconds while the process has worker websockets, it
    asks Redis for its `run_id` (one cheap command per process, whatever the number of
    workers). A failure means Redis is down; an answer after a failure, or a new `run_id` (a
    restart shorter than the interval), means notifications may have been lost in between:
    each websocket whose worker holds work is told so, and a scheduling pass is asked for.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.consumers: set[WorkerConsumer] = set()
        self.task: asyncio.Task[None] | None = None
        #: How many times it caught up (for tests and logs).
        self.recoveries = 0

    def register(self, consumer: WorkerConsumer) -> None:
        self.consumers.add(consumer)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self.run())

    def unregister(self, consumer: WorkerConsumer) -> None:
        self.consumers.discard(consumer)

    async def run(self) -> None:
        client = redis.asyncio.Redis.from_url(
            settings.DEBUSINE_REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            last_run_id = await self.run_id(client)
            while self.consumers:
                await asyncio.sleep(CHANNEL_LAYER_CHECK_INTERVAL)
                run_id = await self.run_id(client)
                if run_id is not None and run_id != last_run_id:
                    if last_run_id is None:
                        logger.info("Redis answers again: telling workers about held work")
                    else:
                        logger.info("Redis restarted: telling workers about held work")
                    await self.catch_up()
                last_run_id = run_id
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    @staticmethod
    async def run_id(client: redis.asyncio.Redis) -> str | None:
        """The Redis server's run ID, or None when it does not answer."""
        try:
            info = await client.info("server")
        except (redis.RedisError, OSError):
            return None
        return str(info.get("run_id", "")) or None

    async def catch_up(self) -> None:
        self.recoveries += 1
        for consumer in list(self.consumers):
            try:
                await consumer.tell_about_held_work()
            except Exception as error:  # its websocket may be closing: the others still count
                logger.warning(
                    "could not tell worker %s about its work: %s", consumer.worker_id, error
                )
        try:
            await database_sync_to_async(request_scheduling_pass)()
        except Exception as error:  # the fallback pass still comes
            logger.warning("could not ask for a scheduling pass: %s", error)


_watches: dict[asyncio.AbstractEventLoop, ChannelLayerWatch] = {}


def channel_layer_watch() -> ChannelLayerWatch:
    """The watch of the running event loop (one per server process), made on first use."""
    loop = asyncio.get_running_loop()
    for other in [known for known in _watches if known.is_closed()]:
        del _watches[other]
    if loop not in _watches:
        _watches[loop] = ChannelLayerWatch(loop)
    return _watches[loop]


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Work request id -> whether this worker runs it (may write its live log).
        self.log_allowed: dict[int, bool] = {}

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

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """
        Frames from the worker: `log_data` / `log_data_end` (Debusine 0.16 workers) about its
        own work requests are kept as their live log (`live_logs`: the API's live-log endpoint
        and the web UI read it); anything else is ignored, as before.
        """
        if self.worker_id is None or not text_data or '"log_data' not in text_data:
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        try:
            await database_sync_to_async(live_logs.record_frame)(
                self.worker_id, frame, self.log_allowed
            )
        except Exception as error:  # the live view is best effort: never drop the worker
            logger.warning("worker %s: log frame not kept: %s", self.worker_id, error)

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
            reason = REJECTED_REASON
            if key is not None:
                reason = await token_failures.websocket_refusal(self.scope, reason)
            # TOKEN_DISABLED either way: Debusine workers then wait 1-6 s before retrying.
            await self.reject(reason, REASON_TOKEN_DISABLED)
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
        channel_layer_watch().register(self)

    async def tell_about_held_work(self) -> None:
        """Send `work_request_available` if the worker holds work (a notification was lost)."""
        if self.worker_id is None:
            return
        if await database_sync_to_async(worker_holds_work)(self.worker_id):
            await self.send_frame(event_frame(FRAME_WORK_REQUEST_AVAILABLE))

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
        channel_layer_watch().unregister(self)
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
