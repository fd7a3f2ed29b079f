"""
The completion websocket, `/api/ws/1.0/work-request/on-completed/` (protocol.md §3.2).

A user (the `token` header of the upgrade request) listens for work requests that finish with
success, failure or error in the workspaces they can see, optionally only in the workspaces
named by `?workspaces=a,b`, in the scope named by `X-Debusine-Scope` (the default scope
otherwise). With `?completed_at_since=<ISO datetime>` the consumer first replays, from
PostgreSQL, what completed since then (ordered by completion time), so a client that was away
misses nothing; live events then arrive through the channel layer group of the scope
(`notify_work_request_completed`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.dateparse import parse_datetime

from debusine.protocol.wire import iso_datetime
from debusine.protocol.work_requests import WorkRequestResult, WorkRequestStatus
from debusine.protocol.workers import event_frame
from debusine.server.api import token_failures
from debusine.server.db.models import Scope, Token, User, Workspace
from debusine.server.db.models.work_requests import WorkRequest
from debusine.server.work_requests.notifications import completed_work_requests_group

logger = logging.getLogger(__name__)

#: `text` of the event frames on this websocket.
FRAME_CONNECTED = "connected"
FRAME_WORK_REQUEST_COMPLETED = "work_request_completed"

#: Results announced: aborted and skipped work requests are not "completed work" to act on.
ANNOUNCED_RESULTS = (
    WorkRequestResult.SUCCESS,
    WorkRequestResult.FAILURE,
    WorkRequestResult.ERROR,
)

REJECTED_TOKEN_REASON = "No token header, or the token is not an enabled user token"  # noqa: S105


class ListenerRefusedError(Exception):
    """The listener cannot be accepted; the message says why."""


@dataclass
class Listener:
    """Who listens, where, and from when on."""

    user: User
    scope_id: int
    #: Ids of the workspaces named in `?workspaces=`; None means "every visible workspace".
    workspace_ids: set[int] | None
    completed_at_since: datetime | None
    #: Visibility of workspaces already checked, for listeners without a workspace filter.
    visible: dict[int, bool] = field(default_factory=dict)


def user_for_key(key: str | None) -> User | None:
    """The active user whose usable user token is `key`, or None."""
    if not key:
        return None
    token = Token.objects.get_by_key(key.strip())
    if token is None or not token.is_usable() or token.user is None:
        return None
    if not token.user.is_active or hasattr(token, "worker"):
        return None
    return token.user


def build_listener(key: str | None, scope_name: str | None, query_string: bytes) -> Listener:
    """Check the upgrade request; raise ListenerRefusedError with a reason a user can act on."""
    user = user_for_key(key)
    if user is None:
        raise ListenerRefusedError(REJECTED_TOKEN_REASON)
    name = scope_name or settings.DEBUSINE_DEFAULT_SCOPE
    scope = Scope.objects.filter(name=name).first()
    if scope is None:
        raise ListenerRefusedError(f"Scope {name!r} not found")
    query = parse_qs(query_string.decode("latin-1"))
    workspace_ids: set[int] | None = None
    names = [name for value in query.get("workspaces", []) for name in value.split(",") if name]
    if names:
        visible = Workspace.objects.in_scope(scope).can_display(user)
        found = dict(visible.filter(name__in=names).values_list("name", "id"))
        missing = sorted(set(names) - set(found))
        if missing:
            raise ListenerRefusedError(f"Workspace(s) not found in scope {scope.name}: {missing}")
        workspace_ids = set(found.values())
    since: datetime | None = None
    if "completed_at_since" in query:
        raw = query["completed_at_since"][-1]
        since = parse_datetime(raw)
        if since is None or since.tzinfo is None:
            raise ListenerRefusedError(
                f"completed_at_since {raw!r} is not an ISO datetime with zone"
            )
    return Listener(
        user=user, scope_id=scope.pk, workspace_ids=workspace_ids, completed_at_since=since
    )


def workspace_is_visible(listener: Listener, workspace_id: int) -> bool:
    """Whether the listener wants events of this workspace (cached per workspace)."""
    if listener.workspace_ids is not None:
        return workspace_id in listener.workspace_ids
    if workspace_id not in listener.visible:
        listener.visible[workspace_id] = (
            Workspace.objects.filter(pk=workspace_id, scope_id=listener.scope_id)
            .can_display(listener.user)
            .exists()
        )
    return listener.visible[workspace_id]


def replay(listener: Listener) -> list[dict[str, Any]]:
    """Frames of what completed since the listener's cursor, oldest first."""
    since = listener.completed_at_since
    if since is None:
        return []
    workspaces = Workspace.objects.filter(scope_id=listener.scope_id).can_display(listener.user)
    if listener.workspace_ids is not None:
        workspaces = workspaces.filter(pk__in=listener.workspace_ids)
    rows = list(
        WorkRequest.objects.filter(
            workspace__in=workspaces,
            status=WorkRequestStatus.COMPLETED,
            result__in=ANNOUNCED_RESULTS,
            completed_at__gte=since,
        )
        .order_by("completed_at", "id")
        .values_list("id", "completed_at", "result")
    )
    at_cursor = [row for row in rows if row[1] == since]
    if len(at_cursor) == 1:
        # The client saved this instant after handling the one work request completed then.
        rows.remove(at_cursor[0])
    return [
        completion_frame(work_request_id, iso_datetime(completed_at) or "", result)
        for work_request_id, completed_at, result in rows
    ]


def completion_frame(work_request_id: int, completed_at: str, result: str) -> dict[str, Any]:
    return event_frame(
        FRAME_WORK_REQUEST_COMPLETED,
        work_request_id=work_request_id,
        completed_at=completed_at,
        result=result,
    )


class CompletionConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """One client listening for completed work requests."""

    listener: Listener | None = None
    group: str | None = None
    replayed: set[int]

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame))

    async def reject(self, reason: str) -> None:
        await self.send_frame({"type": "connection_rejected", "reason": reason})
        await self.close()

    async def connect(self) -> None:
        headers = dict(self.scope.get("headers", []))
        key = headers.get(b"token", b"").decode("latin-1") or None
        scope_name = headers.get(b"x-debusine-scope", b"").decode("latin-1") or None
        await self.accept()
        self.replayed = set()
        try:
            listener = await database_sync_to_async(build_listener)(
                key, scope_name, self.scope.get("query_string", b"")
            )
        except ListenerRefusedError as refusal:
            reason = str(refusal)
            if key is not None and reason == REJECTED_TOKEN_REASON:
                reason = await token_failures.websocket_refusal(self.scope, reason)
            await self.reject(reason)
            return
        group = completed_work_requests_group(listener.scope_id)
        try:
            # Join before replaying: a completion committed meanwhile is then either in the
            # replay or queued for us (and skipped as a duplicate), never lost.
            await self.channel_layer.group_add(group, self.channel_name)
        except Exception as error:
            logger.warning("completion listener refused: channel layer unavailable: %s", error)
            await self.reject("Service unavailable")
            return
        self.listener, self.group = listener, group
        await self.send_frame(event_frame(FRAME_CONNECTED))
        for frame in await database_sync_to_async(replay)(listener):
            self.replayed.add(frame["work_request_id"])
            await self.send_frame(frame)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception as error:  # the group entry expires on its own
                logger.info("could not leave %s: %s", self.group, error)

    # --- Channel layer messages (see debusine.server.work_requests.notifications) --------------

    async def work_request_completed(self, message: dict[str, Any]) -> None:
        listener = self.listener
        if listener is None or message["work_request_id"] in self.replayed:
            return
        if not await database_sync_to_async(workspace_is_visible)(
            listener, message["workspace_id"]
        ):
            return
        await self.send_frame(
            completion_frame(
                message["work_request_id"], message["completed_at"], message["result"]
            )
        )
