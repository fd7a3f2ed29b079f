"""
"Why is this not running?": for a pending work request, how long it has waited and, for
each worker, whether it could take it or why not (type, task lists, task version,
architecture, disabled, paused or draining, disconnected, busy).

The verdict is the scheduler's own (`matching.can_run`); the reasons name which of its
conditions a worker fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

from debusine.protocol.work_requests import WorkRequestStatus
from debusine.server.db.models import Worker, WorkRequest
from debusine.server.scheduler.matching import (
    TASK_TYPES_BY_WORKER_TYPE,
    Candidate,
    can_run,
    server_task_version,
    version_key,
)

#: The page explains at most this many workers.
WORKER_LIMIT = 200


@dataclass
class WorkerVerdict:
    """One worker and whether it could take the work request now (reason when not)."""

    worker: Worker
    could_take: bool
    reason: str


@dataclass
class PendingExplanation:
    waited: timedelta
    host_architecture: str | None
    verdicts: list[WorkerVerdict]

    @property
    def takers(self) -> list[WorkerVerdict]:
        return [verdict for verdict in self.verdicts if verdict.could_take]

    @property
    def others(self) -> list[WorkerVerdict]:
        return [verdict for verdict in self.verdicts if not verdict.could_take]


def why_not(worker_type: str, metadata: dict[str, object], candidate: Candidate) -> str:
    """The first of the scheduler's conditions that this worker's metadata fails."""
    runs = TASK_TYPES_BY_WORKER_TYPE.get(worker_type)
    if runs != candidate.task_type:
        return f"a {worker_type} worker runs {runs or 'no'} tasks, not {candidate.task_type}"
    allowlist = metadata.get("tasks_allowlist")
    if isinstance(allowlist, list) and candidate.task_name not in allowlist:
        return f"{candidate.task_name} is not in its tasks_allowlist"
    denylist = metadata.get("tasks_denylist")
    if allowlist is None and isinstance(denylist, list) and candidate.task_name in denylist:
        return f"{candidate.task_name} is in its tasks_denylist"
    expected = server_task_version(candidate.task_type, candidate.task_name)
    if expected is None:
        return f"the server knows no {candidate.task_type} task {candidate.task_name}"
    key = version_key(candidate.task_type, candidate.task_name)
    if metadata.get(key) != expected:
        return f"it reports {key} = {metadata.get(key)!r}, the server's is {expected}"
    if candidate.host_architecture is not None:
        return (
            f"it does not run {candidate.host_architecture} "
            f"(system:architectures = {metadata.get('system:architectures') or []})"
        )
    return "its metadata does not match the task"


def explain_pending(work_request: WorkRequest) -> PendingExplanation:
    """Explain why the pending `work_request` waits (two queries: workers and their load)."""
    assert work_request.status == WorkRequestStatus.PENDING
    architecture = work_request.task_data.get("host_architecture")
    candidate = Candidate(
        work_request.pk,
        work_request.task_type,
        work_request.task_name,
        architecture if isinstance(architecture, str) else None,
    )
    workers = list(
        Worker.objects.select_related("token")
        .annotate(
            running=Count(
                "assigned_work_requests",
                filter=Q(assigned_work_requests__status=WorkRequestStatus.RUNNING),
            )
        )
        .order_by("name")[:WORKER_LIMIT]
    )
    verdicts = []
    for worker in workers:
        metadata = worker.metadata()
        if not can_run(worker.worker_type, metadata, candidate):
            verdicts.append(
                WorkerVerdict(worker, False, why_not(worker.worker_type, metadata, candidate))
            )
        elif not worker.is_enabled():
            verdicts.append(WorkerVerdict(worker, False, "it is disabled"))
        elif worker.draining_at is not None:
            verdicts.append(
                WorkerVerdict(
                    worker,
                    False,
                    "it is paused: it takes no new work"
                    if worker.worker_pool_id is None
                    else "it is draining: it takes no new work",
                )
            )
        elif worker.connected_at is None:
            verdicts.append(WorkerVerdict(worker, False, "it is not connected"))
        elif worker.running >= worker.concurrency:
            verdicts.append(
                WorkerVerdict(
                    worker,
                    False,
                    f"it is busy ({worker.running} of {worker.concurrency} slots)",
                )
            )
        else:
            verdicts.append(WorkerVerdict(worker, True, "it is idle and can run it"))
    return PendingExplanation(
        waited=timezone.now() - work_request.created_at,
        host_architecture=candidate.host_architecture,
        verdicts=verdicts,
    )
