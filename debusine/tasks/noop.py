"""The `noop` task: does nothing and succeeds or fails as its data says (used in tests)."""

from __future__ import annotations

from pathlib import Path

from debusine.tasks.base import BaseTask
from debusine.tasks.models import NoopData, TaskType


class Noop(BaseTask[NoopData], task_type=TaskType.WORKER, name="noop", version=1):
    """Return `task_data.result` without doing anything."""

    def run(self, execute_directory: Path) -> bool:
        return self.data.result
