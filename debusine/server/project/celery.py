"""
The Celery application: Redis as broker, PostgreSQL (django-celery-results) as result backend.

JOB_MODULES = [
    "debusine.server.scheduler.jobs",
    "debusine.server.maintenance.jobs",
    "debusine.server.workflows_queue.jobs",
]

By default one process plays all three (docs/explanation/processes-and-memory.md): a solo
worker on both queues with `--beat-thread`, which runs beat as a thread of that worker (Celery's
own `--beat` forks a second interpreter for it). Beat can also run alone, as `beat_app`: the same
configuration without Django (Celery's Django fix-up would set up every model in a process that
only sends messages by job name).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import click
from celery import Celery, bootsteps

SETTINGS_MODULE = "debusine.server.project.settings"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)

JOB_MODULES = [
    "debusine.server.scheduler.jobs",
    "debusine.server.maintenance.jobs",
    "debusine.server.workflows_queue.jobs",
    "debusine.server.worker_pools.jobs",
]

app = Celery("debusine", include=JOB_MODULES)
app.config_from_object("django.conf:settings", namespace="CELERY")


def lease_check_interval(grace: int) -> float:
    """How often beat looks for expired leases: a quarter of the grace period, 1-30 s."""
    return float(min(30.0, max(1.0, grace / 4)))


def beat_schedule(settings: Any) -> dict[str, dict[str, object]]:
    """The periodic jobs, by name (see debusine.server.scheduler.jobs, maintenance.jobs)."""
    return {
        "fallback scheduling pass": {
            "task": "debusine.scheduler.schedule",
            "schedule": float(settings.DEBUSINE_SCHEDULER_FALLBACK_INTERVAL),
            "kwargs": {"renotify": True},
        },
        "workflow sweep": {
            "task": "debusine.workflows.sweep",
            "schedule": float(settings.DEBUSINE_SCHEDULER_FALLBACK_INTERVAL),
        },
        "lease expiry": {
            "task": "debusine.scheduler.expire_leases",
            "schedule": lease_check_interval(settings.DEBUSINE_WORKER_LEASE_GRACE),
        },
        # Counts of work requests, artifacts, collections (debusine.server.maintenance.jobs).
        "metric counts fold": {"task": "debusine.metrics.fold_counts", "schedule": 60.0},
        # Scales the dynamic worker pools (queue `provisioner`: debusine.server.worker_pools).
        "provisioner pass": {
            "task": "debusine.provisioner.provision",
            "schedule": float(settings.DEBUSINE_PROVISIONER_INTERVAL),
            # Passes nobody took in time are dropped, not piled up in Redis (a deployment
            # without a provisioner, or one stopped for a while): the next one does it all.
            "options": {"expires": float(settings.DEBUSINE_PROVISIONER_INTERVAL)},
        },
    }


app.conf.beat_schedule = beat_schedule(importlib.import_module(SETTINGS_MODULE))


class BeatThread(bootsteps.StartStopStep):  # type: ignore[misc]
    """
    `celery worker --beat-thread`: beat runs in a thread of this worker and stops with it.

    Its schedule is kept in memory (`celery.beat.Scheduler`), not in a file: the jobs are
    short intervals that need no memory of the last run across restarts, and a second
    scheduler process (passes stay apart through the advisory lock) must not share a
    schedule file with the first; its beat only adds idempotent jobs.
    """

    label = "Beat thread"
    conditional = True

    def __init__(self, worker: Any, beat_thread: bool = False, **kwargs: Any) -> None:
        self.enabled = bool(beat_thread)
        super().__init__(worker, **kwargs)

    def create(self, worker: Any) -> Any:
        from celery.beat import EmbeddedService

        return EmbeddedService(
            worker.app,
            thread=True,
            scheduler_cls="celery.beat:Scheduler",
        )


app.user_options["worker"].add(
    click.Option(
        ["--beat-thread"],
        is_flag=True,
        default=False,
        help="Also run beat (the periodic jobs), as a thread of this worker.",
    )
)
app.steps["worker"].add(BeatThread)


#: Beat's application: the settings module read as plain Python, no Django set-up.
beat_app = Celery("debusine", fixups=[])
beat_app.config_from_object(SETTINGS_MODULE, namespace="CELERY")
# Beat stores no results (the django-db backend would need Django).
beat_app.conf.result_backend = "disabled"
beat_app.conf.beat_schedule = beat_schedule(importlib.import_module(SETTINGS_MODULE))
