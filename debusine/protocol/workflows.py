"""
Wire models of the workflow endpoints our client calls on Debusine servers (protocol.md §2.5):
`POST /1.0/workflow-template/` and its answer. Our server does not serve workflow templates
yet; the models are here so that the client parses the answer against the one contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, StrictInt, StrictStr

from debusine.protocol.wire import LENIENT, StrictRequest


class WorkflowTemplateCreateRequest(StrictRequest):
    """Body of `POST /1.0/workflow-template/` (Debusine 0.11 to 0.14)."""

    name: StrictStr
    task_name: StrictStr
    task_data: dict[str, Any]
    priority: StrictInt = 0
    workspace: StrictStr | None = None


class WorkflowTemplateResponse(BaseModel):
    """A workflow template as our client reads it (Debusine 0.11 sends no `url` or `name`)."""

    model_config = LENIENT

    id: int
    task_name: str
    workspace: str
    task_data: dict[str, Any]
    priority: int
    url: str | None = None
    name: str | None = None


class WorkflowCreateRequest(StrictRequest):
    """Body of `POST /1.0/workflow/`: start a workflow from a template."""

    template_name: StrictStr
    task_data: dict[str, Any] = {}
    workspace: StrictStr | None = None
