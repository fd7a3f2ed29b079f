"""The `sleep` task: waits a number of seconds, then succeeds (for tests of long-running work)."""

from __future__ import annotations

import time
from pathlib import Path

from debusine.tasks.base import BaseTask
from debusine.tasks.models import SleepData, TaskType


class Sleep(BaseTask[SleepData], task_type=TaskType.WORKER, name="sleep", version=1):
    """Sleep for `task_data.seconds` seconds."""

    def run(self, execute_directory: Path) -> bool:
        time.sleep(self.data.seconds)
        return True
