"""
Who hears of which completion on `/api/ws/1.0/work-request/on-completed/`: a listener never
learns of work requests in workspaces it cannot see, live or replayed, nor of aborted ones.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.raw_worker import RawWorker
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def users(instance: ThrowawayInstance) -> dict[str, RestUser]:
    """`outsider` contributes to System only; `insider` also to the private `secret`."""
    instance.admin("workspace", "create", "--private", "secret")
    users = {
        name: RestUser(instance, instance.create_contributor(name))
        for name in ("outsider", "insider")
    }
    instance.admin("workspace", "grant_role", "secret", "contributor", "insider-contributors")
    return users


class Listener:
    """An open completion websocket and the events it received."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket

    async def events(self, quiet: float = 1.5) -> list[tuple[int, str]]:
        """(id, result) of every completion received until nothing comes for `quiet` seconds."""
        received = []
        while True:
            try:
                message = await self.websocket.receive(timeout=quiet)
            except TimeoutError:
                return received
            if message.type != aiohttp.WSMsgType.TEXT:
                return received
            frame = json.loads(message.data)
            if frame.get("text") == "work_request_completed":
                received.append((frame["work_request_id"], frame["result"]))


async def listen(
    session: aiohttp.ClientSession, instance: ThrowawayInstance, user: RestUser, query: str = ""
) -> Listener:
    url = instance.api_url.replace("http", "ws", 1) + "/ws/1.0/work-request/on-completed/"
    websocket = await session.ws_connect(
        url + query, headers={"Token": user.session.headers["Token"]}
    )
    first = json.loads((await websocket.receive(timeout=10)).data)
    assert first.get("text") == "connected", first
    return Listener(websocket)


def create_in(user: RestUser, workspace: str, result: bool) -> int:
    body = {"task_name": "noop", "task_data": {"result": result}, "workspace": workspace}
    work_request_id: int = user.call("POST", "/1.0/work-request/", json=body)["id"]
    return work_request_id


async def run_everything(worker: RawWorker, user: RestUser, ids: list[int]) -> None:
    """The worker completes each of `ids` as its noop data says."""
    for _ in ids:
        await worker.wait_for("work_request_available")
        status, body = await worker.call("GET", "work-request/get-next-for-worker/")
        assert status == 200, body
        result = "success" if body["task_data"].get("result", True) else "failure"
        status, _ = await worker.call(
            "PUT", f"work-request/{body['id']}/completed/", {"result": result}
        )
        assert status == 200
    for work_request_id in ids:
        user.wait_until(work_request_id, "completed")


def test_listeners_hear_only_of_what_they_may_see(
    instance: ThrowawayInstance, users: dict[str, RestUser]
) -> None:
    outsider, insider = users["outsider"], users["insider"]
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, RawWorker(instance.api_url) as worker:
            activation = instance.create_worker_activation("completion.example")
            assert await worker.register("completion.example", activation_token=activation) == 201
            await worker.connect()
            await worker.send_metadata()
            outside = await listen(session, instance, outsider)
            inside = await listen(session, instance, insider)

            public = create_in(outsider, "System", result=True)
            private = create_in(insider, "secret", result=False)
            await run_everything(worker, insider, [public, private])
            aborted = create_in(outsider, "System", result=True)
            outsider.call("POST", f"/1.0/work-request/{aborted}/abort/", json={})

            assert await outside.events() == [(public, "success")]
            assert sorted(await inside.events()) == sorted(
                [(public, "success"), (private, "failure")]
            )

            # Replayed from PostgreSQL, the same rule holds.
            replayed = await listen(session, instance, outsider, f"?completed_at_since={since}")
            assert await replayed.events() == [(public, "success")]
            named = await listen(
                session, instance, insider, f"?workspaces=secret&completed_at_since={since}"
            )
            assert await named.events() == [(private, "failure")]

    asyncio.run(scenario())


def test_a_private_workspace_cannot_be_named_by_outsiders(
    instance: ThrowawayInstance, users: dict[str, RestUser]
) -> None:
    async def scenario() -> dict[str, Any]:
        url = instance.api_url.replace("http", "ws", 1) + "/ws/1.0/work-request/on-completed/"
        token = users["outsider"].session.headers["Token"]
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url + "?workspaces=secret", headers={"Token": token}) as ws,
        ):
            frame: dict[str, Any] = json.loads((await ws.receive(timeout=10)).data)
            return frame

    frame = asyncio.run(scenario())
    assert frame["type"] == "connection_rejected"
    assert "secret" in frame["reason"]
