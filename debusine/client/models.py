"""
What the client reads from a server: lenient models of the API 1.0 responses (protocol.md §5.2).

Unknown keys are ignored and only the fields Debusine's own client requires are required, so
the client works against any compatible server, ours or Debusine's, old or new.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class WorkRequest(BaseModel):
    id: int
    url: str
    created_at: datetime
    status: str
    result: str
    task_type: str
    task_name: str
    task_data: dict[str, Any]
    priority_base: int
    priority_adjustment: int
    artifacts: list[int]
    workspace: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration: float | None = None
    worker: int | None = None
    dynamic_task_data: dict[str, Any] | None = None
    #: What the worker reported (runtime statistics, errors); absent from Debusine servers.
    output_data: dict[str, Any] | None = None


class WorkRequestPage(BaseModel):
    results: list[dict[str, Any]]
    next: str | None = None
    previous: str | None = None


class FileInArtifact(BaseModel):
    size: int = Field(ge=0)
    checksums: dict[str, str]
    type: Literal["file"]
    url: str
    content_type: str | None = None


class Artifact(BaseModel):
    id: int
    url: str
    workspace: str
    category: str
    created_at: datetime
    data: dict[str, Any]
    download_tar_gz_url: str
    files_to_upload: list[str]
    expire_at: datetime | None = None
    files: dict[str, FileInArtifact] = {}


class Relation(BaseModel):
    id: int
    artifact: int
    target: int
    type: Literal["extends", "relates-to", "built-using"]


class WorkflowTemplate(BaseModel):
    id: int
    url: str
    name: str
    task_name: str
    workspace: str
    task_data: dict[str, Any]
    priority: int


class WorkRequestCompleted(BaseModel):
    """A `work_request_completed` frame of the on-completed websocket."""

    work_request_id: int
    completed_at: datetime
    result: str
