"""
The server side's processes as `make run` starts them (docs/explanation/processes-and-memory.md):
gunicorn's arbiter preloads the application and forks its workers holding no connection and
running no other thread; one Celery process schedules, runs server tasks and runs beat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from debusine.server.project.gunicorn_config import connected_sockets
from debusine.testing.throwaway import ThrowawayInstance
from tests.integration.conftest import scheduling_instance

FALLBACK_INTERVAL = 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[ThrowawayInstance]:
    settings = {"DEBUSINE_SCHEDULER_FALLBACK_INTERVAL": str(FALLBACK_INTERVAL)}
    with scheduling_instance(tmp_path_factory, f"processes_{worker_id}", settings) as running:
        yield running


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for {pid}")


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def test_arbiter_preloads_and_holds_no_connection(stack: ThrowawayInstance) -> None:
    # Requests that use the database, Redis (the scheduling request) and the workers.
    token = stack.create_contributor("processes")
    session = requests.Session()
    session.headers["Token"] = token
    for _ in range(5):
        response = session.post(
            f"{stack.api_url}/1.0/work-request/",
            json={"task_name": "noop", "task_data": {}},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    log = stack.log.read_text()
    assert "Application preloaded and frozen" in log
    # The workers have database connections of their own; the arbiter, which forked them and
    # forks their replacements, has none, nor any thread besides its main one.
    assert children(stack.pid)
    assert any(connected_sockets(worker) for worker in children(stack.pid))
    assert connected_sockets(stack.pid) == []
    assert threads(stack.pid) == 1


def test_one_process_schedules_and_runs_beat(stack: ThrowawayInstance) -> None:
    assert [spec.name for spec, _process in stack.supervisor.running] == ["server", "scheduler"]
    scheduler_log = stack.data_dir / "scheduler.log"
    deadline = time.monotonic() + 60
    # Beat's thread sends the fallback pass every FALLBACK_INTERVAL seconds to the scheduler
    # queue, which the same process consumes.
    while scheduler_log.read_text().count("debusine.scheduler.schedule") < 3:
        assert time.monotonic() < deadline, scheduler_log.read_text()[-3000:]
        time.sleep(0.5)
    assert "beat: Starting" in scheduler_log.read_text()
