"""
The `sleep` task: waits a number of seconds, then succeeds (for tests of long-running work).

It prints a line to its standard output when it starts and after each whole second, so that
a worker streaming live logs has something to show while it runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from debusine.tasks.base import BaseTask
from debusine.tasks.models import SleepData, TaskType


class Sleep(BaseTask[SleepData], task_type=TaskType.WORKER, name="sleep", version=1):
    """Sleep for `task_data.seconds` seconds, saying so every second."""

    def run(self, execute_directory: Path) -> bool:
        seconds = self.data.seconds
        print(f"sleeping {seconds} s", flush=True)
        started = time.monotonic()
        for elapsed in range(1, seconds + 1):
            time.sleep(max(0.0, started + elapsed - time.monotonic()))
            print(f"slept {elapsed} s", flush=True)
        return True
