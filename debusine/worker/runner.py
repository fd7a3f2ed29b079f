"""
Running one task in a child process of the worker daemon, and stopping it.

The daemon has already imported every task, so the child is made with a bare `fork()`: no
interpreter start-up and no imports per task. The child gets its own process group, so that
stopping it (SIGTERM to the group, SIGKILL a few seconds later) also stops whatever the task
started. It closes the sockets it inherited and asks the kernel to kill it if the daemon dies,
so a dead daemon's websocket closes at once (the server can then hand the work elsewhere)
instead of staying open while an orphaned task runs.

The child reports through its exit status: 0 the task succeeded, 1 it failed, 2 `execute()`
raised (the message is left in a file of the task directory), 3 it ran out of disk space (a
full disk cannot be relied on to hold that file). The daemon waits for the exit
on a pidfd, without polling or a child-watcher thread, and reaps it with `wait4()`, which also
gives the CPU time used by the task and the processes it waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import stat
import sys
import time
import traceback
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from debusine.protocol.workers import RuntimeStatistics
from debusine.tasks import BaseTask, TaskContext
from debusine.tasks.execution import no_space_error

#: Seconds between SIGTERM and SIGKILL when a task is stopped.
STOP_GRACE_PERIOD = 5.0

#: File of the task directory where the child writes why `execute()` raised.
EXECUTE_ERROR_FILE = "execute-error.txt"

_EXIT_SUCCESS, _EXIT_FAILURE, _EXIT_ERROR, _EXIT_NO_SPACE = 0, 1, 2, 3

#: prctl(PR_SET_PDEATHSIG, sig): deliver `sig` to this process when its parent dies.
_PR_SET_PDEATHSIG = 1


class TaskResult(StrEnum):
    """How a task run ended, as reported to the server."""

    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True)
class TaskOutcome:
    """What the daemon learns once the task process has ended."""

    result: TaskResult
    #: Why the run is an error (None unless result is ERROR).
    error_message: str | None
    #: Wall-clock seconds from fork to exit.
    duration: float
    #: User plus system CPU seconds of the task process and the children it waited for.
    cpu_time: float
    #: The signal that ended the process, if one did.
    signal: int | None = None
    #: The task ran out of disk space (the error code `no-space`, not `execute-failed`).
    no_space: bool = False

    def runtime_statistics(self) -> RuntimeStatistics:
        """`output_data.runtime_statistics` (whole seconds, as Debusine workers send them)."""
        return RuntimeStatistics(duration=int(self.duration), cpu_time=int(self.cpu_time))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the daemon that forked it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _close_inherited_sockets() -> None:
    """Close every socket inherited from the daemon (its websocket, its HTTP connections)."""
    try:
        descriptors = [int(entry.name) for entry in Path("/proc/self/fd").iterdir()]
    except OSError:
        return
    for descriptor in descriptors:
        if descriptor <= 2:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(descriptor).st_mode):
                os.close(descriptor)
        except OSError:
            continue


def _reset_signal_handling() -> None:
    """Undo the daemon's signal set-up: the task dies on SIGTERM/SIGINT/SIGHUP by default."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _child_main(task: BaseTask[Any], context: TaskContext) -> int:
    """Body of the task process; returns its exit status."""
    try:
        os.setpgid(0, 0)
        _reset_signal_handling()
        _die_with_parent()
        _close_inherited_sockets()
        os.chdir(context.directory)
        return _EXIT_SUCCESS if task.execute(context) else _EXIT_FAILURE
    except BaseException as error:  # the child must always reach os._exit
        if no_space_error(error) is not None:
            return _EXIT_NO_SPACE
        message = f"{type(error).__name__}: {error}".rstrip(": ")
        with contextlib.suppress(BaseException):
            (context.directory / EXECUTE_ERROR_FILE).write_text(
                f"{message}\n{traceback.format_exc()}", encoding="utf-8"
            )
        return _EXIT_ERROR


def no_space_message(directory: Path) -> str:
    """Why a task that ran out of disk space failed, for the work request's output data."""
    try:
        usage = os.statvfs(directory.parent)
        free = f"{usage.f_bavail * usage.f_frsize // 1024} KiB free now"
    except OSError:
        free = "free space unknown"
    return (
        f"no space left on the worker's disk: the filesystem of {directory.parent} is full"
        f" ({free}); the work request failed, the worker goes on with other work"
    )


class TaskProcess:
    """A task running in a child process of the daemon."""

    def __init__(self, pid: int, context: TaskContext, started_at: float) -> None:
        self.pid = pid
        self.context = context
        self.started_at = started_at
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[TaskOutcome] = self._loop.create_future()
        self._pidfd = os.pidfd_open(pid)
        self._loop.add_reader(self._pidfd, self._reap)

    @classmethod
    def start(cls, task: BaseTask[Any], context: TaskContext) -> TaskProcess:
        """Fork a process running `task.execute(context)`; call from the event loop."""
        started_at = time.monotonic()
        # Anything buffered would otherwise be written twice, by the daemon and the child.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its effects are tested from outside
            status = _EXIT_ERROR
            try:
                status = _child_main(task, context)
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)
        # Also set from this side: a signal sent before the child ran setpgid must still reach
        # the group. The child may have exec'd or exited already; either way it is fine.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        return cls(pid, context, started_at)

    @property
    def finished(self) -> bool:
        return self._exited.done()

    def _reap(self) -> None:
        """The pidfd became readable: the child exited; collect its status and CPU time."""
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        duration = time.monotonic() - self.started_at
        try:
            _pid, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:  # reaped by someone else: the status is lost
            self._exited.set_result(
                TaskOutcome(TaskResult.ERROR, "the task process status was lost", duration, 0.0)
            )
            return
        # Leftovers the task started and did not wait for must not outlive it.
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        cpu_time = usage.ru_utime + usage.ru_stime
        self._exited.set_result(self._outcome(status, duration, cpu_time))

    def _outcome(self, status: int, duration: float, cpu_time: float) -> TaskOutcome:
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            return TaskOutcome(
                TaskResult.ERROR,
                f"the task process was killed by signal {signal.Signals(signum).name}",
                duration,
                cpu_time,
                signal=signum,
            )
        code = os.waitstatus_to_exitcode(status)
        if code == _EXIT_SUCCESS:
            return TaskOutcome(TaskResult.SUCCESS, None, duration, cpu_time)
        if code == _EXIT_FAILURE:
            return TaskOutcome(TaskResult.FAILURE, None, duration, cpu_time)
        if code == _EXIT_NO_SPACE:
            return TaskOutcome(
                TaskResult.ERROR,
                no_space_message(self.context.directory),
                duration,
                cpu_time,
                no_space=True,
            )
        try:
            details = (self.context.directory / EXECUTE_ERROR_FILE).read_text(encoding="utf-8")
            message = details.splitlines()[0]
        except (OSError, IndexError):
            message = f"the task process exited with status {code}"
        return TaskOutcome(TaskResult.ERROR, message, duration, cpu_time)

    async def wait(self) -> TaskOutcome:
        """Wait until the task process has ended."""
        return await asyncio.shield(self._exited)

    async def stop(self, grace_period: float = STOP_GRACE_PERIOD) -> TaskOutcome:
        """
        Stop the task: SIGTERM to its process group, SIGKILL if it has not ended after
        `grace_period` seconds. Return once the task process has ended.
        """
        if not self.finished:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), grace_period)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        return await self.wait()
