"""
Wire model of `GET /1.0/service-status/` (protocol.md §2.7): queue and worker counts, for
monitoring scripts (Debusine ships a munin plugin reading it).
"""

from __future__ import annotations

from pydantic import BaseModel


class QueueCounts(BaseModel):
    """Work requests waiting (pending, assigned or not) and running."""

    pending: int = 0
    running: int = 0


class WorkerCounts(BaseModel):
    """
    Workers: all of them (`registered`), those connected with an enabled token, and of those
    the ones holding no work request (`idle`) or some (`busy`).
    """

    registered: int = 0
    connected: int = 0
    idle: int = 0
    busy: int = 0


class ServiceStatus(BaseModel):
    """The whole answer."""

    #: By task type (`Worker`, `Server`, ...; every type is present).
    tasks: dict[str, QueueCounts]
    #: By worker type (`external`, `celery`, `signing`; every type is present).
    workers: dict[str, WorkerCounts]
    #: Worker-type tasks by task name (every registered worker task is present).
    worker_tasks: dict[str, QueueCounts]
    #: External workers by architecture they can run (`system:architectures`).
    external_workers_arch: dict[str, WorkerCounts]
    #: External workers by host architecture (`system:host_architecture`).
    external_workers_host_arch: dict[str, WorkerCounts]
    #: Worker-type tasks by host architecture (`none` for tasks without one).
    worker_tasks_arch: dict[str, QueueCounts]
