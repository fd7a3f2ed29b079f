"""
The Celery application: Redis as broker, PostgreSQL (django-celery-results) as result backend.

Processes: the scheduler (`-Q scheduler --concurrency 1 --pool solo`), server-task workers
(`-Q celery`) and beat (periodic jobs: the fallback scheduling pass and lease expiry). Job
code lives in `jobs.py` modules, listed in `JOB_MODULES`.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "debusine.server.project.settings")

JOB_MODULES = ["debusine.server.scheduler.jobs"]

app = Celery("debusine", include=JOB_MODULES)
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_finalize.connect
def _setup_periodic_jobs(sender: Celery, **_kwargs: object) -> None:
    from django.conf import settings

    from debusine.server.scheduler.jobs import expire_worker_leases, schedule_work_requests

    sender.add_periodic_task(
        float(settings.DEBUSINE_SCHEDULER_FALLBACK_INTERVAL),
        schedule_work_requests.s(renotify=True),
        name="fallback scheduling pass",
    )
    sender.add_periodic_task(
        lease_check_interval(settings.DEBUSINE_WORKER_LEASE_GRACE),
        expire_worker_leases.s(),
        name="lease expiry",
    )


def lease_check_interval(grace: int) -> float:
    """How often beat looks for expired leases: a quarter of the grace period, 1-30 s."""
    return float(min(30.0, max(1.0, grace / 4)))
