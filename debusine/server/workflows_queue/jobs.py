"""
Celery entry points of the workflow engine (queue `workflows`), and the hooks that queue them
after a transition commits (`effects.install_workflow_hooks`).

Jobs take ids only and re-read PostgreSQL (see `orchestration`), so a duplicated, late or
lost message does no harm: beat's periodic sweep catches up on lost ones. Roll-ups of one
workflow are coalesced: a roll-up runs `UPDATE_DELAY` after it is asked for, and while one is
queued and has not started, asking again queues nothing (a Redis flag the job clears as it
starts), so children finishing at any rate cost at most about one roll-up per second per
workflow, not one per child.
"""

from __future__ import annotations

import logging

from django.conf import settings

from debusine.server.project.celery import app
from debusine.server.scheduler.triggers import redis_client
from debusine.server.work_requests import effects
from debusine.server.workflows import orchestration

#: The queue of these jobs (CELERY_TASK_ROUTES sends every `debusine.workflows.*` job there).
WORKFLOWS_QUEUE = "workflows"
PROCESS_JOB = "debusine.workflows.process"
UPDATE_JOB = "debusine.workflows.update"
SWEEP_JOB = "debusine.workflows.sweep"

#: Seconds after which a "roll-up queued" flag whose job was lost stops suppressing requests.
UPDATE_QUEUED_TTL = 10
#: Seconds a roll-up waits before it runs: the children finishing meanwhile share it (only
#: the last one's roll-up completes the workflow; the others find it still running).
UPDATE_DELAY = 1.0

logger = logging.getLogger(__name__)


def update_queued_key(workflow_id: int) -> str:
    return f"{settings.DEBUSINE_REDIS_KEY_PREFIX}:workflows:update-queued:{workflow_id}"


@app.task(name=PROCESS_JOB, ignore_result=True)
def process_work_request(work_request_id: int) -> str:
    """Populate a workflow, run an Internal task or check a delay."""
    return orchestration.process(work_request_id)


@app.task(name=UPDATE_JOB, ignore_result=True)
def update_workflow(workflow_id: int) -> str | None:
    """Roll a workflow's status up from its children."""
    try:
        redis_client().delete(update_queued_key(workflow_id))
    except Exception as error:  # the roll-up itself does not need Redis
        logger.warning("could not clear the roll-up flag of %s: %s", workflow_id, error)
    result = orchestration.update(workflow_id)
    return None if result is None else str(result)


@app.task(name=SWEEP_JOB, ignore_result=True)
def sweep_workflows() -> int:
    """Process what lost messages left behind; return how many work requests changed."""
    result = orchestration.sweep()
    return len(result.processed) + len(result.rolled_up)


class WorkflowJobs:
    """`effects.WorkflowHooks` as Celery jobs; failures to queue are left to the sweep."""

    def process(self, work_request_id: int, countdown: float | None) -> None:
        try:
            app.send_task(PROCESS_JOB, args=[work_request_id], countdown=countdown)
        except Exception as error:
            logger.warning("could not queue the processing of %s: %s", work_request_id, error)

    def update(self, workflow_id: int) -> None:
        try:
            if not redis_client().set(
                update_queued_key(workflow_id), "1", nx=True, ex=UPDATE_QUEUED_TTL
            ):
                return
            app.send_task(UPDATE_JOB, args=[workflow_id], countdown=UPDATE_DELAY)
        except Exception as error:
            logger.warning("could not queue the roll-up of workflow %s: %s", workflow_id, error)


def install() -> None:
    """Register the workflow engine's hooks for the work request's transitions."""
    effects.install_workflow_hooks(WorkflowJobs())
