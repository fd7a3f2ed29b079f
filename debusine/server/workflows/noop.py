"""
The `noop` workflow: a tree of `noop` work requests, for tests and benchmarks.

With no data it creates nothing and succeeds at once. `children` noop work requests (each
returning `result`) run in parallel, after a Wait `delay` step of `delay_seconds` when that is
set; with `synchronization_point`, a barrier step waits for all of them, and with `callback`,
a `workflow` callback after the barrier adds one more noop step (`after-callback`), which
shows the callback ran.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from debusine.server.db.models import WorkRequest
from debusine.server.workflows.base import BaseWorkflowData, Workflow

#: Most children one noop workflow may ask for.
MAX_CHILDREN = 100_000


class NoopWorkflowData(BaseWorkflowData):
    """Task data of the `noop` workflow."""

    #: How many `noop` work requests to run.
    children: int = Field(default=0, ge=0, le=MAX_CHILDREN)
    #: What each of them returns.
    result: bool = True
    #: Add a synchronization point that waits for every child.
    synchronization_point: bool = False
    #: Add a `workflow` callback after the children that adds the step `after-callback`.
    callback: bool = False
    #: Seconds the children wait for (a Wait `delay` step), counted from when the workflow
    #: is created.
    delay_seconds: int = Field(default=0, ge=0)
    #: Namespace of this workflow's names in the internal collection.
    prefix: str = ""


class NoopWorkflow(Workflow[NoopWorkflowData], name="noop"):
    """Runs `children` noop work requests."""

    def populate(self) -> None:
        wait = []
        if self.data.delay_seconds:
            until = self.work_request.created_at + timedelta(seconds=self.data.delay_seconds)
            wait = [self.ensure_delay(step="delay", delay_until=until)]
        children = [
            self.ensure_child(
                "noop",
                {"result": self.data.result},
                step=f"noop-{index}",
                display_name=f"noop {index}",
                group="noop",
                dependencies=wait,
            )
            for index in range(self.data.children)
        ]
        after = children
        if self.data.synchronization_point:
            after = [self.ensure_synchronization_point(step="all-done", dependencies=children)]
        if self.data.callback:
            self.ensure_callback(step="callback", dependencies=after)

    def callback(self, work_request: WorkRequest) -> None:
        self.ensure_child("noop", {"result": True}, step="after-callback")
