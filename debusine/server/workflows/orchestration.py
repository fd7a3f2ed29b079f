"""
What the server does with the work requests it runs itself, once they are pending:

- a **Workflow**: its orchestrator populates it, and it runs until its children have finished
  (`transitions.update_workflow` rolls it up); a running workflow processed again (retried)
  populates again, which adds only what is missing;
- an **Internal** `synchronization_point` completes at once; an Internal `workflow` callback
  calls its workflow's `callback()`, then completes;
- a **Wait** `delay` completes once its `delay_until` has passed (it is processed again then).

Each runs in one transaction holding the work request's row lock, from the state it finds, so
a duplicated or late message does nothing. An orchestrator that raises ends its work request
as an error; nothing it created stays. `sweep()` (beat, periodically) processes what a lost
message left behind and rolls up workflows whose children all finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pydantic
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from debusine.protocol.work_requests import TaskType, WorkRequestResult, WorkRequestStatus
from debusine.server.db.models import WorkRequest
from debusine.server.work_requests import effects, transitions
from debusine.server.workflows.base import DelayData, UnknownWorkflowError, Workflow

logger = logging.getLogger(__name__)


def _fail(work_request: WorkRequest, code: str, message: str) -> None:
    transitions.complete(
        work_request, WorkRequestResult.ERROR, {"errors": [{"code": code, "message": message}]}
    )


def orchestrator(workflow: WorkRequest) -> Workflow[object]:  # type: ignore[type-var]
    """The orchestrator of a Workflow work request (UnknownWorkflowError, ValidationError)."""
    return Workflow.class_from_name(workflow.task_name)(workflow)


#: A delay due within this many seconds is checked again by a delayed job; later ones are left
#: to the periodic sweep (a broker keeps long-delayed messages poorly).
DELAY_JOB_HORIZON = 300


def process(work_request_id: int, *, reschedule: bool = True) -> str:
    """
    Process one server-side work request; return what was done (for logs and tests).
    `reschedule=False` (the sweep): a delay not due yet queues no job to check it again.
    """
    with transaction.atomic():
        work_request = (
            WorkRequest.objects.select_for_update(of=("self",))
            .select_related("workspace", "created_by")
            .filter(pk=work_request_id)
            .first()
        )
        if work_request is None:
            return "missing"
        if work_request.task_type == TaskType.WORKFLOW:
            return _orchestrate(work_request)
        if work_request.status != WorkRequestStatus.PENDING:
            return "not-runnable"
        if work_request.task_type == TaskType.INTERNAL:
            return _run_internal(work_request)
        if work_request.task_type == TaskType.WAIT:
            return _run_wait(work_request, reschedule=reschedule)
        return "not server-side"


def _orchestrate(workflow: WorkRequest) -> str:
    if workflow.status not in (WorkRequestStatus.PENDING, WorkRequestStatus.RUNNING):
        return "not-runnable"
    try:
        instance = orchestrator(workflow)
        with transaction.atomic():
            instance.populate()
    except (UnknownWorkflowError, pydantic.ValidationError) as error:
        _fail(workflow, "invalid-workflow", f"{type(error).__name__}: {error}")
        return "error"
    except Exception as error:
        logger.exception("populating workflow %s failed", workflow.pk)
        _fail(workflow, "orchestrator-failed", f"{type(error).__name__}: {error}")
        return "error"
    if workflow.status == WorkRequestStatus.PENDING:
        transitions.start_workflow(workflow)
        return "started"
    effects.request_workflow_update(workflow.pk)
    return "populated"


def _run_internal(work_request: WorkRequest) -> str:
    if work_request.task_name == "synchronization_point":
        transitions.complete(work_request, WorkRequestResult.SUCCESS)
        return "done"
    if work_request.task_name == "workflow":
        parent = (
            WorkRequest.objects.select_related("workspace", "created_by")
            .filter(children=work_request, task_type=TaskType.WORKFLOW)
            .first()
            if work_request.parent_id is not None
            else None
        )
        if parent is None:
            _fail(work_request, "no-workflow", "a workflow callback outside a workflow")
            return "error"
        try:
            instance = orchestrator(parent)
            with transaction.atomic():
                instance.callback(work_request)
        except Exception as error:
            logger.exception("callback %s of workflow %s failed", work_request.pk, parent.pk)
            _fail(work_request, "callback-failed", f"{type(error).__name__}: {error}")
            return "error"
        transitions.complete(work_request, WorkRequestResult.SUCCESS)
        return "done"
    _fail(work_request, "unknown-task", f"unknown Internal task {work_request.task_name!r}")
    return "error"


def _run_wait(work_request: WorkRequest, *, reschedule: bool) -> str:
    if work_request.task_name != "delay":
        _fail(work_request, "unknown-task", f"unknown Wait task {work_request.task_name!r}")
        return "error"
    try:
        data = DelayData.model_validate(work_request.task_data)
    except pydantic.ValidationError as error:
        _fail(work_request, "invalid-task-data", str(error))
        return "error"
    remaining = (data.delay_until - timezone.now()).total_seconds()
    if remaining > 0:
        if reschedule and remaining <= DELAY_JOB_HORIZON:
            effects.request_processing(work_request.pk, countdown=remaining)
        return "waiting"
    transitions.complete(work_request, WorkRequestResult.SUCCESS)
    return "done"


def update(workflow_id: int) -> WorkRequestResult | None:
    """Roll a workflow up from its children, in its own transaction."""
    with transaction.atomic():
        return transitions.update_workflow(workflow_id)


@dataclass
class SweepResult:
    """What one sweep did."""

    processed: dict[int, str] = field(default_factory=dict)
    rolled_up: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.processed or self.rolled_up)


def sweep() -> SweepResult:
    """
    Catch up on lost messages: process every pending server-side work request (delays not
    yet due stay pending), and roll up every running workflow with no unfinished child.
    """
    result = SweepResult()
    pending = WorkRequest.objects.filter(
        status=WorkRequestStatus.PENDING, task_type__in=transitions.SERVER_SIDE_TYPES
    ).order_by("id")
    for work_request_id in pending.values_list("id", flat=True):
        outcome = process(work_request_id, reschedule=False)
        if outcome != "waiting":
            result.processed[work_request_id] = outcome
    unfinished_children = WorkRequest.objects.filter(
        parent=OuterRef("pk"),
        superseded_by__isnull=True,
        status__in=transitions.UNFINISHED,
    )
    finished = (
        WorkRequest.objects.filter(status=WorkRequestStatus.RUNNING, task_type=TaskType.WORKFLOW)
        .exclude(Exists(unfinished_children))
        .order_by("-id")  # sub-workflows (created later) before their parents
    )
    for workflow_id in finished.values_list("id", flat=True):
        rolled_up = update(workflow_id)
        if rolled_up is not None:
            result.rolled_up[workflow_id] = str(rolled_up)
    return result


def run_until_idle(max_rounds: int = 100) -> int:
    """Sweep until a sweep does nothing (tests, and `debusine-admin`); return the rounds."""
    for rounds in range(1, max_rounds + 1):
        if not sweep():
            return rounds
    return max_rounds
