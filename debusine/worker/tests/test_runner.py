"""Tests of the task process: result mapping, statistics, stopping, isolation from the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from debusine.tasks import BaseTask, BaseTaskData, Noop, Sleep, TaskContext, TaskType
from debusine.tasks.execution import STAGES_LOG, remaining_debug_logs
from debusine.worker.runner import TaskOutcome, TaskProcess, TaskResult


class ProbeData(BaseTaskData):
    action: str
    path: str = ""
    seconds: float = 0


class Probe(BaseTask[ProbeData], abstract=True):
    """A task that does something observable from outside its process."""

    TASK_TYPE = TaskType.WORKER
    TASK_VERSION = 1
    TASK_DATA_MODEL = ProbeData

    def run(self, execute_directory: Path) -> bool:
        action = self.data.action
        if action == "spawn-and-sleep":
            # A grandchild in the same process group, which stopping must also end.
            child = subprocess.Popen(["sleep", "300"])
            Path(self.data.path).write_text(f"{os.getpid()} {child.pid}")
            time.sleep(300)
        elif action == "ignore-sigterm-and-sleep":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            Path(self.data.path).write_text(str(os.getpid()))
            time.sleep(300)
        elif action == "burn-cpu":
            deadline = time.process_time() + self.data.seconds
            while time.process_time() < deadline:
                pass
        elif action == "write-pid-and-sleep":
            Path(self.data.path).write_text(str(os.getpid()))
            time.sleep(self.data.seconds)
        return True

    def execute(self, context: TaskContext) -> bool:
        if self.data.action == "raise-in-execute":
            raise OSError("disk on fire")
        return super().execute(context)


@pytest.fixture
def context(tmp_path: Path) -> Iterator[TaskContext]:
    yield TaskContext.create(1, "System", parent=tmp_path)


def run_to_end(task: BaseTask[Any], context: TaskContext) -> TaskOutcome:
    async def scenario() -> TaskOutcome:
        return await TaskProcess.start(task, context).wait()

    return asyncio.run(scenario())


def wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was not written within {timeout} s")


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists" until reaped; count it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_success_and_statistics(context: TaskContext) -> None:
    outcome = run_to_end(Noop({"result": True}), context)
    assert outcome.result is TaskResult.SUCCESS
    assert outcome.error_message is None
    assert outcome.runtime_statistics().model_dump(exclude_unset=True) == {
        "duration": 0,
        "cpu_time": 0,
    }
    assert remaining_debug_logs(context.debug_log_directory) == []


def test_failure_leaves_the_stages_log(context: TaskContext) -> None:
    outcome = run_to_end(Noop({"result": False}), context)
    assert outcome.result is TaskResult.FAILURE
    logs = remaining_debug_logs(context.debug_log_directory)
    assert [path.name for path in logs] == [STAGES_LOG]
    assert "run: finished, returned False" in logs[0].read_text()


def test_exception_escaping_execute_is_an_error_with_its_message(context: TaskContext) -> None:
    outcome = run_to_end(Probe({"action": "raise-in-execute"}), context)
    assert outcome.result is TaskResult.ERROR
    assert outcome.error_message == "OSError: disk on fire"


def test_cpu_time_is_that_of_the_task_process(context: TaskContext) -> None:
    outcome = run_to_end(Probe({"action": "burn-cpu", "seconds": 1.2}), context)
    assert outcome.result is TaskResult.SUCCESS
    assert outcome.cpu_time >= 1.2
    assert (outcome.runtime_statistics().cpu_time or 0) >= 1
    assert outcome.duration >= outcome.cpu_time * 0.9


def test_the_task_runs_in_its_own_process_group_and_directory(
    context: TaskContext, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"

    async def scenario() -> None:
        process = TaskProcess.start(
            Probe({"action": "write-pid-and-sleep", "path": str(marker), "seconds": 0}), context
        )
        outcome = await process.wait()
        assert outcome.result is TaskResult.SUCCESS
        assert int(marker.read_text()) == process.pid

    asyncio.run(scenario())


def test_stop_kills_the_whole_process_group(context: TaskContext, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"

    async def scenario() -> tuple[TaskOutcome, float]:
        process = TaskProcess.start(
            Probe({"action": "spawn-and-sleep", "path": str(pids_file)}), context
        )
        await asyncio.to_thread(wait_for_file, pids_file)
        assert os.getpgid(process.pid) == process.pid
        started = time.monotonic()
        outcome = await process.stop(grace_period=10)
        return outcome, time.monotonic() - started

    outcome, elapsed = asyncio.run(scenario())
    task_pid, grandchild_pid = map(int, pids_file.read_text().split())
    assert outcome.signal == signal.SIGTERM
    assert elapsed < 5  # SIGTERM was enough: no wait for the SIGKILL
    deadline = time.monotonic() + 5
    while process_exists(grandchild_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_exists(task_pid)
    assert not process_exists(grandchild_pid)


def test_stop_uses_sigkill_when_sigterm_is_ignored(context: TaskContext, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def scenario() -> tuple[TaskOutcome, float]:
        process = TaskProcess.start(
            Probe({"action": "ignore-sigterm-and-sleep", "path": str(pid_file)}), context
        )
        await asyncio.to_thread(wait_for_file, pid_file)
        started = time.monotonic()
        outcome = await process.stop(grace_period=0.5)
        return outcome, time.monotonic() - started

    outcome, elapsed = asyncio.run(scenario())
    assert outcome.signal == signal.SIGKILL
    assert outcome.result is TaskResult.ERROR
    assert 0.5 <= elapsed < 5


def test_an_external_kill_is_an_error(context: TaskContext, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def scenario() -> TaskOutcome:
        process = TaskProcess.start(
            Probe({"action": "write-pid-and-sleep", "path": str(pid_file), "seconds": 300}),
            context,
        )
        await asyncio.to_thread(wait_for_file, pid_file)
        os.kill(process.pid, signal.SIGKILL)
        return await process.wait()

    outcome = asyncio.run(scenario())
    assert outcome.result is TaskResult.ERROR
    assert outcome.error_message == "the task process was killed by signal SIGKILL"
    assert outcome.runtime_statistics().duration == 0


def test_the_task_does_not_keep_the_daemons_sockets_open(context: TaskContext) -> None:
    """If it did, a dead daemon's websocket would stay open as long as its task runs."""
    daemon_end, server_end = socket.socketpair()

    async def scenario() -> bytes:
        process = TaskProcess.start(Sleep({"seconds": 30}), context)
        await asyncio.sleep(0.3)  # let the child close what it inherited
        daemon_end.close()
        server_end.settimeout(5)
        try:
            return await asyncio.to_thread(server_end.recv, 1)  # b"" = the peer closed
        finally:
            await process.stop()

    try:
        assert asyncio.run(scenario()) == b""
    finally:
        server_end.close()


def test_the_task_dies_with_the_daemon(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL takes its running task with it."""
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from debusine.worker.tests.test_runner import Probe
        from debusine.tasks import TaskContext
        from debusine.worker.runner import TaskProcess

        async def main():
            context = TaskContext.create(1, "System", parent=Path({str(tmp_path)!r}))
            TaskProcess.start(
                Probe({{"action": "write-pid-and-sleep", "path": {str(pid_file)!r},
                        "seconds": 300}}),
                context,
            )
            while not Path({str(pid_file)!r}).exists():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert result.returncode == -signal.SIGKILL
    task_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while process_exists(task_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_exists(task_pid)
