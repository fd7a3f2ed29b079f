"""
Which idle worker takes which pending work request: the pure part of a scheduling pass.

Work requests are considered in queue order (effective priority, then age); each goes to the
earliest-connected idle worker able to run it. Workers are grouped by their metadata, which is
what decides what they can run, so the cost of a pass grows with the number of work requests
assigned and of distinct worker configurations, not with workers x pending work requests.

A worker can run a task when (reference §5, protocol.md §4.3-4.4):
- its type runs that task type (external workers run Worker tasks, signing workers Signing ones);
- `tasks_allowlist`, if set, names the task; otherwise `tasks_denylist` does not;
- its generation (protocol-versions.md) can be given the task's payload (0.16 workers only the
  tasks of `debusine.protocol.generations.V0_16_TASKS`), and 0.16 workers' tags are read as
  the keys below (`legacy_view_of_metadata`);
- it reports `<task>:version` equal to the server's TASK_VERSION (`noop:version` for Worker
  tasks, `signing:noop:version` for other types);
- the task's host architecture, if it has one, is among its `system:architectures`;
- for a task class that overrides `BaseTask.can_run_on`, the task (built from the candidate's
  task data, once) accepts the worker's metadata.
Static (admin-set) metadata overrides what the worker reports.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from debusine.protocol.generations import Generation, can_express, generation_from_metadata
from debusine.tasks import BaseTask, UnknownTaskError

#: Task types each worker type runs.
TASK_TYPES_BY_WORKER_TYPE = {"external": "Worker", "signing": "Signing"}


@dataclass(frozen=True)
class Candidate:
    """A pending, unassigned work request, as much of it as matching needs."""

    id: int
    task_type: str
    task_name: str
    host_architecture: str | None
    #: The task built from its task data, for tasks that need it (`needs_task_instance`).
    task: BaseTask[Any] | None = field(default=None, compare=False)


def overrides(task_class: type[BaseTask[Any]], method: str) -> bool:
    """Whether `task_class` has its own `method` rather than BaseTask's."""
    return getattr(task_class, method) is not getattr(BaseTask, method)


#: Task class -> whether it needs building; classes never change once defined.
_NEEDS_INSTANCE: dict[type[BaseTask[Any]], bool] = {}


def _class_needs_instance(task_class: type[BaseTask[Any]]) -> bool:
    needs = _NEEDS_INSTANCE.get(task_class)
    if needs is None:
        needs = overrides(task_class, "can_run_on") or overrides(
            task_class, "compute_dynamic_data"
        )
        _NEEDS_INSTANCE[task_class] = needs
    return needs


def needs_task_instance(task_type: str, task_name: str) -> bool:
    """
    Whether scheduling the task needs it built from its task data: its class decides where
    it can run (`can_run_on`) or computes dynamic data. Tasks such as `noop` do not.
    """
    try:
        task_class = BaseTask.class_from_name(task_type, task_name)
    except UnknownTaskError:
        return False
    return _class_needs_instance(task_class)


@dataclass
class IdleWorker:
    """A connected, enabled worker with `free_slots` > 0."""

    id: int
    worker_type: str
    free_slots: int
    metadata: dict[str, Any]
    #: Equal for workers of one type and metadata (they can run the same tasks); computed
    #: from them when not given.
    signature: str = ""

    def __post_init__(self) -> None:
        if not self.signature:
            self.signature = self.worker_type + json.dumps(self.metadata, sort_keys=True)


def version_key(task_type: str, task_name: str) -> str:
    """The metadata key holding a worker's version of a task."""
    if task_type == "Worker":
        return f"{task_name}:version"
    return f"{task_type.lower()}:{task_name}:version"


def server_task_version(task_type: str, task_name: str) -> int | None:
    """The server's TASK_VERSION of the task, or None when it does not know the task."""
    try:
        return BaseTask.class_from_name(task_type, task_name).TASK_VERSION
    except UnknownTaskError:
        return None


def can_run(worker_type: str, metadata: dict[str, Any], candidate: Candidate) -> bool:
    """Whether a worker of this type and metadata may run the candidate."""
    if TASK_TYPES_BY_WORKER_TYPE.get(worker_type) != candidate.task_type:
        return False
    generation = generation_from_metadata(metadata) or Generation.LEGACY
    if not can_express(generation, candidate.task_type, candidate.task_name):
        return False
    allowlist = metadata.get("tasks_allowlist")
    if allowlist is not None:
        if candidate.task_name not in allowlist:
            return False
    elif candidate.task_name in (metadata.get("tasks_denylist") or ()):
        return False
    expected = server_task_version(candidate.task_type, candidate.task_name)
    if expected is None or metadata.get(version_key(candidate.task_type, candidate.task_name)) != (
        expected
    ):
        return False
    if candidate.host_architecture is not None:
        return candidate.host_architecture in (metadata.get("system:architectures") or ())
    return True


def _ignoring_architectures(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "system:architectures"}


@dataclass
class _WorkerGroup:
    """Idle workers sharing one type and metadata, earliest connected first."""

    worker_type: str
    metadata: dict[str, Any]
    # (rank, worker id, free slots); rank is the worker's position in connection order.
    queue: deque[list[int]] = field(default_factory=deque)


class Matcher:
    """Hands idle workers' free slots to candidates, in the order candidates are offered."""

    def __init__(self, workers: list[IdleWorker]) -> None:
        """`workers` in connection order (earliest first): that order breaks ties."""
        groups: dict[str, _WorkerGroup] = {}
        for rank, worker in enumerate(workers):
            if worker.free_slots <= 0:
                continue
            group = groups.get(worker.signature)
            if group is None:
                group = groups[worker.signature] = _WorkerGroup(
                    worker.worker_type, worker.metadata
                )
            group.queue.append([rank, worker.id, worker.free_slots])
        self._groups = list(groups.values())
        self._eligible: dict[tuple[str, str, str | None], list[_WorkerGroup]] = {}
        self.free_slots = sum(worker.free_slots for worker in workers if worker.free_slots > 0)

    def runnable_kinds(self) -> list[str]:
        """
        `task_type:task_name` of every registered task that a worker with a free slot may run
        (on some architecture): the pass reads only those from the queue, and stops when
        there are none left.
        """
        kinds: set[str] = set()
        for group in self._groups:
            if not group.queue:
                continue
            task_type = TASK_TYPES_BY_WORKER_TYPE.get(group.worker_type)
            if task_type is None:
                continue
            for task_name in BaseTask.task_names(task_type):
                probe = Candidate(0, task_type, task_name, None)
                if can_run(group.worker_type, _ignoring_architectures(group.metadata), probe):
                    kinds.add(f"{task_type}:{task_name}")
        return sorted(kinds)

    def _groups_for(self, candidate: Candidate) -> list[_WorkerGroup]:
        key = (candidate.task_type, candidate.task_name, candidate.host_architecture)
        eligible = self._eligible.get(key)
        if eligible is None:
            eligible = [
                group
                for group in self._groups
                if can_run(group.worker_type, group.metadata, candidate)
            ]
            self._eligible[key] = eligible
        return eligible

    def _best_group(self, candidate: Candidate) -> _WorkerGroup | None:
        task = candidate.task
        checks_metadata = task is not None and overrides(type(task), "can_run_on")
        best: _WorkerGroup | None = None
        for group in self._groups_for(candidate):
            if not group.queue or (best is not None and group.queue[0][0] >= best.queue[0][0]):
                continue
            if checks_metadata and task is not None and not task.can_run_on(group.metadata):
                continue
            best = group
        return best

    def can_take(self, candidate: Candidate) -> bool:
        """Whether an idle worker would take `candidate` now (nothing is assigned)."""
        return self._best_group(candidate) is not None

    def assign(self, candidate: Candidate) -> int | None:
        """The id of the worker that takes `candidate`, or None if no idle worker can."""
        best = self._best_group(candidate)
        if best is None:
            return None
        slot = best.queue[0]
        slot[2] -= 1
        if slot[2] == 0:
            best.queue.popleft()
        self.free_slots -= 1
        return slot[1]
