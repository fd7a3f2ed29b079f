"""
Every change of a work request's state, each defined once.

    create ──> pending ──assign──> pending (worker set) ──start──> running ──complete──> completed
      │          ↑   └──requeue──┘                                   │
      └> blocked ┘ unblock (dependencies done; or a reviewer accepts)   └──abort──> aborted
                   (a reviewer rejects a manual-unblock one: aborted)
    completed/aborted ──retry──> a new work request superseding it (pending or blocked)

Transitions that the worker's hot path makes for every work request (start the next one,
record a completion) run as single SQL statements (`START_NEXT_SQL`, `COMPLETE_SQL`); they make
the same change as the ORM transitions next to them, and hand what only the ORM does (dependants
to unblock, reactions to run) to the same code. Statements name statuses through
`debusine.server.work_requests.sql`, built from the protocol's enumerations.

What follows a transition (a scheduling pass, a worker told, a completion announced) is asked
for from `debusine.server.work_requests.effects`, never imported from the scheduler.

Callers hold the transaction: the API runs each request in one (ATOMIC_REQUESTS), Celery jobs
and admin commands open their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

import pydantic
from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from debusine.protocol.work_requests import (
    SERVER_ACTIONS,
    EventReactions,
    ManualUnblockAction,
    RetryWithDelaysAction,
    SendNotificationAction,
    TaskType,
    WorkRequestResponse,
    WorkRequestResult,
    WorkRequestStatus,
)
from debusine.server.db.models import (
    Collection,
    CollectionItem,
    User,
    Worker,
    WorkflowTemplate,
    WorkRequest,
    Workspace,
)
from debusine.server.db.models.collections import CollectionItemType, CollectionRetention
from debusine.server.db.models.work_requests import RetryReason, UnblockStrategy
from debusine.server.event_reactions import run_event_reactions
from debusine.server.signing_keys import SignerRoleError, check_signer_role
from debusine.server.work_requests import effects, serialization, sql
from debusine.server.work_requests.worker_tokens import WorkerCaller
from debusine.tasks import TaskDataError, UnknownTaskError, validate_task_data

if TYPE_CHECKING:
    from collections.abc import Callable

#: How many times a work request is retried automatically after its worker failed.
MAX_AUTOMATIC_RETRIES = 3

#: Statuses of work requests that have not finished.
UNFINISHED = (WorkRequestStatus.PENDING, WorkRequestStatus.RUNNING, WorkRequestStatus.BLOCKED)
#: Statuses of work requests that hold their worker.
HELD = (WorkRequestStatus.PENDING, WorkRequestStatus.RUNNING)
#: Statuses of finished work requests.
FINISHED = (WorkRequestStatus.COMPLETED, WorkRequestStatus.ABORTED)
#: Task types the server runs itself, in the `workflows` Celery queue (never a worker).
SERVER_SIDE_TYPES = (TaskType.WORKFLOW, TaskType.INTERNAL, TaskType.WAIT)
#: Category of a root workflow's internal collection, and of the promises it holds.
WORKFLOW_INTERNAL_CATEGORY = "debusine:workflow-internal"
PROMISE_CATEGORY = "debusine:promise"


class WorkRequestError(Exception):
    """A state change was asked of a work request that cannot make it."""


class InvalidWorkRequestError(Exception):
    """
    A work request cannot be created as asked: the API answers 400, the admin command exits 3.

    `title` is short, `detail` says what is wrong, `validation_errors` (field -> messages) says
    where, when it is known.
    """

    def __init__(
        self, title: str, detail: str, validation_errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail
        self.validation_errors = validation_errors


class WorkRequestPermissionError(InvalidWorkRequestError):
    """The creator may not ask for this work (e.g. no signer role on a key): a 403."""


# --- create -----------------------------------------------------------------------------------


def create(
    *,
    workspace: Workspace,
    created_by: User,
    task_type: str,
    task_name: str,
    task_data: Any,
    event_reactions: Any = None,
    priority_base: int = 0,
    allow_server_actions: bool = False,
    parent: WorkRequest | None = None,
    workflow_data: dict[str, Any] | None = None,
    dependencies: Iterable[WorkRequest] = (),
    workflow_template: WorkflowTemplate | None = None,
    unblock_strategy: str = UnblockStrategy.DEPS,
) -> WorkRequest:
    """
    Validate a new work request and store it, pending (blocked while it has unfinished
    `dependencies`); the one way to create one.

    :param workspace: where it lives (permission checks are the caller's business).
    :param created_by: the user it acts for.
    :param task_type: a `TaskType` value, e.g. "Worker".
    :param task_name: a task registered for `task_type` in `debusine.tasks`.
    :param task_data: checked against the task's data model; stored normalised.
    :param event_reactions: None or an object of `EventReactions` shape; only
        `send-notification` actions are valid, and every channel must exist.
    :param priority_base: base priority (an admin may adjust it later).
    :param allow_server_actions: also accept the event reactions only server-side code
        may set (`update-collection-with-artifacts`), never from what a user sent.
    :param parent: the workflow it is a step of; `workflow_data` says which (display_name,
        step, group, allow_failure).
    :param dependencies: work requests that must finish well before it may start.
    :param unblock_strategy: `manual`: it stays blocked until a reviewer accepts it
        (`manual_unblock`), whatever its dependencies.
    :raises InvalidWorkRequestError: nothing is stored then.

    Workflow, Internal and Wait task data are the workflow engine's to validate
    (`debusine.server.workflows`); the others are checked against their task's model here.
    """
    title = "Cannot create work request"
    if task_type in SERVER_SIDE_TYPES:
        if not isinstance(task_data, dict):
            raise InvalidWorkRequestError(title, "task data must be an object")
        normalised = task_data
    else:
        try:
            normalised = validate_task_data(task_type, task_name, task_data)
        except UnknownTaskError as error:
            raise InvalidWorkRequestError(
                title, str(error), {"task_name": ["task name is not registered"]}
            ) from None
        except TaskDataError as error:
            raise InvalidWorkRequestError(title, str(error), error.validation_errors) from None
    reactions = _validate_event_reactions(event_reactions, allow_server_actions)
    try:
        check_signer_role(created_by, workspace, task_type, task_name, normalised)
    except SignerRoleError as error:
        raise WorkRequestPermissionError("Permission denied", str(error)) from None
    dependencies = list(dependencies)
    manual = unblock_strategy == UnblockStrategy.MANUAL
    work_request = WorkRequest.objects.create(
        workspace=workspace,
        created_by=created_by,
        task_type=task_type,
        task_name=task_name,
        task_data=normalised,
        event_reactions_json=reactions,
        priority_base=priority_base,
        parent=parent,
        workflow_data_json=workflow_data or {},
        workflow_template=workflow_template,
        unblock_strategy=unblock_strategy,
        status=WorkRequestStatus.BLOCKED if dependencies or manual else WorkRequestStatus.PENDING,
    )
    if dependencies:
        work_request.dependencies.set(dependencies)
        unblock_if_ready(work_request)
    elif manual:
        pass  # A reviewer unblocks it.
    else:
        _announce_pending([(work_request.pk, task_type)])
    return work_request


def create_workflow(
    *,
    workspace: Workspace,
    created_by: User,
    task_name: str,
    task_data: dict[str, Any],
    priority_base: int = 0,
    workflow_template: WorkflowTemplate | None = None,
    parent: WorkRequest | None = None,
    workflow_data: dict[str, Any] | None = None,
    dependencies: Iterable[WorkRequest] = (),
) -> WorkRequest:
    """
    Create a workflow (its task data validated by the workflow engine): a root workflow gets
    its internal collection (`debusine:workflow-internal`), shared by its sub-workflows. Its
    orchestrator populates it in the `workflows` queue once it is pending.
    """
    workflow = create(
        workspace=workspace,
        created_by=created_by,
        task_type=TaskType.WORKFLOW,
        task_name=task_name,
        task_data=task_data,
        priority_base=priority_base,
        parent=parent,
        workflow_data=workflow_data,
        dependencies=dependencies,
        workflow_template=workflow_template,
    )
    if parent is None:
        workflow.internal_collection = Collection.objects.create(
            name=f"workflow-{workflow.pk}",
            category=WORKFLOW_INTERNAL_CATEGORY,
            workspace=workspace,
            retains_artifacts=CollectionRetention.WORKFLOW,
        )
        workflow.save(update_fields=["internal_collection"])
    return workflow


def _announce_pending(work_requests: Iterable[tuple[int, str]]) -> None:
    """
    Work requests (id, task type) just became pending: those the server runs itself are
    processed in the `workflows` queue; the others wait for a scheduling pass.
    """
    needs_pass = False
    for work_request_id, task_type in work_requests:
        if task_type in SERVER_SIDE_TYPES:
            effects.request_processing(work_request_id)
        else:
            needs_pass = True
    if needs_pass:
        effects.request_scheduling_pass()


def _validate_event_reactions(event_reactions: Any, allow_server_actions: bool) -> dict[str, Any]:
    """Return the event reactions to store, or raise InvalidWorkRequestError."""
    title = "Cannot create work request"
    if event_reactions is None:
        return {}
    try:
        reactions = EventReactions.model_validate(event_reactions)
    except pydantic.ValidationError as error:
        problems: dict[str, list[str]] = {}
        for item in error.errors(include_url=False):
            location = ".".join(str(part) for part in ("event_reactions", *item["loc"]))
            problems.setdefault(location, []).append(item["msg"])
        listed = "; ".join(f"{loc}: {', '.join(msgs)}" for loc, msgs in problems.items())
        raise InvalidWorkRequestError(
            title, f"invalid event reactions: {listed}", problems
        ) from None
    if not allow_server_actions:
        for action in reactions.actions():
            if action.action in SERVER_ACTIONS:
                refused = f"action type {action.action!r} is not allowed here"
                raise InvalidWorkRequestError(title, refused, {"event_reactions": [refused]})
    # Notification channels do not exist yet, so no send-notification action can be valid.
    channels = sorted(
        {
            action.channel
            for action in reactions.actions()
            if isinstance(action, SendNotificationAction)
        }
    )
    if channels:
        missing = "notification channel(s) not found: " + ", ".join(repr(c) for c in channels)
        raise InvalidWorkRequestError(title, missing, {"event_reactions": [missing]})
    return reactions.model_dump(mode="json", exclude_unset=True)


# --- assign (the scheduler's pass) ------------------------------------------------------------

# The assignment, guarded so that a concurrent change (abort, disabled worker) wins.
ASSIGN_SQL = f"""
UPDATE db_workrequest wr SET worker_id = v.worker_id
FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, worker_id)
WHERE wr.id = v.id AND wr.status = {sql.PENDING} AND wr.worker_id IS NULL
  AND EXISTS (
      SELECT 1 FROM db_worker w JOIN db_token t ON t.id = w.token_id
      WHERE w.id = v.worker_id AND t.enabled
  )
RETURNING wr.id, wr.worker_id
"""  # noqa: S608 (statuses from the enumerations, values as parameters)


def assign(
    assignments: list[tuple[int, int]],
    dynamic_data: dict[int, dict[str, Any]] | None = None,
) -> list[tuple[int, int]]:
    """
    Give each (work request, worker) pair's pending work request to its worker, in one
    statement, with the dynamic task data computed for it (`dynamic_data`, by work request id);
    return the pairs that were assigned (a work request taken meanwhile is left alone). The
    workers are told by the caller, after the commit.
    """
    if not assignments:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            ASSIGN_SQL,
            [[wr for wr, _ in assignments], [worker for _, worker in assignments]],
        )
        assigned = [(row[0], row[1]) for row in cursor.fetchall()]
    for work_request_id, _worker in assigned:
        if dynamic_data and work_request_id in dynamic_data:
            WorkRequest.objects.filter(pk=work_request_id).update(
                dynamic_task_data=dynamic_data[work_request_id]
            )
    return assigned


def requeue(work_request: WorkRequest) -> None:
    """Take a pending work request away from its worker, back to the queue."""
    if work_request.status != WorkRequestStatus.PENDING:
        raise WorkRequestError(f"cannot requeue a {work_request.status} work request")
    work_request.worker = None
    work_request.save(update_fields=["worker"])
    effects.request_scheduling_pass()


# --- start (get-next) -------------------------------------------------------------------------

# Take the worker's first pending work request (queue order) and start it, in one statement.
START_NEXT_SQL = f"""
WITH next AS (
    SELECT id FROM db_workrequest
    WHERE worker_id = %(worker)s AND status = {sql.PENDING}
      -- Not while the worker runs as much as it can: then it has restarted (the caller checks).
      AND (SELECT count(*) FROM db_workrequest r
           WHERE r.worker_id = %(worker)s AND r.status = {sql.RUNNING}) < %(concurrency)s
    ORDER BY priority_base + priority_adjustment DESC, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE db_workrequest wr SET status = {sql.RUNNING}, started_at = now()
FROM next, db_workspace ws, db_scope sc
WHERE wr.id = next.id AND ws.id = wr.workspace_id AND sc.id = ws.scope_id
RETURNING {serialization.sql_columns("wr", "ws", "sc")}
"""  # noqa: S608 (statuses from the enumerations, values as parameters)

RUNNING_COUNT_SQL = f"""
SELECT count(*) FROM db_workrequest WHERE worker_id = %s AND status = {sql.RUNNING}
"""  # noqa: S608 (statuses from the enumerations, values as parameters)


def _start_next(worker: WorkerCaller) -> WorkRequestResponse | None:
    with connection.cursor() as cursor:
        cursor.execute(START_NEXT_SQL, {"worker": worker.id, "concurrency": worker.concurrency})
        row = cursor.fetchone()
    if row is None:
        return None
    return serialization.serialize(serialization.row_from_sql(row), handed_to_worker=True)


def _running_count(worker_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(RUNNING_COUNT_SQL, [worker_id])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def start_next(worker: WorkerCaller) -> WorkRequestResponse | None:
    """
    Start the worker's next work request and return it as handed to the worker (see
    `serialization.serialize`), or None when there is none for it.

    The usual case is one statement: the worker runs nothing and has work assigned. A worker
    asking for work while it already runs as many work requests as its concurrency allows has
    restarted: those are aborted and retried (worker-failed) first. A worker with nothing
    assigned is idle: it is given work at once rather than wait for the next pass.
    """
    started = _start_next(worker)
    if started is None and _running_count(worker.id) >= worker.concurrency:
        lost = WorkRequest.objects.select_for_update().filter(
            worker_id=worker.id, status=WorkRequestStatus.RUNNING
        )
        for work_request in lost:
            retry_after_worker_failure(
                work_request,
                f"worker {worker.name} asked for new work while running this one: it restarted",
            )
        started = _start_next(worker)
    if started is None and effects.assign_next_work(worker.id, notify=False):
        started = _start_next(worker)
    return started


# --- complete ---------------------------------------------------------------------------------

# Record the outcome if the work request is still the worker's and unfinished; say whether
# other work requests depend on it, and whether it has reactions to its success.
COMPLETE_SQL = f"""
UPDATE db_workrequest wr
SET status = {sql.COMPLETED}, result = %(result)s, completed_at = now(),
    started_at = COALESCE(wr.started_at, now()),
    output_data = CASE WHEN %(output)s::jsonb IS NULL THEN wr.output_data
                       ELSE COALESCE(wr.output_data, '{{}}'::jsonb) || %(output)s::jsonb END
WHERE wr.id = %(id)s AND wr.worker_id = %(worker)s AND wr.status IN {sql.HELD}
RETURNING EXISTS (
    SELECT 1 FROM db_workrequest_dependencies d WHERE d.to_workrequest_id = wr.id
), wr.workspace_id, (SELECT ws.scope_id FROM db_workspace ws WHERE ws.id = wr.workspace_id),
wr.completed_at,
%(result)s = {sql.SUCCESS}
    AND COALESCE(wr.event_reactions->'on_success', '[]'::jsonb) <> '[]'::jsonb,
wr.parent_id,
%(result)s IN {sql.FAILED}
    AND COALESCE(wr.event_reactions->'on_failure', '[]'::jsonb) <> '[]'::jsonb
"""  # noqa: S608 (statuses from the enumerations, values as parameters)


class Completion(Enum):
    """What a worker's completion report did."""

    RECORDED = "recorded"
    STALE = "stale"  # no longer pending or running: nothing changed
    NOT_ASSIGNED = "not-assigned"  # pending or running on another worker (or none)
    NOT_FOUND = "not-found"


def _check_result(result: str) -> None:
    if result not in set(WorkRequestResult) or result == WorkRequestResult.NONE:
        raise WorkRequestError(f"invalid result {result!r}")


def complete_from_worker(
    worker_id: int,
    work_request_id: int,
    result: str,
    output_data: dict[str, Any] | None,
    *,
    on_next_work: Callable[[], None] | None = None,
) -> Completion:
    """
    Record a worker's report on its work request: `complete()` as one statement, for the
    worker's hot path. The worker is free again: it is given its next work request in this
    transaction, rather than wait for a pass, and told once that commits; or, with
    `on_next_work`, that is called after the commit instead (when it was given work), for the
    caller to tell the worker when it can listen (see `api.workers.work_request_completed`).
    """
    _check_result(result)
    with connection.cursor() as cursor:
        cursor.execute(
            COMPLETE_SQL,
            {
                "result": result,
                "output": None if output_data is None else json.dumps(output_data),
                "id": work_request_id,
                "worker": worker_id,
            },
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(
                "SELECT status FROM db_workrequest WHERE id = %s FOR SHARE", [work_request_id]
            )
            current = cursor.fetchone()
            if current is None:
                return Completion.NOT_FOUND
            if current[0] in HELD:
                return Completion.NOT_ASSIGNED
            return Completion.STALE
    (
        has_dependants,
        workspace_id,
        scope_id,
        completed_at,
        has_success_reactions,
        parent_id,
        has_failure_reactions,
    ) = row
    if has_dependants or has_success_reactions or has_failure_reactions:
        completed = WorkRequest.objects.select_related("workspace", "created_by").get(
            pk=work_request_id
        )
        if has_failure_reactions:
            react_to_failure(completed)
        if has_dependants:
            update_dependants(completed)
        if has_success_reactions:
            run_event_reactions(completed, "on_success")
    if parent_id is not None:
        effects.request_workflow_update(parent_id)
    # Nothing else became runnable, except dependants, which `update_dependants` asked a
    # pass for.
    if effects.assign_next_work(worker_id, notify=on_next_work is None) and on_next_work:
        transaction.on_commit(on_next_work)
    effects.announce_completion(work_request_id, scope_id, workspace_id, completed_at, result)
    return Completion.RECORDED


def complete(
    work_request: WorkRequest, result: str, output_data: dict[str, Any] | None = None
) -> bool:
    """
    Record the outcome of a pending or running work request; return False, changing nothing,
    when it is in any other state. `output_data` is merged into what it holds.

    Completion unblocks dependants (or aborts them when this one failed and may not), runs the
    reactions to a success, frees its worker and is announced to `on-completed` listeners.
    """
    if work_request.status not in HELD:
        return False
    _check_result(result)
    now = timezone.now()
    work_request.status = WorkRequestStatus.COMPLETED
    work_request.result = result
    work_request.completed_at = now
    if work_request.started_at is None:
        work_request.started_at = now
    fields = ["status", "result", "completed_at", "started_at"]
    if output_data is not None:
        work_request.output_data_json = {**(work_request.output_data_json or {}), **output_data}
        fields.append("output_data_json")
    work_request.save(update_fields=fields)
    if result in (WorkRequestResult.FAILURE, WorkRequestResult.ERROR):
        react_to_failure(work_request)
    update_dependants(work_request)
    if result == WorkRequestResult.SUCCESS:
        run_event_reactions(work_request, "on_success")
    if work_request.parent_id is not None:
        effects.request_workflow_update(work_request.parent_id)
    # Its worker is free again.
    effects.request_scheduling_pass()
    effects.announce_completion(
        work_request.pk,
        work_request.workspace.scope_id,
        work_request.workspace_id,
        work_request.completed_at,
        result,
    )
    return True


# --- on failure: retry-with-delays -----------------------------------------------------------

DELAY_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_delay(delay: str) -> timedelta:
    """`30m`, `1h`, `2d`, `1w` as a timedelta (the protocol's `DELAY_PATTERN`)."""
    return timedelta(seconds=int(delay[:-1]) * DELAY_UNITS[delay[-1]])


def react_to_failure(work_request: WorkRequest) -> WorkRequest | None:
    """
    Run the `on_failure` reactions of a work request that just failed: `retry-with-delays`
    retries it after its next delay (before its dependants are looked at, so that they wait
    for the retry instead of being aborted). Return the retry, if any.
    """
    raw = (work_request.event_reactions_json or {}).get("on_failure")
    if not raw:
        return None
    try:
        reactions = EventReactions.model_validate({"on_failure": raw})
    except pydantic.ValidationError:
        return None
    for action in reactions.on_failure:
        if isinstance(action, RetryWithDelaysAction):
            return retry_with_delay(work_request, action.delays)
    return None


def retry_with_delay(work_request: WorkRequest, delays: list[str]) -> WorkRequest | None:
    """
    Retry `work_request` once a Wait `delay` work request has waited `delays[n]`, n being the
    retries made so far (`workflow_data.retry_count`); None once every delay has been used.
    """
    count = int(work_request.workflow_data_json.get("retry_count", 0))
    if count >= len(delays) or not can_retry(work_request):
        return None
    step = work_request.workflow_data_json.get("step", f"work-request-{work_request.pk}")
    wait = create(
        workspace=work_request.workspace,
        created_by=work_request.created_by,
        task_type=TaskType.WAIT,
        task_name="delay",
        task_data={"delay_until": (timezone.now() + parse_delay(delays[count])).isoformat()},
        parent=work_request.parent,
        workflow_data={
            "step": f"{step}-retry-delay-{count + 1}",
            "display_name": f"wait {delays[count]} before retry {count + 1} of {step}",
        },
    )
    new = retry(work_request, RetryReason.DELAY, unblock=False)
    new.workflow_data_json = {**new.workflow_data_json, "retry_count": count + 1}
    new.save(update_fields=["workflow_data_json"])
    # The delay of an earlier retry is over: only this one counts now.
    new.dependencies.remove(*new.dependencies.filter(task_type=TaskType.WAIT, task_name="delay"))
    new.dependencies.add(wait)
    unblock_if_ready(new)
    return new


# --- abort ------------------------------------------------------------------------------------


def abort(work_request: WorkRequest, by: User | None = None, *, _in_tree: bool = False) -> None:
    """
    Abort a pending, blocked or running work request, and the unfinished children of a
    workflow (its whole tree); its workflow, if any, rolls its status up.
    """
    if work_request.status not in UNFINISHED:
        raise WorkRequestError(f"cannot abort a {work_request.status} work request")
    running_on = (
        work_request.worker_id if work_request.status == WorkRequestStatus.RUNNING else None
    )
    work_request.status = WorkRequestStatus.ABORTED
    work_request.aborted_by = by
    work_request.completed_at = timezone.now()
    work_request.worker = None
    work_request.save(update_fields=["status", "aborted_by", "completed_at", "worker"])
    for child in work_request.children.unfinished().order_by("id"):
        abort(child, by, _in_tree=True)
    update_dependants(work_request)
    if work_request.parent_id is not None and not _in_tree:
        effects.request_workflow_update(work_request.parent_id)
    if running_on is not None:
        # Tell the worker to stop it; a worker that misses this finds out at completion.
        effects.notify_aborted(running_on, work_request.pk)
        effects.request_scheduling_pass()


# --- dependencies: unblock --------------------------------------------------------------------


def succeeded_or_may_fail(work_request: WorkRequest) -> bool:
    """Whether dependants may go on after `work_request` has finished."""
    if work_request.status == WorkRequestStatus.COMPLETED and work_request.result in (
        WorkRequestResult.SUCCESS,
        WorkRequestResult.SKIPPED,
    ):
        return True
    return bool(work_request.workflow_data_json.get("allow_failure", False))


def update_dependants(work_request: WorkRequest) -> None:
    """Unblock or abort the blocked dependants of a work request that has finished."""
    dependants = work_request.reverse_dependencies.filter(
        status=WorkRequestStatus.BLOCKED, unblock_strategy=UnblockStrategy.DEPS
    )
    if not succeeded_or_may_fail(work_request):
        for dependant in dependants:
            abort(dependant, None)
        return
    ready = list(
        dependants.exclude(dependencies__status__in=UNFINISHED).values_list("pk", "task_type")
    )
    if ready and WorkRequest.objects.filter(
        pk__in=[pk for pk, _ in ready], status=WorkRequestStatus.BLOCKED
    ).update(status=WorkRequestStatus.PENDING):
        _announce_pending(ready)


def unblock_if_ready(work_request: WorkRequest) -> None:
    """Turn a blocked work request whose dependencies all finished well into pending."""
    if (
        work_request.status != WorkRequestStatus.BLOCKED
        or work_request.unblock_strategy != UnblockStrategy.DEPS
    ):
        return
    dependencies = list(work_request.dependencies.all())
    if any(dependency.status not in FINISHED for dependency in dependencies):
        return
    if all(succeeded_or_may_fail(dependency) for dependency in dependencies):
        work_request.status = WorkRequestStatus.PENDING
        work_request.save(update_fields=["status"])
        _announce_pending([(work_request.pk, work_request.task_type)])
    else:
        abort(work_request, None)


# --- manual unblock (a reviewer's decision) ---------------------------------------------------

#: Where a manual-unblock work request keeps its review log, in its `workflow_data`.
MANUAL_UNBLOCK_KEY = "manual_unblock"


def awaits_manual_unblock(work_request: WorkRequest) -> bool:
    """Whether `work_request` is a manual-unblock one still waiting for its reviewer."""
    return (
        work_request.unblock_strategy == UnblockStrategy.MANUAL
        and work_request.status == WorkRequestStatus.BLOCKED
    )


def manual_unblock_log(work_request: WorkRequest) -> list[dict[str, Any]]:
    """
    The review log of a manual-unblock work request, oldest first: entries of `user_id`,
    `timestamp` (ISO 8601), `notes` (or None) and `action` (`accept`, `reject` or None).
    """
    section = (work_request.workflow_data_json or {}).get(MANUAL_UNBLOCK_KEY) or {}
    log = section.get("log") if isinstance(section, dict) else None
    return list(log) if isinstance(log, list) else []


def manual_unblock(
    work_request: WorkRequest,
    by: User,
    *,
    notes: str | None = None,
    action: ManualUnblockAction | None = None,
) -> None:
    """
    Record a reviewer's notes and decision on a blocked manual-unblock work request.

    The entry goes to its review log (`workflow_data.manual_unblock.log`) in every case.
    `accept` makes it pending, as the dependencies' unblock does (its `on_unblock` reactions
    run, a scheduling pass or its processing is asked for); it needs every dependency finished
    well. `reject` aborts it (by the reviewer), so that its dependants and its workflow react
    as to any abort. Notes alone change nothing else.

    :raises WorkRequestError: it is not a manual-unblock work request, not blocked, or
        (accept) a dependency has not finished well.
    """
    if work_request.unblock_strategy != UnblockStrategy.MANUAL:
        raise WorkRequestError(
            f"work request {work_request.pk} is not a manual-unblock work request (its unblock "
            f"strategy is {work_request.unblock_strategy})"
        )
    if work_request.status != WorkRequestStatus.BLOCKED:
        raise WorkRequestError(
            f"work request {work_request.pk} is {work_request.status}: only blocked work "
            "requests can be reviewed"
        )
    if action == ManualUnblockAction.ACCEPT:
        dependencies = list(work_request.dependencies.only("id", "status", "result"))
        waiting = [
            dependency.pk
            for dependency in dependencies
            if dependency.status not in FINISHED or not succeeded_or_may_fail(dependency)
        ]
        if waiting:
            raise WorkRequestError(
                f"work request {work_request.pk} cannot be accepted: its dependencies "
                f"{', '.join(str(pk) for pk in sorted(waiting))} have not finished well"
            )
    entry = {
        "user_id": by.pk,
        "timestamp": timezone.now().isoformat(),
        "notes": notes,
        "action": None if action is None else str(action),
    }
    workflow_data = dict(work_request.workflow_data_json or {})
    workflow_data[MANUAL_UNBLOCK_KEY] = {"log": [*manual_unblock_log(work_request), entry]}
    work_request.workflow_data_json = workflow_data
    if action == ManualUnblockAction.ACCEPT:
        work_request.status = WorkRequestStatus.PENDING
        work_request.save(update_fields=["workflow_data_json", "status"])
        run_event_reactions(work_request, "on_unblock")
        _announce_pending([(work_request.pk, work_request.task_type)])
        return
    work_request.save(update_fields=["workflow_data_json"])
    if action == ManualUnblockAction.REJECT:
        abort(work_request, by)


# --- retry (supersede) ------------------------------------------------------------------------


def can_retry(work_request: WorkRequest) -> bool:
    """Whether a retry makes sense: it ended badly and has not been retried yet."""
    if hasattr(work_request, "superseded_by"):
        return False
    if work_request.status == WorkRequestStatus.ABORTED:
        return True
    return work_request.status == WorkRequestStatus.COMPLETED and work_request.result in (
        WorkRequestResult.FAILURE,
        WorkRequestResult.ERROR,
    )


def retry(
    work_request: WorkRequest, reason: str = RetryReason.MANUAL, *, unblock: bool = True
) -> WorkRequest:
    """
    Create the work request that supersedes `work_request` and return it.

    It copies the task, takes over the old one's dependencies and dependants (and the
    promises it made in its workflow's internal collection), and is pending or blocked
    depending on its dependencies (left blocked without `unblock`: the caller unblocks it).
    A workflow is retried in place instead (`retry_workflow`).
    """
    if work_request.task_type == TaskType.WORKFLOW:
        retry_workflow(work_request)
        return work_request
    if not can_retry(work_request):
        raise WorkRequestError(
            f"cannot retry a {work_request.status}/{work_request.result} work request"
        )
    workflow_data = dict(work_request.workflow_data_json)
    if reason == RetryReason.WORKER_FAILED:
        count = int(workflow_data.get("retry_count", 0)) + 1
        if count > MAX_AUTOMATIC_RETRIES:
            raise WorkRequestError("too many automatic retries")
        workflow_data["retry_count"] = count
    elif reason == RetryReason.MANUAL:
        workflow_data.pop("retry_count", None)
    with transaction.atomic():
        new = WorkRequest.objects.create(
            workspace=work_request.workspace,
            created_by=work_request.created_by,
            status=WorkRequestStatus.BLOCKED,
            task_type=work_request.task_type,
            task_name=work_request.task_name,
            task_data=work_request.task_data,
            priority_base=work_request.priority_base,
            priority_adjustment=work_request.priority_adjustment,
            unblock_strategy=work_request.unblock_strategy,
            parent=work_request.parent,
            workflow_template=work_request.workflow_template,
            workflow_data_json=workflow_data,
            event_reactions_json=work_request.event_reactions_json,
            expiration_delay=work_request.expiration_delay,
            supersedes=work_request,
        )
        new.dependencies.set(work_request.dependencies.all())
        # The dependants now wait for `new` instead: one UPDATE of their links.
        WorkRequest.dependencies.through.objects.filter(to_workrequest=work_request).update(
            to_workrequest=new
        )
        if work_request.parent_id is not None:
            _move_promises(work_request, new)
        if unblock:
            unblock_if_ready(new)
    return new


def _move_promises(old: WorkRequest, new: WorkRequest) -> None:
    """The promises `old` made in its workflow's internal collection are now `new`'s."""
    for item in CollectionItem.objects.select_for_update().filter(
        child_type=CollectionItemType.BARE,
        category=PROMISE_CATEGORY,
        parent_category=WORKFLOW_INTERNAL_CATEGORY,
        removed_at__isnull=True,
        data__promise_work_request_id=old.pk,
    ):
        item.data = {**item.data, "promise_work_request_id": new.pk}
        item.save(update_fields=["data"])


# --- workflows: start, roll-up, retry ---------------------------------------------------------


def start_workflow(workflow: WorkRequest) -> None:
    """A pending workflow's orchestrator has populated it: it runs until its children end."""
    if workflow.status != WorkRequestStatus.PENDING:
        raise WorkRequestError(f"cannot start a {workflow.status} workflow")
    workflow.status = WorkRequestStatus.RUNNING
    workflow.started_at = timezone.now()
    workflow.save(update_fields=["status", "started_at"])
    effects.request_workflow_update(workflow.pk)


def workflow_outcome(workflow: WorkRequest) -> WorkRequestResult | None:
    """
    What a workflow's children (the latest of each retry chain) add up to: None while one
    has not finished, else failure when one failed, errored or was aborted (and was not
    allowed to fail), else success.
    """
    children = WorkRequest.objects.filter(parent=workflow, superseded_by__isnull=True)
    if children.filter(status__in=UNFINISHED).exists():
        return None
    failed = (
        children.filter(
            models.Q(status=WorkRequestStatus.ABORTED)
            | models.Q(result__in=[WorkRequestResult.FAILURE, WorkRequestResult.ERROR])
        )
        .exclude(workflow_data_json__contains={"allow_failure": True})
        .exists()
    )
    return WorkRequestResult.FAILURE if failed else WorkRequestResult.SUCCESS


def update_workflow(workflow_id: int) -> WorkRequestResult | None:
    """
    Roll a running workflow's status up from its children: once every one has finished it
    completes with their outcome (`workflow_outcome`), which rolls its own parent up in turn.
    Return the result it completed with, or None (still running, or not running at all).

    The workflow's row is locked first: two children finishing at once both roll it up, one
    after the other, and the second sees the first one's child finished.
    """
    workflow = (
        WorkRequest.objects.select_for_update(of=("self",))
        .select_related("workspace")
        .filter(pk=workflow_id, task_type=TaskType.WORKFLOW)
        .first()
    )
    if workflow is None or workflow.status != WorkRequestStatus.RUNNING:
        return None
    outcome = workflow_outcome(workflow)
    if outcome is None:
        return None
    complete(workflow, outcome)
    return outcome


def can_retry_workflow(workflow: WorkRequest) -> bool:
    return workflow.status == WorkRequestStatus.ABORTED or (
        workflow.status == WorkRequestStatus.COMPLETED
        and workflow.result in (WorkRequestResult.FAILURE, WorkRequestResult.ERROR)
    )


def retry_workflow(workflow: WorkRequest) -> None:
    """
    Run a workflow that failed or was aborted again, in place: it is running again, its
    failed and aborted children are retried (sub-workflows in place, the others superseded
    by new work requests that take over their dependants), and its orchestrator runs again
    (populating is idempotent). Children that succeeded are kept.
    """
    if not can_retry_workflow(workflow):
        raise WorkRequestError(f"cannot retry a {workflow.status}/{workflow.result} workflow")
    retried = _retry_tree(workflow)
    # Unblocked once all are created, so that a retried child waits for the retried
    # dependencies it took over rather than for the failed ones they replace.
    for work_request in retried:
        unblock_if_ready(work_request)


def _retry_tree(workflow: WorkRequest) -> list[WorkRequest]:
    """Reset `workflow` and retry its children; return what the caller must unblock."""
    # A workflow aborted before it started (waiting for its dependencies) has no children:
    # it waits again, and its orchestrator populates it once it is pending.
    never_started = workflow.started_at is None
    workflow.status = WorkRequestStatus.BLOCKED if never_started else WorkRequestStatus.RUNNING
    workflow.result = WorkRequestResult.NONE
    workflow.completed_at = None
    workflow.aborted_by = None
    workflow.save(update_fields=["status", "result", "completed_at", "aborted_by"])
    if never_started:
        return [workflow]
    retried: list[WorkRequest] = []
    for child in WorkRequest.objects.filter(parent=workflow, superseded_by__isnull=True).order_by(
        "id"
    ):
        if not can_retry_workflow(child):
            continue
        if child.task_type == TaskType.WORKFLOW:
            retried.extend(_retry_tree(child))
        else:
            retried.append(retry(child, unblock=False))
    effects.request_processing(workflow.pk)
    effects.request_workflow_update(workflow.pk)
    return retried


def retry_after_worker_failure(work_request: WorkRequest, reason: str) -> WorkRequest | None:
    """
    Abort a running work request because its worker failed, and retry it.

    Return the new work request, or None when it has been retried automatically
    MAX_AUTOMATIC_RETRIES times already (it then stays aborted). `reason` is recorded in the
    old one's output data.
    """
    errors = list((work_request.output_data_json or {}).get("errors") or [])
    errors.append({"code": "worker-failed", "message": reason})
    work_request.output_data_json = {**(work_request.output_data_json or {}), "errors": errors}
    work_request.save(update_fields=["output_data_json"])
    abort(work_request, None)
    try:
        return retry(work_request, RetryReason.WORKER_FAILED)
    except WorkRequestError:
        return None


# --- priority ---------------------------------------------------------------------------------


def set_priority_adjustment(work_request: WorkRequest, adjustment: int) -> None:
    work_request.priority_adjustment = adjustment
    work_request.save(update_fields=["priority_adjustment"])
    effects.request_scheduling_pass()


# --- workers: what changes in them changes which work can start -------------------------------


@dataclass
class WorkTaken:
    """What `take_work_from_workers` did."""

    requeued: list[int] = field(default_factory=list)
    retried: list[tuple[int, int]] = field(default_factory=list)  # (old, new work request)
    not_retried: list[int] = field(default_factory=list)


def take_work_from_workers(worker_ids: Iterable[int], reason: Callable[[int], str]) -> WorkTaken:
    """
    Take their work away from workers that failed or were shut out: assigned pending work
    requests go back to the queue, running ones are aborted (their worker is told) and retried
    (worker-failed, with `reason(worker id)` recorded).
    """
    taken = WorkTaken()
    for work_request in (
        WorkRequest.objects.select_for_update()
        .select_related("workspace")
        .filter(worker_id__in=list(worker_ids), status__in=HELD)
        .order_by("id")
    ):
        if work_request.status == WorkRequestStatus.PENDING:
            requeue(work_request)
            taken.requeued.append(work_request.pk)
            continue
        assert work_request.worker_id is not None
        new = retry_after_worker_failure(work_request, reason(work_request.worker_id))
        if new is None:
            taken.not_retried.append(work_request.pk)
        else:
            taken.retried.append((work_request.pk, new.pk))
    return taken


def worker_connected(worker: Worker) -> bool:
    """Its websocket opened: it can be given work. Return whether it already holds some."""
    worker.mark_connected()
    effects.request_scheduling_pass()
    return worker_holds_work(worker)


def worker_holds_work(worker: Worker) -> bool:
    """Whether work is assigned to the worker that it has not finished (it may not know)."""
    return worker.assigned_work_requests.filter(status__in=HELD).exists()


def worker_disconnected(worker: Worker) -> None:
    """
    Its websocket closed: it gets no new work, and its lease runs out after the grace period
    unless it comes back; a lease check is asked for then when it runs work.
    """
    worker.mark_disconnected()
    if worker.assigned_work_requests.filter(status=WorkRequestStatus.RUNNING).exists():
        effects.check_leases_later(settings.DEBUSINE_WORKER_LEASE_GRACE + 1)


def worker_metadata_changed(
    worker: Worker, *, dynamic: dict[str, Any] | None = None, static: dict[str, Any] | None = None
) -> None:
    """The worker reported (`dynamic`) or an admin set (`static`) new metadata."""
    if dynamic is not None:
        worker.set_dynamic_metadata(dynamic)
    if static is not None:
        worker.set_static_metadata(static)
    effects.request_scheduling_pass()


def worker_enabled(worker: Worker) -> None:
    """Let the worker in: its token becomes usable (it connects on its next retry)."""
    worker.enable()
    effects.request_scheduling_pass()


def worker_paused(worker: Worker) -> None:
    """
    The worker takes no new work (the scheduler skips workers with `draining_at` set); what it
    holds, it finishes. Pool workers are drained by the provisioner instead (a drained pool
    worker is terminated once idle), so they cannot be paused.

    :raises WorkRequestError: it is a pool worker.
    """
    if worker.worker_pool_id is not None:
        raise WorkRequestError(
            f"worker {worker.name} belongs to a worker pool: the provisioner drains and "
            "terminates pool workers (debusine-admin worker_pool)"
        )
    if worker.draining_at is None:
        worker.draining_at = timezone.now()
        worker.save(update_fields=["draining_at"])


def worker_resumed(worker: Worker) -> None:
    """A paused worker takes new work again (a scheduling pass is asked for)."""
    if worker.worker_pool_id is not None:
        raise WorkRequestError(
            f"worker {worker.name} belongs to a worker pool: the provisioner drains and "
            "terminates pool workers (debusine-admin worker_pool)"
        )
    if worker.draining_at is not None:
        worker.draining_at = None
        worker.save(update_fields=["draining_at"])
        effects.request_scheduling_pass()


def worker_disabled(worker: Worker) -> None:
    """
    Shut the worker out: its tokens are disabled, its work is taken away (see
    `take_work_from_workers`) and its websockets are closed.
    """
    worker.disable()
    take_work_from_workers([worker.pk], lambda _worker_id: f"worker {worker.name} was disabled")
    if worker.token is not None:
        effects.notify_worker_disabled(worker.pk, worker.token.hash)
