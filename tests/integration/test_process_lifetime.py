"""
Server processes die with their master: SIGKILL of a parent leaves nothing serving.

A master killed outright (SIGKILL, the OOM killer, a supervisor that signals only the main
PID) cannot stop its children. Each forked server process asks Linux for a SIGTERM when its
parent dies (`debusine.server.project.parent_death`); these tests kill the master and check
that its children are gone and the port is free again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from debusine.testing.devstack import (
    STARTUP_TIMEOUT,
    ProcessSpec,
    Supervisor,
    celery_worker_argv,
    gunicorn_argv,
    wait_until_answering,
)
from debusine.testing.processes import (
    answers,
    descendants,
    free_port,
    process_is_alive,
    wait_for_exit,
)
from debusine.testing.throwaway import instance_environment

pytestmark = pytest.mark.integration

#: How long the children may take to notice and stop (uvicorn stops gracefully on SIGTERM).
EXIT_TIMEOUT = 20.0


def wait_for_children(pid: int, count: int, timeout: float = STARTUP_TIMEOUT) -> set[int]:
    """The descendants of `pid`, once there are at least `count` of them."""
    deadline = time.monotonic() + timeout
    while len(found := descendants(pid)) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{pid} has {len(found)} descendants after {timeout}s, not {count}")
        time.sleep(0.1)
    return found


def kill_leftovers(pids: set[int]) -> None:
    """SIGKILL whichever of our processes outlived a failed test (never leave them running)."""
    for pid in pids:
        if process_is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def all_gone(pids: set[int], timeout: float) -> list[int]:
    """The PIDs still alive after `timeout` seconds (the empty list once all exited)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        wait_for_exit(pid, max(0.0, deadline - time.monotonic()))
    return sorted(pid for pid in pids if process_is_alive(pid))


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """What the server processes need; nothing here touches the database."""
    from django.conf import settings

    return instance_environment(
        settings.DEBUSINE_DATABASE_URL, settings.DEBUSINE_REDIS_URL, tmp_path, "test_lifetime"
    )


def test_killing_the_gunicorn_master_stops_its_uvicorn_workers(
    environment: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    supervisor = Supervisor()
    workers: set[int] = set()
    master = supervisor.start(
        ProcessSpec("server", gunicorn_argv(f"127.0.0.1:{port}", workers=2)),
        env=environment,
        output=tmp_path / "server.log",
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/api/1.0/whoami/", supervisor, 60)
        workers = wait_for_children(master.pid, 2)

        master.send_signal(signal.SIGKILL)
        master.wait()

        assert all_gone(workers, EXIT_TIMEOUT) == [], (tmp_path / "server.log").read_text()
        assert not answers(("127.0.0.1", port))
    finally:
        supervisor.stop_all(timeout=5)
        kill_leftovers(workers)


def test_killing_the_celery_master_stops_its_pool_processes(
    environment: dict[str, str], tmp_path: Path
) -> None:
    celery = subprocess.Popen(
        celery_worker_argv(),
        env=environment,
        stdout=(tmp_path / "celery.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    pool: set[int] = set()
    try:
        pool = wait_for_children(celery.pid, 1)
        celery.send_signal(signal.SIGKILL)
        celery.wait()
        assert all_gone(pool, EXIT_TIMEOUT) == [], (tmp_path / "celery.log").read_text()
    finally:
        if celery.poll() is None:
            celery.kill()
            celery.wait()
        kill_leftovers(pool)


def test_forked_child_of_a_dead_master_stops_at_once() -> None:
    """The master may die between the fork and the prctl: the child must notice by itself."""
    script = (
        "import os, signal, sys, time\n"
        "from debusine.server.project.parent_death import stop_when_parent_dies\n"
        "stop_when_parent_dies(expected_parent=os.getppid() + 1000000)\n"
        "time.sleep(30)\n"
        "sys.exit(0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=20, check=False)
    assert result.returncode == -signal.SIGTERM
