"""
Wire models of the workflow endpoints: `/1.0/workflow-template/` (create, read, replace,
update, delete; protocol.md §2.5, the Debusine 0.11 to 0.14 shapes), its Debusine 0.16
successor `/1.0/workflow-template/{workspace}/…` (protocol-versions.md §3.4), and
`POST /1.0/workflow/`.

Request models forbid unknown keys, except the update bodies, which ignore the keys of the
object as it was read (`id`, `url`, `scope`, ...) so that a client may send back what it
fetched. `WorkflowTemplateResponse` is what our server sends; `LenientWorkflowTemplateResponse`
is what our client reads from any compatible server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from debusine.protocol.wire import LENIENT, StrictRequest
from debusine.protocol.work_requests import PRIORITY_MAX, PRIORITY_MIN

Priority = Annotated[StrictInt, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
TemplateName = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class WorkflowTemplateCreateRequest(StrictRequest):
    """Body of `POST /1.0/workflow-template/`."""

    name: TemplateName
    task_name: StrictStr
    task_data: dict[str, Any] = {}
    priority: Priority = 0
    #: Workspace name; the scope's default workspace when left out.
    workspace: StrictStr | None = None


class WorkflowTemplateUpdateRequest(BaseModel):
    """
    Body of `PUT`/`PATCH /1.0/workflow-template/{id}/`: the fields to change (all of them for
    `PUT`). Read-only keys of the object (`id`, `url`, `scope`, `workspace`) are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    name: TemplateName | None = None
    task_name: StrictStr | None = None
    task_data: dict[str, Any] | None = None
    priority: Priority | None = None


class WorkflowTemplateResponse(BaseModel):
    """A workflow template as our server sends it."""

    id: int
    #: Relative web-UI path: `/{scope}/{workspace}/workflow-template/{name}/`.
    url: str
    name: str
    scope: str
    workspace: str
    task_name: str
    task_data: dict[str, Any]
    priority: int


class LenientWorkflowTemplateResponse(WorkflowTemplateResponse):
    """A workflow template as our client reads it (Debusine 0.11 sends no `url` or `name`)."""

    model_config = LENIENT

    url: str | None = None  # type: ignore[assignment]
    name: str | None = None  # type: ignore[assignment]
    scope: str | None = None  # type: ignore[assignment]


class WorkflowCreateRequest(StrictRequest):
    """
    Body of `POST /1.0/workflow/`: start a workflow from a template, or (Debusine 0.16) by its
    task name without one: exactly one of `template_name` and `task_name` is non-empty (0.16
    clients send the other as `""`).
    """

    template_name: StrictStr = ""
    task_data: dict[str, Any] = {}
    workspace: StrictStr | None = None
    task_name: StrictStr | None = None


# --- Debusine 0.16: `/1.0/workflow-template/{workspace}/…` (protocol-versions.md §3.4) --------

#: What users may set when they start a template: "any", or parameter -> allowed values/"any".
RuntimeParameters = Literal["any"] | dict[str, list[Any] | Literal["any"]]
GroupRef = StrictInt | StrictStr


class WorkspaceTemplateCreateRequest(StrictRequest):
    """Body of `POST /1.0/workflow-template/{workspace}/`."""

    name: TemplateName
    task_name: StrictStr
    static_parameters: dict[str, Any] = {}
    runtime_parameters: RuntimeParameters = {}
    priority: Priority = 0
    extra_groups: list[GroupRef] = []
    restricted: StrictBool = False


class WorkspaceTemplateUpdateRequest(BaseModel):
    """
    Body of `PATCH /1.0/workflow-template/{workspace}/{id}/`: the fields to change. 0.16 sends
    the whole object it read; `id` and `links` are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    name: TemplateName | None = None
    task_name: StrictStr | None = None
    static_parameters: dict[str, Any] | None = None
    runtime_parameters: RuntimeParameters | None = None
    priority: Priority | None = None
    extra_groups: list[GroupRef] | None = None
    restricted: StrictBool | None = None


class WorkspaceTemplateResponse(BaseModel):
    """A workflow template as Debusine 0.16 reads it (its WorkflowTemplateData)."""

    id: int
    name: str
    task_name: str
    static_parameters: dict[str, Any]
    runtime_parameters: RuntimeParameters
    priority: int
    extra_groups: list[str]
    restricted: bool
    links: dict[str, Any]
