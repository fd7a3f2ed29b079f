"""
Wire models of the work-request endpoints: request bodies the server parses, and the
WorkRequest object it answers with (Debusine API 1.0, protocol.md §2.2 and §2.9).

Request models forbid unknown keys; the response model ignores them, like Debusine's own
clients do, so the server may add fields. `WorkRequestResponse` is what our server sends;
`LenientWorkRequestResponse` is what our client and worker accept from any compatible server,
ours or Debusine's 0.11 to 0.16 (protocol-versions.md §1.5), which leave some fields out.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, StrictStr, field_validator, model_validator

from debusine.protocol.wire import LENIENT, StrictRequest

#: Priorities are 32-bit signed integers on the server (base, adjustment and their sum).
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1


class WorkRequestCreateRequest(StrictRequest):
    """Body of `POST /1.0/work-request/`."""

    task_name: StrictStr
    task_data: dict[str, Any]
    #: Debusine clients send `{}` when there are none.
    event_reactions: dict[str, Any] | None = None
    #: Workspace name; the scope's default workspace when left out.
    workspace: StrictStr | None = None


class WorkRequestPatchRequest(StrictRequest):
    """Body of `PATCH /1.0/work-request/{id}/`: only the priority adjustment may change."""

    priority_adjustment: Annotated[StrictInt, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]


#: Longest review note a manual unblock may record.
UNBLOCK_NOTES_MAX = 65536


class ManualUnblockAction(StrEnum):
    """What a reviewer decides about a manual-unblock work request."""

    ACCEPT = "accept"
    REJECT = "reject"


class WorkRequestUnblockRequest(StrictRequest):
    """
    Body of `POST /1.0/work-request/{id}/unblock/`: review notes, a decision, or both (at
    least one of them).
    """

    notes: Annotated[StrictStr, Field(max_length=UNBLOCK_NOTES_MAX)] | None = None
    action: ManualUnblockAction | None = None

    @model_validator(mode="after")
    def notes_or_action(self) -> WorkRequestUnblockRequest:
        if self.notes is None and self.action is None:
            raise ValueError("give notes, an action, or both")
        return self


class SendNotificationAction(StrictRequest):
    """Notify a channel (the one event reaction users may ask for)."""

    action: Literal["send-notification"]
    channel: StrictStr
    data: dict[str, Any] | None = None


class UpdateCollectionWithArtifactsAction(StrictRequest):
    """
    Add the artifacts the work request created, those matching `artifact_filters`, to a
    collection. Set by the server (e.g. `debusine-admin environment create`), not by users.
    """

    action: Literal["update-collection-with-artifacts"]
    #: Lookup of the collection.
    collection: StrictInt | StrictStr
    #: Item name, for collections whose items are named by the caller (`{variable}` fields).
    name_template: StrictStr | None = None
    #: Passed to the collection (e.g. `codename`, `variant`); a key `$NAME` takes the value
    #: at the path it holds (`$.codename`, `codename`) in the artifact's data, as `NAME`.
    variables: dict[str, Any] | None = None
    #: Which artifacts: `category` (or `category__in`) and `data__KEY` conditions.
    artifact_filters: dict[str, Any]

    @field_validator("artifact_filters")
    @classmethod
    def known_filters(cls, filters: dict[str, Any]) -> dict[str, Any]:
        for key in filters:
            if key not in ("category", "category__in") and not key.startswith("data__"):
                raise ValueError(
                    f"unknown artifact filter {key!r}: use category, category__in or data__KEY"
                )
        return filters


#: A delay of `retry-with-delays`: a number of minutes, hours, days or weeks.
DELAY_PATTERN = r"^[0-9]+[mhdw]$"
Delay = Annotated[StrictStr, Field(pattern=DELAY_PATTERN)]


class RetryWithDelaysAction(StrictRequest):
    """
    On failure, retry the work request after the next of `delays` (`30m`, `1h`, `2d`, `1w`):
    the retry waits for a Wait `delay` work request. Once every delay has been used, a failure
    stands. Set by workflows (e.g. for builds waiting for their dependencies), not by users.
    """

    action: Literal["retry-with-delays"]
    delays: Annotated[
        list[Annotated[StrictStr, Field(pattern=DELAY_PATTERN)]], Field(min_length=1)
    ]


EventReaction = Annotated[
    SendNotificationAction | UpdateCollectionWithArtifactsAction | RetryWithDelaysAction,
    Field(discriminator="action"),
]

#: Actions only server-side code may set (users may ask for notifications only).
SERVER_ACTIONS = frozenset({"update-collection-with-artifacts", "retry-with-delays"})


class EventReactions(StrictRequest):
    """What to do when a work request reaches each stage of its life."""

    on_creation: list[EventReaction] = []
    on_unblock: list[EventReaction] = []
    on_assignment: list[EventReaction] = []
    on_success: list[EventReaction] = []
    on_failure: list[EventReaction] = []

    def actions(self) -> list[EventReaction]:
        """Every action, in stage order."""
        return [
            *self.on_creation,
            *self.on_unblock,
            *self.on_assignment,
            *self.on_success,
            *self.on_failure,
        ]


class TaskType(StrEnum):
    """Where a task runs: the WorkRequest object's `task_type`."""

    WORKER = "Worker"
    SERVER = "Server"
    INTERNAL = "Internal"
    WORKFLOW = "Workflow"
    SIGNING = "Signing"
    WAIT = "Wait"


class WorkRequestStatus(StrEnum):
    """Where a work request stands in its life: the WorkRequest object's `status`."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"
    BLOCKED = "blocked"


class WorkRequestResult(StrEnum):
    """How a finished work request ended: its `result` (empty while it has not finished)."""

    NONE = ""
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    SKIPPED = "skipped"


class WorkRequestResponse(BaseModel):
    """The WorkRequest object as the server sends it."""

    id: int
    #: Relative web-UI path: `/{scope}/{workspace}/work-request/{id}/`.
    url: str
    task_name: str
    created_at: datetime
    created_by: int
    aborted_by: int | None
    started_at: datetime | None
    completed_at: datetime | None
    #: Seconds between start and completion.
    duration: float | None
    worker: int | None
    task_type: TaskType
    task_data: dict[str, Any]
    dynamic_task_data: dict[str, Any] | None
    #: What the worker reported (runtime statistics, errors); our extension, absent from
    #: Debusine servers.
    output_data: dict[str, Any] | None = None
    priority_base: int
    priority_adjustment: int
    workflow_data: dict[str, Any]
    event_reactions: dict[str, Any]
    #: The workflow this work request is a step of (Debusine 0.16 sends it too).
    parent: int | None = None
    status: WorkRequestStatus
    #: Empty while the work request has not finished.
    result: WorkRequestResult
    #: Artifacts created by this work request, ascending ids.
    artifacts: list[int]
    scope: str
    workspace: str
    #: Web-UI links (`webui_self`), which Debusine 0.16 clients read for their rich output.
    links: dict[str, Any] = {}


class WorkRequestPage(BaseModel):
    """One page of `GET /1.0/work-request/` (newest first; no count)."""

    next: str | None
    previous: str | None
    results: list[WorkRequestResponse]


# The lenient variants widen a few of the strict models' fields to "may be absent" (None): a
# subclass that accepts more is what lenient means here, so those overrides are deliberate and
# silence mypy's rule against widening an attribute in a subclass.


class LenientWorkRequestResponse(WorkRequestResponse):
    """
    The WorkRequest object as our client and worker read it from any compatible server.

    Only what Debusine's own client requires is required. Debusine 0.11 sends no `url`, and
    none of the fields our client merely displays (`created_by`, `scope`, ...) is needed.
    """

    model_config = LENIENT

    url: str | None = None  # type: ignore[assignment]
    created_by: int | None = None  # type: ignore[assignment]
    aborted_by: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration: float | None = None
    worker: int | None = None
    dynamic_task_data: dict[str, Any] | None = None
    workflow_data: dict[str, Any] = {}
    event_reactions: dict[str, Any] = {}
    scope: str | None = None  # type: ignore[assignment]


class LenientWorkRequestPage(WorkRequestPage):
    """One page of `GET /1.0/work-request/` as our client reads it (no link: last page)."""

    model_config = LENIENT

    next: str | None = None
    previous: str | None = None
    results: list[LenientWorkRequestResponse]  # type: ignore[assignment]


class WorkRequestCompletedFrame(BaseModel):
    """
    A `work_request_completed` frame of the `work-request/on-completed/` websocket
    (protocol.md §3.2): which work request finished, when, and how.
    """

    model_config = LENIENT

    work_request_id: int
    completed_at: datetime
    result: WorkRequestResult
