"""
Celery entry point of the provisioner (queue `provisioner`, one process, concurrency 1).

Beat queues a pass every DEBUSINE_PROVISIONER_INTERVAL seconds; the pass re-reads everything
from PostgreSQL and holds the provisioner's advisory lock, so a duplicated or late message only
runs one more (harmless) pass.
"""

from __future__ import annotations

import logging

from debusine.server.project.celery import app
from debusine.server.worker_pools.provisioner import run_provisioner_pass

#: The queue of these jobs (CELERY_TASK_ROUTES sends every `debusine.provisioner.*` job there).
PROVISIONER_QUEUE = "provisioner"
PROVISION_JOB = "debusine.provisioner.provision"

logger = logging.getLogger(__name__)


@app.task(name=PROVISION_JOB, ignore_result=True)
def provision_worker_pools() -> int:
    """One provisioner pass; return how many instances it launched."""
    report = run_provisioner_pass()
    return sum(pool.launched for pool in report.pools)
