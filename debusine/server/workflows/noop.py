"""
The `noop` workflow: a tree of `noop` work requests, for tests and benchmarks.

With no data it creates nothing and succeeds at once. `children` noop work requests (each
returning `result`) run in parallel; with `synchronization_point`, a barrier step waits for
all of them, and with `callback`, a `workflow` callback after the barrier adds one more noop
step (`after-callback`), which shows the callback ran.
"""

from __future__ import annotations

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
    #: Namespace of this workflow's names in the internal collection.
    prefix: str = ""


class NoopWorkflow(Workflow[NoopWorkflowData], name="noop"):
    """Runs `children` noop work requests."""

    def populate(self) -> None:
        children = [
            self.ensure_child(
                "noop",
                {"result": self.data.result},
                step=f"noop-{index}",
                display_name=f"noop {index}",
                group="noop",
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
