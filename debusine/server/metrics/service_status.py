"""
The answer of `GET /api/1.0/service-status/`, from the same sources as a metrics scrape: the
maintained work request counts and the (small) worker table, a bounded number of queries.
"""

from __future__ import annotations

from collections import defaultdict

from debusine.protocol.monitoring import QueueCounts, ServiceStatus, WorkerCounts
from debusine.protocol.work_requests import TaskType, WorkRequestStatus
from debusine.server.db.models.metrics import current_metric_counts
from debusine.server.db.models.workers import WorkerType
from debusine.server.metrics.exposition import Architectures, DebusineCollector
from debusine.tasks import BaseTask

#: Statuses counted: each adds to the QueueCounts field of its name.
QUEUE_FIELDS = {
    status: status.value for status in (WorkRequestStatus.PENDING, WorkRequestStatus.RUNNING)
}


def _add_worker(counts: WorkerCounts, connected: bool, busy: bool) -> None:
    counts.registered += 1
    if connected:
        counts.connected += 1
        if busy:
            counts.busy += 1
        else:
            counts.idle += 1


def service_status() -> ServiceStatus:
    workers = DebusineCollector.read_workers()
    architectures = Architectures(
        arch for worker in workers for arch in [worker[5], *worker[6]] if arch
    )
    tasks = {task_type.value: QueueCounts() for task_type in TaskType}
    worker_tasks = {name: QueueCounts() for name in BaseTask.task_names(TaskType.WORKER)}
    worker_tasks_arch: dict[str, QueueCounts] = defaultdict(QueueCounts)
    for family, key, count, _total in current_metric_counts():
        if family != "work_requests" or count == 0:
            continue
        field = QUEUE_FIELDS.get(WorkRequestStatus(key["status"]))
        if field is None:
            continue
        task_type = key["task_type"]
        for counts in (
            tasks.setdefault(task_type, QueueCounts()),
            *(
                (
                    worker_tasks.setdefault(key["task_name"], QueueCounts()),
                    worker_tasks_arch[architectures.label(key["host_architecture"])],
                )
                if task_type == TaskType.WORKER
                else ()
            ),
        ):
            setattr(counts, field, getattr(counts, field) + count)
    by_type = {worker_type.value: WorkerCounts() for worker_type in WorkerType}
    by_arch: dict[str, WorkerCounts] = defaultdict(WorkerCounts)
    by_host: dict[str, WorkerCounts] = defaultdict(WorkerCounts)
    for worker_type, _concurrency, connected, enabled, busy, host, arches, _pool in workers:
        usable = connected and enabled
        _add_worker(by_type.setdefault(worker_type, WorkerCounts()), usable, busy > 0)
        if worker_type != WorkerType.EXTERNAL:
            continue
        _add_worker(by_host[architectures.label(host)], usable, busy > 0)
        for arch in sorted({architectures.label(arch) for arch in arches}):
            _add_worker(by_arch[arch], usable, busy > 0)
    return ServiceStatus(
        tasks=tasks,
        workers=by_type,
        worker_tasks=worker_tasks,
        external_workers_arch=dict(sorted(by_arch.items())),
        external_workers_host_arch=dict(sorted(by_host.items())),
        worker_tasks_arch=dict(sorted(worker_tasks_arch.items())),
    )
