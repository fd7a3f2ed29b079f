"""
What a work request's transition sets off once it has committed, registered in one place.

A transition changes rows; what follows from the change happens after the transaction commits
(or, for `assign_next_work`, inside it) and is asked for here:

- `request_scheduling_pass()`: something changed that may let work start (a work request
  created, completed, unblocked or given back; a worker connected, enabled or reporting new
  metadata). Once per transaction, after the commit.
- `assign_next_work(worker_id)`: a worker is idle now (it just completed a work request, or
  asks for work with none assigned): give it its next one in this very transaction.
- `notify_aborted()`, `notify_worker_disabled()`: tell a worker's websocket, after the commit.
- `announce_completion()`: tell `on-completed` listeners, after the commit.
- `check_leases_later()`: look at leases once a disconnected worker's grace period is over.
- `request_processing()`: a work request the server itself runs (a workflow to populate, an
  internal or wait task) became pending: process it in the `workflows` Celery queue, after
  the commit.
- `request_workflow_update()`: a child of a workflow finished: roll its status up, in the
  `workflows` queue, after the commit.

The scheduling hooks need the scheduler, which itself builds on the transitions: it registers
its implementation (`install_scheduler`) when the server application starts
(`debusine.server.apps`), so that nothing here imports it. Messages to websockets go through
`debusine.server.work_requests.notifications`, which needs nothing but the channel layer.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Protocol

from django.db import transaction

from debusine.protocol.wire import iso_datetime
from debusine.protocol.work_requests import WorkRequestResult
from debusine.server.work_requests import notifications


class SchedulerHooks(Protocol):
    """What the scheduler provides to the work request's life (see `install_scheduler`)."""

    def pass_requested(self) -> None:
        """A change has committed that may let work start: run or queue a pass."""

    def worker_idle(self, worker_id: int, *, notify: bool) -> bool:
        """
        `worker_id` has a free slot now: assign it work in the current transaction (and tell
        it after the commit when `notify`); return whether it was given any.
        """

    def check_leases_in(self, seconds: float) -> None:
        """Look for expired leases in `seconds` (in another process)."""


class WorkflowHooks(Protocol):
    """What the workflow engine provides (see `install_workflow_hooks`): Celery jobs."""

    def process(self, work_request_id: int, countdown: float | None) -> None:
        """Process a pending server-side work request (in `countdown` seconds, if given)."""

    def update(self, workflow_id: int) -> None:
        """Roll a workflow's status up from its children."""


class SchedulerNotInstalledError(RuntimeError):
    """A transition needed the scheduler before the server application installed it."""


_scheduler: SchedulerHooks | None = None


def install_scheduler(hooks: SchedulerHooks | None) -> SchedulerHooks | None:
    """Register the scheduler's hooks (None removes them); return the previous ones."""
    global _scheduler
    previous, _scheduler = _scheduler, hooks
    return previous


_workflows: WorkflowHooks | None = None


def install_workflow_hooks(hooks: WorkflowHooks | None) -> WorkflowHooks | None:
    """Register the workflow engine's hooks (None removes them); return the previous ones."""
    global _workflows
    previous, _workflows = _workflows, hooks
    return previous


def workflow_hooks() -> WorkflowHooks:
    if _workflows is None:
        raise SchedulerNotInstalledError(
            "the workflow engine's hooks are not installed: is the debusine.server app loaded?"
        )
    return _workflows


def _process_after_commit(work_request_id: int, countdown: float | None) -> None:
    workflow_hooks().process(work_request_id, countdown)


def _update_after_commit(workflow_id: int) -> None:
    workflow_hooks().update(workflow_id)


def request_processing(work_request_id: int, countdown: float | None = None) -> None:
    """Have the server process a pending Workflow, Internal or Wait work request."""
    transaction.on_commit(functools.partial(_process_after_commit, work_request_id, countdown))


def request_workflow_update(workflow_id: int) -> None:
    """Roll `workflow_id`'s status up after the commit (once per transaction and workflow)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        isinstance(callback, functools.partial)
        and callback.func is _update_after_commit
        and callback.args == (workflow_id,)
        for _, callback, _ in connection.run_on_commit
    ):
        return
    transaction.on_commit(functools.partial(_update_after_commit, workflow_id))


def scheduler() -> SchedulerHooks:
    if _scheduler is None:
        raise SchedulerNotInstalledError(
            "the scheduler's hooks are not installed: is the debusine.server app loaded?"
        )
    return _scheduler


def scheduling_pass_after_commit() -> None:
    """The callback `request_scheduling_pass` registers: the scheduler runs or queues a pass."""
    scheduler().pass_requested()


def request_scheduling_pass() -> None:
    """Ask for a scheduling pass once the current transaction commits (once per transaction)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        callback is scheduling_pass_after_commit for _, callback, _ in connection.run_on_commit
    ):
        return
    transaction.on_commit(scheduling_pass_after_commit)


def assign_next_work(worker_id: int, *, notify: bool = True) -> bool:
    """
    Give the idle `worker_id` its next work request now, in the current transaction; tell it
    once that commits, unless `notify` is False (it is waiting for the answer). Return whether
    it was given work.
    """
    return scheduler().worker_idle(worker_id, notify=notify)


def check_leases_later(seconds: float) -> None:
    scheduler().check_leases_in(seconds)


def notify_aborted(worker_id: int, work_request_id: int) -> None:
    """Tell the worker to stop `work_request_id`, once the abort has committed."""
    transaction.on_commit(
        functools.partial(notifications.notify_work_request_aborted, worker_id, work_request_id)
    )


def notify_worker_disabled(worker_id: int, token_hash: str) -> None:
    """Close the websockets of a worker whose token was disabled, once that has committed."""
    transaction.on_commit(
        functools.partial(notifications.notify_worker_disabled, worker_id, token_hash)
    )


#: Results announced to `on-completed` listeners (not aborted or skipped work).
ANNOUNCED_RESULTS = frozenset(
    {WorkRequestResult.SUCCESS, WorkRequestResult.FAILURE, WorkRequestResult.ERROR}
)


def announce_completion(
    work_request_id: int,
    scope_id: int,
    workspace_id: int,
    completed_at: datetime | None,
    result: str,
) -> None:
    """Announce a completion to `on-completed` websockets once the transaction commits."""
    if result not in ANNOUNCED_RESULTS:
        return
    transaction.on_commit(
        functools.partial(
            notifications.notify_work_request_completed,
            work_request_id=work_request_id,
            scope_id=scope_id,
            workspace_id=workspace_id,
            completed_at=iso_datetime(completed_at) or "",
            result=str(result),
        )
    )
