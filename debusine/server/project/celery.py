"""
The Celery application: Redis as broker, PostgreSQL (django-celery-results) as result backend.

Processes: the scheduler (`-Q scheduler --concurrency 1 --pool solo`), server-task and
workflow workers (`-Q celery,workflows`) and beat (periodic jobs: the fallback scheduling pass,
the workflow sweep and lease expiry). Job
code lives in `jobs.py` modules, listed in `JOB_MODULES`.

Beat runs `beat_app`: the same configuration without Django (Celery's Django fix-up would set
up every model in a process that only sends messages by job name), which halves its memory.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from celery import Celery

SETTINGS_MODULE = "debusine.server.project.settings"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)

JOB_MODULES = ["debusine.server.scheduler.jobs", "debusine.server.workflows_queue.jobs"]

app = Celery("debusine", include=JOB_MODULES)
app.config_from_object("django.conf:settings", namespace="CELERY")


def lease_check_interval(grace: int) -> float:
    """How often beat looks for expired leases: a quarter of the grace period, 1-30 s."""
    return float(min(30.0, max(1.0, grace / 4)))


def beat_schedule(settings: Any) -> dict[str, dict[str, object]]:
    """The periodic jobs, by name (see debusine.server.scheduler.jobs)."""
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
    }


#: Beat's application: the settings module read as plain Python, no Django set-up.
beat_app = Celery("debusine", fixups=[])
beat_app.config_from_object(SETTINGS_MODULE, namespace="CELERY")
# Beat stores no results (the django-db backend would need Django).
beat_app.conf.result_backend = "disabled"
beat_app.conf.beat_schedule = beat_schedule(importlib.import_module(SETTINGS_MODULE))
