"""
`debusine on-work-request-completed` against a real server with its scheduler: live events,
replay from the cursor file after time away, and rejections. Work requests are completed by a
raw worker speaking protocol.md, so that no worker daemon is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.client_cli import DEBUSINE, Cli, configured_cli
from tests.integration.raw_worker import RawWorker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def user_token(instance: ThrowawayInstance) -> str:
    return instance.create_contributor("listener")


@pytest.fixture
def cli(instance: ThrowawayInstance, user_token: str, tmp_path: Path) -> Cli:
    return configured_cli(tmp_path / "home", instance.api_url, user_token)


async def complete_work_request(
    instance: ThrowawayInstance, worker: RawWorker, token: str, result: str
) -> int:
    """Create a noop and have the raw worker complete it with `result`."""
    response = await asyncio.to_thread(
        requests.post,
        f"{instance.api_url}/1.0/work-request/",
        json={"task_name": "noop", "task_data": {}},
        headers={"Token": token},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    work_request_id: int = response.json()["id"]
    await worker.wait_for("work_request_available", timeout=30)
    status, body = await worker.call("GET", "work-request/get-next-for-worker/")
    assert status == 200
    assert body["id"] == work_request_id
    status, _ = await worker.call(
        "PUT", f"work-request/{work_request_id}/completed/", {"result": result}
    )
    assert status == 200
    return work_request_id


async def connect_worker(worker: RawWorker, attempts: int = 3) -> None:
    """Open the worker websocket, again if the server dropped it before `connected`."""
    for _attempt in range(attempts):
        await worker.connect()
        frame = await worker.next_frame()
        while frame.get("text") != "connected" and frame.get("type") != "<closed>":
            frame = await worker.next_frame()
        if frame.get("text") == "connected":
            return
        await worker.disconnect()
    pytest.fail(f"the worker websocket closed {attempts} times before `connected`")


class Listener:
    """A running `debusine on-work-request-completed` appending `ID RESULT` lines to a file."""

    def __init__(self, cli: Cli, events: Path, cursor: Path) -> None:
        self.events = events
        self.process = subprocess.Popen(
            [
                DEBUSINE,
                "on-work-request-completed",
                "--last-completed-at",
                str(cursor),
                "sh",
                "-c",
                f'echo "$1 $2" >> {events}',
                "record",
            ],
            env=cli.environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    async def wait_for_lines(self, count: int, timeout: float = 20) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.lines()) < count:
            assert self.process.poll() is None, self.process.stderr
            assert loop.time() < deadline, f"only {self.lines()} after {timeout} s"
            await asyncio.sleep(0.1)
        return self.lines()

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)


def test_live_events_and_replay_after_time_away(
    instance: ThrowawayInstance, user_token: str, cli: Cli, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    cursor = tmp_path / "cursor.json"

    async def scenario() -> None:
        async with RawWorker(instance.api_url) as worker:
            activation = instance.create_worker_activation("completion.example")
            assert await worker.register("completion.example", activation_token=activation) == 201
            await connect_worker(worker)
            await worker.send_metadata()
            # Completed before the listener starts: found by the replay from the cursor.
            first = await complete_work_request(instance, worker, user_token, "success")
            cursor.write_text(json.dumps({"last_completed_at": "2000-01-01T00:00:00Z"}))
            listener = Listener(cli, events, cursor)
            try:
                assert await listener.wait_for_lines(1) == [f"{first} success"]
                second = await complete_work_request(instance, worker, user_token, "failure")
                assert await listener.wait_for_lines(2) == [
                    f"{first} success",
                    f"{second} failure",
                ]
            finally:
                listener.stop()
            saved = json.loads(cursor.read_text())["last_completed_at"]

            # Away: what completes now is replayed on return, and nothing twice.
            third = await complete_work_request(instance, worker, user_token, "error")
            listener = Listener(cli, events, cursor)
            try:
                assert await listener.wait_for_lines(3) == [
                    f"{first} success",
                    f"{second} failure",
                    f"{third} error",
                ]
                await asyncio.sleep(1)
                assert len(listener.lines()) == 3
            finally:
                listener.stop()
            assert json.loads(cursor.read_text())["last_completed_at"] > saved

    asyncio.run(scenario())


def test_wrong_token_is_rejected(instance: ThrowawayInstance, tmp_path: Path) -> None:
    cli = configured_cli(tmp_path / "home", instance.api_url, "e" * 64)
    run = cli.fails(3, "-s", "on-work-request-completed", "true")
    assert "refused" in run.stderr
    assert "token" in run.stderr


def test_unknown_workspace_is_rejected(cli: Cli) -> None:
    run = cli.fails(3, "-s", "on-work-request-completed", "--workspace", "nowhere", "true")
    assert "nowhere" in run.stderr


def test_unreadable_cursor_file_is_a_bad_argument(cli: Cli, tmp_path: Path) -> None:
    cursor = tmp_path / "cursor.json"
    cursor.write_text("not json")
    run = cli.run("on-work-request-completed", "--last-completed-at", str(cursor), "true")
    assert run.returncode == 2
    assert "cursor.json" in run.stderr
