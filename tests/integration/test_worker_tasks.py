"""
A real `debusine-worker` running work requests from a real server with its real scheduler:
noop success and failure (with its debug-log artifact), and abort of a running `sleep`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from debusine.testing.throwaway import ThrowawayInstance
from debusine.testing.worker import LOG_CONNECTED, WorkerProcess, start_worker
from tests.integration.rest_user import RestUser

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def user_token(instance: ThrowawayInstance) -> str:
    return instance.create_contributor("worker-tasks-user")


@pytest.fixture(scope="module")
def worker(
    instance: ThrowawayInstance, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    activation = instance.create_worker_activation("tasks.example")
    process = start_worker(
        instance.api_url, tmp_path_factory.mktemp("worker"), activation_token=activation
    )
    try:
        process.wait_for_log(LOG_CONNECTED)
        yield process
    finally:
        assert process.stop() == 0


@pytest.fixture
def client(instance: ThrowawayInstance, user_token: str) -> RestUser:
    return RestUser(instance, user_token)


def task_processes(worker: WorkerProcess) -> list[int]:
    """PIDs of the worker daemon's child processes (its running task)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if int(fields[1]) == worker.pid and fields[0] != "Z":
            children.append(int(entry.name))
    return children


def test_noop_success_end_to_end(client: RestUser, worker: WorkerProcess) -> None:
    work_request_id = client.create("noop", {"result": True})
    done = client.wait_until(work_request_id, "completed")
    assert done["result"] == "success"
    # A successful noop leaves no debug log: no artifact at all (the reference would upload
    # an empty one).
    assert done["artifacts"] == []
    # The worker logs the outcome once the server has acknowledged it, just after it is stored.
    worker.wait_for_log(f"work request {work_request_id}: success", timeout=10)


def test_noop_failure_uploads_its_stages_log(client: RestUser, worker: WorkerProcess) -> None:
    work_request_id = client.create("noop", {"result": False})
    done = client.wait_until(work_request_id, "completed")
    assert done["result"] == "failure"
    [artifact_id] = done["artifacts"]
    artifact = client.call("GET", f"/1.0/artifact/{artifact_id}/")
    assert artifact["category"] == "debusine:work-request-debug-logs"
    assert artifact["workspace"] == done["workspace"]
    assert artifact["files_to_upload"] == []
    stages = artifact["files"]["stages.log"]
    assert stages["content_type"] == "text/plain; charset=utf-8"
    contents = client.session.get(stages["url"], timeout=10)
    assert contents.status_code == 200
    assert "run: finished, returned False" in contents.text


def test_abort_stops_the_running_task(client: RestUser, worker: WorkerProcess) -> None:
    work_request_id = client.create("sleep", {"seconds": 300})
    client.wait_until(work_request_id, "running")
    deadline = time.monotonic() + 10
    while not task_processes(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    [task_pid] = task_processes(worker)

    client.call("POST", f"/1.0/work-request/{work_request_id}/abort/", json={})
    deadline = time.monotonic() + 10
    while Path(f"/proc/{task_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{task_pid}").exists(), "the task process survived the abort"
    assert f"work request {work_request_id} was aborted by the server" in worker.log_text()
    assert client.wait_until(work_request_id, "aborted")["result"] == ""

    # The worker reported nothing for it and goes on with the next work request.
    next_id = client.create("noop", {})
    assert client.wait_until(next_id, "completed")["result"] == "success"
    assert f"work request {work_request_id}: success" not in worker.log_text()
    assert worker.process.poll() is None
