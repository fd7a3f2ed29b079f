"""
Which pending work requests a pool's workers could run, judged before any of them exists.

A pool's `tags` are the tags its workers provide, in the 0.16 vocabulary (protocol-versions.md
§1.7): `worker:task:worker:<task>:version:<N>`, `worker:executor:<backend>`,
`worker:cap:<tool>`. Each family the pool names restricts the work it counts; a family it
does not name restricts nothing (a pool without tags counts every Worker task of its
architectures and scope, as the scheduler's architecture check would):

- task tags: the task must be named, at the server's TASK_VERSION;
- executor tags: a task that runs in an executor needs its backend (`auto`: the default one);
- capability tags: such a task needs every tool it requires (`sbuild`, `autopkgtest`...).

Other tags (`kvm`, `fast`...) are carried by the workers (static metadata
`worker_pool:tags`) and restrict nothing here. The architecture, scope and task type are
checked by the provisioner itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from debusine.protocol.generations import legacy_view_of_metadata
from debusine.server.scheduler.matching import server_task_version
from debusine.tasks import BaseTask, UnknownTaskError
from debusine.tasks.executor_task import DEFAULT_BACKEND

TASK_TAG_PREFIX = "worker:task:"
EXECUTOR_TAG_PREFIX = "worker:executor:"
CAPABILITY_TAG_PREFIX = "worker:cap:"


class PoolCapabilities:
    """What a pool's workers will be able to run, from its tags (results cached)."""

    def __init__(self, tags: Iterable[str]) -> None:
        self.tags = sorted(set(tags))
        self.metadata = legacy_view_of_metadata(
            {"provided_tags": self.tags, "system:worker_version": "pool"}
        )
        self.names_tasks = any(tag.startswith(TASK_TAG_PREFIX) for tag in self.tags)
        self.names_executors = any(tag.startswith(EXECUTOR_TAG_PREFIX) for tag in self.tags)
        self.names_capabilities = any(tag.startswith(CAPABILITY_TAG_PREFIX) for tag in self.tags)
        self._answers: dict[tuple[str, str | None], str | None] = {}

    @property
    def restricts(self) -> bool:
        return self.names_tasks or self.names_executors or self.names_capabilities

    def missing(self, task_name: str, backend: str | None) -> str | None:
        """Why the pool's workers could not run the Worker task, or None when they could."""
        key = (task_name, backend)
        if key not in self._answers:
            self._answers[key] = self._missing(task_name, backend)
        return self._answers[key]

    def _missing(self, task_name: str, backend: str | None) -> str | None:
        if not self.restricts:
            return None
        try:
            task_class = BaseTask.class_from_name("Worker", task_name)
        except UnknownTaskError:
            return f"{task_name}: not a task this server knows"
        if self.names_tasks:
            version = server_task_version("Worker", task_name)
            if self.metadata.get(f"{task_name}:version") != version:
                return f"{task_name}: no worker:task:worker:{task_name}:version:{version} tag"
        required_tools: tuple[str, ...] | None = getattr(
            task_class, "REQUIRED_TOOLS_METADATA", None
        )
        if required_tools is None:
            return None  # not an executor task
        if self.names_executors:
            wanted = DEFAULT_BACKEND.value if backend in (None, "auto") else backend
            if self.metadata.get(f"executor:{wanted}:available") is not True:
                return f"{task_name}: no worker:executor:{wanted} tag"
        if self.names_capabilities:
            for key in required_tools:
                if self.metadata.get(key) is not True:
                    tool = key.removesuffix(":available")
                    return f"{task_name}: no worker:cap:{tool} tag"
        return None
