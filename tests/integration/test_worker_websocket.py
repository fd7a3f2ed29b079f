"""
The worker websocket and endpoints of a real server with its real scheduler (Celery, beat),
spoken to frame by frame as protocol.md §3.1 and §4 describe.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import requests

from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.raw_worker import RawWorker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def user_token(instance: ThrowawayInstance) -> str:
    return instance.create_contributor("ws-user")


def create_work_request(instance: ThrowawayInstance, token: str, **body: object) -> int:
    response = requests.post(
        f"{instance.api_url}/1.0/work-request/",
        json={"task_name": "noop", "task_data": {}, **body},
        headers={"Token": token},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    work_request_id: int = response.json()["id"]
    return work_request_id


def get_work_request(instance: ThrowawayInstance, token: str, work_request_id: int) -> dict:  # type: ignore[type-arg]
    response = requests.get(
        f"{instance.api_url}/1.0/work-request/{work_request_id}/",
        headers={"Token": token},
        timeout=10,
    )
    assert response.status_code == 200
    body: dict = response.json()  # type: ignore[type-arg]
    return body


async def enabled_worker(instance: ThrowawayInstance, worker: RawWorker, name: str) -> None:
    """Register `worker` through an activation token: enabled at once."""
    activation = instance.create_worker_activation(f"{name}.example")
    assert await worker.register(f"{name}.example", activation_token=activation) == 201


def test_unknown_token_is_accepted_then_rejected(instance: ThrowawayInstance) -> None:
    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            await worker.connect()
            frame = await worker.next_frame()
            assert frame == {
                "type": "connection_rejected",
                "reason": "No token header, token not associated to a worker or not enabled",
                "reason_code": "TOKEN_DISABLED",
            }
            assert (await worker.next_frame())["type"] == "<closed>"

    asyncio.run(scenario())


def test_disabled_worker_is_refused_until_enabled(instance: ThrowawayInstance) -> None:
    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            assert await worker.register("late.example") == 201
            await worker.connect()
            assert (await worker.next_frame())["reason_code"] == "TOKEN_DISABLED"
            await worker.disconnect()

            instance.admin("worker", "enable", "late-example")
            # The API double slash of an api-url ending in "/" is tolerated.
            await worker.connect("//ws/1.0/worker/connect/")
            first_two = {(await worker.next_frame())["text"] for _ in range(2)}
            assert first_two == {"connected", "request_dynamic_metadata"}

    asyncio.run(scenario())


def test_noop_from_creation_to_completion(instance: ThrowawayInstance, user_token: str) -> None:
    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            await enabled_worker(instance, worker, "runner")
            await worker.connect()
            await worker.wait_for("request_dynamic_metadata")
            await worker.send_metadata()

            started = time.monotonic()
            work_request_id = create_work_request(
                instance, user_token, task_data={"result": False}
            )
            await worker.wait_for("work_request_available")
            notified = time.monotonic() - started
            status, body = await worker.call("GET", "work-request/get-next-for-worker/")
            assert status == 200
            assert (body["id"], body["status"], body["task_data"]) == (
                work_request_id,
                "pending",
                {"result": False},
            )
            assert get_work_request(instance, user_token, work_request_id)["status"] == "running"
            status, content = await worker.call(
                "PUT",
                f"work-request/{work_request_id}/completed/",
                {"result": "failure", "output_data": {"runtime_statistics": {"duration": 0}}},
            )
            assert (status, content) == (200, b"")
            final = get_work_request(instance, user_token, work_request_id)
            assert (final["status"], final["result"]) == ("completed", "failure")
            assert notified < 5

            # Nothing more for this worker.
            status, content = await worker.call("GET", "work-request/get-next-for-worker/")
            assert (status, content) == (204, b"")

    asyncio.run(scenario())


def test_reconnecting_worker_is_told_about_outstanding_work(
    instance: ThrowawayInstance, user_token: str
) -> None:
    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            await enabled_worker(instance, worker, "flaky")
            await worker.connect()
            await worker.send_metadata()
            create_work_request(instance, user_token)
            await worker.wait_for("work_request_available")
            await worker.disconnect()

            await worker.connect()
            frames = [await worker.next_frame() for _ in range(3)]
            assert {frame["text"] for frame in frames} == {
                "connected",
                "request_dynamic_metadata",
                "work_request_available",
            }
            status, _body = await worker.call("GET", "work-request/get-next-for-worker/")
            assert status == 200

    asyncio.run(scenario())


def test_abort_of_running_work_reaches_the_worker(
    instance: ThrowawayInstance, user_token: str
) -> None:
    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            await enabled_worker(instance, worker, "aborted")
            await worker.connect()
            await worker.send_metadata()
            work_request_id = create_work_request(
                instance, user_token, task_name="sleep", task_data={"seconds": 60}
            )
            await worker.wait_for("work_request_available")
            status, _ = await worker.call("GET", "work-request/get-next-for-worker/")
            assert status == 200

            response = requests.post(
                f"{instance.api_url}/1.0/work-request/{work_request_id}/abort/",
                json={},
                headers={"Token": user_token},
                timeout=10,
            )
            assert response.status_code == 200
            frame = await worker.wait_for("work_request_aborted")
            assert frame == {
                "type": "websocket.send",
                "text": "work_request_aborted",
                "work_request_id": work_request_id,
            }
            # A late completion is answered 200 and changes nothing.
            status, content = await worker.call(
                "PUT", f"work-request/{work_request_id}/completed/", {"result": "success"}
            )
            assert (status, content) == (200, b"")
            final = get_work_request(instance, user_token, work_request_id)
            assert (final["status"], final["result"]) == ("aborted", "")

    asyncio.run(scenario())


def test_disabling_closes_the_websocket(instance: ThrowawayInstance) -> None:
    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            await enabled_worker(instance, worker, "doomed")
            await worker.connect()
            await worker.wait_for("connected")

            instance.admin("worker", "disable", "doomed-example")

            frame = await worker.wait_for("connection_closed")
            assert frame["reason_code"] == "TOKEN_DISABLED"
            assert frame["reason"].startswith("Token has been disabled")
            assert (await worker.next_frame())["type"] == "<closed>"

    asyncio.run(scenario())


def test_scheduler_log_has_no_errors(instance: ThrowawayInstance) -> None:
    log = Path(instance.data_dir, "scheduler.log").read_text()
    assert "Traceback" not in log


def test_redis_down_is_service_unavailable(tmp_path: Path) -> None:
    from django.conf import settings

    from debusine.testing.processes import free_port
    from debusine.testing.throwaway import throwaway_instance

    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    with throwaway_instance(
        postgres_url=settings.DEBUSINE_DATABASE_URL,
        redis_url=nothing_listens,
        data_dir=tmp_path,
        name_prefix="test_ws_no_redis",
    ) as without_redis:

        async def scenario() -> None:
            async with RawWorker(without_redis.api_url) as worker:
                activation = without_redis.create_worker_activation("stranded.example")
                assert await worker.register("stranded.example", activation) == 201
                await worker.connect()
                assert await worker.next_frame() == {
                    "type": "connection_rejected",
                    "reason": "Service unavailable",
                }
                assert (await worker.next_frame())["type"] == "<closed>"

        asyncio.run(scenario())
        assert "channel layer unavailable" in without_redis.log.read_text()
